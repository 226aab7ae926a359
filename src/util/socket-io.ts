// SocketIO: the proxy's reads and writes on one socket, without Node's stream machinery where
// the socket allows it. Every internal Node API the hot path touches is in this file, but for
// the constructor of Node's own Buffer class (ViewOf, util/byte-arena.ts, shared with the arena).
//
// Model. A net.Socket is a Duplex stream over a libuv handle (a TCP wrap). Node's own path for
// each read allocates the buffer, wraps it, pushes it through Readable (state, events) and emits
// 'data'; each write goes through Writable (state, callbacks on the next tick) and creates a
// WriteWrap. For a proxy that forwards a few hundred bytes per message, that bookkeeping costs
// more than pgwarden's own work. SocketIO talks to the handle the way Node's net module does
// internally:
//   reads   the handle reads into one buffer of this socket's own (`handle.useUserBuffer`, what
//           Node's `onread` socket option uses), and the handle's `onread` (Node's onStreamRead)
//           is replaced by ours, which hands the bytes read, a view of that buffer, straight to
//           the consumer: no allocation of a buffer per read, no Readable. The view is valid
//           until the callback returns (and the same object may come again, over other bytes,
//           at a later read of the same length); a consumer that keeps it (or a part of it)
//           takes its own copy with keep() (a small copy costs less than a new read buffer, and
//           a new buffer per read would be external memory that drives V8 into full GCs). A
//           write that libuv could not finish at once holds the bytes, and cannot be given a
//           copy after the fact: the reading socket then moves to a new buffer from its next
//           read on (the old one belongs to that write). End of file and read
//           errors are handed to Node's original onread, so 'end', 'error' and 'close' happen
//           exactly as before. pause()/resume() stop and start reading at the handle.
//   writes  `handle.writeBuffer(req, data)`: libuv tries the write at once; when all of it went
//           out (the common case) nothing else happens, and the WriteWrap `req` is kept for the
//           next write. When the kernel took only part, libuv queues the rest (in order, behind
//           any earlier queued write) and calls `req.oncomplete` when done: that write returns
//           false and onceDrain() callbacks run when every queued write completed, like
//           Writable's 'drain'. The buffer is referenced from the req until then.
//           writeCopy(buf, start, end) writes a range without a view of it: the bytes are
//           copied into the socket's own scratch buffer, and a view of that, reused by length
//           as the reads' are, is written (a scratch buffer a write holds is left to it).
// A socket qualifies when it is a plain TCP socket whose handle has the expected shape (TLS
// sockets and anything else use the stream path: the same API over socket.on('data'),
// socket.write, socket.pause/resume and 'drain'). Mixing stays ordered: a direct write happens
// only when Writable holds nothing queued (else it queues behind, through socket.write), and a
// Writable write after direct ones is queued by libuv behind them; socket.end() (FATAL, close)
// keeps working, and libuv's shutdown waits for queued writes.
//
// `SocketIO.native` says whether this Node version offers the internals (process.binding
// ('stream_wrap'): WriteWrap, streamBaseState and its indexes, found by name); socket-io.test.ts
// fails loudly when it does not, so a Node upgrade that changes them is caught before it silently
// falls back to the slow path. PGWARDEN_SOCKET_IO=stream forces the stream path (A/B checks).

import { Buffer } from "node:buffer";
import type net from "node:net";
import { getSystemErrorName } from "node:util";
import { copyBytes, ViewOf, viewOfLength } from "./byte-arena.js";

/** The parts of a libuv stream handle (TCPWrap) that SocketIO uses. */
interface StreamHandle {
  onread: (this: StreamHandle, arrayBuffer: ArrayBuffer | undefined) => unknown;
  useUserBuffer(buf: Uint8Array): void;
  reading: boolean;
  readStart(): number;
  readStop(): number;
  writeBuffer(req: WriteReq, data: Buffer): number;
}

/** A WriteWrap instance, with the fields our oncomplete uses. */
interface WriteReq {
  oncomplete: (this: WriteReq, status: number) => void;
  buffer: Buffer | null;
  io: SocketIO | null;
}

interface Internals {
  WriteWrap: new () => WriteReq;
  state: Int32Array;
  kReadBytesOrError: number;
  kArrayBufferOffset: number;
  kLastWriteWasAsync: number;
}

function loadInternals(): Internals | null {
  if (process.env.PGWARDEN_SOCKET_IO === "stream") return null;
  try {
    const binding = (
      process as unknown as { binding(name: string): Record<string, unknown> }
    ).binding("stream_wrap");
    const { WriteWrap, streamBaseState, kReadBytesOrError, kArrayBufferOffset } = binding;
    const kLastWriteWasAsync = binding.kLastWriteWasAsync;
    if (
      typeof WriteWrap !== "function" ||
      !(streamBaseState instanceof Int32Array) ||
      typeof kReadBytesOrError !== "number" ||
      typeof kArrayBufferOffset !== "number" ||
      typeof kLastWriteWasAsync !== "number"
    )
      return null;
    return {
      WriteWrap: WriteWrap as Internals["WriteWrap"],
      state: streamBaseState,
      kReadBytesOrError,
      kArrayBufferOffset,
      kLastWriteWasAsync,
    };
  } catch {
    return null;
  }
}

