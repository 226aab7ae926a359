// Property tests of the startup/auth readers (fast-check): arbitrary bytes give a result or a
// ProtocolError, never another exception (RangeError from a read past the end, say); well-formed
// input round-trips through the writers, however it is chunked.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, PROTOCOL_3_0 } from "./constants.js";
import { verifyMd5Response } from "./md5.js";
import {
  MessageBuffer,
  ProtocolError,
  parseErrorFields,
  parseParameterStatus,
  parsePasswordMessage,
  parseSaslInitialResponse,
  parseStartupPacket,
} from "./reader.js";
import {
  cancelRequest,
  errorResponse,
  parameterStatus,
  saslInitialResponse,
  sslRequest,
  startupMessage,
} from "./writer.js";

const RUNS = 400;

/** Runs `fn`; a ProtocolError is an acceptable outcome, any other exception fails the property. */
function resultOrProtocolError<T>(fn: () => T): T | ProtocolError {
  try {
    return fn();
  } catch (err) {
    if (err instanceof ProtocolError) return err;
    throw new Error(`threw ${(err as Error)?.name}: ${(err as Error)?.message}`, { cause: err });
  }
}

const bytesArb = fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a));
/** Bytes that are often close to valid: mostly printable, some NULs and length-ish values. */
const nearBytesArb = fc
  .array(fc.oneof(fc.constantFrom(0, 0, 0xff, 0x80, 4, 8), fc.integer({ min: 0x20, max: 0x7e })), {
    maxLength: 120,
  })
  .map((a) => Buffer.from(a));
const anyBytesArb = fc.oneof(bytesArb, nearBytesArb);
const cutsArb = fc.array(fc.nat(), { maxLength: 12 });
// C strings without NUL (what every writer expects).
const cstringArb = fc.string({ maxLength: 30 }).map((s) => s.replace(/\0/g, ""));

function chunks(bytes: Buffer, cuts: readonly number[]): Buffer[] {
  const pts = [...new Set(cuts.map((c) => c % (bytes.length + 1)))]
    .filter((p) => p > 0 && p < bytes.length)
    .sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of pts) {
    out.push(bytes.subarray(prev, p));
    prev = p;
  }
  out.push(bytes.subarray(prev));
  return out;
}

describe("MessageBuffer properties", () => {
  it("arbitrary bytes in arbitrary chunks: messages, null or ProtocolError", () => {
    fc.assert(
      fc.property(anyBytesArb, cutsArb, fc.integer({ min: 0, max: 300 }), (bytes, cuts, max) => {
        const mb = new MessageBuffer(max);
        for (const c of chunks(bytes, cuts)) {
          mb.push(c);
          for (;;) {
            const m = resultOrProtocolError(() => mb.next());
            if (m === null || m instanceof ProtocolError) break;
            expect(m.body.length).toBeLessThanOrEqual(max);
          }
        }
      }),
      { numRuns: RUNS },
    );
  });

  it("valid messages come out whole and in order, however they are chunked", () => {
    const msgArb = fc.record({
      type: fc.integer({ min: 0, max: 255 }),
      body: fc.uint8Array({ maxLength: 100 }),
    });
    fc.assert(
      fc.property(fc.array(msgArb, { maxLength: 12 }), cutsArb, (msgs, cuts) => {
        const wire = Buffer.concat(
          msgs.map((m) => {
            const b = Buffer.alloc(5 + m.body.length);
            b[0] = m.type;
            b.writeInt32BE(m.body.length + 4, 1);
            Buffer.from(m.body).copy(b, 5);
            return b;
          }),
        );
        const mb = new MessageBuffer(1000);
        const got: Array<{ type: number; body: string }> = [];
        for (const c of chunks(wire, cuts)) {
          mb.push(c);
          for (let m = mb.next(); m !== null; m = mb.next())
            got.push({ type: m.type, body: m.body.toString("hex") });
        }
        expect(got).toEqual(
          msgs.map((m) => ({ type: m.type, body: Buffer.from(m.body).toString("hex") })),
        );
        expect(mb.pending).toBe(0);
      }),
      { numRuns: RUNS },
    );
  });

  it("nextStartup: arbitrary bytes give a packet of 8..10000 bytes, null or ProtocolError", () => {
    fc.assert(
      fc.property(anyBytesArb, cutsArb, (bytes, cuts) => {
        const mb = new MessageBuffer();
        for (const c of chunks(bytes, cuts)) {
          mb.push(c);
          const p = resultOrProtocolError(() => mb.nextStartup());
          if (p === null || p instanceof ProtocolError) continue;
          expect(p.length).toBeGreaterThanOrEqual(8);
          expect(p.length).toBeLessThanOrEqual(10_000);
          expect(p.readInt32BE(0)).toBe(p.length);
          // Whatever nextStartup hands out, parseStartupPacket takes without a foreign exception.
          resultOrProtocolError(() => parseStartupPacket(p));
        }
      }),
      { numRuns: RUNS },
    );
  });
});

