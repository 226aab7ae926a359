// Message builders, named after the protocol specification. Each returns one Buffer holding a
// whole message; constant messages are built once.

import { Buffer } from "node:buffer";
import { AuthCode, CANCEL_REQUEST_CODE, Msg, PROTOCOL_3_0, SSL_REQUEST_CODE } from "./constants.js";

function withBody(type: number, bodyLength: number): { buf: Buffer; off: number } {
  const buf = Buffer.allocUnsafe(5 + bodyLength);
  buf[0] = type;
  buf.writeInt32BE(4 + bodyLength, 1);
  return { buf, off: 5 };
}

function cstrings(type: number, parts: readonly string[]): Buffer {
  let len = 0;
  for (const p of parts) len += Buffer.byteLength(p) + 1;
  const { buf } = withBody(type, len);
  let off = 5;
  for (const p of parts) {
    off += buf.write(p, off);
    buf[off++] = 0;
  }
  return buf;
}

function authWith(code: number, extra?: Buffer): Buffer {
  const n = extra ? extra.length : 0;
  const { buf } = withBody(Msg.Authentication, 4 + n);
  buf.writeInt32BE(code, 5);
  if (extra) extra.copy(buf, 9);
  return buf;
}

// ---- backend → frontend -------------------------------------------------------------------

export const authenticationOk: Buffer = authWith(AuthCode.Ok);
export const authenticationCleartextPassword: Buffer = authWith(AuthCode.CleartextPassword);

export function authenticationMD5Password(salt: Buffer): Buffer {
  return authWith(AuthCode.MD5Password, salt);
}

export function authenticationSASL(mechanisms: readonly string[]): Buffer {
  const parts = Buffer.concat([...mechanisms.map((m) => Buffer.from(`${m}\0`)), Buffer.from([0])]);
  return authWith(AuthCode.SASL, parts);
}

export function authenticationSASLContinue(data: string): Buffer {
  return authWith(AuthCode.SASLContinue, Buffer.from(data));
}

export function authenticationSASLFinal(data: string): Buffer {
  return authWith(AuthCode.SASLFinal, Buffer.from(data));
}

export function parameterStatus(name: string, value: string): Buffer {
  return cstrings(Msg.ParameterStatus, [name, value]);
}

export function backendKeyData(pid: number, secret: number): Buffer {
  const { buf } = withBody(Msg.BackendKeyData, 8);
  buf.writeInt32BE(pid, 5);
  buf.writeInt32BE(secret, 9);
  return buf;
}

const rfq = (s: string): Buffer => Buffer.from([Msg.ReadyForQuery, 0, 0, 0, 5, s.charCodeAt(0)]);
const RFQ_IDLE = rfq("I");
const RFQ_TX = rfq("T");
const RFQ_FAILED = rfq("E");

export function readyForQuery(status: "I" | "T" | "E" = "I"): Buffer {
  return status === "I" ? RFQ_IDLE : status === "T" ? RFQ_TX : RFQ_FAILED;
}

export interface ErrorFields {
  severity: string;
  code: string;
  message: string;
  detail?: string | undefined;
  hint?: string | undefined;
}

function fieldsMessage(type: number, f: ErrorFields): Buffer {
  const parts: Buffer[] = [];
  const add = (tag: string, v: string | undefined) => {
    if (v !== undefined) parts.push(Buffer.from(`${tag}${v}\0`));
  };
  add("S", f.severity);
  add("V", f.severity);
  add("C", f.code);
  add("M", f.message);
  add("D", f.detail);
  add("H", f.hint);
  parts.push(Buffer.from([0]));
  const body = Buffer.concat(parts);
  const { buf } = withBody(type, body.length);
  body.copy(buf, 5);
  return buf;
}

export function errorResponse(f: ErrorFields): Buffer {
  return fieldsMessage(Msg.ErrorResponse, f);
}

