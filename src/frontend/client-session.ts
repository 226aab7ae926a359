// ClientSession: one client connection, from its first byte to its close.
//
// States: STARTUP (SSLRequest / GSSENCRequest / CancelRequest / StartupMessage) → AUTH (the
// configured exchange) → LOGIN (a server is leased to learn the settings the client will see
// and to apply the client's own) → READY → CLOSED. DENIED: a failed login waiting out
// auth_failure_delay. A session exists from accept() on: it counts towards
// max_client_connections, and client_login_timeout closes it if it has not authenticated in time.
//
// The front door hides who exists: an unknown user (or one asking for the admin console) runs
// the same password exchange as a real one and gets the same 28P01; an unknown database is
// reported only once the client has proved its password (as PostgreSQL does). In transaction
// pooling, a client whose shape of settings the pool has welcomed before is logged in from the
// pool's remembered server parameters (pool/login-params.ts), without a server: a saturated
// pool still admits clients at once.
//
// In READY every client byte is scanned once, as it arrives, by a framer that watches message
// headers only: Query/Sync/FunctionCall each owe one ReadyForQuery, extended-protocol messages
// sent since the last Sync make the client "mid-batch", Terminate ends the session, and a header
// of an unknown type or a length PostgreSQL would refuse (or above max_message_size) is a
// protocol violation: FATAL 08P01, before any of that message reaches a server. Scanned bytes go
// to the leased server at once. In transaction pooling the lease is given back when a
// ReadyForQuery reports idle, no ReadyForQuery is still owed, nothing was sent since the last
// Sync, and no message is half sent. A client without a lease that sends bytes is paused, its
// (already scanned) bytes kept, until the pool leases it a server (and its settings are synced
// onto it); then they flow as usual. In session pooling the lease lives as long as the client
// and is reset with DISCARD ALL on the way back.
//
// Nothing a client sends may throw past this class: every entry point (socket data, a lease that
// arrives, settings synced) catches, answers the client with a FATAL and closes it, and a lease
// that saw part of a broken stream is discarded, not reused. Only PgError is written to the
// client; other failures become a generic FATAL and are logged.

import { Buffer } from "node:buffer";
import { randomInt } from "node:crypto";
import type net from "node:net";
import tls from "node:tls";
import type { Config } from "../config/index.js";
import {
  type Lease,
  type LeaseHolder,
  type Pool,
  type PoolRegistry,
  reportedAsGiven,
  settingsStamp,
  shapeKey,
  TRACKED_REPORTED,
  wantedSettings,
} from "../pool/index.js";
import {
  authenticationOk,
  backendKeyData,
  EVENT_HEADER,
  EVENT_MESSAGE,
  errorResponse,
  FRAME_HEADER,
  Framer,
  frameModes,
  MessageBuffer,
  Msg,
  parameterStatus,
  parseStartupPacket,
  readyForQuery,
  TxStatus,
} from "../protocol/index.js";
import { errorMessage, type Logger, PgError, PgwardenError, SocketIO } from "../util/index.js";
import { ClientAuth } from "./client-auth.js";
import type { ServerStatements, StatementRegistry } from "./prepared-statements.js";
import { StatementRewriter } from "./statement-rewriter.js";

export interface FrontendContext {
  readonly config: Config;
  readonly registry: PoolRegistry;
  /** Named prepared statements, instance-wide (transaction pooling, design §5). */
  readonly statements: StatementRegistry;
  readonly tlsContext: tls.SecureContext | null;
  readonly logger: Logger;
  readonly shuttingDown: boolean;
  /** Counts a new connection; false when max_client_connections is reached. */
  register(session: ClientSession): boolean;
  unregister(session: ClientSession): void;
  cancel(pid: number, secret: number): void;
  /** Runs one admin-console query string; returns the messages to send (no ReadyForQuery). */
  readonly adminExecutor: ((sql: string) => Promise<Buffer[]>) | null;
}

const STARTUP = 0;
const AUTH = 1;
const LOGIN = 2;
const READY = 3;
const CLOSED = 4;
/** Logged in to the admin console: simple queries go to the admin executor. */
const ADMIN = 5;
/** Login failed; the FATAL goes out after auth_failure_delay. Input is ignored. */
const DENIED = 6;

const STATE_NAMES = ["startup", "auth", "login", "ready", "closed", "admin", "auth"] as const;

// The largest message PostgreSQL accepts per client message type, as it checks them
// (postgres.c, SocketBackend): 0 = not a frontend message after login, SMALL = messages that
// carry only names and numbers, LARGE = queries, statements, parameters, COPY data (capped by
// max_message_size).
const NOT_ALLOWED = 0;
const SMALL = 1;
const LARGE = 2;
const SMALL_MESSAGE_LIMIT = 10_000;
const MESSAGE_CLASS = new Uint8Array(256);
for (const t of "XCDEHScf") MESSAGE_CLASS[t.charCodeAt(0)] = SMALL;
for (const t of "QFBPd") MESSAGE_CLASS[t.charCodeAt(0)] = LARGE;

// Every client message type is reported at its header: the session counts them.
const CLIENT_MODES = frameModes([], FRAME_HEADER);

/** Messages the rewriter needs whole (or whose start must hold names) are collected up to this. */
const MAX_REWRITE_COLLECT = 1 << 20;

/**
 * Size of a logged-in client's read buffer (util/socket-io.ts): one per client, so small; a
 * larger message just takes more reads.
 */
const CLIENT_READ_BUFFER = 4096;

/** Client bytes kept while waiting for a server beyond which the socket stops reading. */
const PENDING_PAUSE_BYTES = 64 * 1024;

/** Largest password message accepted from a client (SCRAM messages are small; tokens are not ours). */
const MAX_AUTH_MESSAGE = 64 * 1024;

export class ClientSession implements LeaseHolder {
  pid: number;
  readonly secret: number;
  readonly remote: string;
  readonly connectedAt = Date.now();
  user = "";
  database = "";
  applicationName = "";
  tls = false;
  state = STARTUP;

