// ServerConnection: one connection from pgwarden to a PostgreSQL server.
//
// Model: `connect()` runs the whole login (TCP, optional TLS per `tls_verify`, StartupMessage,
// cleartext/MD5/SCRAM-SHA-256 authentication, ParameterStatus and BackendKeyData up to the first
// ReadyForQuery) with a `connect_timeout` that is paused while the credential getter runs, so a
// slow identity provider is governed by its own timeout, not by the network's. After login the
// connection is in one of three modes:
//   - IDLE: in a pool. An idle server has nothing to say: any byte that arrives (the FATAL of a
//     shutting-down server, an async notice) closes the connection at once, so that its pool
//     drops it before a client can lease it.
//   - PROXY: attached to a sink (a client's lease) and an owner (the lease itself). Bytes are
//     forwarded as they arrive, in the chunks they came in; the framer only stops at
//     ReadyForQuery (transaction status, release decision), ParameterStatus (tracked settings)
//     and small ErrorResponses (is it FATAL?). The owner hears of the first byte forwarded on
//     this attachment (`serverAnswered`) and of the connection's death (`serverLost`, saying
//     whether the client already got the server's own FATAL). A FATAL 57P01/57P02/57P03/57P05
//     (server shutting down or starting up, idle session timeout) that arrives before any byte
//     was forwarded on this attachment is not forwarded: the client got nothing of a reply, so
//     its lease may replay the request on another server (see pool/lease.ts).
//   - INTERNAL: running a pooler-issued simple query (parameter sync, DISCARD ALL); every
//     message is collected and the query's promise settles at ReadyForQuery.
// Modes change only between messages (at ReadyForQuery), so one framer serves all three.

import { Buffer } from "node:buffer";
import net from "node:net";
import { performance } from "node:perf_hooks";
import tls from "node:tls";
import {
  AuthCode,
  cancelRequest,
  EVENT_MESSAGE,
  FRAME_COLLECT,
  FRAME_COLLECT_SMALL,
  Framer,
  frameModes,
  MessageBuffer,
  Msg,
  md5Response,
  parseErrorFields,
  parseParameterStatus,
  passwordMessage,
  query as queryMessage,
  readCString,
  ScramClient,
  saslInitialResponse,
  saslResponse,
  sslRequest,
  startupMessage,
  TxStatus,
  terminate,
} from "../protocol/index.js";
import { errorMessage, type Logger, PgError, PgwardenError, SocketIO } from "../util/index.js";

/** tls_verify, plus "require" (TLS without verification, no plaintext fallback) for token logins. */
export type TlsMode = "disabled" | "prefer" | "require" | "verify_ca" | "verify_full";

export interface ServerOptions {
  readonly host: string;
  readonly port: number;
  readonly database: string;
  readonly user: string;
  /** Returns the secret for this login (password or token); called only if the server asks. */
  readonly getCredential: () => Promise<string>;
  readonly connectTimeout: number;
  readonly tlsMode: TlsMode;
  readonly tlsCa?: Buffer | undefined;
  /** Extra startup parameters (application_name, …). */
  readonly startupParams?: Readonly<Record<string, string>>;
  readonly logger: Logger;
  /** Label for logs and errors, e.g. "alice/app". */
  readonly label: string;
}

/** Where a ServerConnection in PROXY mode sends its output: the client side of a lease. */
export interface ServerSink {
  /** Bytes for the client, in order. Returns false when the client wants no more for now. */
  serverData(data: Buffer): boolean;
  /** Called after the ReadyForQuery's bytes were passed to serverData. */
  serverReady(status: number): void;
  /** A ParameterStatus the client's own statements caused. */
  serverParameter(name: string, value: string): void;
}

/** Who holds a ServerConnection in PROXY mode: the pool's Lease. */
export interface ServerOwner {
  /** The first byte of server output on this attachment is about to go to the sink. */
  serverAnswered(): void;
  /**
   * The connection died while attached. `fatalForwarded`: the last message forwarded to the
   * sink was the server's own FATAL (or PANIC) ErrorResponse, so the client knows already.
   */
  serverLost(err: Error, fatalForwarded: boolean): void;
}

/**
 * State another layer keeps with this connection across leases: the frontend's record of the
 * prepared statements this server holds. Opaque here; disposed when the connection closes.
 */
export interface ServerAttachment {
  /** What the server holds is unknown: close the connection rather than reuse it. */
  readonly poisoned: boolean;
  dispose(): void;
}

