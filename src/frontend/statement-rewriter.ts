// StatementRewriter: one client's named prepared statements, carried across the servers it is
// given in transaction pooling (design §5).
//
// Model. The session hands over the client's messages (whole, or for big ones their start and
// then raw bytes) and calls `plan()`; the rewriter answers with the bytes for the server (byte
// ranges of the client's own buffers, contiguous ones merged, plus small rewritten or injected
// messages) and with messages for the client that it answers itself. Only messages naming a
// statement are touched: Parse → renamed to the entry's server name, or answered with a fake
// ParseComplete when the server already holds it; Bind/Describe → renamed, with the entry's
// Parse injected first when the server lacks it; Close → answered with a fake CloseComplete (the
// server keeps the statement for other clients). When a statement is added past
// `prepared_statements_limit`, the least recently used one is closed on the server.
//
// Every request that draws a reply gets an item in a FIFO, in the order the server will answer:
// forward the reply, swallow it (an injected Parse or Close), emit a fake in its place (as soon
// as everything before it has been answered), or expect an error and replace it with ours. A
// Bind of a name the client never prepared (26000) or a Parse of a name in use (42P05) is
// answered with PostgreSQL's error, and to get PostgreSQL's consequences (the transaction
// aborted, the rest of the pipeline skipped up to Sync) the server is made to fail at that very
// point with a message it rejects without side effects (a Close of subtype 0); its error is
// swallowed and ours sent instead.
//
// The reply side (`serverMessage`) pops the FIFO at each request's last reply. After an
// ErrorResponse the server skips everything up to Sync: those items are dropped, and what they
// would have changed is rolled back (client names and server slots keep a "true" and a
// "planned" view, see prepared-statements.ts). A message whose outcome depends on a request of
// an earlier, still unanswered Sync segment (the same client name, the same statement on this
// server, or a query or Execute that may run DEALLOCATE ALL / DISCARD ALL) is held back, with
// everything after it, until those replies are in: rare, and it keeps the rollback exact.
// DEALLOCATE ALL / DISCARD ALL completions clear the server's and the client's statements. A
// statement of a lease is never evicted during that lease, nor one that messages already handed
// over still name (a portal or a later Bind may need it).
//
// Cost. A client that never sends a named Parse never gets a rewriter. With one, the common
// case (Bind of a held statement, Execute, Sync) makes no Buffer object but the one range it
// is written as: the output is built in the process's shared ByteArena (util/byte-arena.ts),
// the rewritten Bind header there and the client's small messages copied after it (pieces
// over COPY_MAX go out as ranges of the client's own buffers instead), and the Bind's statement
// is found by the bytes of its name (a small cache: no string, no map lookup). The client's
// bytes are ranges of its socket's reused read buffer: what is planned at once is sent at
// once; what must wait is copied (retain(), small spans to the arena too, with HEADROOM free
// bytes before them). A Bind in such a copy (the transaction waited for a server, the common
// case under load) is rewritten in place and goes out with what follows it as one range,
// copied no further.
//
// Wiring (the session and the server pump): every client message goes through the rewriter
// once it is on, in order; the server pump reports REPLY_TYPES whole (never half forwarded, so
// a swallowed reply can be cut out) and calls serverMessage for each; `releasable` joins the
// release decision; `attach` tells what was already in flight when it is switched on mid-lease.

import { Buffer } from "node:buffer";
import {
  closeComplete,
  errorResponse,
  Msg,
  ProtocolError,
  parseComplete,
} from "../protocol/index.js";
import { arenaView, copyBytes, sharedArena } from "../util/index.js";
import {
  mayDeallocate,
  type PreparedEntry,
  type ServerSlot,
  type ServerStatements,
  type StatementRegistry,
} from "./prepared-statements.js";

/** serverMessage: pass the message's bytes on to the client. */
export const REPLY_FORWARD = 0;
/** serverMessage: drop the message's bytes (a reply to something pgwarden injected). */
export const REPLY_SWALLOW = 1;

/**
 * Server message types the rewriter must see, whole (their bodies are small): every last reply
 * of a request, ErrorResponse and ReadyForQuery; and the ones that may arrive between requests
 * (NoticeResponse, NotificationResponse, ParameterStatus), so that no message is ever half
 * forwarded when the rewriter answers the client itself. Other types pass without a call.
 */
export const REPLY_TYPES = "123CEIsnTZNAS";

// FIFO item kinds: what one request owes the client, and how its reply ends.
const K_PARSE = 1; // client Parse, forwarded; ends at '1'. ref: ParseOp | null (unnamed)
const K_PARSE_FAKE = 2; // client Parse of a held statement: fake '1'. ref: ParseOp
const K_PARSE_INJECTED = 3; // injected Parse, '1' swallowed. ref: ServerSlot
const K_CLOSE_INJECTED = 4; // injected Close (eviction, stale copy), '3' swallowed. ref: ServerSlot
const K_CLOSE_FAKE = 5; // client Close of a statement: fake '3'. ref: ClientName | null
const K_CLOSE = 6; // client Close of a portal or the unnamed statement; ends at '3'
const K_BIND = 7; // ends at '2'. ref: PreparedEntry | null
const K_DESCRIBE = 8; // ends at 'T' or 'n' (after 't' for a statement). ref: PreparedEntry | null
const K_EXECUTE = 9; // ends at 'C', 'I' or 's'. ref: true = barrier (may deallocate)
const K_SYNC = 10; // ends at 'Z'
const K_QUERY = 11; // ends at 'Z'; an error inside does not skip anything. ref: true = barrier
const K_FUNCTION = 12; // ends at 'Z'
const K_LOCAL_ERROR = 13; // the forced error: 'E' swallowed, ref (our ErrorResponse) sent instead
const K_UNTRACKED = 14; // an extended request sent before the rewriter was attached
const K_UNTRACKED_SYNC = 15; // a Sync/Query/FunctionCall sent before: ends at 'Z'

/** Close with subtype 0: PostgreSQL answers ERROR 08P01 and changes nothing else. */
const FORCED_ERROR = Buffer.from([Msg.Close, 0, 0, 0, 6, 0, 0]);

const C_1 = 0x31;
const C_2 = 0x32;
const C_3 = 0x33;
const C_E = 0x45;
const C_I = 0x49;
const C_T = 0x54;
const C_Z = 0x5a;
const C_n = 0x6e;
const C_s = 0x73;
const C_CommandComplete = 0x43;

/** Every type that ends some extended request: one arriving for the wrong request is a desync. */
function isExtendedEnd(type: number): boolean {
  return (
    type === C_1 ||
    type === C_2 ||
    type === C_3 ||
    type === C_T ||
    type === C_n ||
    type === C_CommandComplete ||
    type === C_I ||
    type === C_s
  );
}

