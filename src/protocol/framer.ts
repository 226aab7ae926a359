// Framer: the hot-path scanner for a byte stream of typed protocol messages.
//
// Model: the proxy forwards bytes as they arrive and never waits for a whole message, so a 16 MB
// DataRow passes through in whatever chunks the kernel hands us. The framer only tracks where
// message boundaries are. For each message type the caller picks a mode: PASS (say nothing),
// HEADER (stop and report once the 5-byte header is read; the body keeps streaming), or COLLECT
// (stop and report once the whole, small, body is there: ReadyForQuery, ParameterStatus), or
// COLLECT_SMALL (COLLECT for bodies up to MAX_COLLECT, else HEADER: ErrorResponse, whose severity
// matters but whose message may be any size).
// `feed(chunk, pos)` advances from `pos` and returns the offset just past the next reported
// event, or `chunk.length` when the chunk holds no further event; the caller loops. Headers and
// collected bodies that straddle chunks are stitched in small private buffers. No closures, no
// Promises, no per-message allocation on the common path (a body that fits in its chunk is a
// subarray of it). A header with an invalid length, or a collected body over the limit, throws
// ProtocolError and leaves the framer failed: every later feed() throws again and atBoundary is
// false for good, because the bytes already passed on (a partial header from an earlier chunk,
// say) cannot be taken back; whoever received them holds a broken stream and must not be reused.

import { Buffer } from "node:buffer";
import { ProtocolError } from "./reader.js";

export const FRAME_PASS = 0;
export const FRAME_HEADER = 1;
export const FRAME_COLLECT = 2;
export const FRAME_COLLECT_SMALL = 3;

export const EVENT_NONE = 0;
export const EVENT_HEADER = 1;
export const EVENT_MESSAGE = 2;

/** Collected bodies larger than this are a protocol error (ReadyForQuery is 1 byte, S is tiny). */
const MAX_COLLECT = 1 << 20;

export class Framer {
  /**
   * Per message type byte: FRAME_PASS, FRAME_HEADER or FRAME_COLLECT. May be swapped between
   * messages (a message keeps the mode it was framed with).
   */
  modes: Uint8Array;
  /** When true, every message is collected whole (pooler-internal exchanges). */
  collectAll = false;

  // Output of the last feed() call.
  event = EVENT_NONE;
  type = 0;
  bodyLength = 0;
  /** The body of an EVENT_MESSAGE is bodySrc[bodyOff, bodyOff + bodyLength) (a view on demand). */
  private bodySrc: Buffer = EMPTY;
  private bodyOff = 0;
  /**
   * Offset in the current chunk where the last header began; never reset by feed(). Callers
   * that need it (prepared statement tracking) set it to -1 before each chunk: -1 then means
   * the message being reported began in an earlier chunk.
   */
  msgStart = -1;

  private readonly hdr = Buffer.allocUnsafe(5);
  private hdrFill = 0;
  private remaining = 0;
  private collecting: Buffer | null = null;
  private collectFill = 0;
  private collectType = 0;
  private failed = false;

  constructor(modes: Uint8Array) {
    this.modes = modes;
  }

  /** The body of the message just reported (EVENT_MESSAGE): a view, made on each call. */
  get body(): Buffer {
    const src = this.bodySrc;
    const off = this.bodyOff;
    return off === 0 && src.length === this.bodyLength
      ? src
      : src.subarray(off, off + this.bodyLength);
  }

  /** Byte `i` of the body just reported, without making a view. */
  bodyByte(i: number): number {
    return this.bodySrc[this.bodyOff + i]!;
  }

  /** True between messages: no partial header or body pending, and no protocol error seen. */
  get atBoundary(): boolean {
    return this.hdrFill === 0 && this.remaining === 0 && !this.failed;
  }

  /**
   * The type of a message cut by the end of the last chunk: a partial header (its first byte is
   * known) or a body being collected; -1 otherwise (between messages, or streaming a body).
   */
  get partialType(): number {
    if (this.hdrFill > 0) return this.hdr[0]!;
    if (this.collecting !== null) return this.collectType;
    return -1;
  }