/**
 * A client-side rewriter of this connection's replies (named prepared statements, implemented
 * in the frontend). While set, every message type in `REPLY_FILTER_TYPES` is collected whole
 * and reported; the filter says whether its bytes go on to the client (0) or are cut out (1),
 * and may answer the client itself (takeClient) or have more client bytes sent (takeServer).
 */
export interface ReplyFilter {
  /**
   * `body` is the message's body for ErrorResponse, and for a CommandComplete whose body
   * length `commandBody` accepts; empty for the rest.
   */
  serverMessage(type: number, body: Buffer): number;
  /** Wants the body of a CommandComplete of this body length (the tags it looks for). */
  commandBody(length: number): boolean;
  /**
   * While true, serverMessage would answer REPLY_FORWARD with no output and no change for
   * every type but ReadyForQuery and ErrorResponse: the pump frames with QUIET_MODES, which
   * reports no others (ParameterStatus aside).
   */
  readonly quiet: boolean;
  /** takeClient() or takeServer() has something (checked before calling them). */
  readonly hasOutput: boolean;
  takeClient(): Buffer[];
  takeServer(): Buffer[];
}

/** Must equal the frontend rewriter's REPLY_TYPES (checked by its unit test). */
export const REPLY_FILTER_TYPES = "123CEIsnTZNAS";
const REPLY_CUT = 1;

const MODE_IDLE = 0;
const MODE_PROXY = 1;
const MODE_INTERNAL = 2;

const PROXY_MODES = frameModes([
  ["Z", FRAME_COLLECT],
  ["S", FRAME_COLLECT],
  ["E", FRAME_COLLECT_SMALL],
]);

/** PROXY with a ReplyFilter: every reply type it must see is collected whole. */
const FILTER_MODES = frameModes([...REPLY_FILTER_TYPES].map((c) => [c, FRAME_COLLECT]));

/**
 * PROXY with a ReplyFilter in a quiet stretch (ReplyFilter.quiet): only the types the filter
 * and the pump still look at are collected, the rest pass without an event. Every type it
 * collects FILTER_MODES collects too, so a message framed under either is held back the same.
 */
const QUIET_MODES = frameModes([
  ["Z", FRAME_COLLECT],
  ["S", FRAME_COLLECT],
  ["E", FRAME_COLLECT],
]);

/**
 * SQLSTATEs of a server that goes away without running what it was sent: admin_shutdown,
 * crash_shutdown, cannot_connect_now, idle_session_timeout.
 */
const SHUTDOWN_CODES: ReadonlySet<string> = new Set(["57P01", "57P02", "57P03", "57P05"]);

/** Size of a server connection's read buffer (util/socket-io.ts): results stream through it. */
const SERVER_READ_BUFFER = 64 * 1024;

/** Writes up to this many bytes in several pieces are copied into one buffer (writeMany). */
const SMALL_WRITE = 16 * 1024;

const EMPTY = Buffer.alloc(0);

let nextId = 1;

export class ServerConnection {
  readonly id = nextId++;
  readonly opts: ServerOptions;
  readonly createdAt = performance.now();
  /** Epoch ms of the connect, for SHOW SERVERS. */
  readonly connectedAtWall = Date.now();
  tls = false;
  /** When it last went back to its pool (performance.now()). */
  lastReleasedAt = performance.now();
  /** Server's BackendKeyData. */
  pid = 0;
  secret = 0;
  /** Every ParameterStatus the server reported, latest value. */
  readonly reported = new Map<string, string>();
  /** What the server reported at the end of its login: where RESET / DISCARD ALL return to. */
  baseline: ReadonlyMap<string, string> = new Map();
  /** Settings pgwarden applied for clients (name → the value the client asked for). */
  readonly applied = new Map<string, string>();
  /** Stamp of the client settings last synced here (pool/params.ts); 0 = unknown. */
  settingsStamp = 0;
  /** Where the current lease copies what its client wrote, for a replay (pool/lease.ts). */
  replayScratch: Buffer | null = null;
  txStatus: number = TxStatus.Idle;
  closed = false;
  closeReason = "";
  /** Set by RECONNECT: close instead of reuse when next released. */
  markForClose = false;
  /** Its index in its pool's leased servers, -1 when not leased (owned by pool.ts). */
  leasedSlot = -1;
  /** Prepared statements held on this server (frontend state, see ServerAttachment). */
  prepared: ServerAttachment | null = null;
  /** Which credential of its pool's source it logged in with (0 = a static password). */
  credentialGeneration = 0;
  /** performance.now() by which the pool must close it (its credential's role is revoked), or null. */
  retireAt: number | null = null;
  /** Called once when the connection closes, for its pool. */
  onClose: ((conn: ServerConnection) => void) | null = null;
  /**
   * True only while the sink's serverReady runs, when more bytes follow that ReadyForQuery in
   * the same read: the server said something nobody asked for, so the pool must not reuse it.
   */
  moreAfterReady = false;