/**
 * FIFO items whose reply changes nothing in the bookkeeping, whatever it is: a Bind, Describe,
 * portal or unnamed Close, Sync, FunctionCall, unnamed Parse, and an Execute or simple query
 * that cannot deallocate (not a barrier: its CommandComplete cannot be DEALLOCATE ALL or
 * DISCARD ALL). Dropping one after an error changes nothing either. (A Bind's stale-plan error
 * does: see quietError.)
 */
function isQuiet(kind: number, ref: unknown): boolean {
  switch (kind) {
    case K_BIND:
    case K_DESCRIBE:
    case K_CLOSE:
    case K_SYNC:
    case K_FUNCTION:
      return true;
    case K_EXECUTE:
    case K_QUERY:
      return ref !== true;
    case K_PARSE:
      return ref === null;
    default:
      return false;
  }
}

/** How far checkQuiet looks for the end of a quiet stretch (a pipeline without Sync: not quiet). */
const QUIET_SCAN = 16;

function endsAtZ(kind: number): boolean {
  return kind === K_SYNC || kind === K_QUERY || kind === K_FUNCTION || kind === K_UNTRACKED_SYNC;
}

const DEALLOCATE_ALL = Buffer.from("DEALLOCATE ALL\0", "latin1");
const DISCARD_ALL = Buffer.from("DISCARD ALL\0", "latin1");

/** One client statement name. `truth`/`planned` as for server slots (prepared-statements.ts). */
class ClientName {
  truth: PreparedEntry | null = null;
  planned: PreparedEntry | null = null;
  unresolved = 0;
  segment = 0;
  /** The name's bytes, for lookups by bytes (StatementRewriter.lookup). */
  readonly key: Buffer;
  constructor(readonly name: string) {
    this.key = Buffer.from(name, "latin1");
  }
}

/** Slots of the rewriter's cache of names by their bytes (a power of two). */
const NAME_CACHE_SLOTS = 16;

/** A named client Parse in flight: the name it defines and, if it went to the server, the slot. */
interface ParseOp {
  readonly name: ClientName;
  readonly entry: PreparedEntry;
  slot: ServerSlot | null;
}

/**
 * Index-based ring of (kind, ref); no allocation per item once grown. Item i is
 * items[2i] (its kind) and items[2i + 1] (its ref): one array, so a transaction's few items
 * share a cache line or two.
 */
class Fifo {
  items: unknown[] = new Array(32).fill(0);
  /** Slots (items.length / 2 − 1: a power of two, less one). */
  mask = 15;
  head = 0;
  length = 0;

  push(kind: number, ref: unknown): void {
    if (this.length > this.mask) this.grow();
    const i = (this.head + this.length) & this.mask;
    this.items[2 * i] = kind;
    this.items[2 * i + 1] = ref;
    this.length++;
  }

  get headKind(): number {
    return this.length === 0 ? 0 : (this.items[2 * this.head] as number);
  }

  get headRef(): unknown {
    return this.items[2 * this.head + 1];
  }

  kindAt(j: number): number {
    return this.items[2 * ((this.head + j) & this.mask)] as number;
  }

  refAt(j: number): unknown {
    return this.items[2 * ((this.head + j) & this.mask) + 1];
  }

  shift(): void {
    this.items[2 * this.head + 1] = null;
    this.head = (this.head + 1) & this.mask;
    this.length--;
  }

  private grow(): void {
    const n = this.mask + 1;
    const items: unknown[] = new Array(4 * n).fill(0);
    for (let j = 0; j < this.length; j++) {
      const i = (this.head + j) & this.mask;
      items[2 * j] = this.items[2 * i];
      items[2 * j + 1] = this.items[2 * i + 1];
    }
    this.items = items;
    this.mask = 2 * n - 1;
    this.head = 0;
  }
}

const PIECE_BYTES = -1;

// The fields of a queued piece (StatementRewriter.q).
const Q_TYPE = 0;
const Q_START = 1;
const Q_END = 2;
/** The whole message's length (for a message's first bytes), or PIECE_BYTES. */
const Q_LEN = 3;
/** Index in srcs of the buffer the piece is in. */
const Q_SRC = 4;
const Q_STRIDE = 5;

const EMPTY = Buffer.alloc(0);

/**
 * Client bytes up to this size are copied (to the shared arena) rather than referenced: a
 * transaction's few messages then go out, and wait in the queue, as one range without a Buffer
 * object of their own; bigger ones are passed on as ranges of the client's buffers.
 */
const COPY_MAX = 1024;

/**
 * Free bytes retain() leaves before a span it copies to the arena: a Bind at its head is then
 * rewritten in place even when the server-side name is up to this much longer than the client's.
 */
const HEADROOM = 16;

export class StatementRewriter {
  readonly registry: StatementRegistry;
  private server: ServerStatements | null = null;
  private readonly names = new Map<string, ClientName>();
  private readonly fifo = new Fifo();
  /** Sync segment number of the client's messages being planned. */
  private segment = 1;
  /** The server skips (or would skip) the client's messages until its next Sync. */
  private skipping = false;
  /** The client sent extended-protocol messages since its last Sync. */
  private inSegment = false;
  /**
   * Unanswered simple queries or Executes that may deallocate everything (barriers): named
   * messages after them wait. For Executes that means following what each portal runs.
   */
  private barriers = 0;
  private unnamedStatementDeallocates = false;
  private unnamedPortalDeallocates = false;
  private portalsDeallocating: Set<string> | null = null;
  /** Continuation bytes of the message being streamed are dropped, not sent. */
  private dropStream = false;
  /**
   * A quiet stretch: this many FIFO items from the head, the last of them a Sync (or a simple
   * query or function call alone), are all of kinds whose replies change nothing here (see
   * isQuiet): an error among them skips nothing beyond the stretch. Their
   * replies are not matched one by one: only an ErrorResponse and the ReadyForQuery count, and
   * the head is stale until that ReadyForQuery pops them all. 0: replies are matched one by one.
   */
  private quietLeft = 0;

  // Queue of client pieces not planned yet: a message (type, range, whole length) or more bytes
  // of the message before it (PIECE_BYTES). Planned at plan(); what is held back stays.
  // Piece j is q[j * Q_STRIDE + Q_TYPE .. Q_SRC] (one array with a count: no push or pop per
  // message, and one transaction's pieces share a cache line or two, where parallel arrays
  // would each be one more line to fetch: a session's state is cold when its next transaction
  // comes). A piece's bytes are in srcs[source]: the buffers are listed once each (a read, a
  // copy), not once per message, as a store of a new object into a long-lived array costs a
  // write barrier (arena buffers and the session's copies are new objects, young to the GC).
  private q = new Int32Array(16 * Q_STRIDE);
  private srcs: Array<Buffer | null> = new Array(8).fill(null);
  private nsrc = 0;
  /** The source queue() adds to while it is handed the same buffer again (-1: none). */
  private srcOpen = -1;
  private qn = 0;
  private qi = 0;
  private qCopied = 0;
  /** The message being planned is in a copy of the rewriter's own (retain()): rewritable. */
  private planOwned = false;
  /** The source of the message being planned. */
  private planSrc = -1;
  /**
   * The last span retain() copied to the arena, with HEADROOM free bytes before its first
   * message (at roomAt in source roomSrc): a Bind there is rewritten in place even when the
   * server-side name is the longer one.
   */
  private roomSrc = -1;
  private roomAt = -1;

