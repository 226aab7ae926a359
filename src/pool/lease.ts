// Lease: one client's hold on one server connection. The frontend sees servers only through
// leases (design §1): it writes client bytes, receives server events through its LeaseHolder,
// asks for settings to be synced, cancels, and releases. Release is idempotent.
//
// Replay: a lease that starts with its server at a transaction boundary keeps a copy of the
// bytes the client writes on it (in a scratch buffer of the server connection, reused from lease
// to lease: the client's chunks are views of its socket's read buffer, valid only while they are
// handled; bytes that waited for the lease are the session's own copy already, and are kept by
// reference when they come first: writeOwned) until the first byte of server output comes back
// (ServerOwner.serverAnswered). If the server dies before that
// (socket closed or reset, or a shutdown FATAL the connection did not forward), nothing the
// client could see happened, and the holder gets those chunks in serverLost to run them on
// another server. PostgreSQL flushes a reply (or a commit's CommandComplete) before a FATAL, so
// a shutdown FATAL as the first byte means nothing was committed. A bare socket loss gives no
// such proof (a commit whose reply was lost with the socket would run twice), so it is never
// replayed once the client wrote anything: the client gets 08006, as from PgBouncer. The same
// bytes are replayed at most SHUTDOWN_REPLAYS times after shutdown FATALs (a statement that
// crashes every server it runs on must not take the cluster down for ever). More than
// REPLAY_MAX_BYTES written without an answer: no replay.

import { Buffer } from "node:buffer";
import type {
  ReplyFilter,
  ServerAttachment,
  ServerConnection,
  ServerOwner,
} from "../backend/index.js";
import { TxStatus } from "../protocol/index.js";
import { PgError } from "../util/index.js";
import { markSynced, syncQuery } from "./params.js";

/** What the client side implements to receive its server's output. */
export interface LeaseHolder {
  /** The pool's mark while this holder waits for a server (0: not waiting). Owned by the pool. */
  poolTicket: number;
  /** A lease this holder waited for (Pool.acquire returned null). */
  leaseGranted(lease: Lease): void;
  /** The wait ended without a lease (checkout_timeout, pool closed, server unreachable). */
  leaseFailed(err: Error): void;
  serverData(data: Buffer): boolean;
  serverReady(status: number): void;
  serverParameter(name: string, value: string): void;
  /**
   * The server died under this lease, which is over (never release it). `replay`: the chunks
   * the client wrote on it, none of which the server answered: run them on a new lease, the
   * client need not know. null: the client's work was cut; tell it, unless `fatalForwarded`
   * (it got the server's own FATAL already, so it must not get a second one).
   */
  serverLost(err: Error, replay: Buffer[] | null, fatalForwarded: boolean): void;
}

/** The pool side of a lease (kept as an interface so lease.ts does not import pool.ts). */
export interface LeaseOwner {
  readonly name: string;
  readonly stats: { totalXact: number; totalQuery: number };
  release(lease: Lease, clean: boolean, reset: boolean): void;
}

const REPLAY_MAX_BYTES = 1 << 20;
const SHUTDOWN_REPLAYS = 3;
/** How often the bytes in a replay buffer (handed to the holder) were replayed already. */
const replayed = new WeakMap<Buffer, number>();

export class Lease implements ServerOwner {
  private released = false;
  /**
   * The lease began at a transaction boundary and the server has not answered yet: what the
   * client wrote (`replayBytes` bytes) is copied in the server's replayScratch (or, when it is
   * one write of bytes the client session owns, kept as `replayFirst`).
   */
  private replaying: boolean;
  private replayBytes = 0;
  /** The record when it is one write of bytes the writer owns (writeOwned): no copy made. */
  private replayFirst: Buffer | null = null;
  /** How often the first bytes written on this lease were replayed already. */
  private replayTimes = 0;

  constructor(
    private readonly pool: LeaseOwner,
    readonly server: ServerConnection,
    private readonly holder: LeaseHolder,
  ) {
    this.replaying = server.txStatus === TxStatus.Idle;
    server.attach(holder, this);
  }

  get poolName(): string {
    return this.pool.name;
  }

  /** The server's backend PID (for logs and admin output). */
  get backendPid(): number {
    return this.server.pid;
  }

  get serverId(): number {
    return this.server.id;
  }

  /** Everything the server reported (ParameterStatus), for the client's welcome. */
  get reported(): ReadonlyMap<string, string> {
    return this.server.reported;
  }

  /** Transaction status from the server's last ReadyForQuery. */
  get txStatus(): number {
    return this.server.txStatus;
  }

  get isReleased(): boolean {
    return this.released;
  }

  write(data: Buffer): boolean {
    if (this.replaying) this.record(data, false);
    return this.server.write(data);
  }

  /**
   * As write, for bytes the caller owns and never changes (its own copy, e.g. bytes that waited
   * for this lease): when they are the first written, the replay record keeps them by
   * reference instead of copying them again.
   */
  writeOwned(data: Buffer): boolean {
    if (this.replaying) this.record(data, true);
    return this.server.write(data);
  }

