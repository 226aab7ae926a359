// Readers for the non-hot paths (startup, authentication, pooler-internal queries): they
// accumulate bytes and hand out whole messages. The proxy's hot path uses framer.ts instead.

import { Buffer } from "node:buffer";
import {
  CANCEL_REQUEST_CODE,
  GSSENC_REQUEST_CODE,
  MAX_STARTUP_LENGTH,
  PROTOCOL_3_0,
  SSL_REQUEST_CODE,
} from "./constants.js";

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

export interface Message {
  readonly type: number;
  readonly body: Buffer;
}

/** Accumulates a byte stream and yields whole typed messages. */
export class MessageBuffer {
  private buf: Buffer = Buffer.alloc(0);
  private readonly maxLength: number;

  constructor(maxLength = 1 << 30) {
    this.maxLength = maxLength;
  }

  push(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
  }

  /** Bytes received but not yet returned as messages. */
  get pending(): number {
    return this.buf.length;
  }

  /** Hands back and forgets the unread bytes (when switching a socket to the hot path). */
  takeRest(): Buffer {
    const rest = this.buf;
    this.buf = Buffer.alloc(0);
    return rest;
  }

  next(): Message | null {
    if (this.buf.length < 5) return null;
    const len = this.buf.readInt32BE(1);
    if (len < 4 || len > this.maxLength) {
      throw new ProtocolError(`invalid message length ${len}`);
    }
    if (this.buf.length < len + 1) return null;
    const msg = { type: this.buf[0]!, body: this.buf.subarray(5, len + 1) };
    this.buf = this.buf.subarray(len + 1);
    return msg;
  }

  /** The untyped first message of a connection (StartupMessage, SSLRequest, CancelRequest, …). */
  nextStartup(): Buffer | null {
    if (this.buf.length < 4) return null;
    const len = this.buf.readInt32BE(0);
    if (len < 8 || len > MAX_STARTUP_LENGTH) {
      throw new ProtocolError(`invalid startup packet length ${len}`);
    }
    if (this.buf.length < len) return null;
    const msg = this.buf.subarray(0, len);
    this.buf = this.buf.subarray(len);
    return msg;
  }
}

export type StartupPacket =
  | { kind: "ssl" }
  | { kind: "gssenc" }
  | { kind: "cancel"; pid: number; secret: number }
  | { kind: "startup"; params: Map<string, string> }
  | { kind: "unsupported"; version: number };

/** Parses a whole untyped startup-phase packet (length word included, as nextStartup returns it). */
export function parseStartupPacket(packet: Buffer): StartupPacket {
  if (packet.length < 8) throw new ProtocolError("invalid startup packet length");
  const code = packet.readInt32BE(4);
  if (code === SSL_REQUEST_CODE) return { kind: "ssl" };
  if (code === GSSENC_REQUEST_CODE) return { kind: "gssenc" };
  if (code === CANCEL_REQUEST_CODE) {
    if (packet.length !== 16) throw new ProtocolError("invalid cancel request length");
    return { kind: "cancel", pid: packet.readInt32BE(8), secret: packet.readInt32BE(12) };
  }
  if (code !== PROTOCOL_3_0) return { kind: "unsupported", version: code };
  const params = new Map<string, string>();
  let off = 8;
  while (off < packet.length) {
    const [key, afterKey] = readCString(packet, off);
    if (key === "") break;
    const [value, afterValue] = readCString(packet, afterKey);
    params.set(key, value);
    off = afterValue;
  }
  return { kind: "startup", params };
}

export function readCString(buf: Buffer, offset: number): [string, number] {
  const end = buf.indexOf(0, offset);
  if (end < 0) throw new ProtocolError("unterminated string in message");
  return [buf.toString("utf8", offset, end), end + 1];
}

/** Fields of an ErrorResponse or NoticeResponse body, keyed by their one-letter codes. */
export function parseErrorFields(body: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let off = 0;
  while (off < body.length && body[off] !== 0) {
    const code = String.fromCharCode(body[off]!);
    const [value, next] = readCString(body, off + 1);
    out[code] = value;
    off = next;
  }
  return out;
}

export function parseParameterStatus(body: Buffer): [string, string] {
  const [name, next] = readCString(body, 0);
  const [value] = readCString(body, next);
  return [name, value];
}

/** The password message body as a string (cleartext or md5 response): drops the trailing NUL. */
export function parsePasswordMessage(body: Buffer): string {
  const end = body.indexOf(0);
  return body.toString("utf8", 0, end < 0 ? body.length : end);
}

/**
 * The SASLInitialResponse body: mechanism, Int32 length of the data (-1: none), the data. As in
 * PostgreSQL (pq_getmsgbytes, pq_getmsgend), a length that is negative other than -1 or runs past
 * the body, and bytes after the data, are protocol violations.
 */
export function parseSaslInitialResponse(body: Buffer): { mechanism: string; data: string } {
  const [mechanism, off] = readCString(body, 0);
  if (off + 4 > body.length) throw new ProtocolError("truncated SASLInitialResponse");
  const len = body.readInt32BE(off);
  if (len === -1) {
    if (off + 4 !== body.length) throw new ProtocolError("invalid SASLInitialResponse format");
    return { mechanism, data: "" };
  }
  if (len < 0 || len > body.length - off - 4)
    throw new ProtocolError("invalid SASLInitialResponse data length");
  if (off + 4 + len !== body.length) throw new ProtocolError("invalid SASLInitialResponse format");
  return { mechanism, data: body.toString("utf8", off + 4, off + 4 + len) };
}
