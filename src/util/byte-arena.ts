// ByteArena: append-only scratch memory for small pieces of bytes on the hot path.
//
// Model. Bytes are carved from the end of one big buffer; a carve is its carver's alone, which
// may write it until it hands a range of it on, and never after (so a carved range may be
// handed to a socket write, which libuv may hold on to, or kept in a queue without a copy of
// its own and without a new Buffer object: callers keep (buffer, start, end) ranges of `buf`).
// When the buffer is full a new one is started; the old one lives
// on (garbage collected) for as long as any range of it is still referenced. One instance is
// shared by everything in the process (JavaScript runs one piece of code at a time), so its
// size does not grow with the number of clients.
//
// Consecutive carves are contiguous in `buf` unless a new buffer was started between them:
// a caller that builds one message stream from several carves merges ranges whose end is the
// next one's start (StatementRewriter's output), and so writes them as one range.

import { Buffer } from "node:buffer";

/**
 * Node's own Buffer class (FastBuffer, what Buffer's views are), which TypedArray methods reach
 * through `Buffer[Symbol.species]`. `new ViewOf(arrayBuffer, offset, n)` is how a read's bytes
 * (util/socket-io.ts) and a range of an arena are made a Buffer: on Node 20,
 * `buf.subarray(0, n)` costs about four times as much (it reads `buf.buffer`, a
 * runtime call, and checks its arguments in JavaScript). Checked at load: anything but a Buffer
 * subclass whose instances are Buffers falls back to subarray.
 */
export type ViewCtor = new (ab: ArrayBuffer, offset: number, length: number) => Buffer;
export const ViewOf: ViewCtor | null = (() => {
  const C = (Buffer as unknown as Record<symbol, unknown>)[Symbol.species];
  if (typeof C !== "function") return null;
  try {
    const probe = new (C as ViewCtor)(new ArrayBuffer(2), 1, 1);
    return Buffer.isBuffer(probe) && probe.length === 1 && probe.byteOffset === 1
      ? (C as ViewCtor)
      : null;
  } catch {
    return null;
  }
})();

/** Size of each buffer of the shared arena. */
const ARENA_BYTES = 64 * 1024;

/**
 * Up to this many bytes, copyBytes copies with a loop: Buffer#copy of a part of a buffer makes a
 * view of it first (about 200 ns on Node 20, whatever the size), a loop of four bytes a turn
 * about 1.2 ns a byte.
 */
const LOOP_COPY_MAX = 160;

export class ByteArena {
  /** The buffer carves come from; replaced by a new one when full. */
  buf: Buffer;
  /** Offset of the next carve in `buf`. */
  pos = 0;

  constructor(private readonly size = ARENA_BYTES) {
    // allocUnsafeSlow: a buffer of its own (not a slice of Node's shared pool)
    this.buf = Buffer.allocUnsafeSlow(size);
  }

  /**
   * Carves `n` bytes (n ≤ the arena size) and returns their offset in `this.buf`, which the
   * caller reads right after the call (a carve may start a new buffer). The caller writes them
   * at once and never again.
   */
  carve(n: number): number {
    let at = this.pos;
    if (at + n > this.buf.length) {
      if (n > this.size) throw new RangeError(`ByteArena.carve(${n}) above its size`);
      this.buf = Buffer.allocUnsafeSlow(this.size);
      at = 0;
    }
    this.pos = at + n;
    return at;
  }
}

/**
 * buf[start, end) as a Buffer of its own (a view, no copy), for a buffer at offset 0 of its
 * ArrayBuffer (an arena buffer, a socket's read buffer).
 */
export function arenaView(buf: Buffer, start: number, end: number): Buffer {
  return ViewOf !== null
    ? new ViewOf(buf.buffer as ArrayBuffer, start, end - start)
    : buf.subarray(start, end);
}

/**
 * buf[0, n) as a view kept in `views` (slots by length, a power of two of them) and made only
 * when its slot holds none of that length: reads and writes of a few recurring lengths then
 * make no new object (util/socket-io.ts). `buf` is at offset 0 of its ArrayBuffer; the caller
 * empties `views` when it moves to another buffer.
 */
export function viewOfLength(views: Array<Buffer | null>, buf: Buffer, n: number): Buffer {
  const slot = n & (views.length - 1);
  let view = views[slot]!;
  if (view === null || view.length !== n) {
    view = arenaView(buf, 0, n);
    views[slot] = view;
  }
  return view;
}

/** The process's arena (see the header). */
export const sharedArena = new ByteArena();

/** Copies src[start, end) to dst at `at`: a byte loop for small pieces, Buffer#copy above. */
export function copyBytes(src: Buffer, start: number, end: number, dst: Buffer, at: number): void {
  if (end - start > LOOP_COPY_MAX) {
    src.copy(dst, at, start, end);
    return;
  }
  let i = start;
  let j = at;
  for (; i + 4 <= end; i += 4, j += 4) {
    dst[j] = src[i]!;
    dst[j + 1] = src[i + 1]!;
    dst[j + 2] = src[i + 2]!;
    dst[j + 3] = src[i + 3]!;
  }
  for (; i < end; i++, j++) dst[j] = src[i]!;
}