  /**
   * Right after an EVENT_HEADER (no body byte consumed yet, body not empty): collect this
   * message's body instead; the next EVENT_MESSAGE reports it whole (a copy).
   */
  collectCurrent(): void {
    if (this.remaining === 0 || this.remaining !== this.bodyLength) {
      throw new Error("Framer.collectCurrent() only right after a header event");
    }
    this.collecting = Buffer.allocUnsafe(this.remaining);
    this.collectFill = 0;
    this.collectType = this.type;
  }

  /** True once feed() has thrown: the stream cannot be framed any further. */
  get hasFailed(): boolean {
    return this.failed;
  }

  feed(chunk: Buffer, pos: number): number {
    this.event = EVENT_NONE;
    if (this.failed) throw new ProtocolError("message stream already failed");
    const end = chunk.length;
    while (pos < end) {
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, end - pos);
        const acc = this.collecting;
        if (acc !== null) {
          chunk.copy(acc, this.collectFill, pos, pos + take);
          this.collectFill += take;
        }
        this.remaining -= take;
        pos += take;
        if (this.remaining === 0 && acc !== null) {
          this.collecting = null;
          this.type = this.collectType;
          this.bodySrc = acc;
          this.bodyOff = 0;
          this.bodyLength = acc.length;
          this.event = EVENT_MESSAGE;
          return pos;
        }
        continue;
      }

      let type: number;
      let len: number;
      if (this.hdrFill === 0 && end - pos >= 5) {
        type = chunk[pos]!;
        len = chunk.readInt32BE(pos + 1);
        this.msgStart = pos;
        pos += 5;
      } else {
        if (this.hdrFill === 0) this.msgStart = pos;
        const take = Math.min(5 - this.hdrFill, end - pos);
        chunk.copy(this.hdr, this.hdrFill, pos, pos + take);
        this.hdrFill += take;
        pos += take;
        if (this.hdrFill < 5) return pos;
        this.hdrFill = 0;
        type = this.hdr[0]!;
        len = this.hdr.readInt32BE(1);
      }
      if (len < 4) {
        this.failed = true;
        throw new ProtocolError(`invalid length ${len} for message type ${type}`);
      }
      const bodyLen = len - 4;
      let mode = this.collectAll ? FRAME_COLLECT : this.modes[type]!;
      if (mode === FRAME_COLLECT_SMALL)
        mode = bodyLen <= MAX_COLLECT ? FRAME_COLLECT : FRAME_HEADER;

      if (mode === FRAME_COLLECT) {
        if (bodyLen > MAX_COLLECT && !this.collectAll) {
          this.failed = true;
          throw new ProtocolError(`message type ${type} too long (${bodyLen} bytes)`);
        }
        if (bodyLen <= end - pos) {
          this.type = type;
          this.bodySrc = chunk;
          this.bodyOff = pos;
          this.bodyLength = bodyLen;
          this.event = EVENT_MESSAGE;
          return pos + bodyLen;
        }
        const acc = Buffer.allocUnsafe(bodyLen);
        const avail = end - pos;
        chunk.copy(acc, 0, pos, end);
        this.collecting = acc;
        this.collectFill = avail;
        this.collectType = type;
        this.remaining = bodyLen - avail;
        return end;
      }

      this.remaining = bodyLen;
      if (mode === FRAME_HEADER) {
        this.type = type;
        this.bodyLength = bodyLen;
        this.event = EVENT_HEADER;
        return pos;
      }
    }
    return pos;
  }
}

const EMPTY = Buffer.alloc(0);

/** Builds a mode table: every type PASS except the listed ones. */
export function frameModes(
  spec: ReadonlyArray<[string, number]>,
  fallback = FRAME_PASS,
): Uint8Array {
  const modes = new Uint8Array(256).fill(fallback);
  for (const [ch, mode] of spec) modes[ch.charCodeAt(0)] = mode;
  return modes;
}
