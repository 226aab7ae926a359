// The prepared-statement engine against a model of PostgreSQL, with random pipelines (a
// property test with a seeded generator; fast-check is not a dependency here).
//
// Each client sends random batches of extended-protocol and simple-query messages (named and
// unnamed statements, Binds of unknown names, Closes, failing queries, syntax errors, DEALLOCATE
// ALL, Flush, several Syncs per batch), cut into chunks at random, some messages streamed.
// The same bytes go (a) to a model session of its own, which is what the client would see
// talking to PostgreSQL directly, and (b) through its StatementRewriter to a model server picked
// at random from a small shared pool, one lease per batch, with replies fed back in random
// steps so that requests are still in flight when more client messages are planned. What the
// client sees must be the same message for message, and afterwards the bookkeeping must match
// the servers' real state and every reference count.
//
// The model implements what the engine relies on: named and unnamed statements and portals,
// skip-until-Sync after an error in the extended protocol, Close of an unknown subtype failing,
// simple queries ending the unnamed statement, DEALLOCATE ALL / DISCARD ALL. One documented
// difference from PostgreSQL is built in: for a Parse of a name in use PostgreSQL reports a
// syntax error of the query first; pgwarden answers 42P05 without looking at the query.

import { afterEach, describe, expect, it } from "vitest";
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
  parameterDescription,
  parse,
  parseComplete,
  query,
  readyForQuery,
  rowDescription,
  sync,
} from "../protocol/index.js";
import { type ServerStatements, StatementRegistry } from "./prepared-statements.js";
import { REPLY_FORWARD, StatementRewriter } from "./statement-rewriter.js";
import { cstr, frontendTokens } from "./statement-rewriter.test-support.js";

// ---- a small PostgreSQL ------------------------------------------------------------------------

interface Stmt {
  readonly sql: string;
  readonly types: readonly number[];
}

const err = (code: string, message: string) => errorResponse({ severity: "ERROR", code, message });
const ROW = rowDescription([{ name: "x", typeOid: 23 }]);

class MiniPg {
  readonly statements = new Map<string, Stmt>();
  private readonly portals = new Map<string, Stmt>();
  private ignoring = false;
  private buf = Buffer.alloc(0);

  /** Bytes from the client (or pgwarden); returns the replies, one Buffer per message. */
  receive(bytes: Buffer): Buffer[] {
    this.buf = Buffer.concat([this.buf, bytes]);
    const out: Buffer[] = [];
    while (this.buf.length >= 5) {
      const len = this.buf.readInt32BE(1);
      if (this.buf.length < len + 1) break;
      const type = String.fromCharCode(this.buf[0]!);
      const body = this.buf.subarray(5, len + 1);
      this.buf = this.buf.subarray(len + 1);
      this.message(type, body, out);
    }
    return out;
  }

  /** A new transaction-pooling lease: nothing unnamed carries over from another client. */
  newTransaction(): void {
    this.statements.delete("");
    this.portals.clear();
  }

  private message(type: string, body: Buffer, out: Buffer[]): void {
    if (this.ignoring && type !== "S") return;
    switch (type) {
      case "P": {
        const [name, o] = cstr(body, 0);
        const [sql, o2] = cstr(body, o);
        const n = body.readInt16BE(o2);
        const types = Array.from({ length: n }, (_, i) => body.readUInt32BE(o2 + 2 + 4 * i));
        if (name === "") this.statements.delete("");
        if (name !== "" && this.statements.has(name)) {
          this.fail(out, "42P05", `prepared statement "${name}" already exists`);
          return;
        }
        if (sql.startsWith("bad")) {
          this.fail(out, "42601", 'syntax error at or near "bad"');
          return;
        }
        this.statements.set(name, { sql, types });
        out.push(parseComplete);
        return;
      }
      case "B": {
        const [portal, o] = cstr(body, 0);
        const [name] = cstr(body, o);
        const s = this.statements.get(name);
        if (s === undefined) {
          this.fail(out, "26000", missing(name));
          return;
        }
        this.portals.set(portal, s);
        out.push(bindComplete);
        return;
      }
      case "D": {
        const [name] = cstr(body, 1);
        const s = body[0] === 0x53 ? this.statements.get(name) : this.portals.get(name);
        if (s === undefined) {
          if (body[0] === 0x53) this.fail(out, "26000", missing(name));
          else this.fail(out, "34000", `portal "${name}" does not exist`);
          return;
        }
        if (body[0] === 0x53) out.push(parameterDescription(s.types));
        out.push(s.sql.startsWith("select") || s.sql === "fail" ? ROW : noData);
        return;
      }
      case "E": {
        const [portal] = cstr(body, 0);
        const s = this.portals.get(portal);
        if (s === undefined) {
          this.fail(out, "34000", `portal "${portal}" does not exist`);
          return;
        }
        this.run(s.sql, out);
        return;
      }
      case "C": {
        const [name] = cstr(body, 1);
        if (body[0] === 0x53) this.statements.delete(name);
        else if (body[0] === 0x50) this.portals.delete(name);
        else {
          this.fail(out, "08P01", `invalid CLOSE message subtype ${body[0]}`);
          return;
        }
        out.push(closeComplete);
        return;
      }
      case "S":
        this.ignoring = false;
        this.portals.clear(); // the implicit transaction ends
        out.push(readyForQuery("I"));
        return;
      case "Q": {
        const [sql] = cstr(body, 0);
        this.statements.delete(""); // a simple query drops the unnamed statement
        this.run(sql, out);
        this.ignoring = false; // run() set it on failure, but a simple query skips nothing
        this.portals.clear();
        out.push(readyForQuery("I"));
        return;
      }
      default:
        return; // Flush and the rest: nothing to answer
    }
  }

