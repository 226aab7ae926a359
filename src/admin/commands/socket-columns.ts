// The columns SHOW CLIENTS and SHOW SERVERS share, in PgBouncer's order (src/admin.c
// socket_header). `ptr`/`link` pair a client with the server it holds: PgBouncer prints memory
// addresses there; we print "c<pid>" for a client (its BackendKeyData pid) and "s<pid>" for a
// server (its backend pid), which are unique the same way and let one join the two lists.

import { type Column, int4, isoTime, text } from "./result-set.js";

export interface SocketRow {
  readonly type: "C" | "S";
  readonly user: string;
  readonly database: string;
  readonly state: string;
  readonly addr: string;
  readonly port: number;
  /** Epoch ms. */
  readonly connectTime: number;
  readonly ptr: string;
  readonly link: string;
  readonly remotePid: number;
  readonly tls: boolean;
  readonly applicationName: string;
  readonly id: number;
  /** The worker process holding the connection (workers > 1), else undefined. */
  readonly worker?: number | undefined;
}

export const clientPtr = (pid: number): string => `c${pid}`;
export const serverPtr = (backendPid: number): string => `s${backendPid}`;

const zero = (): number => 0;

export const socketColumns: readonly Column<SocketRow>[] = [
  text("type", (r) => r.type),
  text("user", (r) => r.user),
  text("database", (r) => r.database),
  // pgwarden does not pool replication connections.
  text("replication", () => "none"),
  text("state", (r) => r.state),
  text("addr", (r) => r.addr),
  int4("port", (r) => r.port),
  // The snapshots do not carry our side of the connection.
  text("local_addr", () => null),
  int4("local_port", zero),
  text("connect_time", (r) => isoTime(r.connectTime)),
  // Not tracked: no per-connection timestamp is taken on the hot path.
  text("request_time", () => null),
  int4("wait", zero),
  int4("wait_us", zero),
  int4("close_needed", zero),
  text("ptr", (r) => r.ptr),
  text("link", (r) => r.link),
  int4("remote_pid", (r) => r.remotePid),
  // PgBouncer prints the TLS version and cipher, empty without TLS; the snapshots only say
  // whether TLS is on, so a non-empty "TLS" keeps `tls <> ''` checks working.
  text("tls", (r) => (r.tls ? "TLS" : "")),
  text("application_name", (r) => r.applicationName),
  // Prepared statements are forwarded, not tracked.
  int4("prepared_statements", zero),
  int4("id", (r) => r.id),
];

/** The columns for `rows`: with a trailing `worker` column when the instance has workers. */
export function socketColumnsFor(rows: readonly SocketRow[]): readonly Column<SocketRow>[] {
  if (!rows.some((r) => r.worker !== undefined)) return socketColumns;
  return [...socketColumns, int4("worker", (r) => r.worker ?? null)];
}