  private socket: net.Socket;
  /** The socket's reads and writes once logged in (installPump). */
  private io: SocketIO | null = null;
  private readonly framer = new Framer(PROXY_MODES);
  private mode = MODE_IDLE;
  private sink: ServerSink | null = null;
  private owner: ServerOwner | null = null;
  /** Some server byte went to the sink since attach(). */
  private answered = false;
  /** The last message forwarded to the sink was a FATAL or PANIC ErrorResponse. */
  private fatalForwarded = false;
  private internal: InternalQuery | null = null;
  private filter: ReplyFilter | null = null;
  /** Filtered mode: the bytes of the message cut by the last chunk's end were held back. */
  private heldPartial = false;

  private constructor(opts: ServerOptions, socket: net.Socket) {
    this.opts = opts;
    this.socket = socket;
  }

  static connect(opts: ServerOptions): Promise<ServerConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: opts.host, port: opts.port });
      socket.setNoDelay(true);
      socket.setKeepAlive(true, 30_000);
      const conn = new ServerConnection(opts, socket);
      new Login(conn, socket, resolve, reject).start();
    });
  }

  get idleMs(): number {
    return performance.now() - this.lastReleasedAt;
  }

  get ageMs(): number {
    return performance.now() - this.createdAt;
  }

  /** Called by Login when the first ReadyForQuery arrives; `rest` is any byte after it. */
  installPump(socket: net.Socket, rest: Buffer): void {
    this.socket = socket;
    this.tls = socket instanceof tls.TLSSocket;
    this.io = new SocketIO(socket, (chunk: Buffer) => this.onData(chunk), SERVER_READ_BUFFER);
    socket.on("error", (err) => this.destroy(`socket error: ${err.message}`, err));
    socket.on("end", () => this.destroy("server closed the connection"));
    socket.on("close", () => this.destroy("server closed the connection"));
    if (rest.length > 0) this.onData(rest);
  }

  attach(sink: ServerSink, owner: ServerOwner): void {
    this.sink = sink;
    this.owner = owner;
    this.answered = false;
    this.fatalForwarded = false;
    this.mode = MODE_PROXY;
  }

  /**
   * Sets (or clears) the reply filter of the current attachment. Between server messages the
   * switch is exact; a message the old mode already began forwarding is forwarded to its end.
   */
  setFilter(filter: ReplyFilter | null): void {
    this.filter = filter;
    this.heldPartial = false;
    this.framer.modes = filter === null ? PROXY_MODES : FILTER_MODES;
  }

  detach(): void {
    if (this.filter !== null) this.setFilter(null);
    this.sink = null;
    this.owner = null;
    this.mode = MODE_IDLE;
    if (this.io!.isPaused) this.io!.resume();
  }

  write(data: Buffer): boolean {
    return this.io!.write(data);
  }

  /** Writes buf[start, end), which need not outlive the call (copied: SocketIO.writeCopy). */
  writeRange(buf: Buffer, start: number, end: number): boolean {
    return this.io!.writeCopy(buf, start, end);
  }

  /**
   * Several buffers in one write: copied into one when small (a copy of a few hundred bytes
   * costs less than a write per buffer), else written one after the other.
   */
  writeMany(data: Buffer[]): boolean {
    const io = this.io!;
    if (data.length === 1) return io.write(data[0]!);
    let total = 0;
    for (const b of data) total += b.length;
    if (total <= SMALL_WRITE) return io.write(Buffer.concat(data, total));
    return io.writeMany(data);
  }

  pause(): void {
    this.io!.pause();
  }

  onceDrain(cb: () => void): void {
    this.io!.onceDrain(cb);
  }

  resume(): void {
    this.io!.resume();
  }

  /** Runs one pooler-issued simple query; rejects with the server's PgError if it fails. */
  query(sql: string): Promise<void> {
    if (this.closed)
      return Promise.reject(new PgwardenError("SERVER_CLOSED", "server connection closed"));
    return new Promise((resolve, reject) => {
      this.internal = { resolve, reject, error: null };
      this.mode = MODE_INTERNAL;
      this.framer.collectAll = true;
      this.io!.write(queryMessage(sql));
    });
  }

  /** Asks the server to cancel what this connection runs (a new connection, as the protocol says). */
  cancel(): void {
    const { host, port } = this.opts;
    const s = net.connect({ host, port });
    s.on("connect", () => s.end(cancelRequest(this.pid, this.secret)));
    s.on("error", (err) =>
      this.opts.logger.warn({ server: this.opts.label, err: err.message }, "cancel request failed"),
    );
    s.setTimeout(this.opts.connectTimeout, () => s.destroy());
  }

  /** Polite close: Terminate, then end. */
  close(reason: string): void {
    if (this.closed) return;
    if (!this.socket.destroyed) this.socket.end(terminate);
    this.destroy(reason);
  }

  destroy(reason: string, err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    this.socket.destroy();
    this.opts.logger.info(
      { server: this.opts.label, backend_pid: this.pid, conn: this.id, reason },
      "server connection closed",
    );
    this.prepared?.dispose();
    this.prepared = null;
    this.filter = null;
    const internal = this.internal;
    this.internal = null;
    if (internal)
      internal.reject(new PgwardenError("SERVER_CLOSED", `server connection closed: ${reason}`));
    const owner = this.owner;
    this.owner = null;
    this.sink = null;
    this.onClose?.(this);
    if (owner)
      owner.serverLost(err ?? new PgwardenError("SERVER_CLOSED", reason), this.fatalForwarded);
  }

  private onData(chunk: Buffer): void {
    if (this.mode === MODE_IDLE) {
      this.idleData(chunk);
      return;
    }
    if (this.filter !== null && this.mode === MODE_PROXY) {
      this.onDataFiltered(chunk, this.filter);
      return;
    }
    const f = this.framer;
    let pos = 0;
    let fwd = 0;
    try {
      while (pos < chunk.length) {
        pos = f.feed(chunk, pos);
        if (f.event !== EVENT_MESSAGE) continue;
        const type = f.type;
        if (this.mode !== MODE_PROXY) {
          if (this.mode === MODE_INTERNAL) {
            this.internalMessage(type, f.body);
            fwd = pos;
            continue;
          }
          // An internal query ended with the server idle, and it said more.
          this.idleData(chunk.subarray(fwd));
          return;
        }
        if (type === Msg.ReadyForQuery) {
          this.txStatus = f.bodyByte(0);
          const sink = this.sink!;
          if (!this.answered) this.firstAnswer();
          sink.serverData(fwd === 0 && pos === chunk.length ? chunk : chunk.subarray(fwd, pos));
          fwd = pos;
          this.moreAfterReady = pos < chunk.length;
          sink.serverReady(this.txStatus);
          this.moreAfterReady = false;
          if (this.sink !== sink) {
            // Released. Bytes after this ReadyForQuery were asked for by nobody: the pool did
            // not reuse a server that sent them (moreAfterReady), so this one is closing, or
            // it is closed here. Never forward them to whoever leases it next.
            if (pos < chunk.length && !this.closed)
              this.destroy("server sent data after ReadyForQuery with nobody to read it");
            return;
          }
        } else if (type === Msg.ParameterStatus) {
          const [name, value] = parseParameterStatus(f.body);
          this.reported.set(name, value);
          this.sink?.serverParameter(name, value);
        } else if (type === Msg.ErrorResponse) {
          if (this.proxyError(f.body, pos - 5 - f.bodyLength, fwd)) return;
        }
      }
      if (fwd < chunk.length) {
        const sink = this.sink;
        if (sink !== null && this.mode === MODE_PROXY) {
          if (!this.answered) this.firstAnswer();
          if (!sink.serverData(fwd === 0 ? chunk : chunk.subarray(fwd))) this.io!.pause();
        } else if (this.mode === MODE_IDLE) {
          this.idleData(chunk.subarray(fwd));
        }
      }
    } catch (err) {
      this.destroy(`protocol error from server: ${errorMessage(err)}`, err as Error);
    }
  }

  /**
   * The PROXY pump with a ReplyFilter. Collected messages are reported to the filter in order;
   * forwarded bytes still go out as ranges of the chunk. A collected message is never half
   * forwarded: if the chunk ends inside one (or inside a header of such a type), its bytes are
   * held back and the whole message is rebuilt once it is complete.
   */
  private onDataFiltered(chunk: Buffer, filter: ReplyFilter): void {
    // Nothing here keeps the chunk beyond this call: forwarded ranges are written at once (a
    // write libuv holds moves this socket to a new read buffer, util/socket-io.ts), the filter
    // only looks at bodies, and a message cut by the chunk's end is stitched by the framer.
    const f = this.framer;
    const sink = this.sink!;
    let pos = 0;
    let fwd = 0;
    let flowing = true;
    f.msgStart = -1;
    // The client may have started a quiet stretch since the last chunk. (Not while a message
    // cut by the last chunk is held back: it finishes under the modes it began with.)
    if (!this.heldPartial) f.modes = filter.quiet ? QUIET_MODES : FILTER_MODES;
    try {
      while (pos < chunk.length) {
        pos = f.feed(chunk, pos);
        if (f.event !== EVENT_MESSAGE) continue;
        const type = f.type;
        const start = f.msgStart >= 0 && f.msgStart < pos ? f.msgStart : -1;
        const held = start < 0 && this.heldPartial;
        this.heldPartial = false;
        // A view of the body only where it is read (most replies are only counted).
        const body =
          held ||
          type === Msg.ErrorResponse ||
          type === Msg.ParameterStatus ||
          (type === Msg.CommandComplete && filter.commandBody(f.bodyLength))
            ? f.body
            : EMPTY;
        if (type === Msg.ErrorResponse && this.proxyError(body, start, fwd)) return;
        const verdict = filter.serverMessage(type, body);
        // At a message boundary: a stretch may have begun or ended with this message.
        f.modes = filter.quiet ? QUIET_MODES : FILTER_MODES;
        if (verdict === REPLY_CUT && (start >= 0 || held)) {
          if (start > fwd) flowing = this.toSink(sink, chunk.subarray(fwd, start)) && flowing;
          fwd = pos;
        } else if (held) {
          const whole = Buffer.allocUnsafe(5 + body.length);
          whole[0] = type;
          whole.writeInt32BE(4 + body.length, 1);
          body.copy(whole, 5);
          flowing = this.toSink(sink, whole) && flowing;
          fwd = pos;
        }
        if (filter.hasOutput) {
          const toClient = filter.takeClient();
          if (toClient.length > 0) {
            if (pos > fwd) flowing = this.toSink(sink, chunk.subarray(fwd, pos)) && flowing;
            fwd = pos;
            for (const b of toClient) flowing = this.toSink(sink, b) && flowing;
          }
          const toServer = filter.takeServer();
          if (toServer.length > 0) this.writeMany(toServer);
        }
        if (type === Msg.ReadyForQuery) {
          this.txStatus = f.bodyByte(0);
          if (pos > fwd)
            this.toSink(sink, fwd === 0 && pos === chunk.length ? chunk : chunk.subarray(fwd, pos));
          fwd = pos;
          this.moreAfterReady = pos < chunk.length;
          sink.serverReady(this.txStatus);
          this.moreAfterReady = false;
          if (this.sink !== sink) {
            if (pos < chunk.length && !this.closed)
              this.destroy("server sent data after ReadyForQuery with nobody to read it");
            return;
          }
          if (this.filter !== filter) {
            // The filter was taken off in serverReady: the rest goes the plain way.
            if (pos < chunk.length) this.onData(chunk.subarray(pos));
            return;
          }
        } else if (type === Msg.ParameterStatus) {
          const [name, value] = parseParameterStatus(body);
          this.reported.set(name, value);
          sink.serverParameter(name, value);
        }
      }
      let end = chunk.length;
      const pt = f.partialType;
      if (pt >= 0 && f.modes[pt] === FRAME_COLLECT) {
        if (f.msgStart >= fwd && f.msgStart < chunk.length) {
          end = f.msgStart;
          this.heldPartial = true;
        } else if (this.heldPartial) {
          end = fwd;
        }
      }
      if (end > fwd) flowing = this.toSink(sink, chunk.subarray(fwd, end)) && flowing;
      if (!flowing && this.sink === sink) this.io!.pause();
    } catch (err) {
      this.destroy(`protocol error from server: ${errorMessage(err)}`, err as Error);
    }
  }

  private toSink(sink: ServerSink, data: Buffer): boolean {
    if (!this.answered) this.firstAnswer();
    return sink.serverData(data);
  }

  private firstAnswer(): void {
    this.answered = true;
    this.owner?.serverAnswered();
  }

  /**
   * An ErrorResponse on its way to the client, starting at `start` in the chunk (negative when
   * it began in an earlier chunk). Returns true when the connection was closed instead: a
   * shutdown FATAL before anything of a reply was forwarded on this attachment.
   */
  private proxyError(body: Buffer, start: number, fwd: number): boolean {
    const code = fatalCode(body);
    if (code === null) return false;
    if (!this.answered && start === fwd && SHUTDOWN_CODES.has(code)) {
      const err = pgErrorFrom(body, this.opts.label);
      this.destroy(`server went away before answering: ${code} ${err.message}`, err);
      return true;
    }
    this.fatalForwarded = true;
    return false;
  }

  private idleData(data: Buffer): void {
    // An idle server only speaks before it goes away (FATAL on termination) or for async
    // notices; either way it is not fit for the next client.
    let what = `${data.length} bytes`;
    if (data[0] === Msg.ErrorResponse && data.length >= 5) {
      const end = 1 + data.readInt32BE(1);
      if (end >= 5 && end <= data.length) {
        try {
          what = describeError(data.subarray(5, end));
        } catch {
          // malformed: the byte count will do
        }
      }
    }
    this.destroy(`server sent data while idle (${what})`);
  }

  private internalMessage(type: number, body: Buffer): void {
    const q = this.internal;
    if (q === null) return;
    if (type === Msg.ErrorResponse) {
      q.error = pgErrorFrom(body, this.opts.label);
    } else if (type === Msg.ParameterStatus) {
      const [name, value] = parseParameterStatus(body);
      this.reported.set(name, value);
    } else if (type === Msg.ReadyForQuery) {
      this.txStatus = body[0]!;
      this.internal = null;
      this.mode = this.sink === null ? MODE_IDLE : MODE_PROXY;
      this.framer.collectAll = false;
      if (q.error) q.reject(q.error);
      else q.resolve();
    }
  }
}

