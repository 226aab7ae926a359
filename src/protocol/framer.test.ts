import { describe, expect, it } from "vitest";
import {
  EVENT_HEADER,
  EVENT_MESSAGE,
  FRAME_COLLECT,
  FRAME_COLLECT_SMALL,
  FRAME_HEADER,
  Framer,
  frameModes,
} from "./framer.js";
import { dataRow, errorResponse, parameterStatus, query, readyForQuery } from "./writer.js";

function scanAll(f: Framer, chunks: Buffer[]): Array<[string, string]> {
  const events: Array<[string, string]> = [];
  for (const c of chunks) {
    let pos = 0;
    while (pos < c.length) {
      pos = f.feed(c, pos);
      if (f.event === EVENT_MESSAGE)
        events.push([String.fromCharCode(f.type), f.body.toString("latin1")]);
      if (f.event === EVENT_HEADER)
        events.push([String.fromCharCode(f.type), `len=${f.bodyLength}`]);
    }
  }
  return events;
}

describe("Framer", () => {
  const stream = Buffer.concat([
    dataRow(["x".repeat(100_000)]),
    parameterStatus("TimeZone", "UTC"),
    readyForQuery("T"),
    query("select 1"),
  ]);
  const modes = frameModes([
    ["Z", FRAME_COLLECT],
    ["S", FRAME_COLLECT],
    ["Q", FRAME_HEADER],
  ]);

  it("reports collected messages and headers in one chunk", () => {
    const events = scanAll(new Framer(modes), [stream]);
    expect(events).toEqual([
      ["S", "TimeZone\0UTC\0"],
      ["Z", "T"],
      ["Q", "len=9"],
    ]);
  });

  it("gives the same events whatever the chunking, down to one byte", () => {
    const whole = scanAll(new Framer(modes), [stream]);
    for (const size of [1, 2, 3, 5, 7, 4096, 65536]) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < stream.length; i += size) chunks.push(stream.subarray(i, i + size));
      const f = new Framer(modes);
      expect(scanAll(f, chunks)).toEqual(whole);
      expect(f.atBoundary).toBe(true);
    }
  });

  it("is not at a boundary mid-message", () => {
    const f = new Framer(modes);
    const row = dataRow(["abc"]);
    f.feed(row.subarray(0, 7), 0);
    expect(f.atBoundary).toBe(false);
    f.feed(row.subarray(7), 0);
    expect(f.atBoundary).toBe(true);
  });

  it("collects everything in collectAll mode", () => {
    const f = new Framer(modes);
    f.collectAll = true;
    const events = scanAll(f, [dataRow(["a"]), readyForQuery("I")]);
    expect(events.map((e) => e[0])).toEqual(["D", "Z"]);
  });

  it("COLLECT_SMALL collects small bodies and reports large ones at the header", () => {
    const m = frameModes([["E", FRAME_COLLECT_SMALL]]);
    const small = errorResponse({ severity: "FATAL", code: "57P01", message: "bye" });
    const big = errorResponse({ severity: "ERROR", code: "P0001", message: "x".repeat(2 << 20) });
    const events = scanAll(new Framer(m), [small, big, readyForQuery("I")]);
    expect(events[0]?.[0]).toBe("E");
    expect(events[0]?.[1]).toContain("57P01");
    expect(events[1]).toEqual(["E", `len=${big.length - 5}`]);
    expect(events).toHaveLength(2);
  });

  it("rejects a length below 4", () => {
    const f = new Framer(modes);
    expect(() => f.feed(Buffer.from([0x44, 0, 0, 0, 2]), 0)).toThrow(/invalid length/);
  });
});
