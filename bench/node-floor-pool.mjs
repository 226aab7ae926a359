// node-floor-pool: the least a Node.js *transaction pooler* costs, for the bench's
// `node-floor-pool` target (bench/pgbench.mjs). node-floor (bench/node-floor.mjs) gives each
// client its own backend, so its TPS cannot be set beside the poolers'; this one pools like
// them (the bench's pool size, transaction mode) and does nothing else a pooler must do:
//
// - clients log in with no password asked (AuthenticationOk at once; the poolers run SCRAM);
// - the pool's servers are logged in at start by node-postgres, whose sockets are then taken
//   over (pg's listeners removed);
// - client bytes go to the leased server as they come; with no server leased, the client takes
//   an idle one or waits in a FIFO queue (its bytes kept until then);
// - server bytes are framed only to find ReadyForQuery; every chunk is forwarded as it came, and
//   a ReadyForQuery 'I' that ends a chunk gives the server back (to the first waiter, or idle);
// - named statements: the least tracking that lets pgbench `-M prepared` run. Client messages
//   are framed; a server remembers the Parse of each name prepared on it, and a session the
//   Parse of each of its names. A Parse the server holds byte for byte is answered at once
//   (ParseComplete); a Bind of a name the server lacks, or holds for another text, gets a Close
//   of the old one and the session's Parse first (their replies dropped). No renaming (a pooler
//   renames, as pgwarden and PgBouncer do), no LRU, no client Close, no errors rolled back, and
//   no pipelining across a Sync assumed;
// - no cancel, no error handling beyond closing the client, no settings, no metrics, no timers,
//   no logging.
//
// Reads and writes go through pgwarden's own socket layer (dist/util/socket-io.js), as in
// node-floor, and the messages it makes are pgwarden's (dist/protocol). So its TPS is the ceiling of a Node.js pooler on this machine and runtime, and
// pgwarden's distance to it is what pgwarden's own work costs in TPS.
//
//   node bench/node-floor-pool.mjs <listen port> <server host> <server port> <user> <password>
//        <database> <pool size>
// prints "listening <port>" once it accepts.
import net from "node:net";
import pg from "pg";
import {
  authenticationOk,
  backendKeyData,
  close,
  GSSENC_REQUEST_CODE,
  Msg,
  parameterStatus,
  parseComplete,
  readyForQuery,
  SSL_REQUEST_CODE,
} from "../dist/protocol/index.js";
import { forward, SocketIO, takeOver } from "./floor-io.mjs";

const [listenPort, host, port, user, password, database, poolSizeArg] = process.argv.slice(2);
const poolSize = Number(poolSizeArg);
if (!SocketIO.native) console.error("node-floor-pool: this Node.js lacks the direct socket path");

// ---- the pool --------------------------------------------------------------------------------

/** A logged-in server connection; `client` is the session that leases it. */
class Server {
  constructor(socket) {
    this.client = null;
    // ReadyForQuery framing across chunks: bytes of the current message still to skip, and a
    // header cut by a chunk's end.
    this.skip = 0;
    this.hdr = Buffer.alloc(5);
    this.hdrFill = 0;
    /** Statements prepared on this server: name → its Parse message. */
    this.names = new Map();
    /** Replies to injected Close and Parse messages still to drop. */
    this.swallow = 0;
    this.io = takeOver(socket, (chunk) => this.onData(chunk));
  }

  onData(chunk) {
    const c = this.client;
    if (c === null) return; // (nobody asked: a pooler would close this server)
    if (this.swallow > 0) chunk = this.dropInjectedReplies(chunk);
    let pos = 0;
    let idleAtEnd = false;
    const end = chunk.length;
    while (pos < end) {
      if (this.skip > 0) {
        const take = Math.min(this.skip, end - pos);
        this.skip -= take;
        pos += take;
        continue;
      }
      let type;
      let len;
      if (this.hdrFill === 0 && end - pos >= 5) {
        type = chunk[pos];
        len = chunk.readInt32BE(pos + 1);
        pos += 5;
      } else {
        const take = Math.min(5 - this.hdrFill, end - pos);
        chunk.copy(this.hdr, this.hdrFill, pos, pos + take);
        this.hdrFill += take;
        pos += take;
        if (this.hdrFill < 5) break;
        this.hdrFill = 0;
        type = this.hdr[0];
        len = this.hdr.readInt32BE(1);
      }
      // ReadyForQuery: its one body byte is the transaction status ('I': idle)
      if (type === Msg.ReadyForQuery && pos < end)
        idleAtEnd = chunk[pos] === 0x49 && pos + 1 === end;
      else idleAtEnd = false;
      this.skip = len - 4;
    }
    if (chunk.length > 0) forward(this.io, c.io, chunk);
    if (idleAtEnd && this.skip === 0) {
      c.server = null;
      this.client = null;
      release(this);
    }
  }

  /** The chunk without the first `swallow` ParseCompletes and CloseCompletes (whole in it). */
  dropInjectedReplies(chunk) {
    const keep = [];
    let pos = 0;
    let from = 0;
    while (pos + 5 <= chunk.length && this.swallow > 0) {
      const len = chunk.readInt32BE(pos + 1);
      if (chunk[pos] === Msg.ParseComplete || chunk[pos] === Msg.CloseComplete) {
        keep.push(chunk.subarray(from, pos));
        from = pos + 5;
        this.swallow--;
      }
      pos += 1 + len;
    }
    keep.push(chunk.subarray(from));
    return Buffer.concat(keep);
  }
}