const internals = loadInternals();

/**
 * A read is handed on as a view of the socket's read buffer, [0, n). The view of a length seen
 * before is reused (a few slots, by length): a proxy's reads repeat a handful of lengths (one
 * transaction's messages, one reply), and a reused view is an old object, where a new one per
 * read is a young one that every store into a long-lived object (a queue, a framer) must
 * record for the garbage collector (V8's write barrier: about 0.2 µs a store in this proxy on
 * Node 24). Memory: the slots (about 100 bytes a socket), and a view (about 80 bytes) per slot
 * once a read of its length came.
 */
const VIEW_SLOTS = 8;

/**
 * writeCopy() copies up to this many bytes into the socket's own scratch buffer (allocated at
 * its first use) and writes a view of it, reused by length like the reads' views.
 */
const WRITE_SCRATCH = 2048;

/** A WriteWrap no write holds: the next direct write uses it. */
let spareReq: WriteReq | null = null;

/**
 * Set by write() when it holds what it was given beyond the call (a write libuv or Writable
 * holds). While a read callback runs, that means its chunk may be kept: the reading socket
 * then moves to a new buffer. writeCopy() reads it for its scratch buffer.
 */
let chunkRetained = false;

function onWriteComplete(this: WriteReq, status: number): void {
  const io = this.io;
  this.io = null;
  this.buffer = null;
  io?.writeDone(status);
}

function errnoError(err: number, syscall: string): NodeJS.ErrnoException {
  let code: string;
  try {
    code = getSystemErrorName(err);
  } catch {
    code = `E${-err}`;
  }
  const e: NodeJS.ErrnoException = new Error(`${syscall} ${code}`);
  e.errno = err;
  e.code = code;
  e.syscall = syscall;
  return e;
}

function handleOf(socket: net.Socket): StreamHandle | null {
  if ((socket as { encrypted?: boolean }).encrypted) return null;
  const h = (socket as unknown as { _handle?: StreamHandle | null })._handle;
  if (h === null || h === undefined) return null;
  if (h.constructor?.name !== "TCP") return null;
  if (
    typeof h.onread !== "function" ||
    typeof h.readStart !== "function" ||
    typeof h.readStop !== "function" ||
    typeof h.writeBuffer !== "function" ||
    typeof h.useUserBuffer !== "function"
  )
    return null;
  return h;
}

export class SocketIO {
  /** True when this Node version offers the internals of the direct path. */
  static readonly native = internals !== null;
  /** True when reads are handed on as views made by Node's own Buffer class (see ViewOf). */
  static readonly fastViews = ViewOf !== null;

  readonly socket: net.Socket;
  /** Reads and writes go straight to the handle (false: the stream path). */
  readonly direct: boolean;
  private readonly handle: StreamHandle | null;
  private paused = false;
  /** writeCopy's buffer (null: none yet, or the last was given to a write that holds it). */
  private scratch: Buffer | null = null;
  private scratchViews: Array<Buffer | null> | null = null;
  /** Direct writes that libuv still holds. */
  private queued = 0;
  private drainWaiters: Array<() => void> = [];

  /**
   * Takes over `socket`'s reads: from now on every chunk goes to `onChunk` (which must not throw).
   * The caller removes its own 'data' listener first. The direct path is taken only for a socket
   * that is flowing with nothing buffered in its Readable (one whose 'data' listener just ran);
   * otherwise the stream path is used.
   */
  constructor(socket: net.Socket, onChunk: (chunk: Buffer) => void, readBufferSize = 16 * 1024) {
    this.socket = socket;
    const handle =
      internals !== null && socket.readableFlowing === true && socket.readableLength === 0
        ? handleOf(socket)
        : null;
    this.handle = handle;
    this.direct = handle !== null;
    if (handle === null) {
      socket.on("data", onChunk);
      return;
    }
    const { state, kReadBytesOrError } = internals!;
    const nodeOnread = handle.onread;
    // allocUnsafeSlow: a buffer of its own (offset 0 in its ArrayBuffer), not a pool slice
    let buf = Buffer.allocUnsafeSlow(readBufferSize);
    // Views of the read buffer by length (see VIEW_SLOTS): reset when the buffer changes.
    const views: Array<Buffer | null> = new Array<Buffer | null>(VIEW_SLOTS).fill(null);
    handle.useUserBuffer(buf);
    handle.onread = function onread(this: StreamHandle, arrayBuffer: ArrayBuffer | undefined) {
      const n = state[kReadBytesOrError]!;
      if (n > 0) {
        if (socket.destroyed) return undefined;
        chunkRetained = false;
        onChunk(viewOfLength(views, buf, n));
        if (!chunkRetained) return undefined;
        chunkRetained = false;
        // The handle reads into the buffer returned here from the next read on; the views of
        // the old one go with it (the write that holds it may hold one of them).
        buf = Buffer.allocUnsafeSlow(readBufferSize);
        views.fill(null);
        return buf;
      }
      if (n === 0) return undefined;
      // End of file or a read error: Node's own handling ('end', 'error', 'close').
      return nodeOnread.call(this, arrayBuffer);
    };
    // The Readable may have stopped reading (it was full): start again.
    if (!handle.reading && !socket.destroyed) this.startReading();
  }