  // Names recently found by their bytes, in slots by a hash of the bytes: a client binds the
  // same few statements again and again, and a Bind found here costs no string and no map
  // lookup. A record that left `names` has `planned === null` and is never returned from here.
  private readonly nameCache: Array<ClientName | null> = new Array(NAME_CACHE_SLOTS).fill(null);

  // Output. A pending range of the client's bytes is merged with the next contiguous one.
  private toServer: Buffer[] = [];
  private spareServer: Buffer[] = [];
  private toClient: Buffer[] = [];
  private spareClient: Buffer[] = [];
  private pendBuf: Buffer | null = null;
  /** pendBuf is an arena buffer (its views are made cheaply, from its ArrayBuffer). */
  private pendArena = false;
  private pendStart = 0;
  private pendEnd = 0;
  /** takeServer()'s answer when the output is one range (no array push per transaction). */
  private readonly single: Buffer[] = [EMPTY];

  constructor(registry: StatementRegistry) {
    this.registry = registry;
  }

  /** Client statement names currently defined (as planned). */
  get statementCount(): number {
    let n = 0;
    for (const r of this.names.values()) if (r.planned !== null) n++;
    return n;
  }

  /** The client's statements (as planned): [client name, server-side name], for admin output. */
  statements(): Array<[string, string]> {
    const out: Array<[string, string]> = [];
    for (const r of this.names.values()) {
      if (r.planned !== null) out.push([display(r.name), r.planned.name]);
    }
    return out;
  }

  /**
   * In a quiet stretch (see quietLeft): until the next ReadyForQuery or ErrorResponse, a server
   * message of any other type changes nothing and gets REPLY_FORWARD with no output, so the
   * server pump may pass it on without calling serverMessage.
   */
  get quiet(): boolean {
    return this.quietLeft > 0;
  }

  /** Replies are owed to the client, or client messages wait to be sent. */
  get owesReplies(): boolean {
    return this.fifo.length > 0 || this.qi < this.qn;
  }

  /** Nothing owed, nothing queued, and the client is between Sync segments. */
  get releasable(): boolean {
    return !this.owesReplies && !this.inSegment && !this.skipping;
  }

  /** Client messages are held back until earlier replies arrive. */
  get holding(): boolean {
    return this.qi < this.qn;
  }

  /** Bytes of client messages not planned yet (held back, or no server leased). */
  get queuedBytes(): number {
    let n = 0;
    for (let j = this.qi; j < this.qn; j++)
      n += this.q[j * Q_STRIDE + Q_END]! - this.q[j * Q_STRIDE + Q_START]!;
    return n;
  }

  get attached(): boolean {
    return this.server !== null;
  }

  /**
   * Starts a lease on `server`. When the session switches the rewriter on in the middle of a
   * lease, it tells what it already sent that is still unanswered: `untrackedSyncs` requests
   * that end at a ReadyForQuery (Sync, Query, FunctionCall), then `untrackedMessages`
   * extended-protocol messages (Parse, Bind, Describe, Execute, Close) sent after the last of
   * those. Their replies are forwarded; fakes wait behind them.
   */
  attach(server: ServerStatements, untrackedSyncs = 0, untrackedMessages = 0): void {
    if (this.server !== null) throw new Error("StatementRewriter is already attached");
    this.server = server;
    server.epoch++;
    for (let i = 0; i < untrackedSyncs; i++) this.fifo.push(K_UNTRACKED_SYNC, null);
    for (let i = 0; i < untrackedMessages; i++) this.fifo.push(K_UNTRACKED, null);
    if (untrackedMessages > 0) this.inSegment = true;
  }

  /**
   * Ends the lease. Returns true when it ended cleanly. Otherwise what the server holds is
   * unknown: its state is dropped and marked poisoned (do not reuse the connection), and what
   * was in flight is rolled back for the client.
   */
  detach(): boolean {
    const server = this.server;
    if (server === null) return true;
    const clean = this.releasable;
    if (!clean) {
      while (this.fifo.length > 0) {
        const kind = this.fifo.headKind;
        const ref = this.fifo.headRef;
        this.fifo.shift();
        this.drop(kind, ref);
      }
      this.clearQueue();
      this.pendBuf = null;
      empty(this.toServer);
      this.skipping = false;
      this.inSegment = false;
      this.barriers = 0;
      this.quietLeft = 0;
      server.poisoned = true;
      server.dispose();
    }
    this.server = null;
    return clean;
  }

  /** The client is gone: releases its names. */
  dispose(): void {
    this.detach();
    for (const r of this.names.values()) {
      this.setTruth(r, null);
      this.setPlanned(r, null);
    }
    this.names.clear();
    this.nameCache.fill(null);
  }

  // ---- client side ----------------------------------------------------------------------------

  /** A whole client message: buf[start, end), header included. Planned at the next plan(). */
  clientMessage(type: number, buf: Buffer, start: number, end: number): void {
    this.queue(type, buf, start, end, end - start);
  }

  /**
   * The first bytes buf[start, end) of a client message of `length` bytes (header included)
   * whose rest follows through clientBytes. Parse, Describe and Close must come whole; a Bind's
   * first bytes must hold its portal and statement names.
   */
  clientMessageStart(type: number, buf: Buffer, start: number, end: number, length: number): void {
    this.queue(type, buf, start, end, length);
  }

  /** More bytes of the message given to clientMessageStart. */
  clientBytes(buf: Buffer, start: number, end: number): void {
    this.queue(PIECE_BYTES, buf, start, end, PIECE_BYTES);
  }

  /**
   * Plans what was handed over. Afterwards takeServer() has the bytes for the server and
   * takeClient() the messages for the client (answered locally), both in order. Messages that
   * must wait stay queued (copied) and are planned when replies arrive (serverMessage).
   */
  plan(): void {
    if (this.server === null) throw new Error("StatementRewriter.plan() without a server");
    const n = this.qn;
    while (this.qi < n) {
      const i = this.qi;
      const at = i * Q_STRIDE;
      const type = this.q[at + Q_TYPE]!;
      const src = this.q[at + Q_SRC]!;
      const buf = this.srcs[src]!;
      const start = this.q[at + Q_START]!;
      const end = this.q[at + Q_END]!;
      if (type === PIECE_BYTES) {
        if (!this.dropStream) this.forward(buf, start, end);
        this.qi++;
        continue;
      }
      this.planOwned = i < this.qCopied;
      this.planSrc = src;
      if (!this.planMessage(type, buf, start, end, this.q[at + Q_LEN]!)) break;
      this.qi++;
      this.emitHeadFakes();
    }
    if (this.qi === n) this.clearQueue();
    else this.retain();
    if (this.quietLeft === 0) this.checkQuiet();
  }