  private record(data: Buffer, owned: boolean): void {
    const at = this.replayBytes;
    const end = at + data.length;
    if (end > REPLAY_MAX_BYTES) {
      this.stopReplay();
      return;
    }
    if (at === 0) {
      this.replayTimes = replayed.get(data) ?? 0;
      if (owned) {
        this.replayFirst = data;
        this.replayBytes = end;
        return;
      }
    }
    // More than one owned write: from here on the record is a copy in the scratch buffer.
    const first = this.replayFirst;
    let scratch = this.server.replayScratch;
    if (scratch === null || scratch.length < end) {
      const size = Math.max(end, Math.min(REPLAY_MAX_BYTES, (scratch?.length ?? 512) * 2));
      const grown = Buffer.allocUnsafe(size);
      if (scratch !== null && at > 0 && first === null) scratch.copy(grown, 0, 0, at);
      this.server.replayScratch = grown;
      scratch = grown;
    }
    if (first !== null) {
      first.copy(scratch, 0);
      this.replayFirst = null;
    }
    data.copy(scratch, at);
    this.replayBytes = end;
  }

  /** ServerOwner: the server's first byte of output on this lease. */
  serverAnswered(): void {
    this.stopReplay();
  }

  private stopReplay(): void {
    this.replaying = false;
    this.replayFirst = null;
  }

  /** ServerOwner: the server died under this lease. */
  serverLost(err: Error, fatalForwarded: boolean): void {
    this.released = true;
    this.holder.serverLost(err, this.takeReplay(err), fatalForwarded);
  }

  private takeReplay(err: Error): Buffer[] | null {
    if (!this.replaying) return null;
    const first = this.replayFirst;
    this.stopReplay();
    const n = this.replayBytes;
    if (n === 0) return [];
    const shutdown = err instanceof PgError && err.sqlstate.startsWith("57P");
    if (!shutdown || this.replayTimes >= SHUTDOWN_REPLAYS) return null;
    const bytes = first ?? Buffer.from(this.server.replayScratch!.subarray(0, n));
    replayed.set(bytes, this.replayTimes + 1);
    return [bytes];
  }

  /**
   * Puts a reply filter (the client's prepared statement rewriter) on the server, or takes it
   * off. With a filter the bytes written are rewritten ones that only this server understands:
   * no replay on another server.
   */
  setFilter(filter: ReplyFilter | null): void {
    if (filter !== null) this.stopReplay();
    this.server.setFilter(filter);
  }

  /**
   * Writes buf[start, end) (a range the caller may reuse once this returns); no replay record
   * (only used with a filter, which stops replay).
   */
  writeRange(buf: Buffer, start: number, end: number): boolean {
    if (this.replaying) this.stopReplay();
    return this.server.writeRange(buf, start, end);
  }

  /** Writes several buffers in one go (corked); no replay record (only used with a filter). */
  writeMany(data: Buffer[]): boolean {
    return this.server.writeMany(data);
  }

  /** The frontend's state kept with this server across leases (its prepared statements). */
  get serverState(): ServerAttachment | null {
    return this.server.prepared;
  }

  set serverState(state: ServerAttachment | null) {
    this.server.prepared = state;
  }

  /** Calls `cb` once the server socket's write buffer has drained. */
  onceServerDrain(cb: () => void): void {
    this.server.onceDrain(cb);
  }

  pauseServer(): void {
    this.server.pause();
  }

  resumeServer(): void {
    this.server.resume();
  }

  /**
   * Makes the server's settings match the client's (`stamp` = settingsStamp(wanted)). Returns
   * null when nothing needs doing (no round trip; one comparison when the server was last
   * synced to the same settings), else a promise that rejects with the server's error.
   */
  sync(wanted: ReadonlyMap<string, string>, stamp: number): Promise<void> | null {
    const server = this.server;
    if (server.settingsStamp === stamp) return null;
    const sql = syncQuery(server, wanted);
    if (sql === null) {
      server.settingsStamp = stamp;
      return null;
    }
    server.settingsStamp = 0;
    return server.query(sql).then(() => {
      markSynced(server, wanted);
      server.settingsStamp = stamp;
    });
  }

  /** Records a setting the client changed on this server (from its ParameterStatus). */
  noteApplied(name: string, value: string): void {
    this.server.applied.set(name, value);
    this.server.settingsStamp = 0;
  }

  cancel(): void {
    this.server.cancel();
  }

  countTransaction(queries: number): void {
    this.pool.stats.totalXact++;
    this.pool.stats.totalQuery += queries;
  }

  /** `clean`: the server is idle and reusable; `reset`: DISCARD ALL before reuse. */
  release(clean: boolean, reset = false): void {
    if (this.released) return;
    this.released = true;
    this.stopReplay();
    this.pool.release(this, clean, reset);
  }
}
