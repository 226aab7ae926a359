// Frontend: the listeners, the set of live client sessions, cancel routing and graceful
// shutdown. "0.0.0.0" (or "*") listens on every IPv4 address and, when the host has IPv6, on
// every IPv6 address too.
//
// Every accepted connection is a session from its first moment, logged in or not, so
// max_client_connections bounds them all. The open-file limit bounds them too: when accept()
// runs out of file descriptors, libuv closes the connections waiting in the backlog without a
// word (its EMFILE "trick") and Node never hears of it. So pgwarden keeps clear of that limit:
// client connections are capped at the limit less every pool's server connections and a reserve
// (logged at start when that is below max_client_connections), and a connection over the cap is
// answered `FATAL 53300` and closed. Other listener errors are logged (at most once a second,
// with a count); the listener keeps listening.

import { Buffer } from "node:buffer";
import { randomInt, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import net from "node:net";
import { performance } from "node:perf_hooks";
import tls from "node:tls";
import { type Config, fileOf } from "../config/index.js";
import type { PoolRegistry } from "../pool/index.js";
import type { Logger } from "../util/index.js";
import { ClientSession, type FrontendContext } from "./client-session.js";
import { StatementRegistry } from "./prepared-statements.js";

export interface ClientView {
  readonly user: string;
  readonly database: string;
  readonly state: "active" | "idle" | "waiting" | "login";
  readonly addr: string;
  readonly port: number;
  readonly connectTime: number;
  readonly pid: number;
  readonly serverPid: number;
  readonly tls: boolean;
  readonly applicationName: string;
}

/**
 * Cancel routing across worker processes (workers > 1): the worker's index is written into the
 * low bits of every pid this worker hands out in BackendKeyData (as PgBouncer's peering writes
 * its peer_id into the cancel key), so whichever worker a CancelRequest reaches can tell the
 * owner and forward it there; the owner checks the secret as usual.
 */
export interface CancelRouting {
  readonly worker: number;
  forward(worker: number, pid: number, secret: number): void;
}

/** Bits of a client pid that name its worker: up to 128 workers. */
export const CANCEL_WORKER_BITS = 7;
const WORKER_MASK = (1 << CANCEL_WORKER_BITS) - 1;

/** The worker index a cancel key's pid names. */
export function cancelKeyWorker(pid: number): number {
  return pid & WORKER_MASK;
}

/** A random positive pid whose low bits name `worker`. */
export function workerPid(worker: number, random = randomInt(1, 2 ** 31 - 1)): number {
  const pid = (random & ~WORKER_MASK) | worker;
  return pid > 0 ? pid : (1 << CANCEL_WORKER_BITS) | worker;
}

export interface ListenAddress {
  host: string;
  port: number;
}

export class Frontend implements FrontendContext {
  config: Config;
  readonly registry: PoolRegistry;
  readonly logger: Logger;
  tlsContext: tls.SecureContext | null;
  shuttingDown = false;
  adminExecutor: ((sql: string) => Promise<Buffer[]>) | null = null;
  /** Set in a worker process (workers > 1); null with one process. */
  cancelRouting: CancelRouting | null = null;
  /** Bind with SO_REUSEPORT, each worker its own socket (workers > 1 on Node 22.12+). */
  reusePort = false;
  readonly sessions = new Map<number, ClientSession>();
  private readonly servers: net.Server[] = [];
  private acceptErrors = 0;
  private acceptErrorLoggedAt = Number.NEGATIVE_INFINITY;
  /** Client connections the open-file limit leaves room for (Infinity when unknown). */
  private fdCap = Number.POSITIVE_INFINITY;
  private fdRefused = 0;
  private fdRefusedLoggedAt = Number.NEGATIVE_INFINITY;

  /** Named prepared statements of transaction-pooled clients, instance-wide (design §5). */
  readonly statements: StatementRegistry;

  constructor(
    config: Config,
    registry: PoolRegistry,
    logger: Logger,
    statements = new StatementRegistry(config.general.prepared_statements_limit),
  ) {
    this.statements = statements;
    this.config = config;
    this.registry = registry;
    this.logger = logger;
    this.tlsContext = makeTlsContext(config);
  }

  register(session: ClientSession): boolean {
    if (this.sessions.size >= this.config.general.max_client_connections) return false;
    if (this.sessions.size >= this.fdCap) {
      this.fdRefused++;
      const now = performance.now();
      if (now - this.fdRefusedLoggedAt >= 1000) {
        this.fdRefusedLoggedAt = now;
        this.logger.warn(
          { refused: this.fdRefused, sessions: this.sessions.size, cap: this.fdCap },
          "client connection refused: the open-file limit leaves no room for more (raise `ulimit -n`)",
        );
        this.fdRefused = 0;
      }
      return false;
    }
    const routing = this.cancelRouting;
    if (routing !== null) {
      session.pid = workerPid(routing.worker, session.pid);
      while (this.sessions.has(session.pid)) session.pid = workerPid(routing.worker);
    }
    while (this.sessions.has(session.pid)) session.pid = (session.pid % 2147483646) + 1;
    this.sessions.set(session.pid, session);
    return true;
  }

  unregister(session: ClientSession): void {
    if (this.sessions.get(session.pid) === session) this.sessions.delete(session.pid);
  }

  cancel(pid: number, secret: number): void {
    const routing = this.cancelRouting;
    if (routing !== null && cancelKeyWorker(pid) !== routing.worker) {
      this.logger.info(
        { to_worker: cancelKeyWorker(pid) },
        "cancel request routed to the worker that owns the key",
      );
      routing.forward(cancelKeyWorker(pid), pid, secret);
      return;
    }
    const s = this.sessions.get(pid);
    const a = Buffer.alloc(4);
    const b = Buffer.alloc(4);
    a.writeInt32BE(secret);
    b.writeInt32BE(s?.secret ?? ~secret);
    if (!s || !timingSafeEqual(a, b)) {
      this.logger.info({ pid }, "cancel request with unknown key ignored");
      return;
    }
    this.logger.info(
      { user: s.user, database: s.database, backend_pid: s.serverPid },
      "cancel request forwarded",
    );
    s.cancelQuery();
  }

  /**
   * Starts listening; resolves with the bound address. "0.0.0.0", "*" or "::" listen without a
   * host, which Node binds dual-stack (every IPv6 and, mapped, every IPv4 address), or IPv4
   * only on a host without IPv6.
   */
  async listen(): Promise<ListenAddress> {
    const { host, port } = this.config.general;
    const wildcard = host === "0.0.0.0" || host === "*" || host === "::";
    const server = net.createServer({ noDelay: true }, (socket) => new ClientSession(socket, this));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      // exclusive + reusePort: a worker binds its own socket instead of sharing the primary's.
      const shared = this.reusePort ? { reusePort: true, exclusive: true } : {};
      server.listen(wildcard ? { port, ...shared } : { host, port, ...shared }, () => {
        server.removeListener("error", reject);
        resolve();
      });
    });
    server.on("error", (err) => this.listenerError(err as NodeJS.ErrnoException));
    this.servers.push(server);
    this.fdCap = this.clientRoom();
    const addr = server.address() as net.AddressInfo;
    return { host: addr.address, port: addr.port };
  }

  /**
   * How many client connections fit under the open-file limit, next to every pool's server
   * connections and a reserve (server logins, cancel requests, metrics, Node's own descriptors);
   * warns when that is below max_client_connections.
   */
  private clientRoom(): number {
    const limit = openFileLimit();
    if (limit === null) return Number.POSITIVE_INFINITY;
    const { config } = this;
    const servers = config.users.reduce((n, u) => n + u.pool_size, 0);
    const room = Math.max(1, limit - servers - FD_RESERVE);
    if (room < config.general.max_client_connections) {
      this.logger.warn(
        {
          open_file_limit: limit,
          max_client_connections: config.general.max_client_connections,
          server_connections: servers,
          client_connections_allowed: room,
        },
        "the open-file limit is below max_client_connections plus the pools' server connections: clients past the room left are refused with 53300 (raise `ulimit -n` or lower max_client_connections)",
      );
    }
    return room;
  }

  private listenerError(err: NodeJS.ErrnoException): void {
    this.acceptErrors++;
    const now = performance.now();
    if (now - this.acceptErrorLoggedAt < 1000) return;
    this.acceptErrorLoggedAt = now;
    const out_of_fds = err.code === "EMFILE" || err.code === "ENFILE";
    this.logger.error(
      {
        err: err.message,
        code: err.code,
        errors_since_last_log: this.acceptErrors,
        sessions: this.sessions.size,
        max_client_connections: this.config.general.max_client_connections,
      },
      out_of_fds
        ? "accept failed: out of file descriptors (lower max_client_connections or raise the open-file limit); still listening"
        : "listener error; still listening",
    );
    this.acceptErrors = 0;
  }

  /** One row per client for SHOW CLIENTS (taken on demand). */
  clientSnapshots(): ClientView[] {
    return [...this.sessions.values()].map((c) => c.view());
  }

  clientCounts(): { total: number; byState: Record<string, number> } {
    const byState: Record<string, number> = {};
    for (const c of this.sessions.values()) byState[c.stateName] = (byState[c.stateName] ?? 0) + 1;
    return { total: this.sessions.size, byState };
  }

  /** Loads the client TLS certificate of `config` (throws on a bad file), without applying it. */
  static tlsContextFor(config: Config): tls.SecureContext | null {
    return makeTlsContext(config);
  }

  /** A reload was applied: new config for logins, new client certificate, sessions follow. */
  applyConfig(config: Config, tlsContext: tls.SecureContext | null): void {
    this.config = config;
    this.statements.limit = config.general.prepared_statements_limit;
    if (this.servers.length > 0) this.fdCap = this.clientRoom();
    this.tlsContext = tlsContext;
    for (const s of this.sessions.values()) s.afterReload();
  }

  /** Stops accepting; idle clients are closed now, busy ones when their transaction ends. */
  stopAccepting(): void {
    this.shuttingDown = true;
    for (const s of this.servers) s.close();
    for (const session of [...this.sessions.values()]) session.requestClose();
  }

  /** Waits until every client is gone, or `timeoutMs` passed; then closes the rest. */
  async drainClients(timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (this.sessions.size > 0 && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const session of [...this.sessions.values()]) session.forceClose();
  }
}

function makeTlsContext(config: Config): tls.SecureContext | null {
  const { tls_certificate, tls_private_key } = config.general;
  if (!tls_certificate || !tls_private_key) return null;
  return tls.createSecureContext({
    cert: fileOf(config, tls_certificate),
    key: fileOf(config, tls_private_key),
  });
}

/** Descriptors kept free of client connections. */
const FD_RESERVE = 64;

/** The soft limit on open files of this process (Linux), or null when unknown. */
function openFileLimit(): number | null {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync("/proc/self/limits", "utf8"));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}
