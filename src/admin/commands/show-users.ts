// SHOW USERS: PgBouncer's columns (src/admin.c admin_show_users) first, then ours. A pgwarden
// user is a [[users]] entry, i.e. a (name, database) pair with its own pool, so there is one
// row per entry and `database` says which. Never a password: only non-secret settings are read.

import type { UserConfig } from "../../config/index.js";
import type { AdminContext } from "../context.js";
import { type Column, int4, resultSet, text } from "./result-set.js";

interface UserRow {
  readonly user: UserConfig;
  readonly servers: number;
  readonly clients: number;
}

const zero = (): number => 0;

const columns: readonly Column<UserRow>[] = [
  text("name", (r) => r.user.name),
  int4("pool_size", (r) => r.user.pool_size),
  int4("reserve_pool_size", zero),
  text("pool_mode", (r) => r.user.pooler_mode),
  // 0 means "no limit" in PgBouncer; pgwarden has no per-user caps beyond pool_size.
  int4("max_user_connections", zero),
  int4("current_connections", (r) => r.servers),
  int4("max_user_client_connections", zero),
  int4("current_client_connections", (r) => r.clients),
  // ours
  text("database", (r) => r.user.database),
  text("server_user", (r) => r.user.server_user),
  text("server_auth", (r) => r.user.server_auth),
];

export function showUsers(ctx: AdminContext): Buffer[] {
  const pools = ctx.pools();
  const clients = ctx.clients();
  const rows = ctx.config().users.map((user): UserRow => {
    const pool = pools.find((p) => p.user === user.name && p.database === user.database);
    return {
      user,
      servers: pool === undefined ? 0 : pool.svActive + pool.svIdle + pool.svConnecting,
      clients: clients.filter((c) => c.user === user.name && c.database === user.database).length,
    };
  });
  return resultSet(columns, rows);
}