  /** Starts a quiet stretch (see quietLeft) when the items at the FIFO's head make one. */
  private checkQuiet(): void {
    const f = this.fifo;
    const n = Math.min(f.length, QUIET_SCAN);
    for (let j = 0; j < n; j++) {
      const kind = f.kindAt(j);
      if (!isQuiet(kind, f.refAt(j))) return;
      if (kind === K_SYNC) {
        this.quietLeft = j + 1;
        return;
      }
      if (kind === K_QUERY || kind === K_FUNCTION) {
        // Alone it is a stretch; after extended requests, an error among them skips it too,
        // up to a Sync further on: not a stretch.
        if (j === 0) this.quietLeft = 1;
        return;
      }
    }
  }

  /** takeServer() or takeClient() has something. */
  get hasOutput(): boolean {
    return this.toClient.length > 0 || this.toServer.length > 0 || this.pendBuf !== null;
  }

  /**
   * True when what is planned for the server is one range (the common case: one
   * transaction): rangeBuf[rangeStart, rangeEnd), to be written (before anything else is
   * handed over), then dropRange(). Otherwise (nothing, or several pieces): takeServer(). The
   * range is written without a Buffer of its own (a new view costs more than a copy of a
   * transaction's bytes: SocketIO.writeCopy).
   */
  get oneRange(): boolean {
    return this.toServer.length === 0 && this.pendBuf !== null;
  }

  get rangeBuf(): Buffer {
    return this.pendBuf!;
  }

  get rangeStart(): number {
    return this.pendStart;
  }

  get rangeEnd(): number {
    return this.pendEnd;
  }

  /** The range (oneRange) was written. */
  dropRange(): void {
    this.pendBuf = null;
  }

  /** Bytes for the server, in order. The array is valid until the next takeServer(). */
  takeServer(): Buffer[] {
    if (this.toServer.length === 0 && this.pendBuf !== null) {
      // The common case: what was planned is one range.
      this.single[0] = this.pendingView();
      this.pendBuf = null;
      return this.single;
    }
    this.flushPending();
    const out = this.toServer;
    this.toServer = this.spareServer;
    empty(this.toServer);
    this.spareServer = out;
    return out;
  }

  /** Messages for the client, in order. The array is valid until the next takeClient(). */
  takeClient(): Buffer[] {
    const out = this.toClient;
    this.toClient = this.spareClient;
    empty(this.toClient);
    this.spareClient = out;
    return out;
  }

  private queue(type: number, buf: Buffer, start: number, end: number, length: number): void {
    const j = this.qn;
    if (j * Q_STRIDE === this.q.length) this.growQueue();
    let src = this.srcOpen;
    if (src < 0 || this.srcs[src] !== buf) {
      src = this.addSource(buf);
      this.srcOpen = src;
    }
    const q = this.q;
    const at = j * Q_STRIDE;
    q[at + Q_TYPE] = type;
    q[at + Q_START] = start;
    q[at + Q_END] = end;
    q[at + Q_LEN] = length;
    q[at + Q_SRC] = src;
    this.qn = j + 1;
  }

  private growQueue(): void {
    const b = new Int32Array(this.q.length * 2);
    b.set(this.q);
    this.q = b;
  }

  /** Lists `buf` as a new source; returns its index. */
  private addSource(buf: Buffer): number {
    const i = this.nsrc;
    if (i === this.srcs.length) this.srcs.push(buf);
    else this.srcs[i] = buf;
    this.nsrc = i + 1;
    return i;
  }

  private clearQueue(): void {
    for (let j = 0; j < this.nsrc; j++) this.srcs[j] = null;
    this.nsrc = 0;
    this.srcOpen = -1;
    this.qn = 0;
    this.qi = 0;
    this.qCopied = 0;
    this.roomSrc = -1;
  }

  /**
   * What was handed over and is not planned yet (no server leased, or held back) must outlive
   * the caller's buffers, which are reads into reused buffers: copies it, once. Consecutive
   * pieces of one buffer share one copy. Called by plan() and by the session after handing over
   * a read it could not have planned.
   */
  retain(): void {
    const n = this.qn;
    let j = Math.max(this.qi, this.qCopied);
    // (what is handed over from now on is new: a read is never a source of copied pieces)
    this.srcOpen = -1;
    while (j < n) {
      const q = this.q;
      const from = q[j * Q_STRIDE + Q_SRC]!;
      const buf = this.srcs[from]!;
      let k = j + 1;
      while (
        k < n &&
        q[k * Q_STRIDE + Q_SRC] === from &&
        q[k * Q_STRIDE + Q_START]! >= q[(k - 1) * Q_STRIDE + Q_END]!
      )
        k++;
      const s = q[j * Q_STRIDE + Q_START]!;
      const e = q[(k - 1) * Q_STRIDE + Q_END]!;
      // Small spans (a transaction's few messages) go to the shared arena: no new Buffer.
      let copy: Buffer;
      let at: number;
      let room = false;
      if (e - s <= COPY_MAX) {
        at = sharedArena.carve(HEADROOM + e - s) + HEADROOM;
        copy = sharedArena.buf;
        copyBytes(buf, s, e, copy, at);
        room = true;
      } else {
        copy = Buffer.from(buf.subarray(s, e));
        at = 0;
      }
      // (an arena buffer already listed, e.g. by an earlier retain, is listed again: a search
      // would cost more than the few slots)
      const to = this.addSource(copy);
      if (room) {
        this.roomSrc = to;
        this.roomAt = at;
      }
      for (let m = j; m < k; m++) {
        const qm = m * Q_STRIDE;
        q[qm + Q_SRC] = to;
        q[qm + Q_START] = q[qm + Q_START]! - s + at;
        q[qm + Q_END] = q[qm + Q_END]! - s + at;
      }
      j = k;
    }
    this.qCopied = n;
  }

