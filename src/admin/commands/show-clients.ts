// SHOW CLIENTS: one row per client connection, PgBouncer's columns (see socket-columns.ts).
// Unlike PgBouncer we also list clients still logging in (state "login").

import type { AdminContext, ClientSnapshot } from "../context.js";
import { resultSet } from "./result-set.js";
import { clientPtr, type SocketRow, serverPtr, socketColumnsFor } from "./socket-columns.js";

function row(c: ClientSnapshot): SocketRow {
  return {
    type: "C",
    user: c.user,
    database: c.database,
    state: c.state,
    addr: c.addr,
    port: c.port,
    connectTime: c.connectTime,
    ptr: clientPtr(c.pid),
    link: c.serverPid === 0 ? "" : serverPtr(c.serverPid),
    // PgBouncer gives a client's OS pid only over a Unix socket; we listen on TCP only.
    remotePid: 0,
    tls: c.tls,
    applicationName: c.applicationName,
    id: c.pid,
    worker: c.worker,
  };
}

export function showClients(ctx: AdminContext): Buffer[] {
  const rows = ctx.clients().map(row);
  return resultSet(socketColumnsFor(rows), rows);
}