interface InternalQuery {
  resolve: () => void;
  reject: (err: Error) => void;
  error: PgError | null;
}

/** The SQLSTATE of a FATAL or PANIC ErrorResponse body; null for any other severity. */
export function fatalCode(body: Buffer): string | null {
  let severity = "";
  let code = "";
  let off = 0;
  while (off < body.length && body[off] !== 0) {
    const tag = body[off]!;
    const end = body.indexOf(0, off + 1);
    if (end < 0) break;
    // V is the untranslated severity (PostgreSQL 9.6+); S may be localized.
    if (tag === 0x56 /* V */ || (tag === 0x53 /* S */ && severity === ""))
      severity = body.toString("latin1", off + 1, end);
    else if (tag === 0x43 /* C */) code = body.toString("latin1", off + 1, end);
    off = end + 1;
  }
  return severity === "FATAL" || severity === "PANIC" ? code : null;
}

function describeError(body: Buffer): string {
  const f = parseErrorFields(body);
  return `${f.V ?? f.S ?? "?"} ${f.C ?? "?"}: ${f.M ?? ""}`;
}

export function pgErrorFrom(body: Buffer, label: string): PgError {
  const f = parseErrorFields(body);
  const severity = (f.V ?? f.S ?? "ERROR") as "ERROR" | "FATAL";
  const opts: { detail?: string; hint?: string; context: { pool: string } } = {
    context: { pool: label },
  };
  if (f.D !== undefined) opts.detail = f.D;
  if (f.H !== undefined) opts.hint = f.H;
  return new PgError(severity, f.C ?? "XX000", f.M ?? "unknown server error", opts);
}