  private run(sql: string, out: Buffer[]): void {
    if (sql === "fail" || sql === "select 1/0") {
      this.fail(out, "22012", "division by zero");
      return;
    }
    if (sql === "deallocate all" || sql === "discard all") {
      for (const k of [...this.statements.keys()]) if (k !== "") this.statements.delete(k);
      out.push(commandComplete(sql.toUpperCase()));
      return;
    }
    if (sql.startsWith("select")) {
      out.push(dataRow([sql.slice(7)]), commandComplete("SELECT 1"));
      return;
    }
    out.push(commandComplete("INSERT 0 1"));
  }

  private fail(out: Buffer[], code: string, message: string): void {
    out.push(err(code, message));
    this.ignoring = true;
  }
}

function missing(name: string): string {
  return name === ""
    ? "unnamed prepared statement does not exist"
    : `prepared statement "${name}" does not exist`;
}

/** Backend messages as comparable tokens. */
function tokens(msgs: readonly Buffer[]): string[] {
  const bytes = Buffer.concat(msgs);
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
    } else if (type === "C" || type === "D") {
      out.push(`${type} ${body.toString("utf8", type === "D" ? 6 : 0).replace(/\0$/, "")}`);
    } else if (type === "Z") {
      out.push(`Z ${String.fromCharCode(body[0]!)}`);
    } else {
      out.push(type);
    }
  }
  return out;
}

const DEBUG = process.env.PGW_DEBUG === "1";

// ---- random pipelines -------------------------------------------------------------------------

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NAMES = ["a", "b", "c", "d"];
const SQL = ["select 1", "select 2", "select 3", "insert", "fail", "bad", "deallocate all"];
const QUERIES = ["select 7", "select 1/0", "deallocate all", "discard all"];

function pick<T>(r: () => number, xs: readonly T[]): T {
  return xs[Math.floor(r() * xs.length)]!;
}

/** A random batch; `known` are the names the client has, which it mostly uses (as clients do). */
function batch(r: () => number, known: ReadonlySet<string>): Buffer[] {
  const out: Buffer[] = [];
  const mine = new Set(known);
  const some = () => (mine.size > 0 && r() < 0.8 ? pick(r, [...mine]) : pick(r, NAMES));
  const n = 1 + Math.floor(r() * 9);
  for (let i = 0; i < n; i++) {
    const x = r();
    if (x < 0.25) {
      const name =
        r() < 0.2
          ? ""
          : r() < 0.8
            ? pick(r, NAMES.filter((k) => !mine.has(k)).concat("a"))
            : some();
      if (name !== "") mine.add(name);
      out.push(parse(name, pick(r, SQL), r() < 0.3 ? [23] : []));
    } else if (x < 0.55) {
      const stmt = r() < 0.15 ? "" : r() < 0.05 ? "zz" : some();
      const portal = r() < 0.2 ? "p" : "";
      out.push(bind(portal, stmt));
      if (r() < 0.2) out.push(describeMessage("P", portal));
      if (r() < 0.9) out.push(execute(portal));
    } else if (x < 0.63) {
      out.push(describeMessage("S", r() < 0.1 ? "" : some()));
    } else if (x < 0.75) {
      const name = r() < 0.1 ? "zz" : some();
      mine.delete(name);
      out.push(close(r() < 0.1 ? "P" : "S", name));
    } else if (x < 0.88) {
      out.push(sync);
    } else if (x < 0.93) {
      out.push(flush);
    } else {
      out.push(query(pick(r, QUERIES)));
    }
  }
  out.push(sync);
  return out;
}

// ---- the two paths -----------------------------------------------------------------------------

interface PoolServer {
  readonly pg: MiniPg;
  readonly state: ServerStatements;
}

