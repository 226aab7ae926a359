// Frontend message builders and a raw protocol connection for the fuzzer: it logs in (SCRAM) with
// exact control over which bytes go out when, then records everything pgwarden sends back and
// when it closes.

import net from "node:net";
import {
  cancelRequest,
  passwordMessage,
  query,
  ScramClient,
  saslInitialResponse,
  saslResponse,
  sslRequest,
  startupMessage,
  terminate,
} from "../../src/protocol/index.js";

/** A typed message: type byte, Int32 length (body + 4), body. */
export function msg(type: string | number, body: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(5 + body.length);
  b[0] = typeof type === "number" ? type : type.charCodeAt(0);
  b.writeInt32BE(body.length + 4, 1);
  body.copy(b, 5);
  return b;
}

function cstr(s: string): Buffer {
  return Buffer.from(`${s}\0`);
}

function int16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
}

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n | 0);
  return b;
}

/** Frontend messages, named after the protocol specification. */
export const fe = {
  startup: (params: Record<string, string>) => startupMessage(params),
  /** A startup packet with another protocol version (2.0, 3.2, 1234.5678). */
  startupVersion(version: number, params: Record<string, string>): Buffer {
    const b = startupMessage(params);
    b.writeInt32BE(version, 4);
    return b;
  },
  ssl: () => Buffer.from(sslRequest),
  gssenc(): Buffer {
    const b = Buffer.alloc(8);
    b.writeInt32BE(8, 0);
    b.writeInt32BE(80877104, 4);
    return b;
  },
  cancel: (pid: number, secret: number) => cancelRequest(pid | 0, secret | 0),
  password: (p: string) => passwordMessage(p),
  saslInitial: (mech: string, data: string) => saslInitialResponse(mech, data),
  saslResponse: (data: string) => saslResponse(data),
  query: (sql: string) => query(sql),
  parse: (name: string, sql: string, types: number[] = []) =>
    msg("P", Buffer.concat([cstr(name), cstr(sql), int16(types.length), ...types.map(int32)])),
  bind(portal: string, stmt: string, params: Array<string | null>): Buffer {
    const vals = params.map((p) =>
      p === null ? int32(-1) : Buffer.concat([int32(Buffer.byteLength(p)), Buffer.from(p)]),
    );
    return msg(
      "B",
      Buffer.concat([cstr(portal), cstr(stmt), int16(0), int16(params.length), ...vals, int16(0)]),
    );
  },
  describe: (kind: "S" | "P", name: string) =>
    msg("D", Buffer.concat([Buffer.from(kind), cstr(name)])),
  execute: (portal: string, maxRows = 0) => msg("E", Buffer.concat([cstr(portal), int32(maxRows)])),
  sync: () => msg("S"),
  flush: () => msg("H"),
  close: (kind: "S" | "P", name: string) =>
    msg("C", Buffer.concat([Buffer.from(kind), cstr(name)])),
  copyData: (data: Buffer | string) => msg("d", Buffer.from(data)),
  copyDone: () => msg("c"),
  copyFail: (why: string) => msg("f", cstr(why)),
  terminate: () => Buffer.from(terminate),
  /** FunctionCall: oid, argument formats (none), arguments, result format text. */
  functionCall(oid: number, args: Array<string | null>): Buffer {
    const vals = args.map((a) =>
      a === null ? int32(-1) : Buffer.concat([int32(Buffer.byteLength(a)), Buffer.from(a)]),
    );
    return msg("F", Buffer.concat([int32(oid), int16(0), int16(args.length), ...vals, int16(0)]));
  },
};

export interface BackendMessage {
  type: string;
  body: Buffer;
}

/** Fields of an ErrorResponse/NoticeResponse body. */
export function errorFields(body: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let off = 0;
  while (off < body.length && body[off] !== 0) {
    const code = String.fromCharCode(body[off]!);
    const end = body.indexOf(0, off + 1);
    if (end < 0) break;
    out[code] = body.toString("utf8", off + 1, end);
    off = end + 1;
  }
  return out;
}

/**
 * Splits a backend byte stream into typed messages as far as it frames; `rest` is what does not
 * (a partial message at the end, or garbage).
 */
export function splitBackend(buf: Buffer): { messages: BackendMessage[]; rest: Buffer } {
  const messages: BackendMessage[] = [];
  let off = 0;
  while (buf.length - off >= 5) {
    const len = buf.readInt32BE(off + 1);
    if (len < 4 || off + 1 + len > buf.length) break;
    messages.push({
      type: String.fromCharCode(buf[off]!),
      body: buf.subarray(off + 5, off + 1 + len),
    });
    off += 1 + len;
  }
  return { messages, rest: buf.subarray(off) };
}

export class LoginError extends Error {}

