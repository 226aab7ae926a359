// Prepared statements in transaction pooling: the state that outlives one lease.
//
// Model (design §5). A client's named statement stands for an instance-wide PreparedEntry,
// keyed by what PostgreSQL would prepare: the query text plus the parameter type OIDs (the bytes
// of the Parse message after its name). Each entry has a server-side name, `pgw_<n>`, taken from
// a counter and never reused, so a name seen on any server always means the same query. The
// registry counts who refers to an entry: client names (through StatementRewriter) and server
// connections that hold it. An entry goes away when nobody does; a later Parse of the same text
// gets a new name.
//
// ServerStatements is what one server connection holds, kept with the ServerConnection across
// leases (the pool owns the connection, the frontend owns this state). Each held entry has a slot
// in a least-recently-used list, capped by `prepared_statements_limit`. A slot records two
// views: `truth`, what the server holds after every request whose reply has arrived, and
// `planned`, what it will hold once the requests already sent succeed. The lease's rewriter
// plans with `planned` and counts `unresolved` requests per slot; when a request is skipped
// (an error earlier in its Sync segment) or fails, the slot falls back to `truth` once nothing
// about it is in flight. The rewriter never plans on a slot whose requests from an earlier Sync
// segment are still unresolved (it waits), which is what makes that fallback exact.
//
// Eviction picks the least recently used slot that the current lease has not used (a portal
// built from it may still be open in this transaction) and that has nothing in flight; if there
// is none the cap is exceeded for now and enforced on a later Parse.

import { Buffer } from "node:buffer";
import { Msg } from "../protocol/index.js";

/** Counters for metrics and SHOW STATS (PgBouncer's ps_client_parse_count and friends). */
export interface PreparedStats {
  /** Named Parse messages from clients. */
  clientParses: number;
  /** Parse messages sent to servers (a statement a server did not hold: a miss). */
  serverParses: number;
  /** Statements closed on a server to stay under the limit. */
  evictions: number;
}

export function newPreparedStats(): PreparedStats {
  return { clientParses: 0, serverParses: 0, evictions: 0 };
}

export class PreparedEntry {
  readonly id: number;
  /** Server-side statement name. */
  readonly name: string;
  /** Parse body after the statement name, as a latin1 string: query, NUL, parameter types. */
  readonly key: string;
  /** Complete Parse message with the server-side name. */
  readonly parseMessage: Buffer;
  /** Complete Describe (statement) message with the server-side name. */
  readonly describeMessage: Buffer;
  /** Complete Close (statement) message with the server-side name. */
  readonly closeMessage: Buffer;
  /** The server-side name and its NUL, spliced into Bind messages. */
  readonly nameZ: Buffer;
  /** Client names that refer to it (planned or true). */
  clientRefs = 0;
  /** Server connections that hold it (or are about to). */
  serverRefs = 0;
  /**
   * Bumped when a server said the statement is stale (0A000 "cached plan must not change result
   * type"): every server holding an older copy closes it and prepares it again before use.
   */
  generation = 0;
  /** Its text may run DEALLOCATE ALL / DISCARD ALL (see mayDeallocate). */
  readonly mayDeallocate: boolean;

  constructor(id: number, key: string, tail: Buffer) {
    this.id = id;
    this.mayDeallocate = mayDeallocate(tail, 0, tail.length);
    this.name = `pgw_${id}`;
    this.key = key;
    this.nameZ = Buffer.from(`${this.name}\0`, "latin1");
    this.parseMessage = message(Msg.Parse, this.nameZ, tail);
    this.describeMessage = message(Msg.Describe, STATEMENT, this.nameZ);
    this.closeMessage = message(Msg.Close, STATEMENT, this.nameZ);
  }
}

const STATEMENT = Buffer.from("S", "latin1");

/**
 * Whether a query text may drop every prepared statement (DEALLOCATE ALL, DISCARD ALL):
 * named-statement messages after it then wait for its completion. buf[start, end) is the text
 * or, for a message still streaming, its first part of `length` bytes: the rest is not seen, so
 * the answer is then yes. A cheap, conservative test (the words anywhere in the text, in any
 * case); a false positive costs a wait.
 */
export function mayDeallocate(
  buf: Buffer,
  start: number,
  end: number,
  length = end - start,
): boolean {
  if (end - start < length) return true;
  for (let i = start; i + 7 <= end; i++) {
    if ((buf[i]! | 0x20) !== 0x64) continue; // d or D
    if (wordAt(buf, i + 1, end, DISCARD_TAIL) || wordAt(buf, i + 1, end, DEALLOCATE_TAIL))
      return true;
  }
  return false;
}

