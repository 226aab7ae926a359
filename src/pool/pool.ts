// Pool: the server connections of one (user, database) pair.
//
// Model: a server connection is idle (on the `idle` stack, LIFO so that the busiest connections
// stay warm and the others age out by idle_timeout), leased (in `leased`, attached to exactly
// one client through a Lease), or being opened (`connecting` count). Clients that find no idle
// server wait in a FIFO queue with their own checkout_timeout; every connection that becomes
// free (released clean, or newly opened) goes to the head waiter first (its LeaseHolder is
// called back: no promise, no timer and no object per wait; one timer per pool, set for the head
// waiter's deadline, ends waits past checkout_timeout, and a waiter that leaves just drops its
// ticket, so its queue entry is skipped when reached). Capacity is
// idle + leased + connecting <= pool_size, and opens are started for waiters that no open in
// flight will serve. An idle server that closes or says anything is dropped at once (backend
// closes it), and one that sent bytes after the ReadyForQuery that released it is not reused.
//
// A failed open is judged by its cause. Permanent (the server refused the credential, no such
// database, TLS or credential-provider trouble): it rejects a waiter with that cause, fail fast.
// Transient (connection refused or reset, connect_timeout, the server starting up or shutting
// down, too many connections): the pool is `down`; waiters keep waiting, each until its own
// checkout_timeout (whose error then names the last connect failure), and while any waits one
// probe open at a time is retried with capped exponential backoff and jitter. The first open
// that succeeds ends `down` and opens for every waiter still unserved. So a server restart
// costs waiting clients a delay, not an error, and a dead server never sees a hot loop.
//
// Maintenance (driven by the registry's timer) closes servers past idle_timeout (down to
// min_pool_size) or past server_lifetime, and refills to min_pool_size with its own exponential
// backoff after failures. A connection whose credential carries a deadline (a Vault dynamic
// lease) is retired once its source holds a newer credential, or at its retireAt at the latest:
// idle ones close at once (maintenance, checkout), leased ones when released, so that none
// outlives its role; replacements log in with the new credential. Draining (config change, shutdown) stops checkouts; leased servers
// close when released.

import type { Buffer } from "node:buffer";
import { performance } from "node:perf_hooks";
import type { ServerConnection, ServerOptions, TlsMode } from "../backend/index.js";
import { ServerConnection as Server } from "../backend/index.js";
import type { PoolerMode } from "../config/index.js";
import type { Login } from "../credentials/index.js";
import {
  errorMessage,
  isAuthFailure,
  type Logger,
  PgError,
  PgwardenError,
  Queue,
} from "../util/index.js";
import { Lease, type LeaseHolder } from "./lease.js";
import { LoginParams } from "./login-params.js";
import type { PoolSnapshot, ServerSnapshot } from "./snapshot.js";

export interface PoolSettings {
  /** The client-facing user and database of this pool. */
  readonly user: string;
  readonly database: string;
  readonly host: string;
  readonly port: number;
  readonly serverDatabase: string;
  readonly serverUser: string;
  readonly poolSize: number;
  readonly minPoolSize: number;
  readonly mode: PoolerMode;
  readonly idleTimeout: number;
  readonly serverLifetime: number;
  readonly checkoutTimeout: number;
  readonly connectTimeout: number;
  readonly tlsMode: TlsMode;
  readonly tlsCa: Buffer | undefined;
  readonly credential: CredentialSource;
}

/**
 * Where a pool's server logins get their secret. `invalidate` (token sources) is told when the
 * server rejected a secret; it resolves with a replacement, and the login is retried once.
 */
export interface CredentialSource {
  get(): Promise<string>;
  invalidate?(rejected: string): Promise<string>;
  /**
   * Sources whose credential names the login user and may carry a deadline (Vault): the pool
   * asks for the whole login before it connects, and records its generation and retireAt on
   * the connection.
   */
  login?(): Promise<Login>;
  /** login() names the user: fetch it before connecting (else it is fetched when the server asks). */
  readonly issuesUser?: boolean;
  /** The generation held now: connections with a deadline and an older one are retired. */
  generation?(): number;
}

