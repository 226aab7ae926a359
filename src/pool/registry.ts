// Registry: every pool, keyed by (user, database), built from the Config. Owns the single
// maintenance timer that drives each pool's upkeep, so idle/lifetime/min-size work costs one
// timer for the whole process rather than one per pool.

import { readFileSync } from "node:fs";
import {
  type Config,
  type DatabaseConfig,
  TOKEN_AUTH_MODES,
  type UserConfig,
} from "../config/index.js";
import { type CredentialEngine, type CredentialEntry, identityFor } from "../credentials/index.js";
import { type Logger, PgwardenError } from "../util/index.js";
import { type CredentialSource, Pool, type PoolSettings } from "./pool.js";

const MAINTENANCE_INTERVAL_MS = 1000;

export function poolKey(user: string, database: string): string {
  return `${user}\0${database}`;
}

export class PoolRegistry {
  private readonly pools = new Map<string, Pool>();
  /** The credential entry each token-authenticated pool holds a reference on. */
  private readonly credentials = new Map<Pool, CredentialEntry>();
  private timer: NodeJS.Timeout | null = null;
  config: Config;

  /** Throws (before anything starts) when a user's credential settings are incomplete. */
  constructor(
    config: Config,
    private readonly logger: Logger,
    private readonly engine: CredentialEngine,
    env: Readonly<Record<string, string | undefined>> = process.env,
  ) {
    this.config = config;
    const identities = config.users.map((user) => {
      const db = config.databases.find((d) => d.name === user.database);
      if (!db)
        throw new PgwardenError(
          "CONFIG",
          `user "${user.name}": database "${user.database}" is not defined`,
        );
      return { user, db, identity: identityFor(user, db, env) };
    });
    for (const { user, db, identity } of identities) {
      let credential: CredentialSource = staticSecret(user);
      let entry: CredentialEntry | null = null;
      if (identity !== null) {
        const e = engine.acquire(identity.key, identity.make);
        entry = e;
        credential = { get: () => e.get(), invalidate: (rejected) => e.invalidate(rejected) };
      }
      const pool = new Pool(settingsFor(config, db, user, credential), logger);
      this.pools.set(poolKey(user.name, user.database), pool);
      if (entry) this.credentials.set(pool, entry);
    }
  }

  get(user: string, database: string): Pool | undefined {
    return this.pools.get(poolKey(user, database));
  }

  all(): IterableIterator<Pool> {
    return this.pools.values();
  }

  /**
   * Warms every identity's token (one fetch per identity, however many pools share it), then
   * every pool to min_pool_size, then starts maintenance. Failures are logged, not fatal: the
   * refreshers and maintenance keep trying.
   */
  async start(): Promise<void> {
    const entries = new Set(this.credentials.values());
    await Promise.allSettled([...entries].map((e) => e.get()));
    await Promise.all([...this.pools.values()].map((p) => p.warm()));
    this.logger.debug({ pools: this.pools.size }, "pools warmed");
    this.timer = setInterval(() => {
      const now = performance.now();
      for (const p of this.pools.values()) p.maintain(now);
    }, MAINTENANCE_INTERVAL_MS);
    this.timer.unref();
  }

  /** Stops maintenance and checkouts; idle servers close now, leased ones on release. */
  drain(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const p of this.pools.values()) p.drain();
  }

  closeAll(reason: string): void {
    this.drain();
    for (const p of this.pools.values()) p.closeAll(reason);
    for (const [pool, entry] of this.credentials) {
      this.engine.release(entry);
      this.credentials.delete(pool);
    }
  }

  leasedCount(): number {
    let n = 0;
    for (const p of this.pools.values()) n += p.leased.size;
    return n;
  }
}

function staticSecret(user: UserConfig): CredentialSource {
  const secret = user.server_password;
  if (secret !== undefined) return { get: () => Promise.resolve(secret) };
  const label = `${user.name}/${user.database}`;
  return {
    get: () =>
      Promise.reject(
        new PgwardenError(
          "CREDENTIAL",
          `user "${user.name}" has no server_password or password configured`,
          { pool: label },
        ),
      ),
  };
}

function settingsFor(
  config: Config,
  db: DatabaseConfig,
  user: UserConfig,
  credential: CredentialSource,
): PoolSettings {
  const g = config.general;
  let tlsCa: Buffer | undefined;
  if (g.tls_server_ca_certificate) tlsCa = readFileSync(g.tls_server_ca_certificate);
  // A token is a bearer secret: never send it without TLS, even when tls_verify says "prefer".
  const tlsMode =
    TOKEN_AUTH_MODES.has(user.server_auth) && g.tls_verify === "prefer" ? "require" : g.tls_verify;
  return {
    user: user.name,
    database: user.database,
    host: db.host,
    port: db.port,
    serverDatabase: db.database_name,
    serverUser: user.server_user,
    poolSize: user.pool_size,
    minPoolSize: user.min_pool_size,
    mode: user.pooler_mode,
    idleTimeout: g.idle_timeout,
    serverLifetime: g.server_lifetime,
    checkoutTimeout: g.checkout_timeout,
    connectTimeout: g.connect_timeout,
    tlsMode,
    tlsCa,
    credential,
  };
}