  private socket: net.Socket;
  /** Reads and writes once logged in (READY): straight to the socket's handle where it can. */
  private io: SocketIO | null = null;
  private readonly buf = new MessageBuffer(MAX_AUTH_MESSAGE);
  private auth: ClientAuth | null = null;
  private pool: Pool | null = null;
  private poolGeneration = -1;
  private wanted = new Map<string, string>();
  /** settingsStamp(wanted), kept up to date with it. */
  private wantedStamp = settingsStamp(this.wanted);
  private lease: Lease | null = null;
  private acquiring = false;
  private pending: Buffer[] = [];
  /** The other of the two pending arrays (see leaseReady). */
  private spare: Buffer[] = [];
  private pendingBytes = 0;
  private readonly framer = new Framer(CLIENT_MODES);
  private expectZ = 0;
  private dirty = false;
  private queries = 0;
  private waitingClientDrain = false;
  private waitingServerDrain = false;
  private closeWhenIdle = false;
  private pausedForLease = false;
  /** Paused while the rewriter holds back more than PENDING_PAUSE_BYTES of this client's. */
  private pausedForHold = false;
  private isAdmin = false;
  /** A protocol error went through the stream: the lease must not be reused. */
  private broken = false;
  /** Terminate was read while bytes before it still wait for a server. */
  private terminating = false;
  private loginTimer: NodeJS.Timeout | null = null;
  private denyTimer: NodeJS.Timeout | null = null;
  /** The key under which the pool remembers welcomes for this client's settings. */
  private shape = "";
  private adminQueue: Promise<void> = Promise.resolve();
  /**
   * Prepared statement tracking (transaction pooling), switched on at the client's first named
   * Parse; from then on every client message goes through it (see rwBytes). null: today's path.
   */
  private rw: StatementRewriter | null = null;
  /** Extended-protocol messages (P/B/C/D/E) scanned since the last Sync/Query/FunctionCall. */
  private sinceSync = 0;
  /** Untracked requests to declare when the rewriter is attached to the next lease. */
  private rwUntrackedSyncs = 0;
  private rwUntrackedMessages = 0;
  /** Bytes of the message being streamed to the rewriter still to come. */
  private streamLeft = 0;
  /** The start of a Parse header cut by the end of a chunk, held back (see clientBytes). */
  private heldParseHeader: Buffer | null = null;
  private readonly onDataBound = (chunk: Buffer) => this.onData(chunk);