/** A raw client connection: writes exact bytes, records what comes back and when it closes. */
export class RawConn {
  readonly socket: net.Socket;
  private chunks: Buffer[] = [];
  private readOff = 0;
  private buffered: Buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  closed = false;
  /** performance.now() of the last byte received or written. */
  lastActivity = performance.now();
  readonly closedPromise: Promise<void>;
  error: Error | null = null;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on("data", (c: Buffer) => {
      this.chunks.push(c);
      this.buffered = this.buffered.length === 0 ? c : Buffer.concat([this.buffered, c]);
      this.lastActivity = performance.now();
      this.wake();
    });
    socket.on("error", (err) => {
      this.error = err;
    });
    this.closedPromise = new Promise((resolve) => {
      socket.once("close", () => {
        this.closed = true;
        this.lastActivity = performance.now();
        this.wake();
        resolve();
      });
    });
  }

  static connect(host: string, port: number, timeoutMs = 10_000): Promise<RawConn> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host, port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error(`connect to ${host}:${port} timed out`));
      }, timeoutMs);
      s.once("connect", () => {
        clearTimeout(timer);
        s.removeListener("error", reject);
        resolve(new RawConn(s));
      });
      s.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private waitForData(deadline: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, Math.max(0, deadline - performance.now()));
      this.waiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  write(data: Buffer): void {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(data);
    this.lastActivity = performance.now();
  }

  /** Everything received so far. */
  received(): Buffer {
    return Buffer.concat(this.chunks);
  }

  /** Bytes received that readMessage has not consumed. */
  unread(): Buffer {
    return this.buffered.subarray(this.readOff);
  }

  /** The next typed message (login phase). Throws LoginError on close, timeout or an error. */
  async readMessage(timeoutMs = 10_000): Promise<BackendMessage> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const avail = this.buffered.length - this.readOff;
      if (avail >= 5) {
        const len = this.buffered.readInt32BE(this.readOff + 1);
        if (len < 4) throw new LoginError(`bad length ${len} from pgwarden`);
        if (avail >= len + 1) {
          const m = {
            type: String.fromCharCode(this.buffered[this.readOff]!),
            body: this.buffered.subarray(this.readOff + 5, this.readOff + 1 + len),
          };
          this.readOff += len + 1;
          return m;
        }
      }
      if (this.closed) throw new LoginError("connection closed by pgwarden");
      if (performance.now() >= deadline) throw new LoginError("timed out waiting for a message");
      await this.waitForData(deadline);
    }
  }

  /** Reads messages until one of `type` (an ErrorResponse first throws LoginError). */
  async readUntil(type: string, timeoutMs = 10_000): Promise<BackendMessage> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const m = await this.readMessage(Math.max(1, deadline - performance.now()));
      if (m.type === type) return m;
      if (m.type === "E") {
        const f = errorFields(m.body);
        throw new LoginError(`error from pgwarden: ${f.C} ${f.M}`);
      }
    }
  }

  /**
   * Waits until pgwarden closes the connection, or until it has been quiet (nothing received
   * or written) for `quietMs`. Returns whether it is closed.
   */
  async settle(quietMs: number, maxMs: number): Promise<boolean> {
    const hardDeadline = performance.now() + maxMs;
    while (!this.closed) {
      const quietUntil = this.lastActivity + quietMs;
      const now = performance.now();
      if (now >= quietUntil || now >= hardDeadline) return false;
      await this.waitForData(Math.min(quietUntil, hardDeadline));
    }
    return true;
  }

  /** Half-closes our side (FIN) and waits up to `timeoutMs` for pgwarden to close. */
  async finAndWait(timeoutMs: number): Promise<boolean> {
    if (!this.closed) this.socket.end();
    const deadline = performance.now() + timeoutMs;
    while (!this.closed && performance.now() < deadline) await this.waitForData(deadline);
    return this.closed;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export interface LoginOptions {
  user: string;
  database: string;
  password: string;
  /** Extra startup parameters (application_name, search_path, …). */
  params?: Record<string, string>;
  /**
   * Where to stop: "sasl" returns after AuthenticationSASL (nothing sent), "continue" after
   * AuthenticationSASLContinue with the client-final-message ready but not sent, "ready" (the
   * default) after the first ReadyForQuery.
   */
  until?: "sasl" | "continue" | "ready";
}

export interface LoginState {
  conn: RawConn;
  scram: ScramClient;
  /** The client-first-message sent (or to send) in SASLInitialResponse. */
  clientFirst: string;
  /** With until "continue": the SASLResponse to send next. */
  clientFinal?: string;
  /** The BackendKeyData pgwarden handed out. */
  pid?: number;
  secret?: number;
}

/** Logs in over `conn` with SCRAM-SHA-256 (pgwarden's auth_type = "scram"). */
export async function login(conn: RawConn, o: LoginOptions): Promise<LoginState> {
  conn.write(fe.startup({ user: o.user, database: o.database, ...(o.params ?? {}) }));
  const r = await conn.readUntil("R");
  if (r.body.readInt32BE(0) !== 10) throw new LoginError("expected AuthenticationSASL");
  const scram = new ScramClient(o.password);
  const state: LoginState = { conn, scram, clientFirst: scram.clientFirstMessage() };
  if (o.until === "sasl") return state;
  conn.write(fe.saslInitial("SCRAM-SHA-256", state.clientFirst));
  const cont = await conn.readUntil("R");
  if (cont.body.readInt32BE(0) !== 11) throw new LoginError("expected AuthenticationSASLContinue");
  state.clientFinal = scram.handleServerFirst(cont.body.toString("utf8", 4));
  if (o.until === "continue") return state;
  conn.write(fe.saslResponse(state.clientFinal));
  for (;;) {
    const m = await conn.readMessage();
    if (m.type === "E") {
      const f = errorFields(m.body);
      throw new LoginError(`login failed: ${f.C} ${f.M}`);
    }
    if (m.type === "K") {
      state.pid = m.body.readInt32BE(0);
      state.secret = m.body.readInt32BE(4);
    }
    if (m.type === "Z") return state;
  }
}
