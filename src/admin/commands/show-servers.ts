// SHOW SERVERS: one row per server connection, PgBouncer's columns (see socket-columns.ts). The
// linked client and its application_name come from the client list, as in PgBouncer.

import type { ServerSnapshot } from "../../pool/index.js";
import type { AdminContext, ClientSnapshot } from "../context.js";
import { type Column, int4, isoTime, resultSet, text } from "./result-set.js";
import { clientPtr, type SocketRow, serverPtr, socketColumnsFor } from "./socket-columns.js";

interface ServerRow extends SocketRow {
  readonly serverUser: string;
  readonly credentialGeneration: number;
  readonly retireAt: number | null;
}

// Ours, after PgBouncer's columns (and `worker` with several workers): the role it logged in as,
// which credential of its pool's source it used (a generation number, never the secret; 0 = a
// static password) and when it will be closed because that credential's role is revoked (Vault
// dynamic leases).
const credentialColumns: readonly Column<ServerRow>[] = [
  text("server_user", (r) => r.serverUser),
  int4("credential", (r) => r.credentialGeneration),
  text("retire_at", (r) => isoTime(r.retireAt)),
];

function row(s: ServerSnapshot, holder: ClientSnapshot | undefined): ServerRow {
  return {
    serverUser: s.serverUser,
    credentialGeneration: s.credentialGeneration,
    retireAt: s.retireAt,
    type: "S",
    user: s.user,
    database: s.database,
    state: s.state,
    addr: s.host,
    port: s.port,
    connectTime: s.connectTime,
    ptr: serverPtr(s.backendPid),
    link: holder === undefined ? "" : clientPtr(holder.pid),
    remotePid: s.backendPid,
    tls: s.tls,
    applicationName: holder?.applicationName ?? "",
    id: s.backendPid,
    worker: s.worker,
  };
}

export function showServers(ctx: AdminContext): Buffer[] {
  const holders = new Map<number, ClientSnapshot>();
  for (const c of ctx.clients()) if (c.serverPid !== 0) holders.set(c.serverPid, c);
  const rows = ctx.servers().map((s) => row(s, holders.get(s.backendPid)));
  const columns: readonly Column<ServerRow>[] = [...socketColumnsFor(rows), ...credentialColumns];
  return resultSet(columns, rows);
}