/** Backoff between probe opens while the server is down: 50-100 ms first, then up to 1-2 s. */
const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 2000;

/**
 * Connect failures that say "not now" rather than "never": the server is down, restarting or
 * full. Everything else (credentials refused, unknown database, TLS setup, credential provider,
 * protocol trouble) is permanent for the waiting client.
 */
export function isTransientConnectFailure(err: unknown): boolean {
  if (err instanceof PgError) return ["57P01", "57P02", "57P03", "53300"].includes(err.sqlstate);
  if (!(err instanceof PgwardenError)) return false;
  const cause = (err.cause as NodeJS.ErrnoException | undefined)?.code;
  switch (err.code) {
    case "SERVER_CONNECT":
      // A name that does not resolve is a configuration error; EAI_AGAIN is a DNS hiccup.
      return cause !== "ENOTFOUND";
    case "SERVER_CONNECT_TIMEOUT":
      return true;
    case "SERVER_TLS":
      // The server went away during the handshake, as opposed to a certificate problem.
      return cause === "ECONNRESET" || cause === "EPIPE" || cause === "ECONNREFUSED";
    default:
      return false;
  }
}

/**
 * The leased servers of a pool: an array in which each server knows its slot
 * (ServerConnection.leasedSlot; a server belongs to one pool), so that a lease and a release
 * cost a store or two each, not a Map's hashing and rehashing.
 */
export class LeasedServers {
  private readonly list: ServerConnection[] = [];

  get size(): number {
    return this.list.length;
  }

  add(server: ServerConnection): void {
    if (server.leasedSlot >= 0) return;
    server.leasedSlot = this.list.length;
    this.list.push(server);
  }

  delete(server: ServerConnection): void {
    const i = server.leasedSlot;
    if (i < 0 || this.list[i] !== server) return;
    const last = this.list.pop()!;
    if (last !== server) {
      this.list[i] = last;
      last.leasedSlot = i;
    }
    server.leasedSlot = -1;
  }

  /** A copy: the caller may lease or release while it goes through them. */
  keys(): ServerConnection[] {
    return this.list.slice();
  }
}

/** Wait tickets, unique in the process (a holder may wait in one pool, then in another). */
let nextTicket = 1;

export class Pool {
  readonly name: string;
  settings: PoolSettings;
  readonly idle: ServerConnection[] = [];
  readonly leased = new LeasedServers();
  connecting = 0;
  /** Waiting holders in arrival order, each with the ticket it waits under and since when. */
  private readonly waitHolders = new Queue<LeaseHolder>();
  private readonly waitTickets = new Queue<number>();
  private readonly waitSince = new Queue<number>();
  /** Holders really waiting (queue entries whose ticket is still their holder's). */
  private live = 0;
  private waitTimer: NodeJS.Timeout | null = null;
  private draining = false;
  private paused = false;
  private pauseWaiters: Array<() => void> = [];
  private failures = 0;
  private nextRefillAt = 0;
  /** The last open failed transiently and none succeeded since. */
  private down = false;
  private lastConnectError: Error | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryRound = 0;
  readonly logger: Logger;
  /** What this pool's servers report at login, for logins that need no server (login-params.ts). */
  readonly loginParams = new LoginParams();
  readonly stats = {
    totalXact: 0,
    totalQuery: 0,
    totalWaitMs: 0,
    checkouts: 0,
    connectFailures: 0,
  };

  constructor(settings: PoolSettings, logger: Logger) {
    this.settings = settings;
    this.name = `${settings.user}/${settings.database}`;
    this.logger = logger;
  }

  get size(): number {
    return this.idle.length + this.leased.size + this.connecting;
  }

  get waiting(): number {
    return this.live;
  }