  constructor(
    socket: net.Socket,
    private readonly ctx: FrontendContext,
  ) {
    this.socket = socket;
    this.pid = randomInt(1, 2 ** 31 - 1);
    this.secret = randomInt(-(2 ** 31), 2 ** 31 - 1);
    this.remote = `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? 0}`;
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 60_000);
    this.bindSocket(socket);
    if (!ctx.register(this)) {
      // Refused at the door: nothing is read from it.
      this.state = CLOSED;
      socket.end(
        errorResponse({
          severity: "FATAL",
          code: "53300",
          message: "sorry, too many clients already",
        }),
      );
      socket.destroySoon();
      return;
    }
    const timeout = ctx.config.general.client_login_timeout;
    if (timeout > 0) {
      this.loginTimer = setTimeout(() => this.loginTimedOut(timeout), timeout);
      this.loginTimer.unref();
    }
  }

  get isIdle(): boolean {
    if (this.state !== READY || this.acquiring || this.pending.length > 0) return false;
    if (this.rw?.holding === true) return false;
    return this.lease === null || this.releasable(this.lease.txStatus);
  }

  get serverPid(): number {
    return this.lease?.backendPid ?? 0;
  }

  get poolName(): string {
    return this.pool?.name ?? "";
  }

  get stateName(): string {
    if (this.state === READY) return this.lease ? "active" : this.acquiring ? "waiting" : "idle";
    return STATE_NAMES[this.state]!;
  }

  view(): {
    user: string;
    database: string;
    state: "active" | "idle" | "waiting" | "login";
    addr: string;
    port: number;
    connectTime: number;
    pid: number;
    serverPid: number;
    tls: boolean;
    applicationName: string;
  } {
    const n = this.stateName;
    const state = n === "active" || n === "idle" || n === "waiting" ? n : "login";
    return {
      user: this.user,
      database: this.database,
      state,
      addr: this.socket.remoteAddress ?? "",
      port: this.socket.remotePort ?? 0,
      connectTime: this.connectedAt,
      pid: this.pid,
      serverPid: this.serverPid,
      tls: this.tls,
      applicationName: this.applicationName,
    };
  }

  /** Shutdown: close now if idle, else when the current transaction ends. */
  requestClose(): void {
    if (this.state === CLOSED) return;
    if (this.state !== READY || this.isIdle) {
      this.fatal(
        new PgError("FATAL", "57P01", "terminating connection due to administrator command"),
      );
    } else {
      this.closeWhenIdle = true;
    }
  }

  /** Forced close at the end of the shutdown grace period. */
  forceClose(): void {
    this.fatal(
      new PgError("FATAL", "57P01", "terminating connection due to administrator command"),
    );
  }

  /** After a reload: a session-pooled client whose pool was replaced or removed leaves when idle. */
  afterReload(): void {
    if (this.state !== READY || this.pool === null) return;
    if (
      this.pool.settings.mode === "session" &&
      this.ctx.registry.get(this.user, this.database) !== this.pool
    ) {
      this.requestClose();
    }
  }

  /** Routes a CancelRequest to the server running this client's query. */
  cancelQuery(): void {
    this.lease?.cancel();
  }

  private bindSocket(socket: net.Socket): void {
    socket.on("data", this.onDataBound);
    socket.on("error", (err) => {
      this.ctx.logger.debug({ client: this.remote, err: err.message }, "client socket error");
      this.close();
    });
    socket.on("close", () => this.close());
  }

  private onData(chunk: Buffer): void {
    try {
      if (this.state === READY || this.state === LOGIN) {
        this.clientBytes(chunk);
        return;
      }
      if (this.state === CLOSED || this.state === DENIED) return;
      this.buf.push(chunk);
      if (this.state === ADMIN) this.adminData();
      else this.processHandshake();
    } catch (err) {
      this.fail(err);
    }
  }

  /** A client stream broke (protocol error, or a bug of ours): FATAL, and no lease is reused. */
  private fail(err: unknown): void {
    this.broken = true;
    this.fatal(err);
  }

  private loginTimedOut(timeoutMs: number): void {
    this.loginTimer = null;
    if (this.state !== STARTUP && this.state !== AUTH) return;
    this.ctx.logger.info(
      { client: this.remote, user: this.user || undefined, timeout_ms: timeoutMs },
      "client_login_timeout: closing a connection that did not log in",
    );
    if (this.state === STARTUP) {
      // No startup packet yet, so no protocol to answer in: close, as PostgreSQL does.
      this.close();
      return;
    }
    this.fatal(
      new PgError(
        "FATAL",
        "08P01",
        `login not completed within client_login_timeout (${timeoutMs} ms)`,
      ),
    );
  }

  private loginDone(): void {
    if (this.loginTimer !== null) clearTimeout(this.loginTimer);
    this.loginTimer = null;
  }

  // ---- startup and authentication -----------------------------------------------------------

  private processHandshake(): void {
    while (this.state === STARTUP || this.state === AUTH) {
      if (this.state === STARTUP) {
        let packet: Buffer | null;
        try {
          packet = this.buf.nextStartup();
        } catch (err) {
          // PostgreSQL logs a bad startup packet and closes without a word (a Terminate sent
          // before any startup packet lands here too).
          this.ctx.logger.debug(
            { client: this.remote, err: errorMessage(err) },
            "invalid startup packet; connection closed",
          );
          this.close();
          return;
        }
        if (packet === null) return;
        if (!this.onStartupPacket(packet)) return;
      } else {
        const msg = this.buf.next();
        if (msg === null) return;
        if (msg.type !== Msg.Password) {
          throw new PgError(
            "FATAL",
            "08P01",
            `expected password response, got message type "${String.fromCharCode(msg.type)}"`,
          );
        }
        this.onAuthStep(this.auth!.step(msg.body));
      }
    }
  }

  /** Returns false when processing must stop (TLS switch, close). */
  private onStartupPacket(packet: Buffer): boolean {
    const p = parseStartupPacket(packet);
    switch (p.kind) {
      case "ssl": {
        if (this.ctx.tlsContext === null || this.tls) {
          this.socket.write("N");
          return true;
        }
        if (this.buf.pending > 0) {
          // Bytes sent in the clear after SSLRequest could be injected (CVE-2021-23214).
          throw new PgError("FATAL", "08P01", "received unencrypted data after SSL request");
        }
        this.socket.write("S");
        this.upgradeTls();
        return false;
      }
      case "gssenc":
        this.socket.write("N");
        return true;
      case "cancel":
        this.ctx.cancel(p.pid, p.secret);
        this.close();
        return false;
      case "unsupported": {
        const major = p.version >>> 16;
        const minor = p.version & 0xffff;
        throw new PgError(
          "FATAL",
          "0A000",
          `unsupported frontend protocol ${major}.${minor}: server supports 3.0 to 3.0`,
        );
      }
      case "startup":
        this.onStartup(p.params);
        return this.state !== CLOSED;
    }
  }

  private upgradeTls(): void {
    const raw = this.socket;
    raw.removeAllListeners("data");
    raw.removeAllListeners("error");
    raw.removeAllListeners("close");
    const secure = new tls.TLSSocket(raw, { isServer: true, secureContext: this.ctx.tlsContext! });
    this.socket = secure;
    this.tls = true;
    this.bindSocket(secure);
  }

  private onStartup(params: Map<string, string>): void {
    const { config } = this.ctx;
    const user = params.get("user");
    if (!user)
      throw new PgError("FATAL", "28000", "no PostgreSQL user name specified in startup packet");
    this.user = user;
    this.database = params.get("database") || user;
    this.applicationName = params.get("application_name") ?? "";
    if (
      params.has("replication") &&
      params.get("replication") !== "false" &&
      params.get("replication") !== "0"
    ) {
      throw new PgError("FATAL", "08P01", "replication connections are not supported by pgwarden");
    }
    if (this.ctx.shuttingDown) throw new PgError("FATAL", "57P03", "pgwarden is shutting down");
    try {
      this.wanted = wantedSettings(params);
      this.wantedStamp = settingsStamp(this.wanted);
    } catch (err) {
      throw new PgError("FATAL", "22023", `invalid startup options: ${errorMessage(err)}`);
    }
    this.state = AUTH;

    if (this.database === config.admin.name) {
      // The admin password is checked with SCRAM whatever auth_type says; anyone but the admin
      // user runs the same exchange against a mock secret and fails like a wrong password.
      this.isAdmin = user === config.admin.user;
      this.auth = new ClientAuth(user, this.isAdmin ? config.admin.password : undefined, "scram");
      this.onAuthStep(this.auth.start());
      return;
    }
    // The password is the one configured for this user and database, or, when the user has no
    // pool for that database, any of the user's (the database is judged after the password).
    const entries = config.users.filter((u) => u.name === user);
    const entry = entries.find((u) => u.database === this.database) ?? entries[0];
    if (entry === undefined && config.general.auth_type === "trust") {
      // Nothing to prove under trust: PostgreSQL tells the role is unknown.
      throw new PgError("FATAL", "28000", `role "${user}" does not exist`);
    }
    this.auth = new ClientAuth(user, entry?.password, config.general.auth_type);
    this.onAuthStep(this.auth.start());
  }

  /** After a successful password exchange: the pool this client logs in to, or a FATAL. */
  private choosePool(): Pool {
    const { config } = this.ctx;
    if (!config.databases.some((d) => d.name === this.database)) {
      throw new PgError("FATAL", "3D000", `database "${this.database}" does not exist`);
    }
    const pool = this.ctx.registry.get(this.user, this.database);
    if (!pool) {
      throw new PgError(
        "FATAL",
        "28000",
        `no pool for user "${this.user}" and database "${this.database}" in pgwarden's configuration`,
      );
    }
    this.poolGeneration = this.ctx.registry.generation;
    return pool;
  }

  private onAuthStep(step: ReturnType<ClientAuth["start"]>): void {
    if (step.kind === "send") {
      this.socket.write(step.data);
      return;
    }
    if (step.kind === "fail") {
      this.ctx.logger.info(
        {
          client: this.remote,
          user: this.user,
          database: this.database,
          auth: "failed",
          reason: step.reason,
        },
        "client login",
      );
      this.deny(
        new PgError("FATAL", "28P01", `password authentication failed for user "${this.user}"`),
      );
      return;
    }
    this.loginDone();
    if (this.isAdmin) {
      this.socket.write(
        step.data ? Buffer.concat([step.data, authenticationOk]) : authenticationOk,
      );
      this.adminWelcome();
      return;
    }
    this.pool = this.choosePool();
    this.socket.write(step.data ? Buffer.concat([step.data, authenticationOk]) : authenticationOk);
    const rest = this.buf.takeRest();
    if (this.pool.settings.mode === "transaction" && this.welcomeFromPool()) {
      if (rest.length > 0) this.clientBytes(rest);
      return;
    }
    this.state = LOGIN;
    if (rest.length > 0) this.clientBytes(rest);
    if (!this.acquiring && this.state === LOGIN) this.acquire();
  }

  /** A failed login: FATAL now, or after auth_failure_delay (input ignored meanwhile). */
  private deny(err: PgError): void {
    const delay = this.ctx.config.general.auth_failure_delay;
    if (delay <= 0) {
      this.fatal(err);
      return;
    }
    this.loginDone();
    this.state = DENIED;
    this.socket.pause();
    this.denyTimer = setTimeout(() => {
      this.denyTimer = null;
      this.state = AUTH;
      this.fatal(err);
    }, delay);
  }

  /**
   * Transaction pooling: welcomes the client from what the pool remembers of its servers, when
   * it has seen a client with these settings before. Returns false to take the server path.
   */
  private welcomeFromPool(): boolean {
    const params = this.pool!.loginParams;
    if (!reportedAsGiven(this.applicationName)) return false;
    this.shape = shapeKey(this.wanted);
    const known = params.get(this.shape, this.wanted);
    if (known === undefined) return false;
    const parts: Buffer[] = [];
    for (const [k, v] of known) if (k !== "application_name") parts.push(parameterStatus(k, v));
    const app = this.wanted.get("application_name") ?? params.baseline?.get("application_name");
    if (app !== undefined) parts.push(parameterStatus("application_name", app));
    this.sendWelcome(parts);
    return true;
  }

  private adminWelcome(): void {
    const parts = [
      parameterStatus("server_version", "15.0 (pgwarden admin)"),
      parameterStatus("server_encoding", "UTF8"),
      parameterStatus("client_encoding", "UTF8"),
      parameterStatus("DateStyle", "ISO, MDY"),
      parameterStatus("integer_datetimes", "on"),
      parameterStatus("standard_conforming_strings", "on"),
      parameterStatus("application_name", this.applicationName),
      backendKeyData(this.pid, this.secret),
      readyForQuery("I"),
    ];
    this.socket.write(Buffer.concat(parts));
    this.state = ADMIN;
    this.ctx.logger.info(
      { client: this.remote, user: this.user, database: this.database, auth: "ok", admin: true },
      "client login",
    );
    if (this.buf.pending > 0) this.adminData();
  }

  /** Admin console: one simple query at a time, answered in order. */
  private adminData(): void {
    for (let m = this.buf.next(); m !== null; m = this.buf.next()) {
      if (m.type === Msg.Terminate) {
        this.close();
        return;
      }
      if (m.type !== Msg.Query) {
        throw new PgError(
          "FATAL",
          "08P01",
          "the admin console speaks the simple query protocol only",
        );
      }
      const sql = m.body.toString("utf8", 0, Math.max(0, m.body.length - 1));
      this.adminQueue = this.adminQueue.then(() => this.adminRun(sql));
    }
  }

  private async adminRun(sql: string): Promise<void> {
    if (this.state !== ADMIN) return;
    let out: Buffer[];
    try {
      out = this.ctx.adminExecutor ? await this.ctx.adminExecutor(sql) : [];
    } catch (err) {
      this.ctx.logger.error({ err: errorMessage(err) }, "admin command failed");
      out = [
        errorResponse({
          severity: "ERROR",
          code: "XX000",
          message: `admin command failed: ${errorMessage(err)}`,
        }),
      ];
    }
    if (this.state !== ADMIN || this.socket.destroyed) return;
    this.socket.write(Buffer.concat([...out, readyForQuery("I")]));
  }

  private welcome(): void {
    const lease = this.lease!;
    const parts: Buffer[] = [];
    for (const [k, v] of lease.reported) parts.push(parameterStatus(k, v));
    if (this.shape === "" && reportedAsGiven(this.applicationName))
      this.shape = shapeKey(this.wanted);
    if (this.shape !== "") this.pool!.loginParams.set(this.shape, lease.reported);
    this.sendWelcome(parts);
    // Transaction pooling: the server goes back unless bytes that came with the login need it.
    if (
      this.pool!.settings.mode === "transaction" &&
      this.pending.length === 0 &&
      this.rw?.holding !== true
    ) {
      this.lease = null;
      lease.release(true);
    }
  }

  private sendWelcome(parts: Buffer[]): void {
    parts.push(backendKeyData(this.pid, this.secret), readyForQuery("I"));
    this.socket.write(Buffer.concat(parts));
    this.state = READY;
    // From here on the socket's reads and writes take the lean path (util/socket-io.ts).
    this.socket.removeListener("data", this.onDataBound);
    this.io = new SocketIO(this.socket, this.onDataBound, CLIENT_READ_BUFFER);
    this.ctx.logger.info(
      {
        client: this.remote,
        user: this.user,
        database: this.database,
        auth: "ok",
        tls: this.tls,
        application_name: this.applicationName || undefined,
      },
      "client login",
    );
  }

  // ---- leasing ------------------------------------------------------------------------------

  private acquire(): void {
    this.acquiring = true;
    const reg = this.ctx.registry;
    if (this.poolGeneration !== reg.generation) {
      // A reload happened: follow this (user, database) to its current pool, if it still has one.
      const current = reg.get(this.user, this.database);
      if (!current) {
        this.acquiring = false;
        this.fatal(
          new PgError(
            "FATAL",
            "57P01",
            `terminating connection: user "${this.user}" of database "${this.database}" was removed from the configuration`,
          ),
        );
        return;
      }
      this.pool = current;
      this.poolGeneration = reg.generation;
    }
    let lease: Lease | null;
    try {
      lease = this.pool!.acquire(this);
    } catch (err) {
      this.acquiring = false;
      this.fatal(err);
      return;
    }
    if (lease !== null) this.gotLease(lease);
  }

  /** LeaseHolder: the pool's mark while this session waits for a server. */
  poolTicket = 0;

  /** LeaseHolder: the server this session waited for. */
  leaseGranted(lease: Lease): void {
    this.gotLease(lease);
  }

  /** LeaseHolder: the wait failed. */
  leaseFailed(err: Error): void {
    this.acquiring = false;
    this.fatal(err);
  }

  /**
   * A lease arrived. The session counts as still acquiring (client bytes are buffered) until
   * the server's settings match the client's; only then does `this.lease` point at it.
   */
  private gotLease(lease: Lease): void {
    if (this.state === CLOSED) {
      this.acquiring = false;
      lease.release(true);
      return;
    }
    const sync = lease.sync(this.wanted, this.wantedStamp);
    if (sync === null) {
      this.leaseReady(lease);
      return;
    }
    sync.then(
      () => {
        if (this.state === CLOSED) {
          this.acquiring = false;
          lease.release(true);
        } else {
          this.leaseReady(lease);
        }
      },
      (err: unknown) => {
        this.acquiring = false;
        // The server refused a setting the client asked for: the server itself is fine.
        lease.release(!(err instanceof PgwardenError && err.code === "SERVER_CLOSED"));
        this.fatal(err instanceof PgError ? new PgError("FATAL", err.sqlstate, err.message) : err);
      },
    );
  }

  /** The lease is the session's: welcome (at login), then the bytes that waited for it. */
  private leaseReady(lease: Lease): void {
    this.acquiring = false;
    this.lease = lease;
    try {
      if (this.state === LOGIN) this.welcome();
      // Two arrays in turn: bytes that arrive while these are written queue in the other.
      const chunks = this.pending;
      this.pending = this.spare;
      this.spare = chunks;
      this.pendingBytes = 0;
      for (let i = 0; i < chunks.length; i++) {
        if (this.state !== READY || this.lease !== lease) break;
        // (pending chunks are this session's own copies: see queuePending)
        if (!lease.writeOwned(chunks[i]!)) this.waitServerDrain(lease);
      }
      while (chunks.length > 0) chunks.pop(); // (a length store is a runtime call)
      if (this.state !== READY || this.lease !== lease) return;
      if (this.rw !== null && this.state === READY && this.lease === lease) {
        this.attachRewriter(lease, this.rwUntrackedSyncs, this.rwUntrackedMessages);
        this.rwUntrackedSyncs = 0;
        this.rwUntrackedMessages = 0;
        this.rwFlush();
      }
      if (this.terminating) {
        this.close();
        return;
      }
      if (this.pausedForLease) {
        this.pausedForLease = false;
        if (this.state === READY && !this.waitingServerDrain && !this.pausedForHold) {
          this.resumeReads();
        }
      }
    } catch (err) {
      this.fail(err);
    }
  }

  // ---- hot path -----------------------------------------------------------------------------

  /**
   * Client bytes after login: scanned once here (see the header), then sent to the leased
   * server, or kept until one is leased. Throws ProtocolError/PgError for a broken stream.
   */
  private clientBytes(chunk: Buffer): void {
    if (this.rw !== null) {
      this.rwBytes(chunk, 0);
      return;
    }
    const f = this.framer;
    let pos = 0;
    if (this.heldParseHeader !== null) {
      // The Parse header held back at the end of the last chunk leads this one.
      chunk = Buffer.concat([this.heldParseHeader, chunk]);
      pos = this.heldParseHeader.length;
      this.heldParseHeader = null;
      f.msgStart = 0;
    }
    while (pos < chunk.length) {
      pos = f.feed(chunk, pos);
      if (f.event !== EVENT_HEADER) continue;
      const type = f.type;
      this.checkHeader(type, f.bodyLength);
      switch (type) {
        case Msg.Query:
        case Msg.FunctionCall:
          this.expectZ++;
          this.queries++;
          this.sinceSync = 0;
          break;
        case Msg.Sync:
          this.expectZ++;
          this.dirty = false;
          this.sinceSync = 0;
          break;
        case Msg.Execute:
          this.queries++;
          this.dirty = true;
          this.sinceSync++;
          break;
        case Msg.Parse:
          this.dirty = true;
          // A named Parse (or one whose name is not in this chunk) switches tracking on.
          if ((pos >= chunk.length || chunk[pos] !== 0) && this.tracksStatements()) {
            this.switchOn(chunk, pos);
            return;
          }
          this.sinceSync++;
          break;
        case Msg.Terminate:
          if (pos < 5) {
            // The header began in an earlier chunk, already sent (or queued) as the start of a
            // message the server will never see the end of: that server cannot be reused.
            this.broken = true;
            this.close();
            return;
          }
          this.terminate(chunk.subarray(0, pos - 5));
          return;
        case Msg.CopyData:
        case Msg.CopyDone:
        case Msg.CopyFail:
          break;
        case Msg.Flush:
          this.dirty = true;
          break;
        default:
          this.dirty = true;
          this.sinceSync++;
      }
    }
    if (f.partialType === Msg.Parse && this.tracksStatements()) {
      // A Parse header cut by the chunk's end: its name is not known yet, so hold it back.
      this.heldParseHeader = Buffer.from(chunk.subarray(f.msgStart));
      chunk = chunk.subarray(0, f.msgStart);
      if (chunk.length === 0) return;
    }
    const lease = this.lease;
    if (lease !== null) {
      this.toServer(lease, chunk);
      return;
    }
    this.queuePending(chunk);
    if (!this.acquiring && this.state === READY) this.acquire();
  }

  /**
   * Keeps client bytes until a server is leased. The socket goes on reading (a client that
   * waits for its answer sends nothing more) unless more than PENDING_PAUSE_BYTES pile up.
   */
  private queuePending(chunk: Buffer): void {
    this.pending.push(this.keep(chunk));
    this.pendingBytes += chunk.length;
    if (this.pendingBytes > PENDING_PAUSE_BYTES) this.pauseForLease();
  }

  /** Named prepared statements are tracked for this client (transaction pooling, "extended"). */
  private tracksStatements(): boolean {
    return (
      this.pool !== null &&
      this.pool.settings.mode === "transaction" &&
      this.ctx.config.general.prepared_statements === "extended"
    );
  }

  /**
   * The first named Parse: its header ends at `pos` in `chunk`. What came before it goes out
   * untracked; the rewriter is told how many of those requests are still unanswered.
   */
  private switchOn(chunkIn: Buffer, pos: number): void {
    const chunk = this.keep(chunkIn); // the rewriter keeps parts of it
    const hs = pos - 5;
    this.rw = new StatementRewriter(this.ctx.statements);
    const before = chunk.subarray(0, hs);
    const lease = this.lease;
    if (lease !== null) {
      if (before.length > 0) this.toServer(lease, before);
      this.attachRewriter(lease, this.expectZ, this.sinceSync);
    } else {
      if (before.length > 0) this.queuePending(before);
      this.rwUntrackedSyncs = this.expectZ;
      this.rwUntrackedMessages = this.sinceSync;
    }
    this.framer.msgStart = hs;
    this.rwHeader(chunk, pos);
    this.rwBytes(chunk, pos);
  }

  private attachRewriter(lease: Lease, syncs: number, messages: number): void {
    let st = lease.serverState as ServerStatements | null;
    if (st === null) {
      st = this.ctx.statements.newServer();
      lease.serverState = st;
    }
    this.rw!.attach(st, syncs, messages);
    lease.setFilter(this.rw);
  }

  /**
   * Client bytes with the rewriter on, from `pos` (0: a new chunk). Every message goes to the
   * rewriter: whole when it fits in the chunk, else Parse/Describe/Close/Execute (and a Bind
   * whose names are cut) are collected, and the rest stream (start, then more bytes).
   */
  private rwBytes(chunk: Buffer, pos: number): void {
    const pos0 = pos;
    // The rewriter is handed ranges of the chunk; what it cannot plan during this call (no
    // server leased yet, or held back) it copies (retain(), at the end).
    const f = this.framer;
    const rw = this.rw!;
    if (pos === 0) {
      f.msgStart = -1;
      if (this.streamLeft > 0) {
        const n = Math.min(this.streamLeft, chunk.length);
        rw.clientBytes(chunk, 0, n);
        this.streamLeft -= n;
      }
    }
    while (pos < chunk.length) {
      pos = f.feed(chunk, pos);
      if (f.event === EVENT_MESSAGE) {
        rw.clientMessage(f.type, whole(f.type, f.body), 0, 5 + f.bodyLength);
        continue;
      }
      if (f.event !== EVENT_HEADER) continue;
      const type = f.type;
      this.checkHeader(type, f.bodyLength);
      switch (type) {
        case Msg.Query:
        case Msg.FunctionCall:
          this.expectZ++;
          this.queries++;
          break;
        case Msg.Sync:
          this.expectZ++;
          break;
        case Msg.Execute:
          this.queries++;
          break;
        case Msg.Terminate:
          this.rwTerminate();
          return;
      }
      this.rwHeader(chunk, pos);
    }
    const lease = this.lease;
    if (lease !== null) {
      this.rwFlush();
      rw.retain();
      // Held back behind a reply still to come (rare): a client that pipelines on is read up
      // to PENDING_PAUSE_BYTES, then paused until the hold ends (serverData/serverReady).
      if (rw.holding && !this.pausedForHold && rw.queuedBytes > PENDING_PAUSE_BYTES) {
        this.pausedForHold = true;
        this.pauseReads();
      }
      return;
    }
    rw.retain();
    // Waiting for a server: as on the plain path (queuePending), reading goes on unless more
    // than PENDING_PAUSE_BYTES pile up (pausing costs two syscalls per wait).
    this.pendingBytes += chunk.length - pos0;
    const tooMuch = this.pendingBytes > PENDING_PAUSE_BYTES;
    if (this.acquiring || this.state !== READY) {
      if (tooMuch) this.pauseForLease();
      return;
    }
    if (!rw.holding && this.pending.length === 0) return;
    this.acquire();
    if (this.lease === null && tooMuch) this.pauseForLease();
  }

  /** A header just read by the framer (it ends at `pos`): hand its message to the rewriter. */
  private rwHeader(chunk: Buffer, pos: number): void {
    const f = this.framer;
    const rw = this.rw!;
    const type = f.type;
    const len = f.bodyLength;
    const hs = f.msgStart >= 0 && f.msgStart === pos - 5 ? pos - 5 : -1;
    const avail = chunk.length - pos;
    if (hs >= 0 && len <= avail) {
      rw.clientMessage(type, chunk, hs, pos + len);
      return;
    }
    if (len === 0) {
      rw.clientMessage(type, whole(type, EMPTY), 0, 5);
      return;
    }
    let collect = false;
    switch (type) {
      case Msg.Parse:
      case Msg.Describe:
      case Msg.Close:
      case Msg.Execute:
        collect = true;
        break;
      case Msg.Bind: {
        // The first piece must hold the portal and statement names.
        const n1 = hs >= 0 ? chunk.indexOf(0, pos) : -1;
        collect = n1 < 0 || chunk.indexOf(0, n1 + 1) < 0;
        break;
      }
    }
    if (collect) {
      if (len > MAX_REWRITE_COLLECT) {
        throw new PgError(
          "FATAL",
          "54000",
          `message type "${String.fromCharCode(type)}" of ${len + 4} bytes is too long for prepared statement tracking (limit ${MAX_REWRITE_COLLECT} bytes)`,
        );
      }
      f.collectCurrent();
      return;
    }
    const take = Math.min(avail, len);
    if (hs >= 0) {
      rw.clientMessageStart(type, chunk, hs, pos + take, len + 5);
    } else {
      rw.clientMessageStart(type, whole(type, EMPTY, len), 0, 5, len + 5);
      if (take > 0) rw.clientBytes(chunk, pos, pos + take);
    }
    this.streamLeft = len - take;
  }

  /** Plans what the rewriter was handed and sends it; answers it gave itself go to the client. */
  private rwFlush(): void {
    const rw = this.rw!;
    const lease = this.lease;
    if (lease === null || !rw.attached) return;
    rw.plan();
    if (rw.oneRange) {
      const ok = lease.writeRange(rw.rangeBuf, rw.rangeStart, rw.rangeEnd);
      rw.dropRange();
      if (!ok) this.waitServerDrain(lease);
    } else {
      const out = rw.takeServer();
      if (out.length > 0 && !lease.writeMany(out)) this.waitServerDrain(lease);
    }
    if (!rw.hasOutput) return;
    const answers = rw.takeClient();
    for (let i = 0; i < answers.length; i++) this.send(answers[i]!);
  }

  /** Terminate with the rewriter on: what came before it still goes out; then the end. */
  private rwTerminate(): void {
    this.rw!.retain();
    const lease = this.lease;
    if (lease !== null) {
      this.rwFlush();
      this.close();
      return;
    }
    if (!this.rw!.holding && this.pending.length === 0) {
      this.close();
      return;
    }
    this.terminating = true;
    this.pauseForLease();
    if (!this.acquiring && this.state === READY) this.acquire();
  }

  /** PostgreSQL's checks of a client message header: a frontend type, a length it accepts. */
  private checkHeader(type: number, bodyLength: number): void {
    const cls = MESSAGE_CLASS[type]!;
    if (cls === NOT_ALLOWED) {
      throw new PgError("FATAL", "08P01", `invalid frontend message type ${type}`);
    }
    const limit = cls === SMALL ? SMALL_MESSAGE_LIMIT : this.ctx.config.general.max_message_size;
    if (bodyLength + 4 > limit) {
      throw new PgError(
        "FATAL",
        "08P01",
        `invalid message length ${bodyLength + 4} for message type "${String.fromCharCode(type)}" (limit ${limit} bytes)`,
      );
    }
  }

  /**
   * Client bytes that must outlive the read they came in (queued, or kept by the rewriter): a
   * copy when the socket reads into a reused buffer. Every chunk clientBytes gets after login
   * is such a read, or bytes that came with the login (no SocketIO yet: nothing to copy).
   */
  private keep(chunk: Buffer): Buffer {
    return this.io !== null ? this.io.keep(chunk) : chunk;
  }

  /** Writes to the client (after login). */
  private send(data: Buffer): boolean {
    return this.io !== null ? this.io.write(data) : this.socket.write(data);
  }

  private onceClientDrain(cb: () => void): void {
    if (this.io !== null) this.io.onceDrain(cb);
    else this.socket.once("drain", cb);
  }

  private pauseReads(): void {
    if (this.io !== null) this.io.pause();
    else this.socket.pause();
  }

  private resumeReads(): void {
    if (this.io !== null) this.io.resume();
    else this.socket.resume();
  }

  private pauseForLease(): void {
    if (this.pausedForLease || this.state === CLOSED) return;
    this.pausedForLease = true;
    this.pauseReads();
  }

  /** Terminate: what came before it still goes to a server; then the session ends. */
  private terminate(before: Buffer): void {
    const lease = this.lease;
    if (lease !== null) {
      if (before.length > 0) lease.write(before);
      this.close();
      return;
    }
    if (before.length === 0 && this.pending.length === 0) {
      this.close();
      return;
    }
    if (before.length > 0) this.queuePending(before);
    this.terminating = true;
    this.pauseForLease();
    if (!this.acquiring && this.state === READY) this.acquire();
  }

  private toServer(lease: Lease, chunk: Buffer): void {
    if (!lease.write(chunk)) this.waitServerDrain(lease);
  }

  private waitServerDrain(lease: Lease): void {
    if (!this.waitingServerDrain) {
      this.waitingServerDrain = true;
      this.pauseReads();
      lease.onceServerDrain(() => {
        this.waitingServerDrain = false;
        if (this.state === READY && !this.pausedForLease && !this.pausedForHold) {
          this.resumeReads();
        }
      });
    }
  }

  /** Replies came while paused for a hold: read on once the rewriter holds nothing back. */
  private endHold(): void {
    if (this.rw?.holding === true) return;
    this.pausedForHold = false;
    if (this.state === READY && !this.pausedForLease && !this.waitingServerDrain) {
      this.resumeReads();
    }
  }

  private releasable(status: number): boolean {
    const rw = this.rw;
    if (rw !== null) {
      // The rewriter knows what is owed (a Query skipped after an error never gets its Z).
      return (
        status === TxStatus.Idle &&
        rw.releasable &&
        this.streamLeft === 0 &&
        this.framer.atBoundary &&
        !this.broken
      );
    }
    return (
      status === TxStatus.Idle &&
      this.expectZ === 0 &&
      !this.dirty &&
      this.framer.atBoundary &&
      !this.broken
    );
  }

  serverData(data: Buffer): boolean {
    if (this.state === CLOSED) return true;
    if (this.pausedForHold) this.endHold();
    const ok = this.send(data);
    if (!ok && !this.waitingClientDrain) {
      this.waitingClientDrain = true;
      this.onceClientDrain(() => {
        this.waitingClientDrain = false;
        this.lease?.resumeServer();
      });
    }
    return ok;
  }

  serverReady(status: number): void {
    if (this.pausedForHold) this.endHold();
    if (this.expectZ > 0) this.expectZ--;
    const lease = this.lease;
    if (lease === null) return;
    if (!this.releasable(status)) return;
    lease.countTransaction(this.queries);
    this.queries = 0;
    if (this.pool!.settings.mode === "transaction") {
      this.lease = null;
      lease.release(this.detachRewriter(lease));
    }
    if (this.closeWhenIdle) this.requestClose();
  }

  serverParameter(name: string, value: string): void {
    if (!TRACKED_REPORTED.has(name)) return;
    if (this.wanted.get(name) !== value) {
      this.wanted.set(name, value);
      this.wantedStamp = settingsStamp(this.wanted);
    }
    this.lease?.noteApplied(name, value);
    if (name === "application_name") this.applicationName = value;
  }

  serverLost(err: Error, replay: Buffer[] | null, fatalForwarded: boolean): void {
    const lost = this.lease;
    this.lease = null;
    // What the dead server held is gone; what was in flight is rolled back (no replay).
    this.rw?.detach();
    // lost === null: the lease was still being set up (settings sync); that path reports it.
    if (replay !== null && lost !== null && this.state === READY) {
      this.replayOnNewServer(replay, err);
      return;
    }
    this.ctx.logger.warn(
      { client: this.remote, user: this.user, database: this.database, err: err.message },
      "server connection lost under client",
    );
    // The client already got the server's own FATAL: at most one per lost connection.
    if (fatalForwarded) this.close();
    else
      this.fatal(
        err instanceof PgError && err.severity === "FATAL"
          ? err
          : new PgError(
              "FATAL",
              "08006",
              "server connection lost: the PostgreSQL server closed the connection unexpectedly",
            ),
      );
  }

  /**
   * The server died before it answered anything of this lease, which began at a transaction
   * boundary: the bytes sent on it go to a new lease, ahead of any still pending. Every client
   * byte was scanned once, on arrival, and no reply came since the lease began, so expectZ,
   * dirty and the framer already describe exactly these bytes: they stay as they are. The
   * client waits (paused, its new bytes queued behind the replay) until the next turn of the
   * event loop: a server that shuts down rarely does so alone, and the FATALs of its idle
   * siblings, read in this turn, drop them from the pool before the replay picks one.
   */
  private replayOnNewServer(replay: Buffer[], err: Error): void {
    this.ctx.logger.info(
      { client: this.remote, user: this.user, database: this.database, err: err.message },
      "server connection lost before it answered; replaying on another server",
    );
    // The dead server's drain will never come; the client waits for the new lease instead.
    this.waitingServerDrain = false;
    if (!this.pausedForLease) {
      this.pausedForLease = true;
      this.pauseReads();
    }
    this.pending = this.pending.length === 0 ? replay : replay.concat(this.pending);
    setImmediate(() => this.replayNow());
  }

  private replayNow(): void {
    if (this.state !== READY || this.lease !== null || this.acquiring) return;
    if (this.pending.length === 0) {
      this.pausedForLease = false; // nothing was sent: just an idle client without a server
      this.resumeReads();
      return;
    }
    try {
      this.acquire();
    } catch (e) {
      this.fatal(e);
    }
  }

  /** Takes the rewriter off a lease that ends; false when what the server holds is unknown. */
  private detachRewriter(lease: Lease): boolean {
    const rw = this.rw;
    if (rw === null || !rw.attached) return true;
    lease.setFilter(null);
    return rw.detach();
  }

  // ---- ending -------------------------------------------------------------------------------

  /** Sends the client an error as FATAL and closes. Non-PgErrors are logged and sent generic. */
  fatal(err: unknown): void {
    if (this.state === CLOSED) return;
    const pgErr = toClientError(err);
    if (!(err instanceof PgError)) {
      this.ctx.logger.warn(
        {
          client: this.remote,
          user: this.user,
          database: this.database,
          err: errorMessage(err),
          code: (err as PgwardenError).code,
        },
        "client connection failed",
      );
    }
    if (!this.socket.destroyed && this.socket.writable) {
      this.socket.end(
        errorResponse({
          severity: "FATAL",
          code: pgErr.sqlstate,
          message: pgErr.message,
          detail: pgErr.detail,
          hint: pgErr.hint,
        }),
      );
    }
    this.close();
  }

  /** Closes the session. `unclean`: the server saw a partial message and cannot be reused. */
  close(unclean = false): void {
    if (this.state === CLOSED) {
      this.socket.destroySoon?.();
      return;
    }
    const wasReady = this.state === READY || this.state === LOGIN;
    this.state = CLOSED;
    this.loginDone();
    if (this.denyTimer !== null) clearTimeout(this.denyTimer);
    this.denyTimer = null;
    this.pending = [];
    this.ctx.unregister(this);
    if (this.acquiring && this.pool) this.pool.cancelWait(this);
    const lease = this.lease;
    this.lease = null;
    if (lease) {
      let idle = !unclean && this.releasable(lease.txStatus);
      if (!this.detachRewriter(lease)) idle = false;
      lease.release(idle, idle && this.pool?.settings.mode === "session");
    }
    this.rw?.dispose();
    if (!this.socket.destroyed) this.socket.end();
    if (wasReady)
      this.ctx.logger.debug(
        { client: this.remote, user: this.user, database: this.database },
        "client closed",
      );
  }
}