export function noticeResponse(f: ErrorFields): Buffer {
  return fieldsMessage(Msg.NoticeResponse, f);
}

export interface FieldDescription {
  name: string;
  /** Type OID; 25 = text, 20 = int8, 23 = int4, 701 = float8, 1184 = timestamptz. */
  typeOid: number;
}

export function rowDescription(fields: readonly FieldDescription[]): Buffer {
  let len = 2;
  const names = fields.map((f) => Buffer.from(f.name));
  for (const n of names) len += n.length + 1 + 18;
  const { buf } = withBody(Msg.RowDescription, len);
  let off = buf.writeInt16BE(fields.length, 5);
  fields.forEach((f, i) => {
    const n = names[i]!;
    off += n.copy(buf, off);
    buf[off++] = 0;
    off = buf.writeInt32BE(0, off); // table oid
    off = buf.writeInt16BE(0, off); // column attr number
    off = buf.writeInt32BE(f.typeOid, off);
    off = buf.writeInt16BE(-1, off); // type size
    off = buf.writeInt32BE(-1, off); // type modifier
    off = buf.writeInt16BE(0, off); // text format
  });
  return buf;
}

export function dataRow(values: ReadonlyArray<string | null>): Buffer {
  let len = 2;
  const enc = values.map((v) => (v === null ? null : Buffer.from(v)));
  for (const e of enc) len += 4 + (e ? e.length : 0);
  const { buf } = withBody(Msg.DataRow, len);
  let off = buf.writeInt16BE(values.length, 5);
  for (const e of enc) {
    if (e === null) {
      off = buf.writeInt32BE(-1, off);
    } else {
      off = buf.writeInt32BE(e.length, off);
      off += e.copy(buf, off);
    }
  }
  return buf;
}

export function commandComplete(tag: string): Buffer {
  return cstrings(Msg.CommandComplete, [tag]);
}

export const emptyQueryResponse: Buffer = Buffer.from([Msg.EmptyQueryResponse, 0, 0, 0, 4]);

const empty = (type: number): Buffer => Buffer.from([type, 0, 0, 0, 4]);

export const parseComplete: Buffer = empty(Msg.ParseComplete);
export const bindComplete: Buffer = empty(Msg.BindComplete);
export const closeComplete: Buffer = empty(Msg.CloseComplete);
export const noData: Buffer = empty(Msg.NoData);
export const portalSuspended: Buffer = empty(Msg.PortalSuspended);

export function parameterDescription(typeOids: readonly number[]): Buffer {
  const { buf } = withBody(Msg.ParameterDescription, 2 + 4 * typeOids.length);
  let off = buf.writeInt16BE(typeOids.length, 5);
  for (const oid of typeOids) off = buf.writeUInt32BE(oid, off);
  return buf;
}

// ---- frontend → backend -------------------------------------------------------------------

export function startupMessage(params: Readonly<Record<string, string>>): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of Object.entries(params)) parts.push(Buffer.from(`${k}\0${v}\0`));
  parts.push(Buffer.from([0]));
  const body = Buffer.concat(parts);
  const buf = Buffer.allocUnsafe(8 + body.length);
  buf.writeInt32BE(8 + body.length, 0);
  buf.writeInt32BE(PROTOCOL_3_0, 4);
  body.copy(buf, 8);
  return buf;
}

export const sslRequest: Buffer = (() => {
  const b = Buffer.allocUnsafe(8);
  b.writeInt32BE(8, 0);
  b.writeInt32BE(SSL_REQUEST_CODE, 4);
  return b;
})();

export function cancelRequest(pid: number, secret: number): Buffer {
  const b = Buffer.allocUnsafe(16);
  b.writeInt32BE(16, 0);
  b.writeInt32BE(CANCEL_REQUEST_CODE, 4);
  b.writeInt32BE(pid, 8);
  b.writeInt32BE(secret, 12);
  return b;
}