/**
 * Client bytes to the leased server, with the named-statement handling above (messages assumed
 * whole in one chunk, as pgbench sends them).
 */
function toServer(session, server, chunk) {
  let out = null; // built only when a message is dropped or one injected
  let from = 0;
  let pos = 0;
  while (pos + 5 <= chunk.length) {
    const type = chunk[pos];
    const next = pos + 1 + chunk.readInt32BE(pos + 1);
    if (type === Msg.Parse && chunk[pos + 5] !== 0) {
      const name = chunk.toString("latin1", pos + 5, chunk.indexOf(0, pos + 5));
      let parse = session.prepared.get(name);
      if (parse === undefined) {
        parse = Buffer.from(chunk.subarray(pos, next));
        session.prepared.set(name, parse);
      }
      const held = server.names.get(name);
      if (held !== undefined && (held === parse || held.equals(parse))) {
        // held: answered here (nothing before it is unanswered: no pipelining across a Sync)
        forward(server.io, session.io, parseComplete);
        out ??= [];
        out.push(chunk.subarray(from, pos));
        from = next;
      } else {
        if (held !== undefined) {
          // the server holds the name for another text: close that first
          out ??= [];
          out.push(chunk.subarray(from, pos), close("S", name));
          from = pos;
          server.swallow++;
        }
        server.names.set(name, parse);
      }
    } else if (type === Msg.Bind) {
      const s = chunk.indexOf(0, pos + 5) + 1;
      if (chunk[s] !== 0) {
        const name = chunk.toString("latin1", s, chunk.indexOf(0, s));
        const parse = session.prepared.get(name);
        const held = server.names.get(name);
        if (parse !== undefined && held !== parse && !held?.equals(parse)) {
          out ??= [];
          out.push(chunk.subarray(from, pos));
          if (held !== undefined) {
            out.push(close("S", name));
            server.swallow++;
          }
          out.push(parse);
          from = pos;
          server.names.set(name, parse);
          server.swallow++;
        }
      }
    }
    pos = next;
  }
  if (out === null) {
    forward(session.io, server.io, chunk);
    return;
  }
  out.push(chunk.subarray(from));
  const bytes = Buffer.concat(out);
  if (bytes.length > 0) forward(session.io, server.io, bytes);
}

const idle = [];
/** Sessions waiting for a server, in arrival order. */
const waiting = [];

function release(server) {
  const next = waiting.shift();
  if (next === undefined) {
    idle.push(server);
    return;
  }
  lease(next, server);
}

function lease(session, server) {
  session.server = server;
  server.client = session;
  const queued = session.queued;
  session.queued = [];
  for (const chunk of queued) toServer(session, server, chunk);
}

// ---- clients ---------------------------------------------------------------------------------

class Session {
  constructor(socket) {
    this.socket = socket;
    this.server = null;
    this.queued = [];
    /** This session's named statements: name → its Parse message. */
    this.prepared = new Map();
    this.io = takeOver(socket, (chunk) => this.onData(chunk));
  }

  onData(chunk) {
    const s = this.server;
    if (s !== null) {
      toServer(this, s, chunk);
      return;
    }
    // A Terminate alone ends the session.
    if (chunk.length === 5 && chunk[0] === Msg.Terminate) {
      this.socket.end();
      return;
    }
    const server = idle.pop();
    if (server !== undefined) {
      this.server = server;
      server.client = this;
      toServer(this, server, chunk);
      return;
    }
    this.queued.push(this.io.keep(chunk));
    if (this.queued.length === 1) waiting.push(this);
  }
}

/** Startup: SSLRequest answered 'N', then AuthenticationOk and the server's parameters. */
function accept(socket, welcome) {
  let buf = Buffer.alloc(0);
  const onData = (d) => {
    buf = Buffer.concat([buf, d]);
    if (buf.length < 8) return;
    const len = buf.readInt32BE(0);
    if (buf.length < len) return;
    const code = buf.readInt32BE(4);
    buf = buf.subarray(len);
    if (code === SSL_REQUEST_CODE || code === GSSENC_REQUEST_CODE) {
      socket.write("N"); // SSLRequest, GSSENCRequest: no
      return;
    }
    socket.removeListener("data", onData);
    socket.write(welcome);
    const session = new Session(socket);
    if (buf.length > 0) session.onData(buf);
  };
  socket.on("data", onData);
}

// ---- start -----------------------------------------------------------------------------------

const conns = await Promise.all(
  Array.from({ length: poolSize }, async () => {
    const c = new pg.Client({ host, port: Number(port), user, password, database });
    await c.connect();
    return c;
  }),
);
const first = conns[0];
const params = await first.query(
  "select name, setting from pg_settings where name in ('server_version', 'server_encoding', 'client_encoding', 'DateStyle', 'integer_datetimes', 'standard_conforming_strings', 'TimeZone', 'IntervalStyle')",
);
const welcome = Buffer.concat([
  authenticationOk,
  ...params.rows.map((r) => parameterStatus(r.name, r.setting)),
  backendKeyData(process.pid, 0),
  readyForQuery("I"),
]);
for (const c of conns) {
  const socket = c.connection.stream;
  socket.removeAllListeners("data");
  socket.removeAllListeners("end");
  socket.removeAllListeners("close");
  socket.removeAllListeners("error");
  socket.on("error", () => {});
  socket.setNoDelay(true);
  idle.push(new Server(socket));
}

const server = net.createServer({ noDelay: true }, (socket) => {
  socket.on("error", () => socket.destroy());
  accept(socket, welcome);
});
server.listen(Number(listenPort), "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