  /** Returns false when the message must wait (it and everything after it stay queued). */
  private planMessage(type: number, buf: Buffer, start: number, end: number, len: number): boolean {
    if (this.skipping) {
      if (type === Msg.Sync) {
        this.skipping = false;
        this.dropStream = false;
        this.forward(buf, start, end);
        this.pushSync();
      } else {
        this.dropStream = true;
        if (type !== Msg.Query && type !== Msg.FunctionCall) this.inSegment = true;
      }
      return true;
    }
    this.dropStream = false;
    const body = start + 5;
    switch (type) {
      case Msg.Parse: {
        this.inSegment = true;
        if (len !== end - start) throw new ProtocolError("Parse must be handed over whole");
        const nameEnd = nul(buf, body, end);
        if (nameEnd === body) {
          this.forward(buf, start, end);
          this.fifo.push(K_PARSE, null);
          this.unnamedStatementDeallocates = mayDeallocate(buf, body + 1, end);
          return true;
        }
        return this.planParse(buf, end, body, nameEnd);
      }
      case Msg.Bind: {
        this.inSegment = true;
        const portalEnd = nul(buf, body, end);
        const stmtEnd = nul(buf, portalEnd + 1, end);
        if (stmtEnd === portalEnd + 1) {
          this.forward(buf, start, end);
          this.fifo.push(K_BIND, null);
          this.portalRuns(buf, body, portalEnd, this.unnamedStatementDeallocates);
          return true;
        }
        return this.planBind(buf, start, end, len, portalEnd, stmtEnd);
      }
      case Msg.Describe:
      case Msg.Close: {
        this.inSegment = true;
        if (len !== end - start || len < 7) {
          throw new ProtocolError(`${type === Msg.Close ? "Close" : "Describe"} must be whole`);
        }
        const nameEnd = nul(buf, body + 1, end);
        if (buf[body] !== 0x53 /* S */ || nameEnd === body + 1) {
          this.forward(buf, start, end);
          this.fifo.push(type === Msg.Close ? K_CLOSE : K_DESCRIBE, null);
          return true;
        }
        return type === Msg.Close
          ? this.planClose(buf.toString("latin1", body + 1, nameEnd))
          : this.planDescribe(buf, body + 1, nameEnd);
      }
      case Msg.Execute: {
        this.inSegment = true;
        this.forward(buf, start, end);
        const barrier =
          buf[body] === 0
            ? this.unnamedPortalDeallocates
            : this.portalsDeallocating?.has(buf.toString("latin1", body, nul(buf, body, end))) ===
              true;
        if (barrier) this.barriers++;
        this.fifo.push(K_EXECUTE, barrier);
        return true;
      }
      case Msg.Sync:
        this.forward(buf, start, end);
        this.pushSync();
        return true;
      case Msg.Flush:
        this.inSegment = true;
        this.forward(buf, start, end);
        return true;
      case Msg.Query: {
        this.forward(buf, start, end);
        const barrier = mayDeallocate(buf, body, end, start + len - body);
        if (barrier) this.barriers++;
        this.fifo.push(K_QUERY, barrier);
        return true;
      }
      case Msg.FunctionCall:
        this.forward(buf, start, end);
        this.fifo.push(K_FUNCTION, null);
        return true;
      default:
        // CopyData, CopyDone, CopyFail and anything else: no reply of its own.
        this.forward(buf, start, end);
        return true;
    }
  }

  /** A Bind made portal buf[body, portalEnd) run a statement that may (not) deallocate. */
  private portalRuns(buf: Buffer, body: number, portalEnd: number, deallocates: boolean): void {
    if (portalEnd === body) {
      this.unnamedPortalDeallocates = deallocates;
    } else if (deallocates) {
      this.portalsDeallocating ??= new Set();
      this.portalsDeallocating.add(buf.toString("latin1", body, portalEnd));
    } else if (this.portalsDeallocating !== null) {
      this.portalsDeallocating.delete(buf.toString("latin1", body, portalEnd));
    }
  }

  private pushSync(): void {
    this.fifo.push(K_SYNC, null);
    this.segment++;
    this.inSegment = false;
  }

  /** A name whose definition depends on a request of an earlier segment still in flight. */
  private waitsOn(r: ClientName | undefined): boolean {
    return this.barriers > 0 || (r !== undefined && r.unresolved > 0 && r.segment < this.segment);
  }

  private slotWaits(s: ServerSlot | undefined): boolean {
    return s !== undefined && s.unresolved > 0 && s.segment < this.segment;
  }

  private planParse(buf: Buffer, end: number, body: number, nameEnd: number): boolean {
    const name = buf.toString("latin1", body, nameEnd);
    let r = this.names.get(name);
    if (this.waitsOn(r)) return false;
    if (r !== undefined && r.planned !== null) {
      this.localError("42P05", `prepared statement "${display(name)}" already exists`);
      return true;
    }
    const server = this.server!;
    const entry = this.registry.acquire(buf, nameEnd + 1, end);
    const slot = server.slot(entry);
    if (this.slotWaits(slot)) {
      this.registry.releaseClient(entry);
      return false;
    }
    this.registry.stats.clientParses++;
    if (r === undefined) {
      r = new ClientName(name);
      this.names.set(name, r);
    }
    r.planned = entry; // takes over the reference acquire() took
    r.unresolved++;
    r.segment = this.segment;
    const op: ParseOp = { name: r, entry, slot: null };
    if (slot?.planned && slot.generation === entry.generation) {
      server.touch(slot);
      this.fifo.push(K_PARSE_FAKE, op);
    } else {
      op.slot = this.prepare(entry, op);
    }
    return true;
  }

  private planBind(
    buf: Buffer,
    start: number,
    end: number,
    len: number,
    portalEnd: number,
    stmtEnd: number,
  ): boolean {
    const r = this.lookup(buf, portalEnd + 1, stmtEnd);
    if (this.waitsOn(r)) return false;
    const entry = r?.planned ?? null;
    if (entry === null) {
      const name = buf.toString("latin1", portalEnd + 1, stmtEnd);
      this.localError("26000", `prepared statement "${display(name)}" does not exist`);
      return true;
    }
    if (!this.ensure(entry)) return false;
    // New Bind: header, portal name, server-side name; then the client's bytes from the
    // parameters on. In a copy of the rewriter's own (the transaction waited for a server),
    // the new header is written in place, ending where the parameters begin, over the old
    // one and the headroom before it: the message and what follows it go out as they lie.
    // Otherwise the header goes to the output run in the arena and the rest is copied after
    // it (or passed by reference when big).
    const portalStart = start + 5;
    const portalLen = portalEnd - portalStart;
    // (before the rewrite below, which may move the portal's name)
    this.portalRuns(buf, portalStart, portalEnd, entry.mayDeallocate);
    const rest = stmtEnd + 1;
    const nameZ = entry.nameZ;
    const headLen = 5 + portalLen + 1 + nameZ.length;
    const msgLen = headLen - 1 + (start + len - rest);
    let out: Buffer;
    let at: number;
    const room = this.planSrc === this.roomSrc && start === this.roomAt ? HEADROOM : 0;
    const inPlace = this.planOwned && headLen <= rest - start + room;
    if (inPlace) {
      out = buf;
      at = rest - headLen;
      // (copyWithin: the old and new places of the portal name may overlap)
      if (portalLen > 0 && at + 5 !== portalStart) buf.copyWithin(at + 5, portalStart, portalEnd);
    } else {
      at = this.put(headLen);
      out = sharedArena.buf;
    }
    out[at] = Msg.Bind;
    out[at + 1] = msgLen >>> 24;
    out[at + 2] = (msgLen >>> 16) & 0xff;
    out[at + 3] = (msgLen >>> 8) & 0xff;
    out[at + 4] = msgLen & 0xff;
    if (!inPlace) copyBytes(buf, portalStart, portalEnd, out, at + 5);
    out[at + 5 + portalLen] = 0;
    copyBytes(nameZ, 0, nameZ.length, out, at + 6 + portalLen);
    if (inPlace) this.forwardRef(buf, at, end, buf === sharedArena.buf);
    else this.forward(buf, rest, end);
    this.fifo.push(K_BIND, entry);
    return true;
  }