  /**
   * A copy of `chunk` that outlives the read callback, when this socket reads into a reused
   * buffer (`chunk` is, or is part of, this socket's read; copying other bytes is harmless).
   */
  keep(chunk: Buffer): Buffer {
    if (!this.direct) return chunk;
    const copy = Buffer.allocUnsafe(chunk.length);
    chunk.copy(copy, 0);
    return copy;
  }

  /**
   * Writes src[start, end) as `write` would a view of it, without making one: small ranges are
   * copied into this socket's own scratch buffer and written as a view of it that is reused by
   * length (a new view costs more than copying a transaction's few dozen bytes). The range
   * need not outlive the call.
   */
  writeCopy(src: Buffer, start: number, end: number): boolean {
    const n = end - start;
    if (this.handle === null || n > WRITE_SCRATCH || n === 0) {
      return this.write(Buffer.from(src.subarray(start, end)));
    }
    let buf = this.scratch;
    let views = this.scratchViews;
    if (buf === null || views === null) {
      buf = Buffer.allocUnsafeSlow(WRITE_SCRATCH);
      views = new Array<Buffer | null>(VIEW_SLOTS).fill(null);
      this.scratch = buf;
      this.scratchViews = views;
    }
    copyBytes(src, start, end, buf, 0);
    // write() says through chunkRetained whether it holds what it was given. What it holds
    // here is the scratch buffer, not a read's: the socket being read from (if any) keeps its
    // buffer, so the flag is put back as it was.
    const retained = chunkRetained;
    chunkRetained = false;
    const ok = this.write(viewOfLength(views, buf, n));
    if (chunkRetained) {
      // The write holds the scratch buffer: the next one gets a new buffer.
      this.scratch = null;
      this.scratchViews = null;
    }
    chunkRetained = retained;
    return ok;
  }

  /** Writes `data`; false when it could not all be handed to the kernel now (wait for drain). */
  write(data: Buffer): boolean {
    const h = this.handle;
    const s = this.socket;
    if (h === null || s.writableLength > 0 || s.destroyed || !s.writable) {
      const ok = s.write(data);
      // Writable keeps a reference to what it could not write at once.
      if (s.writableLength > 0) chunkRetained = true;
      return ok;
    }
    let req = spareReq;
    spareReq = null;
    if (req === null) {
      req = new internals!.WriteWrap();
      req.oncomplete = onWriteComplete;
      req.buffer = null;
      req.io = null;
    }
    const err = h.writeBuffer(req, data);
    if (err !== 0) {
      spareReq = req;
      s.destroy(errnoError(err, "write"));
      return false;
    }
    if (internals!.state[internals!.kLastWriteWasAsync] === 0) {
      spareReq = req;
      return true;
    }
    // libuv holds the rest of `data` until oncomplete; the req is bound to that write, and
    // `data` may be a view of a read buffer.
    req.buffer = data;
    req.io = this;
    this.queued++;
    chunkRetained = true;
    return false;
  }

  /** Several buffers, in order. */
  writeMany(data: readonly Buffer[]): boolean {
    let ok = true;
    for (const b of data) ok = this.write(b) && ok;
    return ok;
  }

  /** Calls `cb` once, when every write so far has been handed to the kernel. */
  onceDrain(cb: () => void): void {
    if (this.queued > 0) {
      this.drainWaiters.push(cb);
      return;
    }
    if (this.socket.writableNeedDrain) {
      this.socket.once("drain", cb);
      return;
    }
    queueMicrotask(cb);
  }

  /** Bytes waiting to be written (direct writes still queued count as 1). */
  get backlog(): number {
    return this.socket.writableLength + this.queued;
  }

  pause(): void {
    if (this.handle === null) {
      this.socket.pause();
      return;
    }
    if (this.paused) return;
    this.paused = true;
    const h = this.handle;
    if (h.reading && !this.socket.destroyed) {
      h.reading = false;
      const err = h.readStop();
      if (err !== 0) this.socket.destroy(errnoError(err, "read"));
    }
  }

  resume(): void {
    if (this.handle === null) {
      this.socket.resume();
      return;
    }
    if (!this.paused) return;
    this.paused = false;
    if (!this.handle.reading && !this.socket.destroyed) this.startReading();
  }

  get isPaused(): boolean {
    return this.handle === null ? this.socket.isPaused() : this.paused;
  }

  /** Called by oncomplete of a queued direct write. */
  writeDone(status: number): void {
    this.queued--;
    if (status < 0) {
      if (!this.socket.destroyed) this.socket.destroy(errnoError(status, "write"));
      return;
    }
    if (this.queued > 0 || this.drainWaiters.length === 0) return;
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const cb of waiters) this.onceDrain(cb);
  }

  private startReading(): void {
    const h = this.handle!;
    h.reading = true;
    const err = h.readStart();
    if (err !== 0) this.socket.destroy(errnoError(err, "read"));
  }
}