/** The login state machine of one server connection. */
class Login {
  private readonly buf = new MessageBuffer();
  private timer: NodeJS.Timeout | null = null;
  private remainingMs: number;
  private startedAt = 0;
  private scram: ScramClient | null = null;
  private done = false;

  constructor(
    private readonly conn: ServerConnection,
    private socket: net.Socket,
    private readonly resolve: (c: ServerConnection) => void,
    private readonly reject: (e: Error) => void,
  ) {
    this.remainingMs = conn.opts.connectTimeout;
  }

  private get ctx() {
    const o = this.conn.opts;
    return { pool: o.label, host: o.host, port: o.port, user: o.user, database: o.database };
  }

  start(): void {
    this.armTimer();
    const s = this.socket;
    s.on("error", (err) =>
      this.fail(
        new PgwardenError(
          "SERVER_CONNECT",
          `could not connect to server ${this.where()}: ${err.message}`,
          this.ctx,
          err,
        ),
      ),
    );
    s.on("close", () =>
      this.fail(
        new PgwardenError(
          "SERVER_CONNECT",
          `server ${this.where()} closed the connection during login`,
          this.ctx,
        ),
      ),
    );
    s.once("connect", () => {
      if (this.conn.opts.tlsMode === "disabled") this.sendStartup();
      else this.requestTls();
    });
  }