/** How often the interesting paths were taken, so that the generator is known to reach them. */
const reached = {
  held: 0,
  fakeParses: 0,
  evictions: 0,
  localErrors: 0,
  quietReplies: 0,
  quietErrors: 0,
  waited: 0,
};

class PooledClient {
  readonly rw: StatementRewriter;
  readonly direct = new MiniPg();
  private server: PoolServer | null = null;
  private replies: Buffer[] = [];
  private seen: Buffer[] = [];
  /** The round's random numbers (set by round()). */
  private r: () => number = () => 0;

  constructor(registry: StatementRegistry) {
    this.rw = new StatementRewriter(registry);
  }

  /** One batch, as one transaction-pooling lease on `server`. Returns both views. */
  round(
    r: () => number,
    server: PoolServer,
    msgs: Buffer[],
  ): { pooled: string[]; direct: string[] } {
    this.direct.newTransaction();
    server.pg.newTransaction();
    this.server = server;
    this.r = r;
    this.seen = [];
    this.replies = [];
    // Sometimes the first chunk comes before the lease, as when the client waits for a server:
    // the rewriter keeps a copy (retain) and plans it once attached.
    const waits = r() < 0.3;
    if (!waits) this.rw.attach(server.state);
    const direct = this.direct.receive(Buffer.concat(msgs));

    // Cut into chunks; after each, feed back a random share of the replies in flight.
    let i = 0;
    while (i < msgs.length) {
      const take = 1 + Math.floor(r() * (msgs.length - i));
      const part = msgs.slice(i, i + take);
      i += take;
      const chunk = Buffer.concat(part);
      let off = 0;
      for (const m of part) {
        this.hand(r, m[0]!, chunk, off, off + m.length);
        off += m.length;
      }
      if (!this.rw.attached) {
        this.rw.retain();
        chunk.fill(0); // the read buffer is reused
        this.rw.attach(server.state);
        reached.waited++;
      }
      this.rw.plan();
      if (this.rw.holding) reached.held++;
      this.pump();
      const feed = r() < 0.5 ? this.replies.length : Math.floor(r() * (this.replies.length + 1));
      this.feed(feed);
    }
    while (this.replies.length > 0) this.feed(this.replies.length);
    return { pooled: tokens(this.seen), direct: tokens(direct) };
  }

  /** Hands one message over, whole or (Bind, Execute, Sync, Query) as a start and the rest. */
  private hand(r: () => number, type: number, chunk: Buffer, start: number, end: number): void {
    const streamable = type === 0x42 || type === 0x45 || type === 0x53 || type === 0x51;
    if (!streamable || r() < 0.7) {
      this.rw.clientMessage(type, chunk, start, end);
      return;
    }
    // Bind and Execute: the names must be in the first bytes.
    let min = start + 5;
    if (type === 0x42) min = chunk.indexOf(0, chunk.indexOf(0, start + 5) + 1) + 1;
    if (type === 0x45) min = chunk.indexOf(0, start + 5) + 1;
    const cut = min + Math.floor(r() * (end - min + 1));
    this.rw.clientMessageStart(type, chunk, start, cut, end - start);
    if (cut < end) this.rw.clientBytes(chunk, cut, end);
  }

  private pump(): void {
    // As the session does, half the time: the one range (copied, as SocketIO.writeCopy does),
    // else the array.
    let out: Buffer[];
    if (this.r() < 0.5 && this.rw.oneRange) {
      out = [Buffer.from(this.rw.rangeBuf.subarray(this.rw.rangeStart, this.rw.rangeEnd))];
      this.rw.dropRange();
      if (this.rw.hasOutput) out.push(...this.rw.takeServer());
    } else {
      out = this.rw.takeServer();
    }
    if (out.length > 0) this.replies.push(...this.server!.pg.receive(Buffer.concat(out)));
    this.seen.push(...this.rw.takeClient());
  }

  private feed(n: number): void {
    const batch = this.replies.splice(0, n);
    for (const m of batch) {
      if (this.rw.quiet) {
        reached.quietReplies++;
        if (m[0] === 0x45) reached.quietErrors++;
      }
      if (this.rw.serverMessage(m[0]!, m.subarray(5)) === REPLY_FORWARD) this.seen.push(m);
      this.pump();
    }
  }

  end(): boolean {
    this.server = null;
    return this.rw.detach();
  }
}

