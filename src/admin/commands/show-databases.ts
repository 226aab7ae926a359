// SHOW DATABASES: one row per [[databases]] entry, PgBouncer's columns (src/admin.c
// admin_show_databases). Pool sizes and the pool mode are per user in pgwarden, so a database
// shows the [general] defaults for sizes and, as PgBouncer does for a database without its own
// pool_mode, null for the mode. pgwarden has no forced user, reserve pool, per-database
// connection caps or DISABLE, hence null/0 there. The admin database is not listed.

import type { DatabaseConfig } from "../../config/index.js";
import type { AdminContext } from "../context.js";
import { type Column, int4, resultSet, text } from "./result-set.js";

interface DatabaseRow {
  readonly db: DatabaseConfig;
  readonly poolSize: number;
  readonly minPoolSize: number;
  readonly serverLifetimeS: number;
  readonly servers: number;
  readonly clients: number;
  readonly paused: boolean;
}

const zero = (): number => 0;

const columns: readonly Column<DatabaseRow>[] = [
  text("name", (r) => r.db.name),
  text("host", (r) => r.db.host),
  int4("port", (r) => r.db.port),
  text("database", (r) => r.db.database_name),
  text("force_user", () => null),
  int4("pool_size", (r) => r.poolSize),
  int4("min_pool_size", (r) => r.minPoolSize),
  int4("reserve_pool_size", zero),
  int4("server_lifetime", (r) => r.serverLifetimeS),
  text("pool_mode", () => null),
  text("load_balance_hosts", () => null),
  // 0 means "no limit" in PgBouncer.
  int4("max_connections", zero),
  int4("current_connections", (r) => r.servers),
  int4("max_client_connections", zero),
  int4("current_client_connections", (r) => r.clients),
  int4("paused", (r) => (r.paused ? 1 : 0)),
  int4("disabled", zero),
];

export function showDatabases(ctx: AdminContext): Buffer[] {
  const config = ctx.config();
  const pools = ctx.pools();
  const clients = ctx.clients();
  const rows = config.databases.map((db): DatabaseRow => {
    const mine = pools.filter((p) => p.database === db.name);
    return {
      db,
      poolSize: config.general.default_pool_size,
      minPoolSize: config.general.min_pool_size,
      serverLifetimeS: Math.floor(config.general.server_lifetime / 1000),
      // Connecting servers count, as PgBouncer counts a connection from its launch.
      servers: mine.reduce((n, p) => n + p.svActive + p.svIdle + p.svConnecting, 0),
      clients: clients.filter((c) => c.database === db.name).length,
      // PAUSE acts on a whole database, so one paused pool means the database is paused.
      paused: mine.some((p) => p.paused),
    };
  });
  return resultSet(columns, rows);
}