  get isDraining(): boolean {
    return this.draining;
  }

  /**
   * A lease on a server connection for `holder`, at once when an idle server is at hand (the
   * common case on the hot path). Otherwise null: the holder waits, and exactly one of its
   * leaseGranted / leaseFailed is called later (never from within this call), unless it
   * leaves first (cancelWait). Throws POOL_CLOSED when the pool is draining.
   */
  acquire(holder: LeaseHolder): Lease | null {
    if (this.draining) {
      throw new PgwardenError("POOL_CLOSED", `pool ${this.name} is shutting down`, {
        pool: this.name,
      });
    }
    this.stats.checkouts++;
    const server = this.paused ? null : this.popIdle();
    if (server !== null) return this.lease(server, holder);
    const ticket = nextTicket++;
    holder.poolTicket = ticket;
    this.waitHolders.push(holder);
    this.waitTickets.push(ticket);
    this.waitSince.push(performance.now());
    this.live++;
    this.armWaitTimer();
    this.openForWaiters();
    return null;
  }

  /** Takes the head waiter off the queue (skipping those that left); null when none waits. */
  private nextWaiter(now: number): LeaseHolder | null {
    for (;;) {
      const holder = this.waitHolders.shift();
      if (holder === undefined) return null;
      const ticket = this.waitTickets.shift()!;
      const since = this.waitSince.shift()!;
      if (holder.poolTicket !== ticket) continue;
      holder.poolTicket = 0;
      this.live--;
      this.stats.totalWaitMs += now - since;
      return holder;
    }
  }

  /** One timer per pool, for the head waiter's checkout_timeout (FIFO: the earliest deadline). */
  private armWaitTimer(): void {
    if (this.waitTimer !== null || this.live === 0) return;
    const timeout = this.settings.checkoutTimeout;
    const since = this.waitSince.peek();
    if (timeout <= 0 || since === undefined) return;
    const delay = Math.max(1, since + timeout - performance.now());
    this.waitTimer = setTimeout(() => this.expireWaiters(), delay);
  }

  private expireWaiters(): void {
    this.waitTimer = null;
    const timeout = this.settings.checkoutTimeout;
    const now = performance.now();
    for (;;) {
      const holder = this.waitHolders.peek();
      if (holder === undefined) break;
      const live = holder.poolTicket === this.waitTickets.peek();
      if (live && (timeout <= 0 || now - this.waitSince.peek()! < timeout)) break;
      if (!live) {
        this.waitHolders.shift();
        this.waitTickets.shift();
        this.waitSince.shift();
        continue;
      }
      this.nextWaiter(now)!.leaseFailed(this.checkoutTimeoutError(timeout));
    }
    this.armWaitTimer();
  }

  /** While the server is down, the wait ends as a connection failure naming its cause. */
  private checkoutTimeoutError(ms: number): PgwardenError {
    const what = `no server connection available in pool "${this.name}" within checkout_timeout (${ms} ms)`;
    const last = this.down ? this.lastConnectError : null;
    if (last === null) return new PgwardenError("CHECKOUT_TIMEOUT", what, { pool: this.name });
    return new PgwardenError(
      "SERVER_CONNECT",
      `${what}: last connect error: ${errorMessage(last)}`,
      { pool: this.name },
      last,
    );
  }

  /** Forgets a waiter whose client went away (its queue entry is skipped when reached). */
  cancelWait(holder: LeaseHolder): void {
    if (holder.poolTicket === 0) return;
    holder.poolTicket = 0;
    this.live--;
    // Many left while the head still waits: drop their entries now.
    if (this.waitHolders.length > 2 * this.live + 64) this.compactWaiters();
  }

  private compactWaiters(): void {
    const n = this.waitHolders.length;
    for (let i = 0; i < n; i++) {
      const holder = this.waitHolders.shift()!;
      const ticket = this.waitTickets.shift()!;
      const since = this.waitSince.shift()!;
      if (holder.poolTicket !== ticket) continue;
      this.waitHolders.push(holder);
      this.waitTickets.push(ticket);
      this.waitSince.push(since);
    }
  }

