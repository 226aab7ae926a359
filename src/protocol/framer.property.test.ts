// Property tests of the Framer (fast-check): chunking never changes what it reports, atBoundary
// is true exactly between messages, and a header with an invalid length raises ProtocolError
// (and nothing else) wherever it falls, after which the framer stays failed.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  EVENT_HEADER,
  EVENT_MESSAGE,
  FRAME_COLLECT,
  FRAME_HEADER,
  FRAME_PASS,
  Framer,
} from "./framer.js";
import { ProtocolError } from "./reader.js";

const RUNS = 300;

interface Stream {
  bytes: Buffer;
  /** Offsets where a message ends (0 included): the only places atBoundary may be true. */
  boundaries: Set<number>;
}

function build(messages: ReadonlyArray<{ type: number; body: Uint8Array }>): Stream {
  const parts: Buffer[] = [];
  const boundaries = new Set<number>([0]);
  let off = 0;
  for (const m of messages) {
    const hdr = Buffer.alloc(5);
    hdr[0] = m.type;
    hdr.writeInt32BE(m.body.length + 4, 1);
    parts.push(hdr, Buffer.from(m.body));
    off += 5 + m.body.length;
    boundaries.add(off);
  }
  return { bytes: Buffer.concat(parts), boundaries };
}

const messageArb = fc.record({
  type: fc.integer({ min: 0, max: 255 }),
  body: fc.uint8Array({ maxLength: 300 }),
});
const streamArb = fc.array(messageArb, { maxLength: 25 }).map(build);
/** A mode per type byte (PASS, HEADER or COLLECT), and collectAll. */
const modesArb = fc
  .tuple(
    fc.uint8Array({ minLength: 256, maxLength: 256 }).map((a) => a.map((v) => v % 3)),
    fc.boolean(),
  )
  .map(([modes, collectAll]) => ({ modes, collectAll }));
const cutsArb = fc.array(fc.nat(), { maxLength: 30 });

function framer(m: { modes: Uint8Array; collectAll: boolean }): Framer {
  const f = new Framer(m.modes);
  f.collectAll = m.collectAll;
  return f;
}

/** Splits `bytes` at the given points (taken modulo its length). */
function chunk(bytes: Buffer, cuts: readonly number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => (bytes.length === 0 ? 0 : c % (bytes.length + 1))))]
    .filter((p) => p > 0 && p < bytes.length)
    .sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(bytes.subarray(prev, p));
    prev = p;
  }
  out.push(bytes.subarray(prev));
  return out;
}

/** Feeds the chunks; each event as text. `after(end)` runs once each chunk is consumed. */
function scan(f: Framer, chunks: readonly Buffer[], after?: (end: number) => void): string[] {
  const events: string[] = [];
  let total = 0;
  for (const c of chunks) {
    let pos = 0;
    while (pos < c.length) {
      const next = f.feed(c, pos);
      expect(next).toBeGreaterThan(pos);
      expect(next).toBeLessThanOrEqual(c.length);
      pos = next;
      if (f.event === EVENT_MESSAGE)
        events.push(`M ${f.type} ${f.bodyLength} ${f.body.toString("hex")}`);
      else if (f.event === EVENT_HEADER) events.push(`H ${f.type} ${f.bodyLength}`);
    }
    total += c.length;
    after?.(total);
  }
  return events;
}

/** What a framer must report for these messages and modes, computed without it. */
function expected(
  messages: ReadonlyArray<{ type: number; body: Uint8Array }>,
  m: { modes: Uint8Array; collectAll: boolean },
): string[] {
  const out: string[] = [];
  for (const msg of messages) {
    const mode = m.collectAll ? FRAME_COLLECT : m.modes[msg.type];
    const body = Buffer.from(msg.body);
    if (mode === FRAME_COLLECT) out.push(`M ${msg.type} ${body.length} ${body.toString("hex")}`);
    else if (mode === FRAME_HEADER) out.push(`H ${msg.type} ${body.length}`);
    else expect(mode).toBe(FRAME_PASS);
  }
  return out;
}

