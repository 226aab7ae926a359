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
// not part of `npm run bench`. In the loop every client's and server's state stays in the CPU's
// caches; in pgwarden other clients, the kernel, PostgreSQL and pgbench run between two
// transactions of one client. REWRITER_LOOP_THRASH_KB=<n> writes one byte in each 64-byte line
// of an n KB buffer at the three points where pgwarden runs other work (before the client's
// messages come, while it waits for a server, while the server runs the query; on a machine
// with 512 KB of L2 per core the cost kept rising up to 1-2 MB: docs/performance.md) and times
// the rewriter's three stretches alone (less the cost of reading the clock).
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

const THRASH_LINES = (Number(process.env.REWRITER_LOOP_THRASH_KB ?? 0) * 1024) / 64;
const junk = new Uint8Array(THRASH_LINES * 64);
// With THRASH_LINES: time in the rewriter, and the clock's own cost, summed over the stretches
let spent = 0n;
let clock = 0n;
let since = 0n;

/**
 * Other work runs here: with THRASH_LINES, ends a timed stretch, thrashes, starts the next.
 * `arrive`: the client's bytes come into the read buffer (the kernel's copy: not timed).
 */
function elsewhere(arrive = false) {
  if (THRASH_LINES === 0) {
    if (arrive) txn.copy(read, 0);
    return;
  }
  const t1 = process.hrtime.bigint();
  const t2 = process.hrtime.bigint();
  spent += t1 - since;
  clock += t2 - t1;
  for (let k = 0; k < THRASH_LINES; k++) junk[k * 64]++;
  if (arrive) txn.copy(read, 0);
  since = process.hrtime.bigint();
}

function transaction(i) {
  const rw = rewriters[i % CLIENTS];
  const server = servers[(i * 7 + Math.floor(i / CLIENTS)) % SERVERS];
  elsewhere(true);
  let off = 0;
  for (const part of parts) {
    rw.clientMessage(read[off], read, off, off + part.length);
    off += part.length;
  }
  rw.retain(); // waiting for a server
  elsewhere();
  rw.attach(server);
  rw.plan();
  for (const b of rw.takeServer()) written += b.length;
  elsewhere();
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

/** Runs n transactions; nanoseconds per transaction in the rewriter. */
function run(first, n) {
  if (THRASH_LINES === 0) {
    const t0 = process.hrtime.bigint();
    for (let i = first; i < first + n; i++) transaction(i);
    return Number(process.hrtime.bigint() - t0) / n;
  }
  spent = 0n;
  clock = 0n;
  since = process.hrtime.bigint();
  for (let i = first; i < first + n; i++) transaction(i);
  elsewhere();
  return Number(spent - clock) / n;
}

const WARM = 200_000;
const N = THRASH_LINES > 0 ? 300_000 : 3_000_000;
run(0, WARM);
const ns = run(WARM, N);
const expected = (WARM + N) * (txn.length + 2); // "pgw_1" is 2 bytes longer than "P_0"
if (written !== expected) throw new Error(`wrote ${written} bytes, expected ${expected}`);
const thrashed = THRASH_LINES > 0 ? `; ${junk.length / 1024} KB touched at each of 3 points` : "";
console.log(
  `${ns.toFixed(0)} ns per transaction (${CLIENTS} clients, ${SERVERS} servers${thrashed})`,
);