function checkBookkeeping(
  registry: StatementRegistry,
  clients: readonly PooledClient[],
  servers: readonly PoolServer[],
): void {
  for (const s of servers) {
    // What pgwarden thinks each server holds is what it holds.
    const real = [...s.pg.statements.keys()].filter((k) => k !== "").sort();
    expect(s.state.names().slice().sort()).toEqual(real);
  }
  for (const c of clients) {
    // The client's names are the ones PostgreSQL would have, with the same text and types.
    const mine = c.rw
      .statements()
      .map(([name, entry]): [string, string | undefined] => [name, registry.byName(entry)?.key]);
    const theirs = [...c.direct.statements.entries()]
      .filter(([k]) => k !== "")
      .map(([name, s]): [string, string] => {
        const types = Buffer.alloc(2 + 4 * s.types.length);
        types.writeInt16BE(s.types.length, 0);
        for (const [i, t] of s.types.entries()) types.writeUInt32BE(t, 2 + 4 * i);
        return [name, `${s.sql}\0${types.toString("latin1")}`];
      });
    expect(new Map(mine)).toEqual(new Map(theirs));
  }
  // Reference counts: two per client name (true and planned views agree at rest), one per server.
  const wrong: string[] = [];
  for (const e of registry.entries()) {
    let clientRefs = 0;
    for (const c of clients) {
      for (const [, entry] of c.rw.statements()) if (entry === e.name) clientRefs += 2;
    }
    const serverRefs = servers.filter((s) => s.state.slot(e) !== undefined).length;
    if (
      e.clientRefs !== clientRefs ||
      e.serverRefs !== serverRefs ||
      clientRefs + serverRefs === 0
    ) {
      wrong.push(
        `${e.name}: ${e.clientRefs}/${e.serverRefs}, expected ${clientRefs}/${serverRefs}`,
      );
    }
  }
  expect(wrong).toEqual([]);
}

describe("StatementRewriter against a PostgreSQL model", () => {
  // PGW_MODEL_SEEDS=20000 for a long run; PGW_DEBUG=1 names the messages of a failing batch.
  const SEEDS = Number(process.env.PGW_MODEL_SEEDS ?? 100);
  const FIRST = Number(process.env.PGW_MODEL_FIRST_SEED ?? 1);
  const ROUNDS = 40;
  const PER_TEST = 50;
  // Each test runs for a second without yielding; vitest's worker answers its runner's calls
  // only between macrotasks, and a long run (minutes) timed one out ("Timeout calling
  // onTaskUpdate", an unhandled error though every test passed). Yield between tests.
  afterEach(() => new Promise<void>((resolve) => setImmediate(resolve)));
  const groups = Array.from({ length: Math.ceil(SEEDS / PER_TEST) }, (_, i) => {
    const from = FIRST + i * PER_TEST;
    return [from, Math.min(FIRST + SEEDS - 1, from + PER_TEST - 1)] as const;
  });

  it.each(groups)(
    `random pipelines, seeds %i to %i × ${ROUNDS} batches: clients see what PostgreSQL would show`,
    (from, to) => {
      for (let seed = from; seed <= to; seed++) {
        const r = rng(seed);
        const registry = new StatementRegistry(1 + Math.floor(r() * 4));
        const servers: PoolServer[] = Array.from({ length: 1 + Math.floor(r() * 3) }, () => ({
          pg: new MiniPg(),
          state: registry.newServer(),
        }));
        const clients = Array.from(
          { length: 1 + Math.floor(r() * 3) },
          () => new PooledClient(registry),
        );
        for (let round = 0; round < ROUNDS; round++) {
          const client = pick(r, clients);
          const msgs = batch(r, new Set(client.direct.statements.keys()));
          const where = `seed ${seed}, round ${round}: ${DEBUG ? frontendTokens(Buffer.concat(msgs)).join(" | ") : ""}`;
          const { pooled, direct } = client.round(r, pick(r, servers), msgs);
          expect(pooled, where).toEqual(direct);
          if (pooled.some((t) => t.startsWith("E 26000") || t.startsWith("E 42P05"))) {
            reached.localErrors++;
          }
          expect(client.end(), `${where}: lease ended cleanly`).toBe(true);
          checkBookkeeping(registry, clients, servers);
        }
        const { clientParses, serverParses, evictions } = registry.stats;
        reached.fakeParses += clientParses - serverParses > 0 ? 1 : 0;
        reached.evictions += evictions;
        for (const c of clients) c.rw.dispose();
        for (const s of servers) s.state.dispose();
        expect(registry.size, `seed ${seed}: every entry released`).toBe(0);
      }
    },
  );

  it("reaches held-back messages, fake ParseCompletes, evictions, local errors and quiet stretches", () => {
    expect(reached.held).toBeGreaterThan(0);
    expect(reached.quietReplies).toBeGreaterThan(0);
    expect(reached.quietErrors).toBeGreaterThan(0);
    expect(reached.waited).toBeGreaterThan(0);
    expect(reached.fakeParses).toBeGreaterThan(0);
    expect(reached.evictions).toBeGreaterThan(0);
    expect(reached.localErrors).toBeGreaterThan(0);
  });
});
