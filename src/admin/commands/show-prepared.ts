// SHOW PREPARED: one row per instance-wide named prepared statement (transaction pooling, design
// §5): its server-side name, the query text cut short, the parameter types the clients declared,
// and how many client statement names and server connections refer to it. SHOW PREPARED_STATS
// has the instance-wide counters (client Parses, server Parses, evictions) in one row; /metrics
// has them as pgwarden_prepared_*.

import type { AdminContext, PreparedSnapshot } from "../context.js";
import { type Column, int4, int8, resultSet, text } from "./result-set.js";

/** Longest query text shown; longer ones end with "…". */
const QUERY_SHOWN = 80;

const columns: readonly Column<PreparedSnapshot>[] = [
  text("name", (p) => p.name),
  text("query", (p) =>
    p.query.length > QUERY_SHOWN ? `${p.query.slice(0, QUERY_SHOWN - 1)}…` : p.query,
  ),
  text("parameter_types", (p) => p.paramTypes.join(",")),
  int4("clients", (p) => p.clients),
  int4("servers", (p) => p.servers),
];

export function showPrepared(ctx: AdminContext): Buffer[] {
  const statements = ctx.prepared?.().statements ?? [];
  const rows = [...statements].sort((a, b) =>
    a.name.localeCompare(b.name, "en", { numeric: true }),
  );
  return resultSet(columns, rows);
}

interface Totals {
  readonly statements: number;
  readonly clientParses: number;
  readonly serverParses: number;
  readonly evictions: number;
}

const statsColumns: readonly Column<Totals>[] = [
  int8("statements", (t) => t.statements),
  int8("client_parse_count", (t) => t.clientParses),
  int8("server_parse_count", (t) => t.serverParses),
  int8("eviction_count", (t) => t.evictions),
];

export function showPreparedStats(ctx: AdminContext): Buffer[] {
  const p = ctx.prepared?.();
  return resultSet(statsColumns, [
    {
      statements: p?.statements.length ?? 0,
      clientParses: p?.clientParses ?? 0,
      serverParses: p?.serverParses ?? 0,
      evictions: p?.evictions ?? 0,
    },
  ]);
}