const DISCARD_TAIL = Buffer.from("iscard", "latin1");
const DEALLOCATE_TAIL = Buffer.from("eallocate", "latin1");

/** buf[at, ...) starts with `word` (lowercase ASCII letters), in any case. */
function wordAt(buf: Buffer, at: number, end: number, word: Buffer): boolean {
  if (at + word.length > end) return false;
  for (let j = 0; j < word.length; j++) {
    // (for letters, | 0x20 is exactly "to lowercase"; no other byte becomes a letter by it)
    if ((buf[at + j]! | 0x20) !== word[j]) return false;
  }
  return true;
}

function message(type: number, a: Buffer, b: Buffer): Buffer {
  const buf = Buffer.allocUnsafe(5 + a.length + b.length);
  buf[0] = type;
  buf.writeInt32BE(4 + a.length + b.length, 1);
  a.copy(buf, 5);
  b.copy(buf, 5 + a.length);
  return buf;
}

/** The instance-wide map of statements; one per process. */
export class StatementRegistry {
  /** prepared_statements_limit: most statements held per server connection. Reloadable. */
  limit: number;
  readonly stats: PreparedStats;
  private readonly byKey = new Map<string, PreparedEntry>();
  private nextId = 1;

  constructor(limit: number, stats: PreparedStats = newPreparedStats()) {
    this.limit = limit;
    this.stats = stats;
  }

  get size(): number {
    return this.byKey.size;
  }

  /**
   * The entry for a Parse whose part after the statement name is buf[start, end), with one more
   * client reference taken. Copies the bytes only when the entry is new.
   */
  acquire(buf: Buffer, start: number, end: number): PreparedEntry {
    const key = buf.toString("latin1", start, end);
    let e = this.byKey.get(key);
    if (e === undefined) {
      e = new PreparedEntry(this.nextId++, key, buf.subarray(start, end));
      this.byKey.set(key, e);
    }
    e.clientRefs++;
    return e;
  }

  /** The entry for that Parse tail if there is one; takes no reference. */
  peek(buf: Buffer, start: number, end: number): PreparedEntry | undefined {
    return this.byKey.get(buf.toString("latin1", start, end));
  }

  /** Every entry (admin output, tests). */
  entries(): IterableIterator<PreparedEntry> {
    return this.byKey.values();
  }

  /** Finds an entry by its server-side name (admin output, tests). */
  byName(name: string): PreparedEntry | undefined {
    for (const e of this.byKey.values()) if (e.name === name) return e;
    return undefined;
  }

  retainClient(e: PreparedEntry): void {
    e.clientRefs++;
  }

  releaseClient(e: PreparedEntry): void {
    e.clientRefs--;
    this.maybeDrop(e);
  }

  retainServer(e: PreparedEntry): void {
    e.serverRefs++;
  }

  releaseServer(e: PreparedEntry): void {
    e.serverRefs--;
    this.maybeDrop(e);
  }

  /** A new, empty held set for a server connection. */
  newServer(): ServerStatements {
    return new ServerStatements(this);
  }

  private maybeDrop(e: PreparedEntry): void {
    if (e.clientRefs > 0 || e.serverRefs > 0) return;
    if (this.byKey.get(e.key) === e) this.byKey.delete(e.key);
  }
}

/** One entry on one server connection. Fields are the rewriter's to change. */
export class ServerSlot {
  readonly entry: PreparedEntry;
  /** Held, as far as replies have told. */
  truth = false;
  /** Held once the requests in flight succeed. */
  planned = false;
  /** Entry generation of the copy `truth` / `planned` describe. */
  truthGeneration = 0;
  generation = 0;
  /** Parse/Close requests about it whose reply (or skip) has not been seen. */
  unresolved = 0;
  /** Sync segment of the last of those requests (meaningful while unresolved > 0). */
  segment = 0;
  /** ServerStatements.epoch of its last use: the lease that last used it. */
  used = -1;
  prev: ServerSlot | null = null;
  next: ServerSlot | null = null;

  constructor(entry: PreparedEntry) {
    this.entry = entry;
  }
}

/**
 * What one server connection holds. Lives in `ServerConnection.prepared`; the pool hands it over
 * with the connection, and `dispose()` must run when the connection closes.
 */
