// Registry: every pool, keyed by (user, database), built from the Config, and the reload that
// reconciles them with a new Config.
//
// Model: `pools` holds the current pool of each (user, database). A reload builds the new
// settings of every user first (so an incomplete credential setting fails the reload before
// anything changes), then per user: same server-side identity (host, port, database, server
// user, secret source, mode, TLS) → the pool stays and takes the new sizes and timeouts in
// place, keeping its server connections; anything else → a new pool replaces it and the old
// one drains (idle servers close now, leased ones when their client releases them); gone →
// drains. Credential entries are reference-counted by pools: the new pool takes its reference
// before the old one lets go, so an unchanged identity keeps its token and refresher, and an
// identity nobody uses any more stops. `generation` changes on every reload so that client
// sessions re-resolve their pool. One maintenance timer drives every pool's upkeep.

import type { Buffer } from "node:buffer";
import { performance } from "node:perf_hooks";
import {
  type Config,
  type DatabaseConfig,
  fileOf,
  TOKEN_AUTH_MODES,
  type UserConfig,
} from "../config/index.js";
import {
  type CredentialBroker,
  type CredentialHandle,
  type Identity,
  identityFor,
} from "../credentials/index.js";
import { type Logger, PgwardenError } from "../util/index.js";
import { type CredentialSource, Pool, type PoolSettings } from "./pool.js";
import type { PoolSnapshot, ServerSnapshot } from "./snapshot.js";

const MAINTENANCE_INTERVAL_MS = 1000;

type Env = Readonly<Record<string, string | undefined>>;

export function poolKey(user: string, database: string): string {
  return `${user}\0${database}`;
}

interface Planned {
  readonly key: string;
  readonly user: UserConfig;
  readonly db: DatabaseConfig;
  readonly identity: Identity | null;
  /** Everything that makes server connections of this pool what they are. */
  readonly signature: string;
}

export interface ReloadResult {
  readonly kept: string[];
  readonly resized: string[];
  readonly replaced: string[];
  readonly added: string[];
  readonly removed: string[];
}

export class PoolRegistry {
  private pools = new Map<string, Pool>();
  private readonly signatures = new Map<Pool, string>();
  /** The credential entry each token-authenticated pool holds a reference on. */
  private readonly credentials = new Map<Pool, CredentialHandle>();
  /** Pools taken out by a reload that still have leased servers. */
  private readonly draining = new Set<Pool>();
  private timer: NodeJS.Timeout | null = null;
  generation = 0;
  config: Config;

  /** Throws (before anything starts) when a user's credential settings are incomplete. */
  constructor(
    config: Config,
    private readonly logger: Logger,
    private readonly engine: CredentialBroker,
    private readonly env: Env = process.env,
  ) {
    this.config = config;
    const tlsCa = readCa(config);
    for (const p of this.plan(config)) this.create(config, p, tlsCa);
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
    await this.warm([...this.pools.values()]);
    this.timer = setInterval(() => this.maintain(), MAINTENANCE_INTERVAL_MS);
    this.timer.unref();
  }

  /**
   * Applies a new, already validated Config. Throws without changing anything when a user's
   * credential settings are incomplete.
   */
  async reload(next: Config): Promise<ReloadResult> {
    const planned = this.plan(next);
    const tlsCa = readCa(next); // before anything changes: a missing file fails the reload
    const result: ReloadResult = { kept: [], resized: [], replaced: [], added: [], removed: [] };
    const nextPools = new Map<string, Pool>();
    const fresh: Pool[] = [];
    for (const p of planned) {
      const old = this.pools.get(p.key);
      const name = `${p.user.name}/${p.user.database}`;
      if (old && this.signatures.get(old) === p.signature) {
        const settings = settingsFor(next, p.db, p.user, old.settings.credential, tlsCa);
        const resized =
          settings.poolSize !== old.settings.poolSize ||
          settings.minPoolSize !== old.settings.minPoolSize;
        old.update(settings);
        (resized ? result.resized : result.kept).push(name);
        nextPools.set(p.key, old);
        continue;
      }
      const pool = this.create(next, p, tlsCa, nextPools);
      fresh.push(pool);
      if (old) {
        result.replaced.push(name);
        this.retire(old, "configuration changed");
      } else {
        result.added.push(name);
      }
    }
    for (const [key, old] of this.pools) {
      if (!nextPools.has(key)) {
        result.removed.push(old.name);
        this.retire(old, "removed from the configuration");
      }
    }
    this.pools = nextPools;
    this.config = next;
    this.generation++;
    await this.warm(fresh);
    return result;
  }

