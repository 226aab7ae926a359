// SHOW SERVERS: one row per server connection, PgBouncer's columns (see socket-columns.ts). The
// linked client and its application_name come from the client list, as in PgBouncer.

import type { ServerSnapshot } from "../../pool/index.js";
import type { AdminContext, ClientSnapshot } from "../context.js";
import { resultSet } from "./result-set.js";
import { clientPtr, type SocketRow, serverPtr, socketColumnsFor } from "./socket-columns.js";

function row(s: ServerSnapshot, holder: ClientSnapshot | undefined): SocketRow {
  return {
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
  return resultSet(socketColumnsFor(rows), rows);
}
