// Scenarios for the prepared-statement engine: what reaches the server, what the client sees,
// and what each side holds afterwards. Server replies are written by hand here, as PostgreSQL
// would answer the bytes the rewriter sent; statement-rewriter.model.test.ts checks the same
// engine against a small PostgreSQL model with random pipelines.

import { describe, expect, it } from "vitest";
import {
  bind,
  bindComplete,
  close,
  closeComplete,
  commandComplete,
  dataRow,
  describe as describeMessage,
  errorResponse,
  execute,
  flush,
  noData,
  ProtocolError,
  parameterDescription,
  parse,
  parseComplete,
  query,
  readyForQuery,
  rowDescription,
  sync,
} from "../protocol/index.js";
import { sharedArena } from "../util/index.js";
import { type ServerStatements, StatementRegistry } from "./prepared-statements.js";
import { REPLY_FORWARD, REPLY_SWALLOW, StatementRewriter } from "./statement-rewriter.js";
import { cstr, frontendTokens } from "./statement-rewriter.test-support.js";

// ---- helpers ----------------------------------------------------------------------------------

/** Backend → frontend messages as short tokens. */
function backendTokens(bytes: Buffer): string[] {
  const out: string[] = [];
  for (let off = 0; off < bytes.length; ) {
    const type = String.fromCharCode(bytes[off]!);
    const len = bytes.readInt32BE(off + 1);
    const body = bytes.subarray(off + 5, off + 1 + len);
    off += 1 + len;
    if (type === "E") {
      const f: Record<string, string> = {};
      for (let o = 0; body[o] !== 0; ) {
        const [v, next] = cstr(body, o + 1);
        f[String.fromCharCode(body[o]!)] = v;
        o = next;
      }
      out.push(`E ${f.C} ${f.M}`);
    } else if (type === "C") {
      out.push(`C ${cstr(body, 0)[0]}`);
    } else if (type === "Z") {
      out.push(`Z ${String.fromCharCode(body[0]!)}`);
    } else {
      out.push(type);
    }
  }
  return out;
}

interface Sent {
  server: string[];
  client: string[];
  /** Buffers handed to the server socket (merged ranges count once). */
  parts: Buffer[];
}

/** Hands the rewriter these messages as ranges of one chunk (as the session does); returns it. */
function handOver(rw: StatementRewriter, msgs: Buffer[]): Buffer {
  const chunk = Buffer.concat(msgs);
  let off = 0;
  for (const m of msgs) {
    rw.clientMessage(m[0]!, chunk, off, off + m.length);
    off += m.length;
  }
  return chunk;
}

/** The client sends these messages in one chunk; returns what the rewriter produced. */
function send(rw: StatementRewriter, ...msgs: Buffer[]): Sent & { chunk: Buffer } {
  const chunk = handOver(rw, msgs);
  rw.plan();
  const parts = [...rw.takeServer()];
  return {
    chunk,
    parts,
    server: frontendTokens(Buffer.concat(parts)),
    client: backendTokens(Buffer.concat(rw.takeClient())),
  };
}

interface Replied {
  client: string[];
  /** Client messages that were held back and went out because of these replies. */
  server: string[];
  swallowed: number;
}

/** The server answers with these messages. */
function reply(rw: StatementRewriter, ...msgs: Buffer[]): Replied {
  const client: Buffer[] = [];
  const server: Buffer[] = [];
  let swallowed = 0;
  for (const m of msgs) {
    const act = rw.serverMessage(m[0]!, m.subarray(5));
    if (act === REPLY_FORWARD) client.push(m);
    else swallowed++;
    client.push(...rw.takeClient());
    server.push(...rw.takeServer());
  }
  return {
    client: backendTokens(Buffer.concat(client)),
    server: frontendTokens(Buffer.concat(server)),
    swallowed,
  };
}

const err = (code: string, message: string) => errorResponse({ severity: "ERROR", code, message });
const Z = readyForQuery("I");
const row = rowDescription([{ name: "x", typeOid: 23 }]);
const SELECT1 = commandComplete("SELECT 1");

function setup(limit = 100) {
  const registry = new StatementRegistry(limit);
  const server = registry.newServer();
  const rw = new StatementRewriter(registry);
  rw.attach(server);
  return { registry, server, rw };
}

/** Runs a full prepare round trip for `name` so that the client has it and the server holds it. */
function prepared(rw: StatementRewriter, name: string, sql: string, types: number[] = []) {
  send(rw, parse(name, sql, types), sync);
  reply(rw, parseComplete, Z);
}

/** Ends the lease and starts one on another server, as transaction pooling does. */
function moveTo(rw: StatementRewriter, server: ServerStatements): void {
  expect(rw.detach()).toBe(true);
  rw.attach(server);
}

// ---- tests -------------------------------------------------------------------------------------

