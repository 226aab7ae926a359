// The mutation engine: seed messages from a corpus of valid frontend messages, mutated at the
// message level (lengths, types, duplicates, splices, bad headers) and at the byte level (bit
// flips, interesting bytes, truncation, insertion, deletion), then cut into writes, often inside
// a header so that the partial-header paths run. Every input is described by its operations and
// its bytes, so a failure report can be replayed by hand.

import type { Rng } from "./rng.js";
import { fe } from "./wire.js";

/** The lengths that matter: below 4, negative as Int32, the Int32 edge, and off by one. */
export const INTERESTING_LENGTHS = [
  0,
  1,
  2,
  3,
  4,
  5,
  0x7fffffff,
  0x80000000,
  0x80000003,
  0xffffffff,
  0xfffffffc,
  0x40000000,
  0x3fffffff,
  10_000,
  65_536,
  1 << 20,
] as const;
const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x58 /* X */, 0x51 /* Q */, 0x53 /* S */];
const FRONTEND_TYPES = "QPBDESHCdcfXFp";

const SQL = [
  "select 1",
  "select $1::int",
  "begin",
  "commit",
  "rollback",
  "select 'x' || $1",
  "",
  "select 1; select 2",
];

export type Kind =
  | "startup"
  | "startup-admin"
  | "startup-v2"
  | "ssl"
  | "gssenc"
  | "cancel"
  | "sasl-initial"
  | "sasl-response"
  | "password"
  | "query"
  | "parse"
  | "bind"
  | "describe"
  | "execute"
  | "sync"
  | "flush"
  | "close"
  | "copy-data"
  | "copy-done"
  | "copy-fail"
  | "terminate"
  | "function-call"
  | "admin-query"
  | "garbage";

/** Admin console queries that change nothing (no PAUSE, RELOAD, RECONNECT or SHUTDOWN). */
const ADMIN_SQL = [
  "SHOW POOLS",
  "SHOW CLIENTS",
  "SHOW SERVERS",
  "SHOW VERSION",
  "SHOW STATS",
  "SHOW USERS",
  "SHOW DATABASES",
  "SHOW CONFIG",
  "SHOW CREDENTIALS",
  "SET client_encoding = 'UTF8'",
  "show pools; show clients",
  'SHOW "pools"',
  "/* c */ show version -- x",
  "RESUME",
  "",
];

/** Admin commands a fuzzed admin session must not run: they would disturb the other clients. */
export const ADMIN_UNSAFE = /shutdown|pause|reload|reconnect/i;

/** One valid (or, for "garbage", random) message of `kind`. */
export function make(rng: Rng, kind: Kind): Buffer {
  switch (kind) {
    case "startup":
      return fe.startup({
        user: "fuzz",
        database: rng.pick(["appdb", "fuzz", "nosuchdb", ""]),
        ...(rng.bool() ? { application_name: `fz-${rng.int(1000)}` } : {}),
      });
    case "startup-admin":
      return fe.startup({ user: "ops", database: "admin" });
    case "startup-v2":
      return fe.startupVersion(rng.pick([2 << 16, (3 << 16) | 2, 0x12345678]), { user: "fuzz" });
    case "ssl":
      return fe.ssl();
    case "gssenc":
      return fe.gssenc();
    case "cancel":
      return fe.cancel(rng.seed(), rng.seed());
    case "sasl-initial":
      return fe.saslInitial(
        rng.pick(["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", "PLAIN"]),
        `n,,n=,r=${rng.bytes(12).toString("base64")}`,
      );
    case "sasl-response":
      return fe.saslResponse(
        `c=biws,r=${rng.bytes(24).toString("base64")},p=${rng.bytes(32).toString("base64")}`,
      );
    case "password":
      return fe.password(rng.pick(["fuzz-pw", "", "md5" + "0".repeat(32)]));
    case "query":
      return fe.query(rng.pick(SQL));
    case "parse":
      return fe.parse(rng.pick(["", "fz1"]), rng.pick(SQL), rng.bool() ? [23] : []);
    case "bind":
      return fe.bind("", rng.pick(["", "fz1"]), rng.bool() ? [String(rng.int(100))] : []);
    case "describe":
      return fe.describe(rng.pick(["S", "P"] as const), rng.pick(["", "fz1"]));
    case "execute":
      return fe.execute("", rng.pick([0, 1]));
    case "sync":
      return fe.sync();
    case "flush":
      return fe.flush();
    case "close":
      return fe.close(rng.pick(["S", "P"] as const), rng.pick(["", "fz1"]));
    case "copy-data":
      return fe.copyData(
        rng.pick(["a\n", "b\tc\n", "\\.\n", rng.bytes(rng.int(40)).toString("latin1")]),
      );
    case "copy-done":
      return fe.copyDone();
    case "copy-fail":
      return fe.copyFail("fuzz");
    case "terminate":
      return fe.terminate();
    case "function-call":
      // now() (oid 1299), or an oid that names no function.
      return fe.functionCall(rng.pick([1299, 1_000_000 + rng.int(1_000_000)]), []);
    case "admin-query":
      return fe.query(rng.pick(ADMIN_SQL));
    case "garbage":
      return rng.bytes(rng.range(1, 40));
  }
}

