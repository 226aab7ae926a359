// Defaults for keys a config file may leave out. Where design §3 names a value it wins; where it
// is silent we take pgdog's (pgdog-config/src/general.rs, database.rs, users.rs), so a pgdog
// config behaves the same here. Values without a pgdog counterpart are marked "ours".

import type {
  ClientAuthType,
  GeneralConfig,
  PoolerMode,
  PreparedStatementsMode,
  ServerAuth,
  TlsVerify,
} from "./types.js";

export const GENERAL_DEFAULTS = {
  host: "0.0.0.0",
  port: 6432,
  pooler_mode: "transaction" as PoolerMode,
  default_pool_size: 10,
  min_pool_size: 1,
  idle_timeout: 60_000,
  // pgdog: 24 h. PgBouncer uses 1 h; pgdog's value is kept for config compatibility. Server
  // connections outliving their login token are fine: PostgreSQL checks it only at login.
  server_lifetime: 86_400_000,
  checkout_timeout: 5_000,
  connect_timeout: 5_000,
  auth_type: "scram" as ClientAuthType,
  tls_verify: "prefer" as TlsVerify,
  shutdown_timeout: 60_000,
  // ours: pgdog has no client cap.
  max_client_connections: 10_000,
  // PgBouncer's client_login_timeout (60 s), in milliseconds like our other timeouts; 0 = none.
  client_login_timeout: 60_000,
  // ours: PostgreSQL's own limit for a client message (PQ_LARGE_MESSAGE_LIMIT, 1 GB - 2).
  max_message_size: 0x3fff_fffe,
  // ours, after PostgreSQL's auth_delay module: 0 = answer a failed login at once.
  auth_failure_delay: 0,
  // ours (design §2).
  token_refresh_buffer: 45_000,
  token_fetch_timeout: 30_000,
  log_level: "info" as GeneralConfig["log_level"],
  prepared_statements: "extended" as PreparedStatementsMode,
  // ours: pgdog has no limit, PgBouncer's max_prepared_statements is 200. Drivers cap their own
  // per-connection caches at 100 (asyncpg, psycopg) to 256 (pgjdbc), and a server connection
  // serves the union of its clients' statements, so 200 makes one pgjdbc application re-prepare
  // in a loop. 500 holds such a working set; on PostgreSQL it costs each backend a few MB of
  // plan cache at most (a statement is typically a few kB to tens of kB there).
  prepared_statements_limit: 500,
  // pgdog's default: one process (no cluster at all).
  workers: 1,
} as const;

export const DATABASE_DEFAULTS = { port: 5432 } as const;

export const ADMIN_DEFAULTS = { name: "admin", user: "admin" } as const;

export const USER_DEFAULTS = { server_auth: "password" as ServerAuth } as const;

/** Bounds of max_message_size: a Bind with a few parameters still fits; PostgreSQL's own limit. */
export const MIN_MESSAGE_SIZE = 1024;
export const MAX_MESSAGE_SIZE = 0x3fff_fffe;

/** setTimeout fires at once for delays above this, so no duration may exceed it. */
export const MAX_DURATION_MS = 2_147_483_647;
