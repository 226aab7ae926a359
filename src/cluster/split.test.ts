import { describe, expect, it } from "vitest";
import { share } from "./split.js";

describe("pool_size split among workers", () => {
  it("adds up to the configured size; the first (size mod N) workers get one more", () => {
    expect([0, 1, 2].map((i) => share(10, i, 3, 1))).toEqual([4, 3, 3]);
    expect([0, 1].map((i) => share(8, i, 2, 1))).toEqual([4, 4]);
    for (let size = 1; size <= 40; size++)
      for (let n = 1; n <= 8; n++) {
        const shares = Array.from({ length: n }, (_, i) => share(size, i, n, 1));
        if (size >= n) expect(shares.reduce((a, b) => a + b, 0)).toBe(size);
        expect(Math.max(...shares) - Math.min(...shares)).toBeLessThanOrEqual(1);
      }
  });

  it("never below 1 for pool_size; min_pool_size may be 0", () => {
    expect([0, 1, 2, 3].map((i) => share(2, i, 4, 1))).toEqual([1, 1, 1, 1]);
    expect([0, 1, 2, 3].map((i) => share(2, i, 4))).toEqual([1, 1, 0, 0]);
  });
});