export interface Mutated {
  bytes: Buffer;
  ops: string[];
}

interface Piece {
  buf: Buffer;
  /** A typed message (has a 5-byte header at 0), or an untyped startup packet (length at 0). */
  typed: boolean;
}

/**
 * Mutates a sequence of messages: 1–3 operations, message-level ones first. `kinds` is what
 * splices and appended messages are drawn from.
 */
export function mutate(
  rng: Rng,
  seeds: ReadonlyArray<{ buf: Buffer; typed: boolean }>,
  kinds: readonly Kind[],
): Mutated {
  const pieces: Piece[] = seeds.map((s) => ({ buf: Buffer.from(s.buf), typed: s.typed }));
  const ops: string[] = [];
  const n = rng.range(1, 3);
  for (let i = 0; i < n; i++) {
    const op = rng.weighted<string>([
      [3, "len"],
      [2, "type"],
      [1, "dup"],
      [2, "splice"],
      [2, "badhdr"],
      [3, "flip"],
      [2, "byte"],
      [1, "trunc"],
      [1, "insert"],
      [1, "delete"],
      [1, "append"],
    ]);
    applyOp(rng, op, pieces, kinds, ops);
  }
  return { bytes: Buffer.concat(pieces.map((p) => p.buf)), ops };
}

function applyOp(rng: Rng, op: string, pieces: Piece[], kinds: readonly Kind[], ops: string[]) {
  const idx = pieces.length > 0 ? rng.int(pieces.length) : -1;
  const p = idx >= 0 ? pieces[idx]! : null;
  switch (op) {
    case "len": {
      if (!p) return applyOp(rng, "append", pieces, kinds, ops);
      const at = p.typed ? 1 : 0;
      if (p.buf.length < at + 4) return;
      const cur = p.buf.readUInt32BE(at);
      const v = rng.bool(0.7)
        ? rng.pick(INTERESTING_LENGTHS)
        : rng.pick([cur - 1, cur + 1, cur + rng.range(2, 5000), rng.seed()]) >>> 0;
      p.buf.writeUInt32BE(v >>> 0, at);
      ops.push(`len#${idx}=0x${(v >>> 0).toString(16)}`);
      return;
    }
    case "type": {
      if (!p?.typed || p.buf.length === 0) return;
      const t = rng.bool(0.6)
        ? FRONTEND_TYPES.charCodeAt(rng.int(FRONTEND_TYPES.length))
        : rng.int(256);
      p.buf[0] = t;
      ops.push(`type#${idx}=0x${t.toString(16)}`);
      return;
    }
    case "dup": {
      if (!p) return;
      pieces.splice(idx + 1, 0, { buf: Buffer.from(p.buf), typed: p.typed });
      ops.push(`dup#${idx}`);
      return;
    }
    case "splice": {
      const kind = rng.pick(kinds);
      const m = make(rng, kind);
      const all = Buffer.concat(pieces.map((x) => x.buf));
      const at = rng.int(all.length + 1);
      pieces.splice(0, pieces.length, {
        buf: Buffer.concat([all.subarray(0, at), m, all.subarray(at)]),
        typed: false,
      });
      ops.push(`splice@${at}:${kind}`);
      return;
    }
    case "badhdr": {
      const t = rng.bool(0.7)
        ? FRONTEND_TYPES.charCodeAt(rng.int(FRONTEND_TYPES.length))
        : rng.int(256);
      const len = rng.pick([0, 1, 2, 3, 0x80000000, 0xffffffff, 0x80000000 + rng.int(1 << 30)]);
      const h = Buffer.alloc(5);
      h[0] = t;
      h.writeUInt32BE(len >>> 0, 1);
      const tail = rng.bool(0.3) ? rng.bytes(rng.int(8)) : Buffer.alloc(0);
      pieces.push({ buf: Buffer.concat([h, tail]), typed: true });
      ops.push(`badhdr:0x${t.toString(16)}/0x${(len >>> 0).toString(16)}`);
      return;
    }
    case "flip": {
      if (!p || p.buf.length === 0) return;
      const k = rng.range(1, 4);
      for (let j = 0; j < k; j++) {
        const at = rng.int(p.buf.length);
        const bit = rng.int(8);
        p.buf[at]! ^= 1 << bit;
        ops.push(`flip#${idx}@${at}.${bit}`);
      }
      return;
    }
    case "byte": {
      if (!p || p.buf.length === 0) return;
      const at = rng.int(p.buf.length);
      const v = rng.bool() ? rng.pick(INTERESTING_BYTES) : rng.int(256);
      p.buf[at] = v;
      ops.push(`byte#${idx}@${at}=0x${v.toString(16)}`);
      return;
    }
    case "trunc": {
      if (!p || p.buf.length === 0) return;
      const at = rng.int(p.buf.length);
      p.buf = p.buf.subarray(0, at);
      ops.push(`trunc#${idx}@${at}`);
      return;
    }
    case "insert": {
      if (!p) return applyOp(rng, "append", pieces, kinds, ops);
      const at = rng.int(p.buf.length + 1);
      const ins = rng.bytes(rng.range(1, 16));
      p.buf = Buffer.concat([p.buf.subarray(0, at), ins, p.buf.subarray(at)]);
      ops.push(`insert#${idx}@${at}:${ins.length}`);
      return;
    }
    case "delete": {
      if (!p || p.buf.length === 0) return;
      const at = rng.int(p.buf.length);
      const len = rng.range(1, Math.min(16, p.buf.length - at));
      p.buf = Buffer.concat([p.buf.subarray(0, at), p.buf.subarray(at + len)]);
      ops.push(`delete#${idx}@${at}:${len}`);
      return;
    }
    case "append": {
      const kind = rng.pick(kinds);
      pieces.push({
        buf: make(rng, kind),
        typed: kind !== "garbage" && !kind.startsWith("startup"),
      });
      ops.push(`append:${kind}`);
      return;
    }
  }
}