  /**
   * Called by Lease.release. `clean`: the server is idle and fit for another client. `reset`:
   * run DISCARD ALL first (session pooling).
   */
  release(lease: Lease, clean: boolean, reset: boolean): void {
    const server = lease.server;
    this.leased.delete(server);
    server.detach();
    const oversize = this.size + 1 > this.settings.poolSize; // +1: the server being released
    const now = performance.now();
    if (
      !clean ||
      server.closed ||
      server.prepared?.poisoned === true ||
      server.moreAfterReady ||
      this.draining ||
      oversize ||
      now - server.createdAt > this.settings.serverLifetime ||
      (server.retireAt !== null && this.mustRetire(server, now))
    ) {
      this.discard(
        server,
        server.retireAt !== null && this.mustRetire(server, now)
          ? "its credential is retired (lease ending)"
          : !clean
            ? "released unclean (client left mid-transaction or server state unknown)"
            : server.prepared?.poisoned === true
              ? "its prepared statements are unknown (a client left with replies owed)"
              : server.moreAfterReady
                ? "server sent data nobody asked for after ReadyForQuery"
                : "released",
      );
      this.afterLoss();
      return;
    }
    if (reset) {
      this.leased.add(server); // still unavailable while resetting
      server.query("DISCARD ALL").then(
        () => {
          this.leased.delete(server);
          server.applied.clear();
          server.settingsStamp = 0;
          // DISCARD ALL dropped every prepared statement: forget any that were tracked on it.
          server.prepared?.dispose();
          server.prepared = null;
          this.handOut(server);
        },
        (err: unknown) => {
          this.leased.delete(server);
          this.discard(server, `reset failed: ${errorMessage(err)}`);
          this.afterLoss();
        },
      );
      return;
    }
    this.handOut(server, now);
  }

  /** Opens connections up to min_pool_size; resolves when those attempts have settled. */
  async warm(): Promise<void> {
    const attempts: Array<Promise<unknown>> = [];
    while (this.size < this.settings.minPoolSize) attempts.push(this.open());
    await Promise.allSettled(attempts);
  }

  /** Periodic upkeep: idle_timeout, server_lifetime, min_pool_size. */
  maintain(now = performance.now()): void {
    if (this.draining) return;
    const { idleTimeout, serverLifetime, minPoolSize } = this.settings;
    for (let i = 0; i < this.idle.length; ) {
      const s = this.idle[i]!;
      const expired = s.ageMs > serverLifetime;
      const retired = this.mustRetire(s, now);
      const idleTooLong = idleTimeout > 0 && s.idleMs > idleTimeout && this.size > minPoolSize;
      if (expired || retired || idleTooLong) {
        this.idle.splice(i, 1);
        this.discard(
          s,
          expired
            ? "server_lifetime reached"
            : retired
              ? "its credential is retired (lease ending)"
              : "idle_timeout reached",
        );
      } else {
        i++;
      }
    }
    if (now >= this.nextRefillAt) {
      while (this.size < minPoolSize) void this.open().catch(() => {});
    }
  }

  /**
   * New sizes and timeouts from a reload, applied in place: the pool keeps its servers. A smaller
   * pool closes idle servers now and leased ones as they come back; a larger min_pool_size is
   * reached by maintenance.
   */
  update(settings: PoolSettings): void {
    this.settings = settings;
    while (this.size > settings.poolSize && this.idle.length > 0)
      this.discard(this.idle.shift()!, "pool_size reduced");
  }

