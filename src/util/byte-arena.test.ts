import { Buffer } from "node:buffer";
import { describe, expect, it } from "vitest";
import { ByteArena, copyBytes } from "./byte-arena.js";

describe("ByteArena", () => {
  it("carves contiguous ranges and starts a new buffer when full, leaving the old one as it was", () => {
    const a = new ByteArena(16);
    const first = a.buf;
    const x = a.carve(10);
    copyBytes(Buffer.from("0123456789"), 0, 10, a.buf, x);
    const y = a.carve(6);
    expect([x, y]).toEqual([0, 10]);
    copyBytes(Buffer.from("abcdef"), 0, 6, a.buf, y);
    const z = a.carve(4); // does not fit: a new buffer
    expect(z).toBe(0);
    expect(a.buf).not.toBe(first);
    copyBytes(Buffer.from("WXYZ"), 0, 4, a.buf, z);
    expect(first.toString("latin1")).toBe("0123456789abcdef");
    expect(a.buf.toString("latin1", 0, 4)).toBe("WXYZ");
    expect(() => a.carve(17)).toThrow(RangeError);
  });

  it("copies short and long pieces alike", () => {
    const src = Buffer.from(Array.from({ length: 300 }, (_, i) => i & 0xff));
    for (const [s, e] of [
      [0, 0],
      [5, 6],
      [3, 67],
      [10, 300],
    ] as const) {
      const dst = Buffer.alloc(320, 0xee);
      copyBytes(src, s, e, dst, 7);
      expect(dst.subarray(7, 7 + e - s).equals(src.subarray(s, e))).toBe(true);
      expect(dst[6]).toBe(0xee);
      expect(dst[7 + e - s]).toBe(0xee);
    }
  });
});