/**
 * Cuts `bytes` into 1–4 writes. With some probability one cut falls inside the 5 bytes that
 * start at a message boundary we know of (`headerAt`), so a header arrives in two parts.
 */
export function chunkify(rng: Rng, bytes: Buffer, headerAt: readonly number[]): Buffer[] {
  if (bytes.length <= 1) return [bytes];
  const cuts = new Set<number>();
  const want = rng.weighted([
    [4, 0],
    [3, 1],
    [2, 2],
    [1, 3],
  ]);
  for (let i = 0; i < want; i++) cuts.add(rng.range(1, bytes.length - 1));
  if (headerAt.length > 0 && rng.bool(0.4)) {
    const h = rng.pick(headerAt) + rng.range(1, 4);
    if (h > 0 && h < bytes.length) cuts.add(h);
  }
  const pts = [...cuts].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of pts) {
    out.push(bytes.subarray(prev, c));
    prev = c;
  }
  out.push(bytes.subarray(prev));
  return out;
}

/** Offsets where a typed-message header could start in `bytes` (walking valid lengths). */
export function headerOffsets(bytes: Buffer, from = 0): number[] {
  const out: number[] = [];
  let off = from;
  while (off + 5 <= bytes.length) {
    out.push(off);
    const len = bytes.readInt32BE(off + 1);
    if (len < 4) break;
    off += 1 + len;
  }
  if (off < bytes.length && !out.includes(off)) out.push(off);
  return out;
}

/** Hex of a buffer, shortened in the middle when long. */
export function hex(b: Buffer, max = 96): string {
  if (b.length <= max) return b.toString("hex");
  return `${b.subarray(0, max / 2).toString("hex")}…(${b.length} bytes)…${b.subarray(b.length - max / 4).toString("hex")}`;
}