describe("Parse", () => {
  it("renames a named statement to its entry's server name and forwards the reply", () => {
    const { rw, server, registry } = setup();
    const s = send(rw, parse("a", "select $1", [23]), sync);
    expect(s.server).toEqual(["P pgw_1 select $1 [23]", "S"]);
    expect(s.client).toEqual([]);
    expect(reply(rw, parseComplete, Z).client).toEqual(["1", "Z I"]);
    expect(server.names()).toEqual(["pgw_1"]);
    expect(rw.statementCount).toBe(1);
    expect(registry.stats).toEqual({ clientParses: 1, serverParses: 1, evictions: 0 });
  });

  it("passes the unnamed statement through untouched", () => {
    const { rw, server } = setup();
    const msgs = [parse("", "select 1"), bind("", ""), execute(), sync];
    const s = send(rw, ...msgs);
    expect(s.parts).toHaveLength(1);
    expect(s.parts[0]!.equals(Buffer.concat(msgs))).toBe(true);
    expect(reply(rw, parseComplete, bindComplete, dataRow(["1"]), SELECT1, Z).client).toEqual([
      "1",
      "2",
      "D",
      "C SELECT 1",
      "Z I",
    ]);
    expect(server.size).toBe(0);
  });

  it("answers a Parse of a statement the server holds with a fake ParseComplete, in order", () => {
    const { rw, registry } = setup();
    prepared(rw, "a", "select 1");
    // Another client prepares the same text under another name on the same server.
    const server = (rw as unknown as { server: ServerStatements }).server;
    rw.detach();
    const other = new StatementRewriter(registry);
    other.attach(server);
    const s = send(other, parse("b", "select 1"), bind("", "b"), execute(), sync);
    expect(s.server).toEqual(["B :pgw_1", "E ", "S"]);
    expect(s.client).toEqual(["1"]); // nothing was owed before it
    expect(reply(other, bindComplete, dataRow(["1"]), SELECT1, Z).client).toEqual([
      "2",
      "D",
      "C SELECT 1",
      "Z I",
    ]);
    expect(registry.stats).toEqual({ clientParses: 2, serverParses: 1, evictions: 0 });
    expect(registry.size).toBe(1);
  });

  it("keeps a fake ParseComplete behind the replies it follows", () => {
    const { rw } = setup();
    prepared(rw, "a", "select 1");
    const s = send(rw, bind("", "a"), execute(), parse("b", "select 1"), bind("", "b"), sync);
    expect(s.server).toEqual(["B :pgw_1", "E ", "B :pgw_1", "S"]);
    expect(s.client).toEqual([]);
    const r = reply(rw, bindComplete, dataRow(["1"]), SELECT1, bindComplete, Z);
    expect(r.client).toEqual(["2", "D", "C SELECT 1", "1", "2", "Z I"]);
  });

  it("gives different parameter types different entries", () => {
    const { rw } = setup();
    const s = send(rw, parse("a", "select $1", [23]), parse("b", "select $1", [25]), sync);
    expect(s.server).toEqual(["P pgw_1 select $1 [23]", "P pgw_2 select $1 [25]", "S"]);
  });

  it("answers 42P05 for a name in use, then skips to Sync as PostgreSQL does", () => {
    const { rw, server } = setup();
    prepared(rw, "a", "select 1");
    const s = send(rw, parse("a", "select 2"), bind("", "a"), execute(), sync);
    // The server is made to fail at that point; the rest up to Sync never reaches it.
    expect(s.server).toEqual(["C forced-error", "S"]);
    const r = reply(rw, err("08P01", "invalid CLOSE message subtype 0"), Z);
    expect(r.swallowed).toBe(1);
    expect(r.client).toEqual(['E 42P05 prepared statement "a" already exists', "Z I"]);
    expect(server.names()).toEqual(["pgw_1"]);
    expect(rw.statementCount).toBe(1);
    expect(rw.releasable).toBe(true);
  });

  it("rolls back a Parse that failed: the name is free, the server holds nothing", () => {
    const { rw, server, registry } = setup();
    const s = send(rw, parse("a", "selec 1"), bind("", "a"), execute(), sync);
    expect(s.server).toEqual(["P pgw_1 selec 1", "B :pgw_1", "E ", "S"]);
    const r = reply(rw, err("42601", 'syntax error at or near "selec"'), Z);
    expect(r.client).toEqual(['E 42601 syntax error at or near "selec"', "Z I"]);
    expect(server.size).toBe(0);
    expect(rw.statementCount).toBe(0);
    expect(registry.size).toBe(0);
    // The client may use the name again.
    expect(send(rw, parse("a", "select 1"), sync).server).toEqual(["P pgw_2 select 1", "S"]);
  });
});