const EMPTY = Buffer.alloc(0);

/** A message rebuilt from its type and body (or a bare header announcing `bodyLength` bytes). */
function whole(type: number, body: Buffer, bodyLength = body.length): Buffer {
  const m = Buffer.allocUnsafe(5 + body.length);
  m[0] = type;
  m.writeInt32BE(4 + bodyLength, 1);
  body.copy(m, 5);
  return m;
}

function toClientError(err: unknown): PgError {
  if (err instanceof PgError) return err;
  if (err instanceof PgwardenError) {
    switch (err.code) {
      case "CHECKOUT_TIMEOUT":
        return new PgError("FATAL", "53300", err.message);
      case "POOL_CLOSED":
        return new PgError("FATAL", "57P01", err.message);
      case "SERVER_CONNECT":
      case "SERVER_CONNECT_TIMEOUT":
      case "SERVER_TLS":
      case "SERVER_PROTOCOL":
      case "SERVER_AUTH":
      case "SERVER_CLOSED":
        return new PgError("FATAL", "08006", `pgwarden: ${err.message}`);
      case "CREDENTIAL":
        return new PgError("FATAL", "08006", `pgwarden: ${err.message}`);
    }
  }
  if (err instanceof Error && err.name === "ProtocolError")
    return new PgError("FATAL", "08P01", `invalid frontend message: ${err.message}`);
  return new PgError("FATAL", "XX000", "pgwarden: internal error");
}