  /** The client's record of the statement named buf[start, end), if it has one. */
  private lookup(buf: Buffer, start: number, end: number): ClientName | undefined {
    let h = 0x811c9dc5; // FNV-1a
    for (let i = start; i < end; i++) h = Math.imul(h ^ buf[i]!, 0x01000193);
    const slot = h & (NAME_CACHE_SLOTS - 1);
    const cached = this.nameCache[slot]!;
    if (cached !== null && cached.planned !== null) {
      const key = cached.key;
      const n = end - start;
      if (key.length === n) {
        let i = 0;
        while (i < n && key[i] === buf[start + i]) i++;
        if (i === n) return cached;
      }
    }
    const r = this.names.get(buf.toString("latin1", start, end));
    if (r !== undefined) this.nameCache[slot] = r;
    return r;
  }

  private planDescribe(buf: Buffer, start: number, end: number): boolean {
    const r = this.lookup(buf, start, end);
    if (this.waitsOn(r)) return false;
    const entry = r?.planned ?? null;
    if (entry === null) {
      const name = buf.toString("latin1", start, end);
      this.localError("26000", `prepared statement "${display(name)}" does not exist`);
      return true;
    }
    if (!this.ensure(entry)) return false;
    this.emit(entry.describeMessage);
    this.fifo.push(K_DESCRIBE, entry);
    return true;
  }

  private planClose(name: string): boolean {
    const r = this.names.get(name);
    if (this.waitsOn(r)) return false;
    if (r === undefined || r.planned === null) {
      // PostgreSQL: closing a name that does not exist is not an error.
      this.fifo.push(K_CLOSE_FAKE, null);
      return true;
    }
    this.setPlanned(r, null);
    r.unresolved++;
    r.segment = this.segment;
    this.fifo.push(K_CLOSE_FAKE, r);
    return true;
  }

  /** Makes sure the server will hold `entry` (injecting its Parse); false = must wait. */
  private ensure(entry: PreparedEntry): boolean {
    const server = this.server!;
    const slot = server.slot(entry);
    if (this.slotWaits(slot)) return false;
    if (slot?.planned && slot.generation === entry.generation) {
      server.touch(slot);
    } else {
      this.prepare(entry, null);
    }
    return true;
  }

  /**
   * Sends the entry's Parse: for the client's own Parse (op, reply forwarded) or injected
   * (reply swallowed). A stale copy is closed first; past the limit, least recently used
   * statements are closed to make room.
   */
  private prepare(entry: PreparedEntry, op: ParseOp | null): ServerSlot {
    const server = this.server!;
    const slot = server.slotFor(entry);
    server.touch(slot);
    if (slot.planned) {
      // A copy from before the entry went stale (0A000): close it, then prepare again.
      this.emit(entry.closeMessage);
      this.pending(slot);
      server.setPlanned(slot, false, slot.generation);
      this.fifo.push(K_CLOSE_INJECTED, slot);
    }
    if (server.plannedCount + 1 > this.registry.limit) this.evict(server.plannedCount + 1);
    this.emit(entry.parseMessage);
    this.pending(slot);
    server.setPlanned(slot, true, entry.generation);
    this.registry.stats.serverParses++;
    if (op !== null) this.fifo.push(K_PARSE, op);
    else this.fifo.push(K_PARSE_INJECTED, slot);
    return slot;
  }

  private evict(count: number): void {
    const server = this.server!;
    const ahead = this.entriesAhead();
    let over = count - this.registry.limit;
    while (over > 0) {
      const v = server.victim(ahead);
      if (v === null) return; // everything held is in use now: over the limit until later
      this.emit(v.entry.closeMessage);
      this.pending(v);
      server.setPlanned(v, false, v.generation);
      this.registry.stats.evictions++;
      this.fifo.push(K_CLOSE_INJECTED, v);
      over--;
    }
  }

  /** Entries the queued messages after the current one name: not to be evicted now. */
  private entriesAhead(): ReadonlySet<PreparedEntry> | null {
    let out: Set<PreparedEntry> | null = null;
    for (let j = this.qi + 1; j < this.qn; j++) {
      const type = this.q[j * Q_STRIDE + Q_TYPE]!;
      if (type !== Msg.Bind && type !== Msg.Describe && type !== Msg.Parse) continue;
      const buf = this.srcs[this.q[j * Q_STRIDE + Q_SRC]!]!;
      const body = this.q[j * Q_STRIDE + Q_START]! + 5;
      const end = this.q[j * Q_STRIDE + Q_END]!;
      let e: PreparedEntry | null | undefined = null;
      try {
        if (type === Msg.Parse) {
          const nameEnd = nul(buf, body, end);
          if (nameEnd > body) e = this.registry.peek(buf, nameEnd + 1, end);
        } else if (type === Msg.Bind) {
          const portalEnd = nul(buf, body, end);
          const stmtEnd = nul(buf, portalEnd + 1, end);
          e = this.names.get(buf.toString("latin1", portalEnd + 1, stmtEnd))?.planned;
        } else if (buf[body] === 0x53) {
          e = this.names.get(buf.toString("latin1", body + 1, nul(buf, body + 1, end)))?.planned;
        }
      } catch {
        // A malformed message is reported when it is planned.
      }
      if (e) {
        out ??= new Set();
        out.add(e);
      }
    }
    return out;
  }

  private pending(slot: ServerSlot): void {
    slot.unresolved++;
    slot.segment = this.segment;
  }

  /**
   * PostgreSQL would fail here: the server is made to fail at this point too (so the
   * transaction aborts and the rest up to Sync is skipped), and its error is replaced by ours.
   */
  private localError(code: string, message: string): void {
    this.emit(FORCED_ERROR);
    this.fifo.push(K_LOCAL_ERROR, errorResponse({ severity: "ERROR", code, message }));
    this.skipping = true;
    this.dropStream = true;
    this.inSegment = true;
  }

