// pgwarden as a library: the credential engine in-process, for Node.js services that connect to
// RDS/Aurora, Azure Database, Cloud SQL or a Vault-managed PostgreSQL without a pooler between.
//
//   import { tokenSource } from "pgwarden";
//   const source = tokenSource({ server_auth: "rds_iam", host, port: 5432, user: "app" });
//   const pool = new pg.Pool({ host, user: "app", password: source.password, ssl: true });
//
// Model: one CredentialEngine per process (per pair of engine timings), so sources built from
// the same settings anywhere in the process share one entry: one fetch, one refresher, one
// cache (design §2). A source holds one reference on its entry; close() drops it, and the last
// close stops the refresher, so nothing is left scheduled. The settings are users.toml's keys
// (and [vault]'s under `vault`), turned into the same UserConfig the pooler builds, so the
// provider, its credential key and its errors are exactly the pooler's.

import {
  type DatabaseConfig,
  GENERAL_DEFAULTS,
  type ServerAuth,
  type UserConfig,
  type VaultConfig,
  vaultConfig,
} from "../config/index.js";
import {
  CredentialEngine,
  type CredentialEntry,
  type CredentialSnapshot,
  identityFor,
} from "../credentials/index.js";
import { type Logger, PgwardenError, silentLogger } from "../util/index.js";

export type { CredentialSnapshot, CredentialState } from "../credentials/index.js";

/** The server_auth modes a token source serves (every one but "password"). */
export type TokenSourceAuth = Exclude<ServerAuth, "password">;

/** [vault] of pgwarden.toml. */
export interface VaultSettings {
  url: string;
  namespace?: string;
  auth_method: "kubernetes" | "approle" | "token";
  auth_mount?: string;
  kubernetes_role?: string;
  kubernetes_jwt_path?: string;
  approle_role_id?: string;
  approle_secret_id_file?: string;
  token_file?: string;
}

/** The keys of a users.toml entry that choose the secret, plus where the database is. */
export interface TokenSourceOptions {
  server_auth: TokenSourceAuth;
  /** The database server (the RDS endpoint, the Azure server, …). */
  host: string;
  /** Default 5432. */
  port?: number;
  /** The database user the secret is for (users.toml `server_user`). */
  user: string;
  /** Default "postgres"; only passed to `command` helpers. */
  database?: string;
  server_iam_region?: string;
  server_iam_host?: string;
  server_iam_role_arn?: string;
  server_iam_external_id?: string;
  server_iam_session_name?: string;
  azure_client_id?: string;
  azure_tenant_id?: string;
  azure_resource_id?: string;
  server_vault_path?: string;
  vault_refresh_percent?: number;
  vault?: VaultSettings;
  server_auth_command?: string | readonly string[];
  server_auth_command_ttl?: number;
  /** Refresh this long before expiry (ms); default 45000, as the pooler's token_refresh_buffer. */
  token_refresh_buffer?: number;
  /** Each provider call's own timeout (ms); default 30000, as token_fetch_timeout. */
  token_fetch_timeout?: number;
  /** Environment the providers read (AZURE_*, AWS_*, VAULT_CACERT, …); default process.env. */
  env?: Readonly<Record<string, string | undefined>>;
  /** A pino logger; default silent. It never receives a secret. */
  logger?: Logger;
}

export interface TokenSource {
  /** The secret to log in with now: cached, refreshed ahead of expiry, shared per identity. Bound: pass it as node-postgres's `password`. */
  readonly password: () => Promise<string>;
  /** The user to log in as: the one Vault issued with the secret, else `options.user`. */
  readonly user: () => Promise<string>;
  /** User and password together, consistent with each other (Vault dynamic credentials). */
  readonly login: () => Promise<{ user: string; password: string; expiresAt: number | null }>;
  /** State of the shared entry: expiry, fetches, failures, last error. Never the secret. */
  readonly snapshot: () => CredentialSnapshot;
  /** Drops this source's reference; the last one for an identity stops its refresher. Idempotent. */
  readonly close: () => void;
}