  /** Stops checkouts, closes idle servers now and leased ones as they come back. */
  drain(): void {
    if (this.draining) return;
    this.draining = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    for (const s of this.idle.splice(0)) this.discard(s, "pool drained");
    if (this.waitTimer !== null) clearTimeout(this.waitTimer);
    this.waitTimer = null;
    const now = performance.now();
    for (let h = this.nextWaiter(now); h !== null; h = this.nextWaiter(now)) {
      h.leaseFailed(
        new PgwardenError("POOL_CLOSED", `pool ${this.name} is shutting down`, { pool: this.name }),
      );
    }
  }

  /** Closes everything now, leased servers included (their clients get an error). */
  closeAll(reason: string): void {
    this.drain();
    for (const s of [...this.leased.keys()]) s.close(reason);
  }

  /** Closes idle servers now and leased ones when they are released (RECONNECT). */
  reconnect(): void {
    for (const s of this.idle.splice(0)) this.discard(s, "reconnect requested");
    for (const s of this.leased.keys()) s.markForClose = true;
  }

  snapshot(): PoolSnapshot {
    let maxWaitMs = 0;
    const waiting = this.live;
    const now = performance.now();
    for (let i = 0; i < this.waitHolders.length; i++) {
      if (this.waitHolders.at(i)!.poolTicket !== this.waitTickets.at(i)) continue;
      maxWaitMs = now - this.waitSince.at(i)!; // the head live waiter waited longest
      break;
    }
    const s = this.settings;
    return {
      user: s.user,
      database: s.database,
      mode: s.mode,
      poolSize: s.poolSize,
      minPoolSize: s.minPoolSize,
      host: s.host,
      port: s.port,
      serverDatabase: s.serverDatabase,
      serverUser: s.serverUser,
      clActive: this.leased.size,
      clWaiting: waiting,
      svActive: this.leased.size,
      svIdle: this.idle.length,
      svConnecting: this.connecting,
      maxWaitMs,
      paused: this.paused,
      ...this.stats,
    };
  }

  servers(): ServerSnapshot[] {
    const s = this.settings;
    const row = (c: ServerConnection, state: "active" | "idle"): ServerSnapshot => ({
      user: s.user,
      database: s.database,
      state,
      host: s.host,
      port: s.port,
      backendPid: c.pid,
      connectTime: c.connectedAtWall,
      tls: c.tls,
      serverUser: c.opts.user,
      credentialGeneration: c.credentialGeneration,
      retireAt: c.retireAt === null ? null : Date.now() + (c.retireAt - performance.now()),
    });
    return [
      ...[...this.leased.keys()].map((c) => row(c, "active")),
      ...this.idle.map((c) => row(c, "idle")),
    ];
  }

  /**
   * PAUSE: no new transaction gets a server; resolves once every leased server is back (the
   * running transactions finished). Clients that arrive meanwhile wait, as in PgBouncer.
   */
  pause(): Promise<void> {
    this.paused = true;
    if (this.leased.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.pauseWaiters.push(resolve));
  }