  /** Fakes owed at the head of the FIFO are sent at once: everything before them is answered. */
  private emitHeadFakes(): void {
    for (;;) {
      const kind = this.fifo.headKind;
      if (kind === K_PARSE_FAKE) {
        const op = this.fifo.headRef as ParseOp;
        this.fifo.shift();
        this.resolveName(op.name, op.entry);
        this.toClient.push(parseComplete);
      } else if (kind === K_CLOSE_FAKE) {
        const r = this.fifo.headRef as ClientName | null;
        this.fifo.shift();
        if (r !== null) this.resolveName(r, null);
        this.toClient.push(closeComplete);
      } else {
        return;
      }
    }
  }

  /**
   * Bytes for the server: buf[start, end). Small pieces are copied to the output run in the
   * shared arena (what a transaction sends then goes out as one range); big ones are passed
   * on by reference, contiguous ranges merged.
   */
  private forward(buf: Buffer, start: number, end: number): void {
    if (start === end) return;
    if (end - start <= COPY_MAX && (this.pendBuf !== buf || this.pendEnd !== start)) {
      const at = this.put(end - start); // (first: it may start a new arena buffer)
      copyBytes(buf, start, end, sharedArena.buf, at);
      return;
    }
    this.forwardRef(buf, start, end, false);
  }

  /**
   * Bytes for the server by reference, not copied (buf[start, end) must hold them, as they
   * are, when takeServer() is called): after what is pending when contiguous with it. `arena`:
   * buf is an arena buffer (its views are made cheaply).
   */
  private forwardRef(buf: Buffer, start: number, end: number, arena: boolean): void {
    if (this.pendBuf === buf && this.pendEnd === start) {
      this.pendEnd = end;
      return;
    }
    this.flushPending();
    this.pendBuf = buf;
    this.pendArena = arena;
    this.pendStart = start;
    this.pendEnd = end;
  }

  /** A whole message of pgwarden's own for the server. */
  private emit(b: Buffer): void {
    this.forward(b, 0, b.length);
  }

  /**
   * Carves n bytes of output from the shared arena, after what is pending when that is the
   * arena's run just before them; returns their offset in sharedArena.buf (read after the call).
   */
  private put(n: number): number {
    const a = sharedArena;
    const at = a.carve(n);
    this.forwardRef(a.buf, at, at + n, true);
    return at;
  }

  private flushPending(): void {
    if (this.pendBuf === null) return;
    this.toServer.push(this.pendingView());
    this.pendBuf = null;
  }

  /** The pending range as a Buffer. */
  private pendingView(): Buffer {
    const b = this.pendBuf!;
    if (this.pendArena) return arenaView(b, this.pendStart, this.pendEnd);
    return this.pendStart === 0 && this.pendEnd === b.length
      ? b
      : b.subarray(this.pendStart, this.pendEnd);
  }

  // ---- server side ----------------------------------------------------------------------------

  /**
   * One server message of a type in REPLY_TYPES (other types may be given too; they are
   * forwarded). Returns REPLY_FORWARD or REPLY_SWALLOW for its bytes; then takeClient() has what
   * goes to the client right after it (fakes, or our error in place of a swallowed one), and
   * takeServer() client messages that were waiting for this reply. Throws ProtocolError when the
   * reply matches no request (the connection is out of step: close both sides).
   */
  serverMessage(type: number, body: Buffer): number {
    let action = REPLY_FORWARD;
    if (this.quietLeft > 0) {
      if (type === C_Z) this.quietReady();
      else if (type === C_E) this.quietError(body);
      else return REPLY_FORWARD;
    } else {
      action = this.reply(type, body);
    }
    if (this.qi < this.qn && this.server !== null) this.plan();
    else if (this.quietLeft === 0) this.checkQuiet();
    return action;
  }

  /** The ReadyForQuery that ends a quiet stretch: its items are answered. */
  private quietReady(): void {
    const fifo = this.fifo;
    for (let j = this.quietLeft; j > 0; j--) fifo.shift();
    this.quietLeft = 0;
    this.emitHeadFakes();
  }

  /**
   * An ErrorResponse in a quiet stretch. It answers one of its items, unknown which (their
   * replies were not matched), and either way what PostgreSQL does next leaves the same state:
   * the items before the failed one succeeded, the failed one and those after it up to the
   * item that ends at ReadyForQuery are skipped, and none of them changes anything here either
   * way; or the error is that last item's own (a simple query's, or a commit's at Sync), and
   * everything before it was answered. So all items but the last are done with. A stale cached
   * plan (0A000, see isStalePlanError) marks every statement bound or described in the stretch
   * for a new Parse, since which one failed is not known: at worst a re-prepare too many.
   */
  private quietError(body: Buffer): void {
    const fifo = this.fifo;
    const stale = this.quietLeft > 1 && isStalePlanError(body);
    for (let j = this.quietLeft; j > 1; j--) {
      const kind = fifo.headKind;
      const ref = fifo.headRef;
      if (stale && (kind === K_BIND || kind === K_DESCRIBE) && ref !== null) {
        (ref as PreparedEntry).generation++;
      }
      fifo.shift();
    }
    this.quietLeft = 1;
  }

  /** The CommandComplete tags commandComplete() looks for: DEALLOCATE ALL, DISCARD ALL. */
  commandBody(length: number): boolean {
    return length === DEALLOCATE_ALL.length || length === DISCARD_ALL.length;
  }

  private reply(type: number, body: Buffer): number {
    const fifo = this.fifo;
    if (fifo.length === 0) {
      if (type === C_Z || isExtendedEnd(type)) throw desync(type, 0);
      return REPLY_FORWARD; // ErrorResponse (FATAL), notices, ParameterStatus, …
    }
    const kind = fifo.headKind;
    if (type === C_E) return this.error(kind, body);
    if (type === C_Z) {
      if (!endsAtZ(kind)) throw desync(type, kind);
      if (kind === K_QUERY && fifo.headRef === true) this.barriers--;
      fifo.shift();
      this.emitHeadFakes();
      return REPLY_FORWARD;
    }
    if (endsAtZ(kind)) {
      // Inside a simple query, a function call, or before a Sync's ReadyForQuery.
      if (type === C_CommandComplete) this.commandComplete(body);
      return REPLY_FORWARD;
    }
    if (!isExtendedEnd(type)) return REPLY_FORWARD; // ParameterDescription, notices, …
    let action = REPLY_FORWARD;
    switch (kind) {
      case K_PARSE: {
        if (type !== C_1) throw desync(type, kind);
        const op = fifo.headRef as ParseOp | null;
        fifo.shift();
        if (op !== null) {
          this.resolveName(op.name, op.entry);
          if (op.slot !== null) this.resolveSlot(op.slot, true);
        }
        break;
      }
      case K_PARSE_INJECTED: {
        if (type !== C_1) throw desync(type, kind);
        const slot = fifo.headRef as ServerSlot;
        fifo.shift();
        this.resolveSlot(slot, true);
        action = REPLY_SWALLOW;
        break;
      }
      case K_CLOSE_INJECTED: {
        if (type !== C_3) throw desync(type, kind);
        const slot = fifo.headRef as ServerSlot;
        fifo.shift();
        this.resolveSlot(slot, false);
        action = REPLY_SWALLOW;
        break;
      }
      case K_CLOSE:
        if (type !== C_3) throw desync(type, kind);
        fifo.shift();
        break;
      case K_BIND:
        if (type !== C_2) throw desync(type, kind);
        fifo.shift();
        break;
      case K_DESCRIBE:
        if (type !== C_T && type !== C_n) throw desync(type, kind);
        fifo.shift();
        break;
      case K_EXECUTE:
        if (type === C_CommandComplete) this.commandComplete(body);
        else if (type !== C_I && type !== C_s) throw desync(type, kind);
        if (fifo.headRef === true) this.barriers--;
        fifo.shift();
        break;
      case K_UNTRACKED:
        if (type === C_CommandComplete) this.commandComplete(body);
        fifo.shift();
        break;
      default:
        throw desync(type, kind);
    }
    this.emitHeadFakes();
    return action;
  }