export function passwordMessage(password: string): Buffer {
  return cstrings(Msg.Password, [password]);
}

export function saslInitialResponse(mechanism: string, data: string): Buffer {
  const mech = Buffer.from(mechanism);
  const d = Buffer.from(data);
  const { buf } = withBody(Msg.Password, mech.length + 1 + 4 + d.length);
  let off = 5 + mech.copy(buf, 5);
  buf[off++] = 0;
  off = buf.writeInt32BE(d.length, off);
  d.copy(buf, off);
  return buf;
}

export function saslResponse(data: string): Buffer {
  const d = Buffer.from(data);
  const { buf } = withBody(Msg.Password, d.length);
  d.copy(buf, 5);
  return buf;
}

export function query(sql: string): Buffer {
  return cstrings(Msg.Query, [sql]);
}

// Extended query protocol. Parameters and results are in text format (format code 0).

export function parse(name: string, sql: string, paramTypes: readonly number[] = []): Buffer {
  const n = Buffer.from(name);
  const q = Buffer.from(sql);
  const { buf } = withBody(Msg.Parse, n.length + 1 + q.length + 1 + 2 + 4 * paramTypes.length);
  let off = 5 + n.copy(buf, 5);
  buf[off++] = 0;
  off += q.copy(buf, off);
  buf[off++] = 0;
  off = buf.writeInt16BE(paramTypes.length, off);
  for (const oid of paramTypes) off = buf.writeUInt32BE(oid, off);
  return buf;
}

export function bind(
  portal: string,
  statement: string,
  params: ReadonlyArray<string | Buffer | null> = [],
): Buffer {
  const p = Buffer.from(portal);
  const s = Buffer.from(statement);
  const values = params.map((v) =>
    v === null ? null : typeof v === "string" ? Buffer.from(v) : v,
  );
  let len = p.length + 1 + s.length + 1 + 2 + 2 + 2;
  for (const v of values) len += 4 + (v ? v.length : 0);
  const { buf } = withBody(Msg.Bind, len);
  let off = 5 + p.copy(buf, 5);
  buf[off++] = 0;
  off += s.copy(buf, off);
  buf[off++] = 0;
  off = buf.writeInt16BE(0, off); // parameter formats: all text
  off = buf.writeInt16BE(values.length, off);
  for (const v of values) {
    if (v === null) {
      off = buf.writeInt32BE(-1, off);
    } else {
      off = buf.writeInt32BE(v.length, off);
      off += v.copy(buf, off);
    }
  }
  buf.writeInt16BE(0, off); // result formats: all text
  return buf;
}

/** Describe or Close target: "S" a prepared statement, "P" a portal. */
export type StatementOrPortal = "S" | "P";

function targeted(type: number, kind: StatementOrPortal, name: string): Buffer {
  const n = Buffer.from(name);
  const { buf } = withBody(type, 1 + n.length + 1);
  buf[5] = kind.charCodeAt(0);
  n.copy(buf, 6);
  buf[6 + n.length] = 0;
  return buf;
}

export function describe(kind: StatementOrPortal, name: string): Buffer {
  return targeted(Msg.Describe, kind, name);
}

export function close(kind: StatementOrPortal, name: string): Buffer {
  return targeted(Msg.Close, kind, name);
}

export function execute(portal = "", maxRows = 0): Buffer {
  const p = Buffer.from(portal);
  const { buf } = withBody(Msg.Execute, p.length + 1 + 4);
  p.copy(buf, 5);
  buf[5 + p.length] = 0;
  buf.writeInt32BE(maxRows, 6 + p.length);
  return buf;
}

export const sync: Buffer = Buffer.from([Msg.Sync, 0, 0, 0, 4]);
export const flush: Buffer = Buffer.from([Msg.Flush, 0, 0, 0, 4]);

export const terminate: Buffer = Buffer.from([Msg.Terminate, 0, 0, 0, 4]);