describe("Bind and Describe", () => {
  it("rewrites a Bind of a held statement into one range with the rest of a small transaction", () => {
    const { rw } = setup();
    prepared(rw, "stmt", "select $1", [25]);
    const s = send(rw, bind("p", "stmt", ["hello", null]), execute("p"), sync);
    expect(s.server).toEqual(["B p:pgw_1", "E p", "S"]);
    // Bind, Execute and Sync go out as one range (of the shared arena), not of the client's chunk.
    expect(s.parts).toHaveLength(1);
    expect(s.parts[0]!.buffer).not.toBe(s.chunk.buffer);
    const expected = Buffer.concat([bind("p", "pgw_1", ["hello", null]), execute("p"), sync]);
    expect(s.parts[0]!.equals(expected)).toBe(true);
    // A second transaction: its own bytes, the first one's left as they were.
    const first = Buffer.from(s.parts[0]!);
    const t = send(rw, bind("", "stmt", ["again"]), execute(), sync);
    expect(t.server).toEqual(["B :pgw_1", "E ", "S"]);
    expect(s.parts[0]!.equals(first)).toBe(true);
  });

  it("keeps its output in order across the end of an arena buffer, and bytes that waited too", () => {
    const { rw, registry } = setup();
    prepared(rw, "a", "select $1", [25]);
    for (let room = 0; room < 40; room++) {
      // Leave `room` bytes in the arena's buffer: the output starts, or continues, in a new one.
      sharedArena.carve(sharedArena.buf.length - sharedArena.pos - room);
      const s = send(rw, bind("", "a", [`v${room}`]), execute(), sync);
      const expected = Buffer.concat([bind("", "pgw_1", [`v${room}`]), execute(), sync]);
      expect(Buffer.concat(s.parts).equals(expected)).toBe(true);
      expect(reply(rw, bindComplete, SELECT1, Z).client).toEqual(["2", "C SELECT 1", "Z I"]);
    }
    // Bytes handed over with no server leased are kept (retain) and planned on the next lease.
    rw.detach();
    sharedArena.carve(sharedArena.buf.length - sharedArena.pos - 8);
    const chunk = handOver(rw, [bind("", "a", ["late"]), execute(), sync]);
    rw.retain();
    chunk.fill(0); // the read buffer is reused
    moveTo(rw, registry.newServer());
    rw.plan();
    expect(frontendTokens(Buffer.concat(rw.takeServer()))).toEqual([
      "P pgw_1 select $1 [25]",
      "B :pgw_1",
      "E ",
      "S",
    ]);
  });

  it("passes big parameters on by reference, after the rewritten Bind header", () => {
    const { rw } = setup();
    prepared(rw, "stmt", "select $1", [25]);
    const big = "x".repeat(5000);
    const s = send(rw, bind("", "stmt", [big]), execute(), sync);
    expect(s.server).toEqual(["B :pgw_1", "E ", "S"]);
    // The header (arena), then the parameters, Execute and Sync as one range of the chunk.
    expect(s.parts).toHaveLength(2);
    expect(s.parts[1]!.buffer).toBe(s.chunk.buffer);
    const expected = Buffer.concat([bind("", "pgw_1", [big]), execute(), sync]);
    expect(Buffer.concat(s.parts).equals(expected)).toBe(true);
  });

  it("injects the Parse of a statement the server lacks and swallows its reply", () => {
    const { rw, registry } = setup();
    prepared(rw, "a", "select 1");
    moveTo(rw, registry.newServer());
    const s = send(rw, bind("", "a"), execute(), sync);
    expect(s.server).toEqual(["P pgw_1 select 1", "B :pgw_1", "E ", "S"]);
    const r = reply(rw, parseComplete, bindComplete, dataRow(["1"]), SELECT1, Z);
    expect(r.swallowed).toBe(1);
    expect(r.client).toEqual(["2", "D", "C SELECT 1", "Z I"]);
    expect(registry.stats.serverParses).toBe(2);
  });

  it("describes a statement under its server name, ParameterDescription and RowDescription forwarded", () => {
    const { rw, registry } = setup();
    prepared(rw, "a", "select $1::int", [23]);
    moveTo(rw, registry.newServer());
    const s = send(rw, describeMessage("S", "a"), sync);
    expect(s.server).toEqual(["P pgw_1 select $1::int [23]", "D S pgw_1", "S"]);
    const r = reply(rw, parseComplete, parameterDescription([23]), row, Z);
    expect(r.client).toEqual(["t", "T", "Z I"]);
    const n = send(rw, describeMessage("S", "a"), describeMessage("P", ""), sync);
    expect(n.server).toEqual(["D S pgw_1", "D P ", "S"]);
    expect(reply(rw, parameterDescription([23]), noData, noData, Z).client).toEqual([
      "t",
      "n",
      "n",
      "Z I",
    ]);
  });

  it("answers 26000 for a Bind or Describe of a name never prepared, and skips to Sync", () => {
    const { rw } = setup();
    const s = send(rw, bind("", "nope"), execute(), parse("x", "select 1"), sync);
    expect(s.server).toEqual(["C forced-error", "S"]);
    expect(reply(rw, err("08P01", "invalid CLOSE message subtype 0"), Z).client).toEqual([
      'E 26000 prepared statement "nope" does not exist',
      "Z I",
    ]);
    expect(rw.statementCount).toBe(0); // the skipped Parse did not happen
    const d = send(rw, describeMessage("S", "nope"), sync);
    expect(d.server).toEqual(["C forced-error", "S"]);
    expect(reply(rw, err("08P01", "x"), readyForQuery("E")).client).toEqual([
      'E 26000 prepared statement "nope" does not exist',
      "Z E",
    ]);
  });

  it("shows the server's error, not ours, when the pipeline failed earlier", () => {
    const { rw } = setup();
    const s = send(rw, parse("a", "selec"), bind("", "unknown"), sync);
    expect(s.server).toEqual(["P pgw_1 selec", "C forced-error", "S"]);
    const r = reply(rw, err("42601", "syntax error"), Z);
    expect(r.client).toEqual(["E 42601 syntax error", "Z I"]);
  });

  it("re-prepares after 0A000 (cached plan must not change result type) on every server", () => {
    const { rw, registry, server } = setup();
    prepared(rw, "a", "select * from t");
    send(rw, bind("", "a"), execute(), sync);
    const r = reply(rw, err("0A000", "cached plan must not change result type"), Z);
    expect(r.client).toEqual(["E 0A000 cached plan must not change result type", "Z I"]);
    const s = send(rw, bind("", "a"), execute(), sync);
    expect(s.server).toEqual(["C S pgw_1", "P pgw_1 select * from t", "B :pgw_1", "E ", "S"]);
    expect(reply(rw, closeComplete, parseComplete, bindComplete, SELECT1, Z).client).toEqual([
      "2",
      "C SELECT 1",
      "Z I",
    ]);
    expect(server.names()).toEqual(["pgw_1"]);
    // Another server that held the old copy closes it too before its next use.
    const other = registry.newServer();
    moveTo(rw, other);
    send(rw, bind("", "a"), sync);
    reply(rw, parseComplete, bindComplete, Z);
    registry.byName("pgw_1")!.generation++;
    expect(send(rw, bind("", "a"), sync).server).toEqual([
      "C S pgw_1",
      "P pgw_1 select * from t",
      "B :pgw_1",
      "S",
    ]);
  });
});