  private error(kind: number, body: Buffer): number {
    if (endsAtZ(kind)) return REPLY_FORWARD; // no skipping: a simple query, or at the Sync itself
    const fifo = this.fifo;
    const ref = fifo.headRef;
    fifo.shift();
    let action = REPLY_FORWARD;
    switch (kind) {
      case K_LOCAL_ERROR:
        this.toClient.push(ref as Buffer);
        action = REPLY_SWALLOW;
        break;
      case K_BIND:
      case K_DESCRIBE:
        if (ref !== null && isStalePlanError(body)) (ref as PreparedEntry).generation++;
        break;
      case K_PARSE_FAKE:
      case K_CLOSE_FAKE:
        throw desync(C_E, kind);
      default:
        // The failed request itself did not happen either.
        this.drop(kind, ref);
    }
    // PostgreSQL skips everything up to the next Sync.
    while (fifo.length > 0 && fifo.headKind !== K_SYNC) {
      const k = fifo.headKind;
      const r = fifo.headRef;
      fifo.shift();
      this.drop(k, r);
    }
    if (fifo.length === 0) this.skipping = true; // the client has not sent that Sync yet
    return action;
  }

  /** A request that never ran (skipped after an error, or it failed): undo its bookkeeping. */
  private drop(kind: number, ref: unknown): void {
    switch (kind) {
      case K_PARSE: {
        const op = ref as ParseOp | null;
        if (op === null) return;
        this.failName(op.name);
        if (op.slot !== null) this.failSlot(op.slot);
        return;
      }
      case K_PARSE_FAKE:
        this.failName((ref as ParseOp).name);
        return;
      case K_CLOSE_FAKE:
        if (ref !== null) this.failName(ref as ClientName);
        return;
      case K_PARSE_INJECTED:
      case K_CLOSE_INJECTED:
        this.failSlot(ref as ServerSlot);
        return;
      case K_QUERY:
      case K_EXECUTE:
        if (ref === true) this.barriers--;
        return;
    }
  }

  private commandComplete(body: Buffer): void {
    const n = body.length;
    if (n !== DEALLOCATE_ALL.length && n !== DISCARD_ALL.length) return; // (most: no call)
    if (!body.equals(DEALLOCATE_ALL) && !body.equals(DISCARD_ALL)) return;
    // The server holds nothing now, and the client has no statements: requests sent after this
    // one (still in flight) keep their plans, with "nothing" to fall back to.
    this.server?.clearTruth();
    for (const r of [...this.names.values()]) {
      this.setTruth(r, null);
      this.settleName(r);
    }
  }

  private resolveSlot(slot: ServerSlot, held: boolean): void {
    slot.truth = held;
    if (held) slot.truthGeneration = slot.generation;
    slot.unresolved--;
    this.server?.settle(slot);
  }

  private failSlot(slot: ServerSlot): void {
    slot.unresolved--;
    this.server?.settle(slot);
  }

  private resolveName(r: ClientName, entry: PreparedEntry | null): void {
    this.setTruth(r, entry);
    r.unresolved--;
    this.settleName(r);
  }

  private failName(r: ClientName): void {
    r.unresolved--;
    this.settleName(r);
  }

  private settleName(r: ClientName): void {
    if (r.unresolved > 0) return;
    if (r.planned !== r.truth) this.setPlanned(r, r.truth);
    if (r.truth === null && this.names.get(r.name) === r) this.names.delete(r.name);
  }

  private setTruth(r: ClientName, e: PreparedEntry | null): void {
    if (r.truth === e) return;
    if (e !== null) this.registry.retainClient(e);
    if (r.truth !== null) this.registry.releaseClient(r.truth);
    r.truth = e;
  }

  private setPlanned(r: ClientName, e: PreparedEntry | null): void {
    if (r.planned === e) return;
    if (e !== null) this.registry.retainClient(e);
    if (r.planned !== null) this.registry.releaseClient(r.planned);
    r.planned = e;
  }
}

/**
 * Offset of the NUL ending the string at `from`, which must lie before `end`. (A loop: the
 * strings looked at are names, a few bytes, where buf.indexOf costs more in its call.)
 */
function nul(buf: Buffer, from: number, end: number): number {
  for (let i = from; i < end; i++) if (buf[i] === 0) return i;
  throw new ProtocolError("unterminated string in client message");
}

/** Client names are kept as latin1 (byte-exact map keys); messages show them as UTF-8. */
function display(name: string): string {
  return Buffer.from(name, "latin1").toString("utf8");
}

/**
 * 0A000 "cached plan must not change result type": the statement is stale after DDL. Only the
 * SQLSTATE is read (the text depends on lc_messages); another 0A000 at Bind costs one re-prepare.
 */
function isStalePlanError(body: Buffer): boolean {
  // Field C (SQLSTATE) is all that is needed; avoid decoding the whole message.
  for (let off = 0; off < body.length && body[off] !== 0; ) {
    const end = body.indexOf(0, off + 1);
    if (end < 0) return false;
    if (body[off] === 0x43 /* C */) return body.toString("latin1", off + 1, end) === "0A000";
    off = end + 1;
  }
  return false;
}

function desync(type: number, kind: number): ProtocolError {
  return new ProtocolError(
    `server reply "${String.fromCharCode(type)}" does not match the request it answers (${kind})`,
  );
}

/** Empties an array in place (pops: storing `length` is a runtime call, per message here). */
function empty(a: unknown[]): void {
  while (a.length > 0) a.pop();
}
