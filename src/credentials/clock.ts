// Time for the credential engine. Scheduling uses a monotonic clock (performance.now()), so a
// wall-clock jump never fires or delays a refresh; a provider's wall-clock expiry is converted
// to monotonic once, when the token arrives. Tests inject a manual clock.

export interface Clock {
  /** Monotonic milliseconds. */
  now(): number;
  /** Wall-clock milliseconds since the epoch. */
  wallNow(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  random(): number;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  wallNow: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
  random: Math.random,
};

/** A clock that moves only when told to; timers fire in order as it advances. */
export class ManualClock implements Clock {
  private mono = 1_000_000;
  private wall = Date.UTC(2026, 0, 1);
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private nextId = 1;
  randomValue = 0.5;

  now(): number {
    return this.mono;
  }
  wallNow(): number {
    return this.wall;
  }
  random(): number {
    return this.randomValue;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.push({ at: this.mono + Math.max(0, ms), fn, id });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.timers = this.timers.filter((t) => t.id !== handle);
  }
  get pendingTimers(): number {
    return this.timers.length;
  }
  /** Advances time by `ms`, firing due timers (and letting their promises settle) in order. */
  async advance(ms: number): Promise<void> {
    const target = this.mono + ms;
    for (;;) {
      await flush(); // let promise chains register their timers first
      this.timers.sort((a, b) => a.at - b.at || a.id - b.id);
      const next = this.timers[0];
      if (!next || next.at > target) break;
      this.timers.shift();
      this.wall += next.at - this.mono;
      this.mono = next.at;
      next.fn();
      await flush();
    }
    this.wall += target - this.mono;
    this.mono = target;
    await flush();
  }
}

async function flush(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}
