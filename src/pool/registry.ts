// Registry: every pool, keyed by (user, database), built from the Config. Owns the single
// maintenance timer that drives each pool's upkeep, so idle/lifetime/min-size work costs one
// timer for the whole process rather than one per pool.

import { readFileSync } from "node:fs";
import type { Config, DatabaseConfig, UserConfig } from "../config/index.js";
import { type Logger, PgwardenError } from "../util/index.js";
import { Pool, type PoolSettings } from "./pool.js";

const MAINTENANCE_INTERVAL_MS = 1000;

export function poolKey(user: string, database: string): string {
  return `${user}\0${database}`;
}

export class PoolRegistry {
  private readonly pools = new Map<string, Pool>();
  private timer: NodeJS.Timeout | null = null;
  config: Config;

  constructor(
    config: Config,
    private readonly logger: Logger,
  ) {
    this.config = config;
    for (const user of config.users) {
      const db = config.databases.find((d) => d.name === user.database);
      if (!db) continue; // config validation guarantees it exists
      const pool = new Pool(settingsFor(config, db, user), logger);
      this.pools.set(poolKey(user.name, user.database), pool);
    }
  }

  get(user: string, database: string): Pool | undefined {
    return this.pools.get(poolKey(user, database));
  }

  all(): IterableIterator<Pool> {
    return this.pools.values();
  }

  /** Warms every pool to min_pool_size, then starts maintenance. */
  async start(): Promise<void> {
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
  }

  leasedCount(): number {
    let n = 0;
    for (const p of this.pools.values()) n += p.leased.size;
    return n;
  }
}

function settingsFor(config: Config, db: DatabaseConfig, user: UserConfig): PoolSettings {
  const g = config.general;
  const label = `${user.name}/${user.database}`;
  const secret = user.server_password;
  let tlsCa: Buffer | undefined;
  if (g.tls_server_ca_certificate) tlsCa = readFileSync(g.tls_server_ca_certificate);
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
    tlsMode: g.tls_verify,
    tlsCa,
    credential: {
      get:
        secret === undefined
          ? () =>
              Promise.reject(
                new PgwardenError(
                  "CREDENTIAL",
                  `user "${user.name}" has no server_password or password configured`,
                  {
                    pool: label,
                  },
                ),
              )
          : () => Promise.resolve(secret),
    },
  };
}
