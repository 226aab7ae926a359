import { describe, expect, it } from "vitest";
import { parse } from "../protocol/index.js";
import { mayDeallocate, type PreparedEntry, StatementRegistry } from "./prepared-statements.js";

/** The Parse tail (query, types) of a statement, as the rewriter hands it to the registry. */
function tail(sql: string, types: number[] = []): Buffer {
  const p = parse("ignored", sql, types);
  return p.subarray(5 + "ignored".length + 1);
}

function acquire(r: StatementRegistry, sql: string, types: number[] = []): PreparedEntry {
  const t = tail(sql, types);
  return r.acquire(t, 0, t.length);
}

describe("StatementRegistry", () => {
  it("maps query text and parameter types to one entry with a server name", () => {
    const r = new StatementRegistry(10);
    const a = acquire(r, "select $1", [23]);
    expect(a.name).toBe("pgw_1");
    expect(acquire(r, "select $1", [23])).toBe(a);
    expect(a.clientRefs).toBe(2);
    expect(acquire(r, "select $1", [25]).name).toBe("pgw_2");
    expect(acquire(r, "select $1").name).toBe("pgw_3");
    expect(r.size).toBe(3);
    expect(a.parseMessage.equals(parse("pgw_1", "select $1", [23]))).toBe(true);
  });

  it("drops an entry with its last reference and never reuses a name", () => {
    const r = new StatementRegistry(10);
    const a = acquire(r, "select 1");
    r.retainServer(a);
    r.releaseClient(a);
    expect(r.size).toBe(1);
    r.releaseServer(a);
    expect(r.size).toBe(0);
    expect(acquire(r, "select 1").name).toBe("pgw_2");
  });

  it("peeks without taking a reference", () => {
    const r = new StatementRegistry(10);
    const t = tail("select 1");
    expect(r.peek(t, 0, t.length)).toBeUndefined();
    const a = r.acquire(t, 0, t.length);
    expect(r.peek(t, 0, t.length)).toBe(a);
    expect(a.clientRefs).toBe(1);
    expect(r.byName("pgw_1")).toBe(a);
    expect([...r.entries()]).toEqual([a]);
  });
});

