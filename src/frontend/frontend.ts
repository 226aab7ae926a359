// Frontend: the listeners, the set of live client sessions, cancel routing and graceful
// shutdown. "0.0.0.0" (or "*") listens on every IPv4 address and, when the host has IPv6, on
// every IPv6 address too.

import { timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import net from "node:net";
import tls from "node:tls";
import type { Config } from "../config/index.js";
import type { PoolRegistry } from "../pool/index.js";
import type { Logger } from "../util/index.js";
import { ClientSession, type FrontendContext } from "./client-session.js";

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
  readonly sessions = new Map<number, ClientSession>();
  private readonly servers: net.Server[] = [];

  constructor(config: Config, registry: PoolRegistry, logger: Logger) {
    this.config = config;
    this.registry = registry;
    this.logger = logger;
    this.tlsContext = makeTlsContext(config);
  }

  register(session: ClientSession): boolean {
    if (this.sessions.size >= this.config.general.max_client_connections) return false;
    while (this.sessions.has(session.pid)) session.pid = (session.pid % 2147483646) + 1;
    this.sessions.set(session.pid, session);
    return true;
  }

  unregister(session: ClientSession): void {
    if (this.sessions.get(session.pid) === session) this.sessions.delete(session.pid);
  }

  cancel(pid: number, secret: number): void {
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
      server.listen(wildcard ? { port } : { host, port }, () => {
        server.removeListener("error", reject);
        resolve();
      });
    });
    server.on("error", (err) => this.logger.error({ err: err.message }, "listener error"));
    this.servers.push(server);
    const addr = server.address() as net.AddressInfo;
    return { host: addr.address, port: addr.port };
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
    cert: readFileSync(tls_certificate),
    key: readFileSync(tls_private_key),
  });
}
