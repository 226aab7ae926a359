// SHOW STATS: one row per database, the sum over its pools (PgBouncer aggregates per database
// too, src/stats.c). Totals count since pgwarden started. Byte counts, transaction and query
// times and prepared-statement counts are not measured on the hot path, and averages need a
// per-period history that the snapshots do not keep, so those columns are 0. PgBouncer types
// these columns numeric; so do we. Times are microseconds, as in PgBouncer.

import type { PoolSnapshot } from "../../pool/index.js";
import type { AdminContext } from "../context.js";
import { type Column, numeric, resultSet, text } from "./result-set.js";

interface DatabaseStats {
  readonly database: string;
  checkouts: number;
  xacts: number;
  queries: number;
  waitMs: number;
  connectFailures: number;
}

const zero = (): number => 0;

const columns: readonly Column<DatabaseStats>[] = [
  text("database", (s) => s.database),
  numeric("total_server_assignment_count", (s) => s.checkouts),
  numeric("total_xact_count", (s) => s.xacts),
  numeric("total_query_count", (s) => s.queries),
  numeric("total_received", zero),
  numeric("total_sent", zero),
  numeric("total_xact_time", zero),
  numeric("total_query_time", zero),
  numeric("total_wait_time", (s) => Math.round(s.waitMs * 1000)),
  numeric("total_client_parse_count", zero),
  numeric("total_server_parse_count", zero),
  numeric("total_bind_count", zero),
  numeric("total_client_login_count", zero),
  numeric("avg_server_assignment_count", zero),
  numeric("avg_xact_count", zero),
  numeric("avg_query_count", zero),
  numeric("avg_recv", zero),
  numeric("avg_sent", zero),
  numeric("avg_xact_time", zero),
  numeric("avg_query_time", zero),
  numeric("avg_wait_time", zero),
  numeric("avg_client_parse_count", zero),
  numeric("avg_server_parse_count", zero),
  numeric("avg_bind_count", zero),
  numeric("avg_client_login_count", zero),
  // ours: failed server connection attempts (logins included), the first thing to look at when
  // a credential provider misbehaves.
  numeric("total_server_connect_failures", (s) => s.connectFailures),
];

function byDatabase(pools: readonly PoolSnapshot[]): DatabaseStats[] {
  const map = new Map<string, DatabaseStats>();
  for (const p of pools) {
    let s = map.get(p.database);
    if (s === undefined) {
      s = {
        database: p.database,
        checkouts: 0,
        xacts: 0,
        queries: 0,
        waitMs: 0,
        connectFailures: 0,
      };
      map.set(p.database, s);
    }
    s.checkouts += p.checkouts;
    s.xacts += p.totalXact;
    s.queries += p.totalQuery;
    s.waitMs += p.totalWaitMs;
    s.connectFailures += p.connectFailures;
  }
  return [...map.values()].sort((a, b) => (a.database < b.database ? -1 : 1));
}

export function showStats(ctx: AdminContext): Buffer[] {
  return resultSet(columns, byDatabase(ctx.pools()));
}