  private where(): string {
    const { host, port } = this.conn.opts;
    return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  }

  private armTimer(): void {
    this.startedAt = performance.now();
    this.timer = setTimeout(
      () => {
        this.fail(
          new PgwardenError(
            "SERVER_CONNECT_TIMEOUT",
            `timed out after ${this.conn.opts.connectTimeout} ms connecting to server ${this.where()}`,
            this.ctx,
          ),
        );
      },
      Math.max(1, this.remainingMs),
    );
  }

  private pauseTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.remainingMs -= performance.now() - this.startedAt;
  }

  private requestTls(): void {
    const s = this.socket;
    s.write(sslRequest);
    const onByte = (chunk: Buffer) => {
      s.removeListener("data", onByte);
      const answer = chunk[0];
      if (chunk.length > 1) {
        this.fail(
          new PgwardenError("SERVER_TLS", "server sent data after its SSL response", this.ctx),
        );
        return;
      }
      if (answer === 0x53 /* S */) {
        this.startTls();
      } else if (answer === 0x4e /* N */) {
        if (this.conn.opts.tlsMode === "prefer") this.sendStartup();
        else
          this.fail(
            new PgwardenError(
              "SERVER_TLS",
              `server ${this.where()} does not support TLS, and tls_verify is "${this.conn.opts.tlsMode}"`,
              this.ctx,
            ),
          );
      } else {
        this.fail(new PgwardenError("SERVER_TLS", "unexpected answer to SSLRequest", this.ctx));
      }
    };
    s.on("data", onByte);
  }

  private startTls(): void {
    const o = this.conn.opts;
    const raw = this.socket;
    raw.removeAllListeners("error");
    raw.removeAllListeners("close");
    const options: tls.ConnectionOptions = {
      socket: raw,
      rejectUnauthorized: o.tlsMode === "verify_ca" || o.tlsMode === "verify_full",
    };
    if (o.tlsCa) options.ca = o.tlsCa;
    if (net.isIP(o.host) === 0) options.servername = o.host;
    if (o.tlsMode === "verify_ca") options.checkServerIdentity = () => undefined;
    else if (o.tlsMode === "verify_full")
      options.checkServerIdentity = (_h, cert) => tls.checkServerIdentity(o.host, cert);
    const secure = tls.connect(options);
    secure.setNoDelay?.(true);
    this.socket = secure;
    secure.on("error", (err) =>
      this.fail(
        new PgwardenError(
          "SERVER_TLS",
          `TLS with server ${this.where()} failed: ${err.message}`,
          this.ctx,
          err,
        ),
      ),
    );
    secure.on("close", () =>
      this.fail(
        new PgwardenError(
          "SERVER_CONNECT",
          `server ${this.where()} closed the connection during login`,
          this.ctx,
        ),
      ),
    );
    secure.once("secureConnect", () => this.sendStartup());
  }

  private sendStartup(): void {
    const o = this.conn.opts;
    this.socket.on("data", (chunk: Buffer) => this.onData(chunk));
    this.socket.write(
      startupMessage({ user: o.user, database: o.database, ...(o.startupParams ?? {}) }),
    );
  }

  private onData(chunk: Buffer): void {
    if (this.done) return;
    this.buf.push(chunk);
    try {
      for (
        let m = this.buf.next();
        m !== null && !this.done;
        m = this.done ? null : this.buf.next()
      ) {
        this.onMessage(m.type, m.body);
      }
    } catch (err) {
      this.fail(
        new PgwardenError(
          "SERVER_PROTOCOL",
          `protocol error from server ${this.where()}: ${errorMessage(err)}`,
          this.ctx,
          err,
        ),
      );
    }
  }

  private onMessage(type: number, body: Buffer): void {
    switch (type) {
      case Msg.Authentication:
        this.onAuth(body);
        return;
      case Msg.ParameterStatus: {
        const [k, v] = parseParameterStatus(body);
        this.conn.reported.set(k, v);
        return;
      }
      case Msg.BackendKeyData:
        this.conn.pid = body.readInt32BE(0);
        this.conn.secret = body.readInt32BE(4);
        return;
      case Msg.ErrorResponse:
        this.fail(pgErrorFrom(body, this.conn.opts.label));
        return;
      case Msg.NoticeResponse:
        return;
      case Msg.ReadyForQuery:
        this.conn.txStatus = body[0]!;
        if (this.buf.pending > 0) {
          // More right after the first ReadyForQuery: a server shutting down as we logged in
          // (its FATAL), or junk. Either way not a connection to hand out.
          const next = this.buf.next();
          this.fail(
            next !== null && next.type === Msg.ErrorResponse
              ? pgErrorFrom(next.body, this.conn.opts.label)
              : new PgwardenError(
                  "SERVER_CONNECT",
                  `server ${this.where()} sent data right after login`,
                  this.ctx,
                ),
          );
          return;
        }
        this.succeed();
        return;
      case 0x76: // NegotiateProtocolVersion: we asked for nothing optional; carry on.
        return;
      default:
        throw new Error(`unexpected message type ${String.fromCharCode(type)} during login`);
    }
  }

  private onAuth(body: Buffer): void {
    const code = body.readInt32BE(0);
    switch (code) {
      case AuthCode.Ok:
        return;
      case AuthCode.CleartextPassword:
        this.withCredential((secret) => passwordMessage(secret));
        return;
      case AuthCode.MD5Password: {
        const salt = Buffer.from(body.subarray(4, 8));
        this.withCredential((secret) =>
          passwordMessage(md5Response(this.conn.opts.user, secret, salt)),
        );
        return;
      }
      case AuthCode.SASL: {
        const mechanisms: string[] = [];
        let off = 4;
        while (off < body.length && body[off] !== 0) {
          const [m, next] = readCString(body, off);
          mechanisms.push(m);
          off = next;
        }
        if (!mechanisms.includes("SCRAM-SHA-256")) {
          throw new Error(`server offers no supported SASL mechanism (${mechanisms.join(", ")})`);
        }
        this.withCredential((secret) => {
          this.scram = new ScramClient(secret);
          return saslInitialResponse("SCRAM-SHA-256", this.scram.clientFirstMessage());
        });
        return;
      }
      case AuthCode.SASLContinue: {
        if (!this.scram) throw new Error("SASLContinue without SASL start");
        this.socket.write(saslResponse(this.scram.handleServerFirst(body.toString("utf8", 4))));
        return;
      }
      case AuthCode.SASLFinal: {
        if (!this.scram) throw new Error("SASLFinal without SASL start");
        this.scram.verifyServerFinal(body.toString("utf8", 4));
        return;
      }
      default:
        throw new Error(`unsupported authentication request ${code} from server`);
    }
  }

  /** Fetches the secret with the connect timer paused, then answers the server. */
  private withCredential(answer: (secret: string) => Buffer): void {
    this.pauseTimer();
    this.socket.pause();
    this.conn.opts.getCredential().then(
      (secret) => {
        if (this.done) return;
        this.armTimer();
        try {
          this.socket.write(answer(secret));
        } catch (err) {
          this.fail(
            new PgwardenError(
              "SERVER_AUTH",
              `authentication with server ${this.where()} failed: ${errorMessage(err)}`,
              this.ctx,
              err,
            ),
          );
          return;
        }
        this.socket.resume();
      },
      (err: unknown) =>
        this.fail(
          err instanceof PgwardenError
            ? err
            : new PgwardenError(
                "CREDENTIAL",
                `could not get credential: ${errorMessage(err)}`,
                this.ctx,
                err,
              ),
        ),
    );
  }

  private succeed(): void {
    this.done = true;
    if (this.timer) clearTimeout(this.timer);
    const s = this.socket;
    s.removeAllListeners("data");
    s.removeAllListeners("error");
    s.removeAllListeners("close");
    this.conn.baseline = new Map(this.conn.reported);
    this.conn.installPump(s, this.buf.takeRest());
    this.conn.opts.logger.info(
      {
        server: this.conn.opts.label,
        host: this.conn.opts.host,
        port: this.conn.opts.port,
        backend_pid: this.conn.pid,
        conn: this.conn.id,
        tls: s instanceof tls.TLSSocket,
      },
      "server connection opened",
    );
    this.resolve(this.conn);
  }

  private fail(err: Error): void {
    if (this.done) return;
    this.done = true;
    if (this.timer) clearTimeout(this.timer);
    this.socket.removeAllListeners("data");
    this.socket.on("error", () => {});
    this.socket.destroy();
    this.conn.closed = true;
    this.reject(err);
  }
}
