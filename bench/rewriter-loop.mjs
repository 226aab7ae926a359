// The prepared statement rewriter alone, in a loop without sockets, as under pgbench
// `-M prepared -S` at c=50 with a pool of 10: each transaction is one client's Bind, Describe,
// Execute and Sync, handed over as ranges of a reused read buffer and kept (retain) while the
// client waits for a server; then the rewriter is attached to one of 10 servers, plans, hands
// its output over, gets the server's replies (BindComplete, RowDescription, CommandComplete
// unless in a quiet stretch, then ReadyForQuery) and is detached.
//
//   npm run build && node bench/rewriter-loop.mjs            (REWRITER_LOOP_DIST=<dist> for another build)
//
// Prints nanoseconds per transaction. A development aid for the hot path (docs/performance.md),
// not part of `npm run bench`.
import { Buffer } from "node:buffer";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

const dist = pathToFileURL(resolve(process.env.REWRITER_LOOP_DIST ?? "dist")).href;
const { StatementRegistry } = await import(`${dist}/frontend/prepared-statements.js`);
const { StatementRewriter } = await import(`${dist}/frontend/statement-rewriter.js`);
const P = await import(`${dist}/protocol/index.js`);

const CLIENTS = 50;
const SERVERS = 10;
const registry = new StatementRegistry(100);
const servers = Array.from({ length: SERVERS }, () => registry.newServer());
const rewriters = Array.from({ length: CLIENTS }, () => new StatementRewriter(registry));
const EMPTY = Buffer.alloc(0);
const IDLE = Buffer.from("I");
const SELECT1 = Buffer.from("SELECT 1\0");

/** Answers whatever the rewriter waits for, in the order a server would, until nothing is owed. */
function settle(rw) {
  for (let guard = 0; rw.owesReplies && guard < 20; guard++) {
    for (const type of [0x31, 0x32, 0x5a]) {
      try {
        rw.serverMessage(type, type === 0x5a ? IDLE : EMPTY);
      } catch {
        // not the reply it waits for: try the next type
      }
    }
  }
  if (rw.hasOutput) {
    rw.takeClient();
    rw.takeServer();
  }
}

// Every client prepares pgbench's statement, and every server holds it.
const sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
const prepare = Buffer.concat([P.parse("P_0", sql, [23]), P.sync]);
for (const rw of rewriters) {
  for (const server of servers) {
    rw.attach(server);
    const msg =
      rw.statementCount === 0 ? prepare : Buffer.concat([P.bind("", "P_0", ["1"]), P.sync]);
    rw.clientMessage(msg[0], msg, 0, msg.length - 5);
    rw.clientMessage(0x53, msg, msg.length - 5, msg.length);
    rw.plan();
    rw.takeServer();
    settle(rw);
    rw.detach();
  }
}

const parts = [P.bind("", "P_0", ["12345"]), P.describe("P", ""), P.execute("", 0), P.sync];
const txn = Buffer.concat(parts);
const read = Buffer.allocUnsafeSlow(16 * 1024);
let written = 0;

function transaction(i) {
  const rw = rewriters[i % CLIENTS];
  const server = servers[(i * 7 + Math.floor(i / CLIENTS)) % SERVERS];
  txn.copy(read, 0);
  let off = 0;
  for (const part of parts) {
    rw.clientMessage(read[off], read, off, off + part.length);
    off += part.length;
  }
  rw.retain(); // waiting for a server
  rw.attach(server);
  rw.plan();
  for (const b of rw.takeServer()) written += b.length;
  if (!rw.quiet) {
    rw.serverMessage(0x32, EMPTY);
    rw.serverMessage(0x54, EMPTY);
    rw.serverMessage(0x43, SELECT1);
  }
  rw.serverMessage(0x5a, IDLE);
  if (rw.hasOutput) {
    rw.takeClient();
    rw.takeServer();
  }
  if (!rw.detach()) throw new Error("lease did not end cleanly");
}

for (let i = 0; i < 200_000; i++) transaction(i); // warm up
const N = 3_000_000;
const t0 = process.hrtime.bigint();
for (let i = 0; i < N; i++) transaction(i);
const ns = Number(process.hrtime.bigint() - t0) / N;
const expected = (200_000 + N) * (txn.length + 2); // "pgw_1" is 2 bytes longer than "P_0"
if (written !== expected) throw new Error(`wrote ${written} bytes, expected ${expected}`);
console.log(`${ns.toFixed(0)} ns per transaction (${CLIENTS} clients, ${SERVERS} servers)`);
