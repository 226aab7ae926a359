import { describe, expect, it } from "vitest";
import { Queue } from "./queue.js";

describe("Queue", () => {
  it("keeps FIFO order across growth and wrap-around", () => {
    const q = new Queue<number>(2);
    const out: number[] = [];
    for (let i = 0; i < 100; i++) {
      q.push(i);
      if (i % 3 === 0) out.push(q.shift()!);
    }
    while (q.length > 0) out.push(q.shift()!);
    expect(out).toEqual([...Array(100).keys()]);
    expect(q.shift()).toBeUndefined();
  });

  it("filters in place keeping order", () => {
    const q = new Queue<number>();
    for (let i = 0; i < 10; i++) q.push(i);
    q.shift();
    q.filter((n) => n % 2 === 0);
    expect([...q]).toEqual([2, 4, 6, 8]);
    expect(q.peek()).toBe(2);
  });
});