describe("Close", () => {
  it("is answered locally and keeps the statement on the server for others", () => {
    const { rw, server } = setup();
    prepared(rw, "a", "select 1");
    const s = send(rw, close("S", "a"), sync);
    expect(s.server).toEqual(["S"]);
    expect(s.client).toEqual(["3"]);
    expect(reply(rw, Z).client).toEqual(["Z I"]);
    expect(rw.statementCount).toBe(0);
    expect(server.names()).toEqual(["pgw_1"]);
    // Gone for the client: PostgreSQL's error.
    expect(send(rw, bind("", "a"), sync).server).toEqual(["C forced-error", "S"]);
  });

  it("answers a Close of an unknown name with CloseComplete, as PostgreSQL does", () => {
    const { rw } = setup();
    const s = send(rw, close("S", "never"), flush);
    expect(s.client).toEqual(["3"]);
    expect(s.server).toEqual(["H"]);
  });

  it("passes portal Closes and the unnamed statement's Close to the server", () => {
    const { rw } = setup();
    const s = send(rw, close("P", "p"), close("S", ""), sync);
    expect(s.server).toEqual(["C P p", "C S ", "S"]);
    expect(reply(rw, closeComplete, closeComplete, Z).client).toEqual(["3", "3", "Z I"]);
  });

  it("lets a closed name be prepared again with another text", () => {
    const { rw } = setup();
    prepared(rw, "a", "select 1");
    const s = send(rw, close("S", "a"), parse("a", "select 2"), bind("", "a"), execute(), sync);
    expect(s.server).toEqual(["P pgw_2 select 2", "B :pgw_2", "E ", "S"]);
    expect(s.client).toEqual(["3"]);
    const r = reply(rw, parseComplete, bindComplete, SELECT1, Z);
    expect(r.client).toEqual(["1", "2", "C SELECT 1", "Z I"]);
  });

  it("shares one server statement among names and clients, until the last one closes", () => {
    const { rw, registry, server } = setup();
    prepared(rw, "a", "select 1");
    send(rw, parse("b", "select 1"), sync);
    reply(rw, Z);
    const entry = registry.byName("pgw_1")!;
    expect(entry.clientRefs).toBeGreaterThanOrEqual(2);
    send(rw, close("S", "a"), sync);
    reply(rw, Z);
    expect(send(rw, bind("", "b"), sync).server).toEqual(["B :pgw_1", "S"]);
    reply(rw, bindComplete, Z);
    rw.dispose();
    expect(entry.clientRefs).toBe(0);
    expect(registry.size).toBe(1); // the server still holds it
    server.dispose();
    expect(registry.size).toBe(0);
  });
});

describe("errors in the middle of a pipeline", () => {
  it("drops fakes after the error and rolls back what was skipped", () => {
    const { rw, server } = setup();
    prepared(rw, "a", "select 1");
    const s = send(
      rw,
      parse("", "select 1/0"),
      bind("", ""),
      execute(),
      parse("b", "select 1"), // held: a fake that must not appear
      close("S", "a"), // answered locally: must not happen either
      parse("c", "select 3"), // goes to the server, but is skipped there
      sync,
    );
    expect(s.server).toEqual(["P  select 1/0", "B :", "E ", "P pgw_2 select 3", "S"]);
    const r = reply(rw, parseComplete, bindComplete, err("22012", "division by zero"), Z);
    expect(r.client).toEqual(["1", "2", "E 22012 division by zero", "Z I"]);
    // As in PostgreSQL: b and c were never prepared, a was never closed.
    expect(rw.statementCount).toBe(1);
    expect(server.names()).toEqual(["pgw_1"]);
    expect(send(rw, bind("", "a"), sync).server).toEqual(["B :pgw_1", "S"]);
  });

  it("an injected Parse that fails shows its error and the Bind does not happen", () => {
    const { rw, registry } = setup();
    prepared(rw, "a", "select * from gone");
    moveTo(rw, registry.newServer());
    send(rw, bind("", "a"), execute(), sync);
    const r = reply(rw, err("42P01", 'relation "gone" does not exist'), Z);
    expect(r.client).toEqual(['E 42P01 relation "gone" does not exist', "Z I"]);
    expect(rw.statementCount).toBe(1); // still the client's, as in PostgreSQL
    expect(send(rw, bind("", "a"), sync).server).toEqual([
      "P pgw_1 select * from gone",
      "B :pgw_1",
      "S",
    ]);
  });

  it("skips to the Sync the client has not sent yet, then resumes after it", () => {
    const { rw } = setup();
    send(rw, parse("", "select 1/0"), bind("", ""), execute());
    const r = reply(rw, parseComplete, bindComplete, err("22012", "division by zero"));
    expect(r.client).toEqual(["1", "2", "E 22012 division by zero"]);
    // The server ignores these until Sync; they are not even sent.
    const s = send(rw, parse("x", "select 2"), bind("", "x"), execute(), sync);
    expect(s.server).toEqual(["S"]);
    expect(reply(rw, Z).client).toEqual(["Z I"]);
    expect(rw.statementCount).toBe(0);
    expect(send(rw, parse("x", "select 2"), sync).server).toEqual(["P pgw_1 select 2", "S"]);
  });

  it("an error inside a simple query skips nothing after it", () => {
    const { rw } = setup();
    prepared(rw, "a", "select 1");
    const s = send(rw, query("select 1/0"), parse("b", "select 1"), sync);
    expect(s.server).toEqual(["Q select 1/0", "S"]);
    const r = reply(rw, err("22012", "division by zero"), Z, Z);
    expect(r.client).toEqual(["E 22012 division by zero", "Z I", "1", "Z I"]);
    expect(rw.statementCount).toBe(2);
  });

  it("an error at Sync (commit) is forwarded without skipping", () => {
    const { rw } = setup();
    prepared(rw, "a", "insert into t values (1)");
    send(rw, bind("", "a"), execute(), sync, bind("", "a"), sync);
    const r = reply(
      rw,
      bindComplete,
      commandComplete("INSERT 0 1"),
      err("23505", "duplicate key"),
      Z,
      bindComplete,
      Z,
    );
    expect(r.client).toEqual(["2", "C INSERT 0 1", "E 23505 duplicate key", "Z I", "2", "Z I"]);
  });
});

