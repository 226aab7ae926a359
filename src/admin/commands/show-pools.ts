// SHOW POOLS: one row per (database, user) pool, PgBouncer's columns (src/admin.c
// admin_show_pools). Cancel requests are forwarded outside the pools here and servers are not
// tested or parked as "used" between clients, so those columns are always 0.

import type { PoolSnapshot } from "../../pool/index.js";
import type { AdminContext } from "../context.js";
import { type Column, int4, resultSet, text } from "./result-set.js";

const zero = (): number => 0;

const columns: readonly Column<PoolSnapshot>[] = [
  text("database", (p) => p.database),
  text("user", (p) => p.user),
  int4("cl_active", (p) => p.clActive),
  int4("cl_waiting", (p) => p.clWaiting),
  int4("cl_active_cancel_req", zero),
  int4("cl_waiting_cancel_req", zero),
  int4("sv_active", (p) => p.svActive),
  int4("sv_active_cancel", zero),
  int4("sv_being_canceled", zero),
  int4("sv_idle", (p) => p.svIdle),
  int4("sv_used", zero),
  int4("sv_tested", zero),
  // Servers still connecting or logging in: PgBouncer's "new" servers.
  int4("sv_login", (p) => p.svConnecting),
  // The oldest waiter's wait, split as PgBouncer does into whole seconds and the rest in µs.
  int4("maxwait", (p) => Math.floor(p.maxWaitMs / 1000)),
  int4("maxwait_us", (p) => Math.round((p.maxWaitMs % 1000) * 1000)),
  text("pool_mode", (p) => p.mode),
  // Set by PgBouncer only for multi-host databases; a pgwarden database has one host.
  text("load_balance_hosts", () => null),
];

export function showPools(ctx: AdminContext): Buffer[] {
  return resultSet(columns, ctx.pools());
}