describe("Framer properties", () => {
  it("reports the same events, the expected ones, however the stream is cut", () => {
    fc.assert(
      fc.property(fc.array(messageArb, { maxLength: 25 }), modesArb, cutsArb, (msgs, m, cuts) => {
        const s = build(msgs);
        const whole = scan(framer(m), [s.bytes]);
        expect(whole).toEqual(expected(msgs, m));
        const f = framer(m);
        expect(scan(f, chunk(s.bytes, cuts))).toEqual(whole);
        expect(f.atBoundary).toBe(true);
      }),
      { numRuns: RUNS },
    );
  });

  it("is at a boundary exactly when the bytes fed so far end a message", () => {
    fc.assert(
      fc.property(streamArb, modesArb, cutsArb, (s, m, cuts) => {
        const f = framer(m);
        expect(f.atBoundary).toBe(true);
        scan(f, chunk(s.bytes, cuts), (end) => {
          expect(f.atBoundary).toBe(s.boundaries.has(end));
        });
      }),
      { numRuns: RUNS },
    );
  });

  it("one byte at a time gives the same events as the whole stream", () => {
    fc.assert(
      fc.property(streamArb, modesArb, (s, m) => {
        const bytes: Buffer[] = [];
        for (let i = 0; i < s.bytes.length; i++) bytes.push(s.bytes.subarray(i, i + 1));
        expect(scan(framer(m), bytes)).toEqual(scan(framer(m), [s.bytes]));
      }),
      { numRuns: 100 },
    );
  });

  // Invalid: below 4 (0..3, and every negative Int32, i.e. 0x80000000..0xFFFFFFFF unsigned).
  const badLengthArb = fc.oneof(
    fc.constantFrom(0, 1, 2, 3, 0x80000000, 0xffffffff, 0xfffffffc, 0x80000003),
    fc.integer({ min: 0, max: 3 }),
    fc.integer({ min: 0x80000000, max: 0xffffffff }),
  );

  it("a header with an invalid length raises ProtocolError, whatever the chunking and mode", () => {
    fc.assert(
      fc.property(
        fc.array(messageArb, { maxLength: 10 }),
        fc.integer({ min: 0, max: 255 }),
        badLengthArb,
        fc.uint8Array({ maxLength: 20 }),
        modesArb,
        cutsArb,
        (msgs, type, len, trailer, m, cuts) => {
          const valid = build(msgs);
          const bad = Buffer.alloc(5);
          bad[0] = type;
          bad.writeUInt32BE(len, 1);
          const bytes = Buffer.concat([valid.bytes, bad, Buffer.from(trailer)]);
          const f = framer(m);
          const events: string[] = [];
          let thrown: unknown = null;
          try {
            for (const c of chunk(bytes, cuts)) {
              let pos = 0;
              while (pos < c.length) {
                pos = f.feed(c, pos);
                if (f.event === EVENT_MESSAGE)
                  events.push(`M ${f.type} ${f.bodyLength} ${f.body.toString("hex")}`);
                else if (f.event === EVENT_HEADER) events.push(`H ${f.type} ${f.bodyLength}`);
              }
            }
          } catch (err) {
            thrown = err;
          }
          expect(thrown).toBeInstanceOf(ProtocolError);
          // Everything before the bad header was reported, nothing after it.
          expect(events).toEqual(expected(msgs, m));
          // Failed for good: the bytes already passed on cannot be framed any more.
          expect(f.atBoundary).toBe(false);
          expect(f.hasFailed).toBe(true);
          expect(() => f.feed(Buffer.from([0x51, 0, 0, 0, 4]), 0)).toThrow(ProtocolError);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it("arbitrary bytes either frame or raise ProtocolError, never another exception", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), modesArb, cutsArb, (raw, m, cuts) => {
        const f = framer(m);
        try {
          scan(f, chunk(Buffer.from(raw), cuts));
        } catch (err) {
          expect(err).toBeInstanceOf(ProtocolError);
          expect(f.atBoundary).toBe(false);
        }
      }),
      { numRuns: RUNS },
    );
  });

  it("a collected body over 1 MiB is a ProtocolError, unless collectAll", () => {
    const f = new Framer(new Uint8Array(256).fill(FRAME_COLLECT));
    const hdr = Buffer.from([0x5a, 0, 0x10, 0, 0x05]); // 1 MiB + 1 byte body
    expect(() => f.feed(hdr, 0)).toThrow(ProtocolError);
    expect(f.atBoundary).toBe(false);
    const g = new Framer(new Uint8Array(256).fill(FRAME_COLLECT));
    g.collectAll = true;
    expect(g.feed(hdr, 0)).toBe(5);
    expect(g.atBoundary).toBe(false);
  });
});