describe("eviction", () => {
  it("closes the least recently used statement past the limit, reply swallowed", () => {
    const { rw, server, registry } = setup(2);
    prepared(rw, "a", "select 1");
    prepared(rw, "b", "select 2");
    moveTo(rw, server); // a new lease on the same server
    const s = send(rw, parse("c", "select 3"), sync);
    expect(s.server).toEqual(["C S pgw_1", "P pgw_3 select 3", "S"]);
    const r = reply(rw, closeComplete, parseComplete, Z);
    expect(r.swallowed).toBe(1);
    expect(r.client).toEqual(["1", "Z I"]);
    expect(server.names()).toEqual(["pgw_2", "pgw_3"]);
    expect(registry.stats.evictions).toBe(1);
    // a is still the client's: prepared again (evicting b) when used.
    moveTo(rw, server);
    expect(send(rw, bind("", "a"), sync).server).toEqual([
      "C S pgw_2",
      "P pgw_1 select 1",
      "B :pgw_1",
      "S",
    ]);
  });

  it("never evicts a statement named later in the same batch, nor one used in this lease", () => {
    const { rw, server } = setup(2);
    prepared(rw, "a", "select 1");
    prepared(rw, "b", "select 2");
    moveTo(rw, server);
    // a is the least recently used, but the Bind after the Parse needs it: b goes.
    const s = send(rw, parse("c", "select 3"), bind("", "a"), execute(), sync);
    expect(s.server).toEqual(["C S pgw_2", "P pgw_3 select 3", "B :pgw_1", "E ", "S"]);
    reply(rw, closeComplete, parseComplete, bindComplete, SELECT1, Z);
    // Same lease: a and c were used, so d goes over the limit rather than close them.
    const d = send(rw, parse("d", "select 4"), sync);
    expect(d.server).toEqual(["P pgw_4 select 4", "S"]);
    reply(rw, parseComplete, Z);
    expect(server.plannedCount).toBe(3);
    // The next lease brings it back under the limit.
    moveTo(rw, server);
    // Least recently used first: c (parsed before a's Bind), then a.
    expect(send(rw, parse("e", "select 5"), sync).server).toEqual([
      "C S pgw_3",
      "C S pgw_1",
      "P pgw_5 select 5",
      "S",
    ]);
  });

  it("undoes an eviction the server skipped after an error", () => {
    const { rw, server } = setup(1);
    prepared(rw, "a", "select 1");
    moveTo(rw, server);
    const s = send(
      rw,
      parse("", "select 1/0"),
      bind("", ""),
      execute(),
      parse("b", "select 2"),
      sync,
    );
    expect(s.server).toEqual(["P  select 1/0", "B :", "E ", "C S pgw_1", "P pgw_2 select 2", "S"]);
    reply(rw, parseComplete, bindComplete, err("22012", "division by zero"), Z);
    expect(server.names()).toEqual(["pgw_1"]);
    expect(server.plannedCount).toBe(1);
    expect(rw.statementCount).toBe(1);
    expect(send(rw, bind("", "a"), sync).server).toEqual(["B :pgw_1", "S"]);
  });
});