  /** Stops maintenance and checkouts; idle servers close now, leased ones on release. */
  drain(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const p of this.pools.values()) p.drain();
  }

  closeAll(reason: string): void {
    this.drain();
    for (const p of [...this.pools.values(), ...this.draining]) {
      p.closeAll(reason);
      this.releaseCredential(p);
    }
    this.draining.clear();
  }

  leasedCount(): number {
    let n = 0;
    for (const p of this.pools.values()) n += p.leased.size;
    return n;
  }

  /** Pools of `database` (client-facing name), or all. */
  select(database?: string): Pool[] {
    return [...this.pools.values()].filter(
      (p) => database === undefined || p.settings.database === database,
    );
  }

  snapshots(): PoolSnapshot[] {
    return [...this.pools.values()].map((p) => p.snapshot());
  }

  servers(): ServerSnapshot[] {
    return [...this.pools.values(), ...this.draining].flatMap((p) => p.servers());
  }

  // ---- internals ----------------------------------------------------------------------------

  private plan(config: Config): Planned[] {
    return config.users.map((user) => {
      const db = config.databases.find((d) => d.name === user.database);
      if (!db)
        throw new PgwardenError(
          "CONFIG",
          `user "${user.name}": database "${user.database}" is not defined`,
        );
      const identity = identityFor(user, db, this.env, config.vault);
      const g = config.general;
      const signature = JSON.stringify([
        db.host,
        db.port,
        db.database_name,
        user.server_user,
        user.pooler_mode,
        user.server_auth,
        identity?.key ?? user.server_password ?? null,
        g.tls_verify,
        g.tls_server_ca_certificate ?? null,
      ]);
      return { key: poolKey(user.name, user.database), user, db, identity, signature };
    });
  }

  private create(config: Config, p: Planned, tlsCa: Buffer | undefined, into = this.pools): Pool {
    let credential: CredentialSource = staticSecret(p.user);
    let entry: CredentialHandle | null = null;
    if (p.identity !== null) {
      const e = this.engine.acquire(p.identity.key, p.identity.make);
      entry = e;
      credential = {
        get: () => e.get(),
        invalidate: (rejected) => e.invalidate(rejected),
        // Every token source goes through login(): the connection records its generation.
        login: () => e.getLogin(),
        issuesUser: e.issuesUser,
        generation: () => e.currentGeneration,
      };
    }
    const pool = new Pool(settingsFor(config, p.db, p.user, credential, tlsCa), this.logger);
    into.set(p.key, pool);
    this.signatures.set(pool, p.signature);
    if (entry) this.credentials.set(pool, entry);
    return pool;
  }

  /** Takes a pool out of service: drains it, and lets its credential go once it is empty. */
  private retire(pool: Pool, reason: string): void {
    this.logger.info({ pool: pool.name, reason, leased: pool.leased.size }, "pool retired");
    pool.drain();
    this.signatures.delete(pool);
    if (pool.leased.size === 0 && pool.connecting === 0) this.releaseCredential(pool);
    else this.draining.add(pool);
  }

  private releaseCredential(pool: Pool): void {
    const entry = this.credentials.get(pool);
    if (entry) {
      this.credentials.delete(pool);
      this.engine.release(entry);
    }
  }

  private maintain(): void {
    const now = performance.now();
    for (const p of this.pools.values()) p.maintain(now);
    for (const p of this.draining) {
      if (p.leased.size === 0 && p.connecting === 0) {
        this.draining.delete(p);
        this.releaseCredential(p);
      }
    }
  }

  private async warm(pools: Pool[]): Promise<void> {
    const entries = new Set(
      pools.map((p) => this.credentials.get(p)).filter((e) => e !== undefined),
    );
    await Promise.allSettled([...entries].map((e) => e.get()));
    await Promise.all(pools.map((p) => p.warm()));
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

function readCa(config: Config): Buffer | undefined {
  const file = config.general.tls_server_ca_certificate;
  return file ? fileOf(config, file) : undefined;
}

function settingsFor(
  config: Config,
  db: DatabaseConfig,
  user: UserConfig,
  credential: CredentialSource,
  tlsCa: Buffer | undefined,
): PoolSettings {
  const g = config.general;
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