export class ServerStatements {
  readonly registry: StatementRegistry;
  /** Bumped at every lease (StatementRewriter.attach). */
  epoch = 0;
  /** Slots with `planned` set: what the limit counts. */
  plannedCount = 0;
  /**
   * Set when a lease ended with requests in flight: what the server holds is unknown, so the
   * connection must not be reused (the session releases it unclean).
   */
  poisoned = false;
  private readonly slots = new Map<PreparedEntry, ServerSlot>();
  // LRU list: head is the least recently used.
  private head: ServerSlot | null = null;
  private tail: ServerSlot | null = null;

  constructor(registry: StatementRegistry) {
    this.registry = registry;
  }

  get size(): number {
    return this.slots.size;
  }

  slot(e: PreparedEntry): ServerSlot | undefined {
    // The most recently used slot first (the LRU list's tail, always in the map): a server
    // leased to clients that run the same statement finds it without a map lookup.
    const t = this.tail;
    if (t !== null && t.entry === e) return t;
    return this.slots.get(e);
  }

  /** True when the server holds the entry for sure (tests, admin). */
  holds(e: PreparedEntry): boolean {
    const s = this.slots.get(e);
    return s?.truth === true && s.planned && s.unresolved === 0;
  }

  /** Server-side names held, least recently used first (tests, admin). */
  names(): string[] {
    const out: string[] = [];
    for (let s = this.head; s !== null; s = s.next) if (s.planned) out.push(s.entry.name);
    return out;
  }

  /** The slot for an entry, created (not held) if absent. */
  slotFor(e: PreparedEntry): ServerSlot {
    let s = this.slots.get(e);
    if (s === undefined) {
      s = new ServerSlot(e);
      this.slots.set(e, s);
      this.registry.retainServer(e);
      this.append(s);
    }
    return s;
  }

  /** Marks a use by the current lease and moves the slot to the most recently used end. */
  touch(s: ServerSlot): void {
    s.used = this.epoch;
    if (this.tail === s) return;
    this.unlink(s);
    this.append(s);
  }

  setPlanned(s: ServerSlot, held: boolean, generation: number): void {
    if (s.planned !== held) this.plannedCount += held ? 1 : -1;
    s.planned = held;
    s.generation = generation;
  }

  /** After a request about the slot was resolved or dropped: falls back, forgets if empty. */
  settle(s: ServerSlot): void {
    if (s.unresolved > 0) return;
    if (s.planned !== s.truth || s.generation !== s.truthGeneration) {
      this.setPlanned(s, s.truth, s.truthGeneration);
    }
    if (!s.truth) this.forget(s);
  }

  /**
   * The least recently used slot that may be closed now: held for sure, nothing in flight, not
   * used by the current lease (a portal built from it may still be open) and not in `keep`
   * (named by client messages waiting to be planned). Null when none is: the limit then waits.
   */
  victim(keep: ReadonlySet<PreparedEntry> | null): ServerSlot | null {
    for (let s = this.head; s !== null; s = s.next) {
      if (!s.planned || !s.truth || s.unresolved > 0 || s.used === this.epoch) continue;
      if (keep?.has(s.entry)) continue;
      return s;
    }
    return null;
  }

  /**
   * DEALLOCATE ALL / DISCARD ALL completed: the server holds nothing. Requests sent after it
   * keep their plans; their fallback is now "not held".
   */
  clearTruth(): void {
    for (let s = this.head; s !== null; ) {
      const next = s.next;
      s.truth = false;
      s.truthGeneration = 0;
      this.settle(s);
      s = next;
    }
  }

  /** Forgets everything (the connection is closing or its state is unknown). */
  dispose(): void {
    for (let s = this.head; s !== null; s = s.next) this.registry.releaseServer(s.entry);
    this.slots.clear();
    this.head = this.tail = null;
    this.plannedCount = 0;
  }

  private forget(s: ServerSlot): void {
    if (s.planned || s.unresolved > 0) return;
    this.slots.delete(s.entry);
    this.unlink(s);
    this.registry.releaseServer(s.entry);
  }

  private append(s: ServerSlot): void {
    s.prev = this.tail;
    s.next = null;
    if (this.tail !== null) this.tail.next = s;
    else this.head = s;
    this.tail = s;
  }

  private unlink(s: ServerSlot): void {
    if (s.prev !== null) s.prev.next = s.next;
    else if (this.head === s) this.head = s.next;
    if (s.next !== null) s.next.prev = s.prev;
    else if (this.tail === s) this.tail = s.prev;
    s.prev = s.next = null;
  }
}