describe("DEALLOCATE ALL and DISCARD ALL", () => {
  it.each(["DEALLOCATE ALL", "DISCARD ALL"])(
    "%s clears the server's and the client's statements",
    (tag) => {
      const { rw, server } = setup();
      prepared(rw, "a", "select 1");
      send(rw, query(tag.toLowerCase()));
      expect(reply(rw, commandComplete(tag), Z).client).toEqual([`C ${tag}`, "Z I"]);
      expect(server.size).toBe(0);
      expect(rw.statementCount).toBe(0);
      // Nobody refers to pgw_1 any more: the same text gets a new name (never reused).
      expect(send(rw, parse("a", "select 1"), sync).server).toEqual(["P pgw_2 select 1", "S"]);
    },
  );

  it("holds back named messages pipelined after it until it completes (PgBouncer #1535)", () => {
    const { rw, server } = setup();
    prepared(rw, "a", "select 1");
    const s = send(
      rw,
      query("DEALLOCATE ALL"),
      parse("a", "select 1"),
      bind("", "a"),
      execute(),
      sync,
    );
    expect(s.server).toEqual(["Q DEALLOCATE ALL"]);
    expect(rw.holding).toBe(true);
    const r = reply(rw, commandComplete("DEALLOCATE ALL"), Z);
    expect(r.client).toEqual(["C DEALLOCATE ALL", "Z I"]);
    // The mapping made after DEALLOCATE ALL survives it; the server prepares it again.
    expect(r.server).toEqual(["P pgw_2 select 1", "B :pgw_2", "E ", "S"]);
    expect(reply(rw, parseComplete, bindComplete, SELECT1, Z).client).toEqual([
      "1",
      "2",
      "C SELECT 1",
      "Z I",
    ]);
    expect(server.names()).toEqual(["pgw_2"]);
    expect(rw.statementCount).toBe(1);
  });

  it("through the extended protocol, it also waits for the Execute that runs it", () => {
    const { rw } = setup();
    prepared(rw, "d", "deallocate all");
    prepared(rw, "a", "select 1");
    const s = send(rw, bind("", "d"), execute(), parse("a", "select 1"), sync);
    expect(s.server).toEqual(["B :pgw_1", "E "]);
    const r = reply(rw, bindComplete, commandComplete("DEALLOCATE ALL"));
    expect(r.server).toEqual(["P pgw_3 select 1", "S"]);
    expect(reply(rw, parseComplete, Z).client).toEqual(["1", "Z I"]);
  });

  it("a Bind that waited for a server, rewritten in place, keeps its portal's name", () => {
    const { rw, registry } = setup();
    prepared(rw, "dealloc", "deallocate all");
    prepared(rw, "a", "select 1");
    rw.detach();
    // Waiting for a lease: the bytes are kept (retain), and the read buffer is reused.
    const chunk = handOver(rw, [bind("portal", "dealloc"), execute("portal"), bind("", "a"), sync]);
    rw.retain();
    chunk.fill(0);
    moveTo(rw, registry.newServer());
    rw.plan();
    // The Bind of "a" waits behind the Execute of "portal", which runs DEALLOCATE ALL.
    expect(frontendTokens(Buffer.concat(rw.takeServer()))).toEqual([
      "P pgw_1 deallocate all",
      "B portal:pgw_1",
      "E portal",
    ]);
    expect(rw.holding).toBe(true);
  });
});

describe("pipelines across Sync", () => {
  it("holds back a Bind that depends on a Parse of an earlier segment until its reply", () => {
    const { rw } = setup();
    const s = send(rw, parse("a", "select 1"), sync, bind("", "a"), execute(), sync);
    expect(s.server).toEqual(["P pgw_1 select 1", "S"]);
    const r1 = reply(rw, parseComplete);
    expect(r1.client).toEqual(["1"]);
    expect(r1.server).toEqual(["B :pgw_1", "E ", "S"]);
    expect(reply(rw, Z, bindComplete, SELECT1, Z).client).toEqual([
      "Z I",
      "2",
      "C SELECT 1",
      "Z I",
    ]);
  });

  it("turns it into PostgreSQL's 26000 when that Parse failed", () => {
    const { rw } = setup();
    send(rw, parse("a", "selec"), sync, bind("", "a"), execute(), sync);
    const r = reply(rw, err("42601", "syntax error"));
    expect(r.server).toEqual(["C forced-error", "S"]);
    const z = reply(rw, Z, err("08P01", "invalid CLOSE message subtype 0"), Z);
    expect(z.client).toEqual(["Z I", 'E 26000 prepared statement "a" does not exist', "Z I"]);
  });

  it("does not wait for independent segments", () => {
    const { rw } = setup();
    prepared(rw, "a", "select 1");
    const s = send(rw, parse("b", "select 2"), sync, bind("", "a"), execute(), sync);
    expect(s.server).toEqual(["P pgw_2 select 2", "S", "B :pgw_1", "E ", "S"]);
  });
});

describe("Flush, simple queries and other messages", () => {
  it("answers locally at once when only Flush follows", () => {
    const { rw } = setup();
    prepared(rw, "a", "select 1");
    const s = send(rw, parse("b", "select 1"), describeMessage("S", "b"), flush);
    expect(s.server).toEqual(["D S pgw_1", "H"]);
    expect(s.client).toEqual(["1"]);
    expect(reply(rw, parameterDescription([]), row).client).toEqual(["t", "T"]);
    expect(rw.releasable).toBe(false); // no Sync yet
    send(rw, sync);
    reply(rw, Z);
    expect(rw.releasable).toBe(true);
  });

  it("keeps order around a simple query", () => {
    const { rw } = setup();
    prepared(rw, "a", "select 1");
    const s = send(rw, bind("", "a"), execute(), sync, query("select 2"), close("S", "a"), sync);
    expect(s.server).toEqual(["B :pgw_1", "E ", "S", "Q select 2", "S"]);
    const r = reply(rw, bindComplete, SELECT1, Z, row, dataRow(["2"]), SELECT1, Z, Z);
    expect(r.client).toEqual(["2", "C SELECT 1", "Z I", "T", "D", "C SELECT 1", "Z I", "3", "Z I"]);
  });

  it("forwards notices, ParameterStatus and COPY messages", () => {
    const { rw } = setup();
    send(rw, query("copy t from stdin"));
    expect(rw.serverMessage(0x47 /* G */, Buffer.alloc(3))).toBe(REPLY_FORWARD);
    const copy = send(rw, Buffer.from([0x64, 0, 0, 0, 5, 0x41]), Buffer.from([0x63, 0, 0, 0, 4]));
    expect(copy.server).toEqual(["d", "c"]);
    expect(rw.serverMessage(0x4e /* N */, Buffer.from([0]))).toBe(REPLY_FORWARD);
    expect(reply(rw, commandComplete("COPY 1"), Z).client).toEqual(["C COPY 1", "Z I"]);
  });
});