describe("ServerStatements", () => {
  function held(r: StatementRegistry, sql: string) {
    const e = acquire(r, sql);
    return e;
  }

  it("keeps slots in least-recently-used order and picks victims from the old end", () => {
    const r = new StatementRegistry(10);
    const s = r.newServer();
    const [a, b, c] = ["select 1", "select 2", "select 3"].map((q) => held(r, q)) as [
      PreparedEntry,
      PreparedEntry,
      PreparedEntry,
    ];
    for (const e of [a, b, c]) {
      const slot = s.slotFor(e);
      s.setPlanned(slot, true, e.generation);
      slot.truth = true;
      s.touch(slot);
    }
    expect(s.names()).toEqual(["pgw_1", "pgw_2", "pgw_3"]);
    s.epoch++; // a new lease: nothing used yet
    s.touch(s.slot(a)!);
    expect(s.names()).toEqual(["pgw_2", "pgw_3", "pgw_1"]);
    expect(s.victim(null)?.entry).toBe(b);
    expect(s.victim(new Set([b]))?.entry).toBe(c);
    expect(s.victim(new Set([b, c]))).toBeNull(); // a was used in this lease
    s.slot(c)!.unresolved = 1;
    expect(s.victim(new Set([b]))).toBeNull();
    expect(s.plannedCount).toBe(3);
    expect(s.holds(a)).toBe(true);
  });

  it("finds each slot by its entry, the most recently used one included, and none once forgotten", () => {
    const r = new StatementRegistry(10);
    const s = r.newServer();
    const [a, b] = ["select 1", "select 2"].map((q) => held(r, q)) as [
      PreparedEntry,
      PreparedEntry,
    ];
    expect(s.slot(a)).toBeUndefined(); // empty: no tail
    const sa = s.slotFor(a);
    const sb = s.slotFor(b);
    expect(s.slot(b)).toBe(sb); // the tail
    expect(s.slot(a)).toBe(sa); // through the map
    s.touch(sa);
    expect(s.slot(a)).toBe(sa);
    expect(s.slot(b)).toBe(sb);
    // The tail is forgotten (never held, nothing in flight): it is not found any more.
    s.settle(sa);
    expect(s.slot(a)).toBeUndefined();
    expect(s.slot(b)).toBe(sb);
    s.dispose();
    expect(s.slot(b)).toBeUndefined();
  });

  it("falls back to what the server really holds once nothing is in flight, and forgets the rest", () => {
    const r = new StatementRegistry(10);
    const s = r.newServer();
    const e = held(r, "select 1");
    r.releaseClient(e);
    const slot = s.slotFor(e);
    expect(e.serverRefs).toBe(1);
    s.setPlanned(slot, true, 0);
    slot.unresolved = 1;
    s.settle(slot);
    expect(s.plannedCount).toBe(1); // still in flight: the plan stands
    slot.unresolved = 0;
    s.settle(slot); // it never ran
    expect(s.plannedCount).toBe(0);
    expect(s.size).toBe(0);
    expect(r.size).toBe(0);
  });

  it("clears what it holds after DEALLOCATE ALL, keeping plans still in flight", () => {
    const r = new StatementRegistry(10);
    const s = r.newServer();
    const a = held(r, "select 1");
    const b = held(r, "select 2");
    for (const e of [a, b]) {
      const slot = s.slotFor(e);
      s.setPlanned(slot, true, 0);
      slot.truth = true;
    }
    s.slot(b)!.unresolved = 1; // say, an injected Parse sent after the DEALLOCATE ALL
    s.clearTruth();
    expect(s.names()).toEqual(["pgw_2"]);
    expect(s.slot(b)!.truth).toBe(false);
    s.dispose();
    expect(a.serverRefs).toBe(0);
    expect(b.serverRefs).toBe(0);
  });
});

describe("mayDeallocate", () => {
  const q = (s: string) => Buffer.from(s, "latin1");
  it("spots DEALLOCATE and DISCARD in any case, conservatively", () => {
    for (const s of [
      "DEALLOCATE ALL",
      "deallocate prepare all",
      "Discard All",
      "/* x */ discard all",
    ]) {
      const b = q(s);
      expect(mayDeallocate(b, 0, b.length)).toBe(true);
    }
    const b = q("select 1");
    expect(mayDeallocate(b, 0, b.length)).toBe(false);
  });

  it("looks at the whole text, however long", () => {
    const filler = "select 1; ".repeat(1000); // 10 kB
    expect(mayDeallocate(q(filler), 0, filler.length)).toBe(false);
    for (const tail of ["DEALLOCATE ALL", "discard all", "DeAlLoCaTe pgw_1"]) {
      const b = q(`${filler}${tail}`);
      expect(mayDeallocate(b, 0, b.length)).toBe(true);
    }
    // a range of a larger buffer: only that range counts
    const b = q(`${filler}discard all`);
    expect(mayDeallocate(b, 0, filler.length)).toBe(false);
    // no letter matches by case folding alone: "@" | 0x20 is "`", "D" | 0x20 is "d"
    expect(mayDeallocate(q("\x04ISCARD d@allocate"), 0, 18)).toBe(false);
  });

  it("says yes for a streamed text (the rest is not seen yet)", () => {
    const b = q("select 1");
    expect(mayDeallocate(b, 0, 3, b.length)).toBe(true);
    const long = Buffer.alloc(10_000, 0x61);
    expect(mayDeallocate(long, 0, 5000, 10_000)).toBe(true);
    expect(mayDeallocate(long, 0, 10_000, 10_000)).toBe(false);
  });
});