const KNOWN_KEYS: ReadonlySet<string> = new Set([
  "server_auth",
  "host",
  "port",
  "user",
  "database",
  "server_iam_region",
  "server_iam_host",
  "server_iam_role_arn",
  "server_iam_external_id",
  "server_iam_session_name",
  "azure_client_id",
  "azure_tenant_id",
  "azure_resource_id",
  "server_vault_path",
  "vault_refresh_percent",
  "vault",
  "server_auth_command",
  "server_auth_command_ttl",
  "token_refresh_buffer",
  "token_fetch_timeout",
  "env",
  "logger",
]);

const engines = new Map<string, CredentialEngine>();

function engineFor(refreshBuffer: number, fetchTimeout: number, logger: Logger): CredentialEngine {
  const key = `${refreshBuffer}/${fetchTimeout}`;
  let e = engines.get(key);
  if (e === undefined) {
    e = new CredentialEngine({ refreshBuffer, fetchTimeout, logger });
    engines.set(key, e);
  }
  return e;
}

/**
 * A source of secrets for one database identity, from the settings a users.toml entry would
 * have. Throws a PgwardenError (code CONFIG) naming the problem when a setting is missing or
 * unknown; never fetches until `password()` is first called.
 */
export function tokenSource(options: TokenSourceOptions): TokenSource {
  for (const k of Object.keys(options)) {
    if (!KNOWN_KEYS.has(k)) throw new PgwardenError("CONFIG", `tokenSource: unknown option "${k}"`);
  }
  if (options.server_auth === ("password" as string))
    throw new PgwardenError("CONFIG", 'tokenSource: server_auth "password" needs no token source');
  const command = options.server_auth_command;
  const user: UserConfig = {
    name: options.user,
    database: options.database ?? "postgres",
    password: undefined,
    server_user: options.user,
    server_password: undefined,
    pool_size: 1,
    min_pool_size: 0,
    pooler_mode: "transaction",
    server_auth: options.server_auth,
    server_iam_region: options.server_iam_region,
    server_iam_host: options.server_iam_host,
    azure_client_id: options.azure_client_id,
    azure_tenant_id: options.azure_tenant_id,
    azure_resource_id: options.azure_resource_id,
    server_iam_role_arn: options.server_iam_role_arn,
    server_iam_external_id: options.server_iam_external_id,
    server_iam_session_name: options.server_iam_session_name,
    server_vault_path: options.server_vault_path,
    vault_refresh_percent: options.vault_refresh_percent,
    server_auth_command:
      command === undefined ? undefined : typeof command === "string" ? [command] : command,
    server_auth_command_ttl: options.server_auth_command_ttl,
  };
  const db: DatabaseConfig = {
    name: user.database,
    host: options.host,
    port: options.port ?? 5432,
    database_name: user.database,
  };
  const v = options.vault;
  const vault: VaultConfig | undefined = v === undefined ? undefined : vaultConfig(v);
  const identity = identityFor(user, db, options.env ?? process.env, vault);
  if (identity === null) throw new PgwardenError("CONFIG", "tokenSource: no token for this mode");
  const engine = engineFor(
    options.token_refresh_buffer ?? GENERAL_DEFAULTS.token_refresh_buffer,
    options.token_fetch_timeout ?? GENERAL_DEFAULTS.token_fetch_timeout,
    options.logger ?? silentLogger(),
  );
  const entry: CredentialEntry = engine.acquire(identity.key, identity.make);
  let closed = false;
  const open = () => {
    if (closed) throw new PgwardenError("CREDENTIAL", "tokenSource: used after close()");
  };
  return {
    password: async () => {
      open();
      return entry.get();
    },
    user: async () => {
      open();
      return (await entry.getLogin()).user ?? options.user;
    },
    login: async () => {
      open();
      const l = await entry.getLogin();
      const s = entry.snapshot();
      return {
        user: l.user ?? options.user,
        password: l.secret,
        expiresAt: s.retireAt ?? s.expiresAt,
      };
    },
    snapshot: () => entry.snapshot(),
    close: () => {
      if (closed) return;
      closed = true;
      engine.release(entry);
    },
  };
}