describe("the owes-replies predicate", () => {
  it("follows requests and replies", () => {
    const { rw } = setup();
    expect(rw.owesReplies).toBe(false);
    expect(rw.releasable).toBe(true);
    send(rw, parse("a", "select 1"));
    expect(rw.owesReplies).toBe(true);
    reply(rw, parseComplete);
    expect(rw.owesReplies).toBe(false);
    expect(rw.releasable).toBe(false); // mid-segment: no Sync yet
    send(rw, sync);
    expect(rw.releasable).toBe(false);
    reply(rw, Z);
    expect(rw.releasable).toBe(true);
    send(rw, close("S", "a"), sync);
    expect(rw.owesReplies).toBe(true); // the Sync's ReadyForQuery
    reply(rw, Z);
    expect(rw.releasable).toBe(true);
  });

  it("counts held-back messages as owed", () => {
    const { rw } = setup();
    send(rw, parse("a", "select 1"), sync, bind("", "a"), sync);
    reply(rw, parseComplete, Z);
    expect(rw.holding).toBe(false);
    expect(rw.owesReplies).toBe(true);
    reply(rw, bindComplete, Z);
    expect(rw.releasable).toBe(true);
  });
});

describe("switching on in the middle of a lease", () => {
  it("forwards the replies to what was sent before, then its own", () => {
    const { registry } = setup();
    const server = registry.newServer();
    const rw = new StatementRewriter(registry);
    // Sent before: Q (one ReadyForQuery owed), then Parse/Bind/Execute of an unnamed statement.
    rw.attach(server, 1, 3);
    const s = send(rw, parse("a", "select 1"), close("S", "a"), sync);
    expect(s.server).toEqual(["P pgw_1 select 1", "S"]);
    expect(s.client).toEqual([]);
    const r = reply(
      rw,
      row,
      dataRow(["1"]),
      SELECT1,
      Z,
      parseComplete,
      bindComplete,
      SELECT1,
      parseComplete,
      Z,
    );
    expect(r.client).toEqual([
      "T",
      "D",
      "C SELECT 1",
      "Z I",
      "1",
      "2",
      "C SELECT 1",
      "1",
      "3",
      "Z I",
    ]);
  });

  it("an error among the untracked messages skips its own requests", () => {
    const { registry } = setup();
    const rw = new StatementRewriter(registry);
    rw.attach(registry.newServer(), 0, 2);
    send(rw, parse("a", "select 1"), sync);
    const r = reply(rw, parseComplete, err("22012", "division by zero"), Z);
    expect(r.client).toEqual(["1", "E 22012 division by zero", "Z I"]);
    expect(rw.statementCount).toBe(0);
  });
});

describe("streamed messages", () => {
  it("rewrites a Bind from its first bytes and forwards the rest as it arrives", () => {
    const { rw } = setup();
    prepared(rw, "a", "select $1", [17]);
    const big = Buffer.alloc(100_000, 7);
    const b = bind("", "a", [big]);
    const cut = 20;
    rw.clientMessageStart(b[0]!, b, 0, cut, b.length);
    rw.clientBytes(b, cut, b.length);
    rw.clientMessage(sync[0]!, sync, 0, sync.length);
    rw.plan();
    const sent = Buffer.concat(rw.takeServer());
    expect(sent.equals(Buffer.concat([bind("", "pgw_1", [big]), sync]))).toBe(true);
  });

  it("refuses a Parse that is not whole, and malformed names", () => {
    const { rw } = setup();
    const p = parse("a", "select 1");
    rw.clientMessageStart(p[0]!, p, 0, 8, p.length);
    expect(() => rw.plan()).toThrow(ProtocolError);
    const { rw: rw2 } = setup();
    const bad = Buffer.from([0x42, 0, 0, 0, 6, 0x61, 0x62]); // Bind without NULs
    rw2.clientMessage(bad[0]!, bad, 0, bad.length);
    expect(() => rw2.plan()).toThrow(ProtocolError);
  });
});