  /** RESUME: waiting clients get servers again. */
  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    while (this.live > 0) {
      const server = this.popIdle();
      if (server === null) break;
      this.handOut(server);
    }
    this.openForWaiters();
  }

  // ---- internals ----------------------------------------------------------------------------

  private popIdle(): ServerConnection | null {
    while (this.idle.length > 0) {
      const s = this.idle.pop()!;
      if (s.closed) continue;
      if (s.ageMs > this.settings.serverLifetime) {
        this.discard(s, "server_lifetime reached");
        continue;
      }
      if (s.retireAt !== null && this.mustRetire(s, performance.now())) {
        this.discard(s, "its credential is retired (lease ending)");
        continue;
      }
      return s;
    }
    return null;
  }

  /**
   * A connection opened with a deadline credential goes once a newer credential is held (so
   * retirements spread over the rest of the lease) or at its retireAt at the latest.
   */
  private mustRetire(server: ServerConnection, now: number): boolean {
    if (server.retireAt === null) return false;
    if (now >= server.retireAt) return true;
    const gen = this.settings.credential.generation?.() ?? 0;
    return gen > server.credentialGeneration;
  }

  private lease(server: ServerConnection, holder: LeaseHolder): Lease {
    this.leased.add(server);
    return new Lease(this, server, holder);
  }

  /** Gives a free server to the head waiter, or puts it on the idle stack. */
  private handOut(server: ServerConnection, now = performance.now()): void {
    if (server.closed) {
      // It died between release and now (e.g. during DISCARD ALL's round trip).
      this.afterLoss();
      return;
    }
    if (server.markForClose) {
      this.discard(server, "reconnect requested");
      this.afterLoss();
      return;
    }
    if (this.paused) {
      server.lastReleasedAt = performance.now();
      this.idle.push(server);
      this.checkPaused();
      return;
    }
    const holder = this.nextWaiter(now);
    if (holder !== null) {
      holder.leaseGranted(this.lease(server, holder));
      return;
    }
    server.lastReleasedAt = now;
    this.idle.push(server);
  }

  private checkPaused(): void {
    if (!this.paused || this.leased.size > 0) return;
    const waiters = this.pauseWaiters;
    this.pauseWaiters = [];
    for (const w of waiters) w();
  }

  /** After a server is gone: open a replacement if clients are waiting for one. */
  private afterLoss(): void {
    this.checkPaused();
    this.openForWaiters();
  }

  /**
   * Opens connections for the waiters that no open in flight will serve, within pool_size.
   * While the server is down only one probe is in flight, started by the retry timer (or at
   * once when no retry is pending).
   */
  private openForWaiters(): void {
    if (this.draining || this.paused) return;
    const room = this.settings.poolSize - this.size;
    if (room <= 0) return;
    const live = this.live;
    if (this.down) {
      if (this.retryTimer === null && this.connecting === 0 && live > 0)
        void this.open().catch(() => {});
      return;
    }
    const need = Math.min(room, live - this.connecting);
    for (let i = 0; i < need; i++) void this.open().catch(() => {});
  }

  /** One probe open after a backoff, while clients wait and the server is down. */
  private scheduleRetry(): void {
    if (this.retryTimer !== null || this.draining || this.live === 0) return;
    const base = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.min(this.retryRound, 10));
    this.retryRound++;
    const delay = base / 2 + Math.random() * (base / 2);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.openForWaiters();
    }, delay);
    this.retryTimer.unref();
  }

  private discard(server: ServerConnection, reason: string): void {
    server.onClose = null;
    server.close(reason);
  }

  private open(): Promise<ServerConnection> {
    this.connecting++;
    const s = this.settings;
    const attempt = this.connectWithRetry();
    attempt.then(
      (server) => {
        this.connecting--;
        this.failures = 0;
        const wasDown = this.down;
        this.down = false;
        this.lastConnectError = null;
        this.retryRound = 0;
        if (wasDown)
          this.logger.info(
            { pool: this.name, host: s.host, port: s.port },
            "server reachable again",
          );
        if (this.draining) {
          this.discard(server, "pool drained");
          return;
        }
        server.onClose = (dead) => this.onServerClosed(dead);
        this.loginParams.noteServer(server.baseline);
        this.handOut(server);
        // Waiters whose opens failed while the server was down get theirs now.
        if (wasDown) this.openForWaiters();
      },
      (err: unknown) => {
        this.connecting--;
        this.failures++;
        this.stats.connectFailures++;
        this.nextRefillAt =
          performance.now() + Math.min(30_000, 250 * 2 ** Math.min(this.failures, 7));
        const transient = isTransientConnectFailure(err);
        this.logger.warn(
          { pool: this.name, host: s.host, port: s.port, err: errorMessage(err), transient },
          "server connect failed",
        );
        if (transient) {
          // Waiters keep waiting (each up to its checkout_timeout) while a probe is retried.
          this.down = true;
          this.lastConnectError = err as Error;
          this.scheduleRetry();
          return;
        }
        this.down = false;
        // The open was for a waiter (or for min_pool_size): fail the head waiter with the cause,
        // unless other opens in flight will serve it.
        if (this.live > this.connecting)
          this.nextWaiter(performance.now())?.leaseFailed(err as Error);
        // Waiters left without an open (it was down until now) get their own, to fail fast too.
        this.openForWaiters();
      },
    );
    return attempt;
  }

  /** One login; if the server rejects the secret and the source can replace it, one retry. */
  private async connectWithRetry(): Promise<ServerConnection> {
    const s = this.settings;
    const cred = s.credential;
    const getLogin = cred.login?.bind(cred);
    if (getLogin !== undefined && cred.issuesUser === true) return this.connectWithLogin(getLogin);
    let used: string | undefined;
    let login: Login | undefined;
    const opts: ServerOptions = {
      host: s.host,
      port: s.port,
      database: s.serverDatabase,
      user: s.serverUser,
      getCredential: () =>
        getLogin !== undefined
          ? getLogin().then((l) => {
              login = l;
              used = l.secret;
              return l.secret;
            })
          : cred.get().then((secret) => {
              used = secret;
              return secret;
            }),
      connectTimeout: s.connectTimeout,
      tlsMode: s.tlsMode,
      tlsCa: s.tlsCa,
      logger: this.logger,
      label: this.name,
    };
    const remember = (server: ServerConnection) => {
      if (login !== undefined) {
        server.credentialGeneration = login.generation;
        server.retireAt = login.retireAt;
      }
      return server;
    };
    try {
      return remember(await Server.connect(opts));
    } catch (err) {
      if (!isAuthFailure(err) || used === undefined || cred.invalidate === undefined) throw err;
      this.logger.warn(
        { pool: this.name, err: errorMessage(err) },
        "server rejected the credential; retrying once with a fresh one",
      );
      const fresh = await cred.invalidate(used);
      login = undefined;
      return remember(
        await Server.connect({
          ...opts,
          getCredential: () =>
            getLogin !== undefined
              ? getLogin().then((l) => {
                  login = l;
                  return l.secret;
                })
              : Promise.resolve(fresh),
        }),
      );
    }
  }

  /**
   * For sources that name the user (Vault): the login is fetched first (the user goes into the
   * StartupMessage), and the connection remembers which credential it used and its deadline.
   * A rejected credential is replaced once, as in connectWithRetry.
   */
  private async connectWithLogin(getLogin: () => Promise<Login>): Promise<ServerConnection> {
    const s = this.settings;
    const cred = s.credential;
    const open = async (login: Login) => {
      const server = await Server.connect({
        host: s.host,
        port: s.port,
        database: s.serverDatabase,
        user: login.user ?? s.serverUser,
        getCredential: () => Promise.resolve(login.secret),
        connectTimeout: s.connectTimeout,
        tlsMode: s.tlsMode,
        tlsCa: s.tlsCa,
        logger: this.logger,
        label: this.name,
      });
      server.credentialGeneration = login.generation;
      server.retireAt = login.retireAt;
      return server;
    };
    let login: Login;
    try {
      login = await getLogin();
    } catch (err) {
      throw err instanceof PgwardenError
        ? err
        : new PgwardenError(
            "CREDENTIAL",
            `could not get credential: ${errorMessage(err)}`,
            { pool: this.name },
            err,
          );
    }
    try {
      return await open(login);
    } catch (err) {
      if (!isAuthFailure(err) || cred.invalidate === undefined) throw err;
      this.logger.warn(
        { pool: this.name, err: errorMessage(err), credential_generation: login.generation },
        "server rejected the credential; retrying once with a fresh one",
      );
      await cred.invalidate(login.secret);
      return open(await getLogin());
    }
  }

  private onServerClosed(server: ServerConnection): void {
    const i = this.idle.indexOf(server);
    if (i >= 0) this.idle.splice(i, 1);
    this.leased.delete(server);
    this.afterLoss();
  }
}