describe("parser properties", () => {
  const startupLike = fc.oneof(
    anyBytesArb,
    // A length word and a known request code, then anything.
    fc
      .tuple(
        fc.constantFrom(PROTOCOL_3_0, CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, 80877103, 2 << 16),
        anyBytesArb,
      )
      .map(([code, rest]) => {
        const b = Buffer.alloc(8 + rest.length);
        b.writeInt32BE(b.length, 0);
        b.writeInt32BE(code, 4);
        rest.copy(b, 8);
        return b;
      }),
  );

  it("parseStartupPacket: arbitrary bytes give a packet kind or ProtocolError", () => {
    fc.assert(
      fc.property(startupLike, (packet) => {
        resultOrProtocolError(() => parseStartupPacket(packet));
      }),
      { numRuns: RUNS },
    );
    // The short packets that used to throw RangeError from readInt32BE.
    for (let n = 0; n < 8; n++)
      expect(() => parseStartupPacket(Buffer.alloc(n))).toThrow(ProtocolError);
  });

  it("parseStartupPacket round-trips startupMessage, SSLRequest and CancelRequest", () => {
    const paramsArb = fc.dictionary(
      cstringArb.filter((k) => k !== ""),
      cstringArb,
      { maxKeys: 6 },
    );
    fc.assert(
      fc.property(paramsArb, fc.integer(), fc.integer(), (params, pid, secret) => {
        const p = parseStartupPacket(startupMessage(params));
        expect(p.kind).toBe("startup");
        if (p.kind === "startup") expect(Object.fromEntries(p.params)).toEqual({ ...params });
        expect(parseStartupPacket(sslRequest)).toEqual({ kind: "ssl" });
        expect(parseStartupPacket(cancelRequest(pid | 0, secret | 0))).toEqual({
          kind: "cancel",
          pid: pid | 0,
          secret: secret | 0,
        });
      }),
      { numRuns: 200 },
    );
  });

  it("parseErrorFields, parseParameterStatus, parsePasswordMessage: result or ProtocolError", () => {
    fc.assert(
      fc.property(anyBytesArb, (body) => {
        resultOrProtocolError(() => parseErrorFields(body));
        resultOrProtocolError(() => parseParameterStatus(body));
        expect(typeof parsePasswordMessage(body)).toBe("string");
        expect(verifyMd5Response(`md5${"0".repeat(32)}`, Buffer.alloc(4), body.toString())).toBe(
          false,
        );
      }),
      { numRuns: RUNS },
    );
  });

  it("parseErrorFields and parseParameterStatus read what the writers wrote", () => {
    fc.assert(
      fc.property(cstringArb, cstringArb, cstringArb, (a, b, c) => {
        const e = errorResponse({ severity: "ERROR", code: "08P01", message: a, detail: b });
        expect(parseErrorFields(e.subarray(5))).toEqual({
          S: "ERROR",
          V: "ERROR",
          C: "08P01",
          M: a,
          D: b,
        });
        expect(parseParameterStatus(parameterStatus(b, c).subarray(5))).toEqual([b, c]);
      }),
      { numRuns: 200 },
    );
  });

  it("parseSaslInitialResponse: arbitrary bodies give a result or ProtocolError", () => {
    const saslLike = fc.oneof(
      anyBytesArb,
      // mechanism, then a length that may lie, then data
      fc
        .tuple(
          cstringArb,
          fc.oneof(fc.integer(), fc.constantFrom(-1, -2, 0, 1, 0x7fffffff, -0x80000000)),
          anyBytesArb,
        )
        .map(([mech, len, data]) => {
          const m = Buffer.from(`${mech}\0`);
          const b = Buffer.alloc(m.length + 4 + data.length);
          m.copy(b, 0);
          b.writeInt32BE(len | 0, m.length);
          data.copy(b, m.length + 4);
          return b;
        }),
    );
    fc.assert(
      fc.property(saslLike, (body) => {
        const r = resultOrProtocolError(() => parseSaslInitialResponse(body));
        if (!(r instanceof ProtocolError)) {
          // Accepted only when the length word tells the truth (or is -1 with nothing after).
          const off = body.indexOf(0) + 1;
          const len = body.readInt32BE(off);
          expect(len === -1 ? 0 : len).toBe(body.length - off - 4);
          expect(r.mechanism).toBe(body.toString("utf8", 0, off - 1));
          expect(r.data).toBe(body.toString("utf8", off + 4));
        }
      }),
      { numRuns: RUNS },
    );
  });

  it("parseSaslInitialResponse round-trips saslInitialResponse, and rejects a lying length", () => {
    fc.assert(
      fc.property(cstringArb, fc.string({ maxLength: 80 }), (mech, data) => {
        const body = saslInitialResponse(mech, data).subarray(5);
        expect(parseSaslInitialResponse(body)).toEqual({ mechanism: mech, data });
        const off = Buffer.byteLength(mech) + 1;
        const longer = Buffer.from(body);
        longer.writeInt32BE(longer.readInt32BE(off) + 1, off);
        expect(() => parseSaslInitialResponse(longer)).toThrow(ProtocolError);
        const trailing = Buffer.concat([body, Buffer.from([0])]);
        expect(() => parseSaslInitialResponse(trailing)).toThrow(ProtocolError);
      }),
      { numRuns: 200 },
    );
    const none = Buffer.from("SCRAM-SHA-256\0\xff\xff\xff\xff", "latin1");
    expect(parseSaslInitialResponse(none)).toEqual({ mechanism: "SCRAM-SHA-256", data: "" });
  });
});
