// A client that speaks the wire protocol byte by byte, for tests that must send what no driver
// sends (broken headers, half a startup packet, a Terminate before login) and see exactly what
// comes back, message by message, and when the connection closes.
import net from "node:net";
import {
  MessageBuffer,
  parseErrorFields,
  passwordMessage,
  ScramClient,
  saslInitialResponse,
  saslResponse,
  startupMessage,
} from "../../src/protocol/index.js";

export interface RawMessage {
  /** The type byte as a character ("R", "E", "Z", …). */
  type: string;
  body: Buffer;
}

export class RawClient {
  readonly socket: net.Socket;
  /** Every message received so far, in order. */
  readonly received: RawMessage[] = [];
  /** Raw bytes received (also those before any message could be framed). */
  bytes = 0;
  closed = false;
  private readonly buf = new MessageBuffer();
  private waiters: Array<() => void> = [];
  private read = 0;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.bytes += chunk.length;
      this.buf.push(chunk);
      for (let m = this.buf.next(); m !== null; m = this.buf.next()) {
        this.received.push({ type: String.fromCharCode(m.type), body: Buffer.from(m.body) });
      }
      this.wake();
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      this.closed = true;
      this.wake();
    });
  }

  static connect(target: { host: string; port: number }): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: target.host, port: target.port });
      s.once("connect", () => {
        s.removeListener("error", reject);
        s.setNoDelay(true);
        resolve(new RawClient(s));
      });
      s.once("error", reject);
    });
  }

  send(data: Buffer | string): void {
    this.socket.write(data);
  }

  /** The next message not yet returned by next()/until(), or null once the connection closed. */
  async next(timeoutMs = 10_000): Promise<RawMessage | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.read < this.received.length) return this.received[this.read++]!;
      if (this.closed) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no message within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Reads messages up to and including the first of `type`; throws if the connection closes. */
  async until(type: string, timeoutMs = 10_000): Promise<RawMessage[]> {
    const out: RawMessage[] = [];
    for (;;) {
      const m = await this.next(timeoutMs);
      if (m === null) {
        const errs = out.filter((x) => x.type === "E").map((x) => JSON.stringify(errorFields(x)));
        throw new Error(`connection closed before "${type}" ${errs.join(" ")}`);
      }
      out.push(m);
      if (m.type === type) return out;
    }
  }

  /** Resolves true once the server closed the connection, false if still open after `ms`. */
  async waitClosed(ms = 10_000): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.closed && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.closed;
  }

  /** The ErrorResponses received so far, as their fields (C = SQLSTATE, M = message, …). */
  errors(): Array<Record<string, string>> {
    return this.received.filter((m) => m.type === "E").map(errorFields);
  }

  /** Transaction status of the last ReadyForQuery ("I", "T", "E"). */
  get txStatus(): string {
    for (let i = this.received.length - 1; i >= 0; i--) {
      const m = this.received[i]!;
      if (m.type === "Z") return String.fromCharCode(m.body[0]!);
    }
    return "";
  }

  /**
   * StartupMessage and a login with SCRAM-SHA-256 or a cleartext password, whichever the server
   * asks for; resolves at the first ReadyForQuery (throws with the error if the login fails).
   */
  async login(user: string, password: string, database: string): Promise<RawMessage[]> {
    this.send(startupMessage({ user, database }));
    const [auth] = (await this.until("R")).slice(-1);
    const code = auth!.body.readInt32BE(0);
    if (code === 3) {
      this.send(passwordMessage(password));
      return this.until("Z");
    }
    if (code !== 10) throw new Error(`unsupported authentication request ${code}`);
    const scram = new ScramClient(password);
    this.send(saslInitialResponse("SCRAM-SHA-256", scram.clientFirstMessage()));
    const cont = (await this.until("R")).at(-1)!;
    this.send(saslResponse(scram.handleServerFirst(cont.body.toString("utf8", 4))));
    return this.until("Z");
  }

  /** Runs a simple query; resolves at its ReadyForQuery, rejects with an ErrorResponse's fields. */
  async query(sql: string, timeoutMs = 10_000): Promise<RawMessage[]> {
    this.send(queryMessage(sql));
    const msgs = await this.until("Z", timeoutMs);
    const err = msgs.find((m) => m.type === "E");
    if (err) throw new Error(JSON.stringify(errorFields(err)));
    return msgs;
  }

  /** Every ErrorResponse from now until the connection closes (or `ms` pass), then closes. */
  async errorsUntilClose(ms = 20_000): Promise<Array<Record<string, string>>> {
    const from = this.read;
    await this.waitClosed(ms);
    this.read = this.received.length;
    this.close();
    return this.received
      .slice(from)
      .filter((m) => m.type === "E")
      .map(errorFields);
  }

  close(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

export function errorFields(m: RawMessage): Record<string, string> {
  return parseErrorFields(m.body);
}

/** A message: type byte, then an int32 length (which may be a lie), then `body`. */
export function rawMessage(type: string, body: Buffer | string = "", length?: number): Buffer {
  const b = typeof body === "string" ? Buffer.from(body, "utf8") : body;
  const head = Buffer.alloc(5);
  head[0] = type.charCodeAt(0);
  head.writeUInt32BE(length ?? b.length + 4, 1);
  return Buffer.concat([head, b]);
}

/** A simple Query message. */
export function queryMessage(sql: string): Buffer {
  return rawMessage("Q", Buffer.concat([Buffer.from(sql, "utf8"), Buffer.from([0])]));
}