describe("out of step", () => {
  it("a reply that answers nothing is a protocol error", () => {
    const { rw } = setup();
    expect(() => rw.serverMessage(parseComplete[0]!, Buffer.alloc(0))).toThrow(ProtocolError);
    expect(() => rw.serverMessage(Z[0]!, Buffer.from("I"))).toThrow(ProtocolError);
    send(rw, parse("a", "select 1"), bind("", "a"), sync);
    expect(rw.quiet).toBe(false);
    expect(() => rw.serverMessage(bindComplete[0]!, Buffer.alloc(0))).toThrow(ProtocolError);
  });

  it("matches replies one by one only outside quiet stretches", () => {
    const { rw } = setup();
    prepared(rw, "a", "select 1");
    // Bind of a held statement, Execute, Sync: nothing in their replies changes anything, so
    // only the ReadyForQuery (or an error) is looked at; the head is brought up to date there.
    send(rw, bind("", "a"), execute(), sync);
    expect(rw.quiet).toBe(true);
    expect(reply(rw, bindComplete, SELECT1).client).toEqual(["2", "C SELECT 1"]);
    expect(rw.owesReplies).toBe(true);
    expect(reply(rw, Z).client).toEqual(["Z I"]);
    expect(rw.quiet).toBe(false);
    expect(rw.releasable).toBe(true);
    // A named Parse in the segment: matched one by one.
    send(rw, parse("b", "select 2"), bind("", "b"), execute(), sync);
    expect(rw.quiet).toBe(false);
    expect(reply(rw, parseComplete, bindComplete, SELECT1, Z).client).toEqual([
      "1",
      "2",
      "C SELECT 1",
      "Z I",
    ]);
    // A quiet segment after a loud one becomes a stretch once the loud one is answered.
    send(rw, parse("c", "select 3"), sync, bind("", "c"), execute(), sync);
    expect(rw.quiet).toBe(false);
    reply(rw, parseComplete, Z);
    expect(rw.quiet).toBe(true);
    expect(reply(rw, bindComplete, SELECT1, Z).client).toEqual(["2", "C SELECT 1", "Z I"]);
    expect(rw.releasable).toBe(true);
  });

  it("in a quiet stretch, an error skips to its Sync, and a stale plan is prepared again", () => {
    const { rw, registry } = setup();
    prepared(rw, "a", "select 1");
    send(rw, bind("", "a"), execute(), sync, bind("", "a"), execute(), sync);
    expect(rw.quiet).toBe(true);
    const stale = err("0A000", "cached plan must not change result type");
    expect(reply(rw, stale, Z).client).toEqual([
      "E 0A000 cached plan must not change result type",
      "Z I",
    ]);
    expect(reply(rw, bindComplete, SELECT1, Z).client).toEqual(["2", "C SELECT 1", "Z I"]);
    expect(rw.releasable).toBe(true);
    // The statement is prepared again (Close, then Parse) before the next Bind.
    const again = send(rw, bind("", "a"), execute(), sync);
    expect(again.server).toEqual(["C S pgw_1", "P pgw_1 select 1", "B :pgw_1", "E ", "S"]);
    expect(registry.stats.serverParses).toBe(2);
  });

  it("an asynchronous FATAL or notice with nothing owed is forwarded", () => {
    const { rw } = setup();
    const fatal = errorResponse({ severity: "FATAL", code: "57P01", message: "terminating" });
    expect(rw.serverMessage(fatal[0]!, fatal.subarray(5))).toBe(REPLY_FORWARD);
  });
});

describe("leases and lifetime", () => {
  it("a lease that ends with requests in flight poisons the server state and rolls back", () => {
    const { rw, server } = setup();
    prepared(rw, "a", "select 1");
    send(rw, parse("b", "select 2"), sync);
    expect(rw.detach()).toBe(false);
    expect(server.poisoned).toBe(true);
    expect(server.size).toBe(0);
    expect(rw.statementCount).toBe(1); // b never happened as far as the client state goes
  });

  it("every reference is given back when clients and servers go away", () => {
    const registry = new StatementRegistry(2);
    const servers = [registry.newServer(), registry.newServer()];
    const clients = [new StatementRewriter(registry), new StatementRewriter(registry)];
    let n = 0;
    for (const c of clients) {
      for (const s of servers) {
        c.attach(s);
        send(c, parse(`s${n++}`, `select ${n % 3}`), bind("", `s${n - 1}`), sync);
        reply(c, parseComplete, bindComplete, Z);
        expect(c.detach()).toBe(true);
      }
    }
    expect(registry.size).toBe(3);
    for (const c of clients) c.dispose();
    for (const s of servers) s.dispose();
    expect(registry.size).toBe(0);
  });

  it("counts client Parses, server Parses and evictions", () => {
    const { rw, registry, server } = setup(1);
    prepared(rw, "a", "select 1");
    prepared(rw, "b", "select 1"); // held: no server Parse
    moveTo(rw, server);
    send(rw, parse("c", "select 2"), sync); // evicts pgw_1
    reply(rw, closeComplete, parseComplete, Z);
    expect(registry.stats).toEqual({ clientParses: 3, serverParses: 2, evictions: 1 });
  });

  it("swallows exactly the replies to what it injected", () => {
    const { rw, registry } = setup();
    prepared(rw, "a", "select 1");
    moveTo(rw, registry.newServer());
    send(rw, bind("", "a"), sync);
    expect(rw.serverMessage(parseComplete[0]!, Buffer.alloc(0))).toBe(REPLY_SWALLOW);
    expect(rw.serverMessage(bindComplete[0]!, Buffer.alloc(0))).toBe(REPLY_FORWARD);
  });
});

// The session hands over ranges of its socket's read buffer, which the next read overwrites:
// whatever the rewriter has not sent by the end of the call must be its own copy.
describe("the caller's buffers", () => {
  it("messages held back survive the caller reusing its buffer", () => {
    const { rw } = setup();
    prepared(rw, "a", "select 1");
    const s = send(rw, query("DEALLOCATE ALL"), parse("a", "select 1"), bind("", "a"), sync);
    expect(rw.holding).toBe(true);
    s.chunk.fill(0x7a); // the next read
    const r = reply(rw, commandComplete("DEALLOCATE ALL"), Z);
    expect(r.server).toEqual(["P pgw_2 select 1", "B :pgw_2", "S"]);
  });

  it("messages handed over before a lease survive the buffer's reuse with retain()", () => {
    const registry = new StatementRegistry(100);
    const rw = new StatementRewriter(registry);
    const chunk = handOver(rw, [parse("a", "select 1"), bind("", "a"), execute(), sync]);
    rw.retain();
    chunk.fill(0x7a);
    rw.attach(registry.newServer());
    rw.plan();
    expect(frontendTokens(Buffer.concat(rw.takeServer()))).toEqual([
      "P pgw_1 select 1",
      "B :pgw_1",
      "E ",
      "S",
    ]);
  });
});
