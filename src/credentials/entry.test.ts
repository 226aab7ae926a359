import { describe, expect, it } from "vitest";
import { silentLogger } from "../util/index.js";
import { ManualClock } from "./clock.js";
import { CredentialEngine, credentialKey } from "./engine.js";
import { CredentialEntry, sanitize } from "./entry.js";
import type { FetchedToken, TokenProvider } from "./types.js";

/** A provider driven by the test: each fetch waits `latency` ms of the manual clock. */
class FakeProvider implements TokenProvider {
  readonly kind = "fake";
  readonly description = { host: "db", user: "u" };
  calls: number[] = [];
  inFlight = 0;
  maxInFlight = 0;
  latency = 2000;
  lifetime = 20_000;
  failing: "no" | "error" | "hang" = "no";
  refreshHint: number | undefined;
  private n = 0;
  constructor(private readonly clock: ManualClock) {}
  fetch(signal: AbortSignal): Promise<FetchedToken> {
    this.calls.push(this.clock.now());
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    const mode = this.failing;
    return new Promise((resolve, reject) => {
      const done = () => {
        this.inFlight--;
      };
      signal.addEventListener("abort", () => {
        done();
        reject(signal.reason);
      });
      if (mode === "hang") return;
      this.clock.setTimeout(() => {
        if (signal.aborted) return;
        done();
        if (mode === "error") reject(new Error("HTTP 500 from identity provider"));
        else
          resolve({
            secret: `token-${++this.n}`,
            expiresAt: this.clock.wallNow() + this.lifetime,
            refreshAt:
              this.refreshHint === undefined ? undefined : this.clock.wallNow() + this.refreshHint,
          });
      }, this.latency);
    });
  }
}

function setup(opts: { refreshBuffer?: number; fetchTimeout?: number } = {}) {
  const clock = new ManualClock();
  const provider = new FakeProvider(clock);
  const entry = new CredentialEntry("k", provider, {
    refreshBuffer: opts.refreshBuffer ?? 45_000,
    fetchTimeout: opts.fetchTimeout ?? 10_000,
    clock,
    logger: silentLogger(),
  });
  return { clock, provider, entry };
}

describe("CredentialEntry", () => {
  it("shares one fetch among concurrent cold misses", async () => {
    const { clock, provider, entry } = setup();
    const gets = Array.from({ length: 50 }, () => entry.get());
    await clock.advance(2000);
    const secrets = await Promise.all(gets);
    expect(new Set(secrets)).toEqual(new Set(["token-1"]));
    expect(provider.calls.length).toBe(1);
    // Cached afterwards: no more calls.
    expect(await entry.get()).toBe("token-1");
    expect(provider.calls.length).toBe(1);
  });

  it("refreshes in the background before expiry, buffer reduced for short tokens; get never waits", async () => {
    const { clock, provider, entry } = setup();
    entry.start();
    const first = entry.get();
    await clock.advance(2000);
    expect(await first).toBe("token-1");
    // 20 s token: buffer = min(45 s, 20 s / 4) = 5 s, minus up to 1 s jitter (random 0.5 → 0.5 s).
    for (let t = 0; t < 60; t++) {
      await clock.advance(1000);
      let settled = false;
      void entry.get().then(() => {
        settled = true;
      });
      await Promise.resolve();
      await Promise.resolve();
      expect(settled).toBe(true); // served from the cache, never waiting for a fetch
    }
    // 62 s of run time, refresh about every 14.5 s + 2 s fetch → 4-5 fetches, never two at once.
    expect(provider.calls.length).toBeGreaterThanOrEqual(4);
    expect(provider.calls.length).toBeLessThanOrEqual(5);
    expect(provider.maxInFlight).toBe(1);
  });

  it("honours the provider's refresh hint", async () => {
    const { clock, provider, entry } = setup();
    provider.lifetime = 3_600_000;
    provider.refreshHint = 60_000;
    entry.start();
    const first = entry.get();
    await clock.advance(2000);
    await first;
    expect(entry.snapshot().refreshAt! - clock.wallNow()).toBeLessThanOrEqual(60_000);
    await clock.advance(61_000);
    expect(provider.calls.length).toBe(2);
  });

  it("rides out an outage on the valid token with growing, bounded retry gaps", async () => {
    const { clock, provider, entry } = setup({ refreshBuffer: 45_000 });
    provider.lifetime = 15 * 60_000;
    provider.latency = 100;
    entry.start();
    const first = entry.get();
    await clock.advance(100);
    await first;
    provider.failing = "error";
    // Run until just before expiry: gets keep returning the old token.
    for (let i = 0; i < 894; i++) {
      await clock.advance(1000);
      if (i % 60 === 0) expect(await entry.get()).toBe("token-1");
    }
    const failing = provider.calls.slice(1);
    const gaps = failing.slice(1).map((t, i) => t - failing[i]!);
    expect(failing.length).toBeGreaterThan(3);
    expect(failing.length).toBeLessThan(40); // no hot loop
    for (let i = 1; i < Math.min(gaps.length, 5); i++)
      expect(gaps[i]!).toBeGreaterThanOrEqual(gaps[i - 1]!);
    for (const g of gaps) expect(g).toBeLessThanOrEqual(30_000 + 100);
    expect(entry.snapshot().state).toBe("retrying");
    provider.failing = "no";
    await clock.advance(31_000);
    expect(entry.snapshot().state).toBe("valid");
    expect(await entry.get()).toBe("token-2");
  });

  it("fails fast after expiry during an outage, then recovers by itself", async () => {
    const { clock, provider, entry } = setup();
    provider.latency = 10;
    entry.start();
    const first = entry.get();
    await clock.advance(10);
    await first;
    provider.failing = "error";
    await clock.advance(25_000);
    const callsBefore = provider.calls.length;
    const errs = await Promise.all(
      Array.from({ length: 20 }, () => entry.get().catch((e: Error) => e.message)),
    );
    for (const e of errs)
      expect(e).toMatch(
        /^fake: no valid token \(host=db user=u\): HTTP 500 from identity provider/,
      );
    expect(provider.calls.length).toBe(callsBefore); // failing fast makes no provider calls
    provider.failing = "no";
    await clock.advance(31_000);
    expect(await entry.get()).toMatch(/^token-/);
  });

  it("a fetch has its own timeout, and a hung provider does not block later fetches", async () => {
    const { clock, provider, entry } = setup({ fetchTimeout: 3000 });
    provider.failing = "hang";
    const r = entry.get().catch((e: Error) => e.message);
    await clock.advance(3000);
    expect(await r).toMatch(/timed out after 3000 ms/);
    provider.failing = "no";
    const again = entry.get();
    await clock.advance(2000);
    expect(await again).toBe("token-1");
  });

  it("a caller that gives up does not cancel the shared fetch", async () => {
    const { clock, provider, entry } = setup();
    const impatient = Promise.race([
      entry.get(),
      new Promise((r) => clock.setTimeout(() => r("gave up"), 500)),
    ]);
    await clock.advance(500);
    expect(await impatient).toBe("gave up");
    await clock.advance(1500);
    expect(await entry.get()).toBe("token-1");
    expect(provider.calls.length).toBe(1);
  });

  it("replaces a rejected token once, single-flight, rate-limited", async () => {
    const { clock, provider, entry } = setup();
    entry.start();
    const g = entry.get();
    await clock.advance(2000);
    const bad = await g;
    const replacements = Array.from({ length: 10 }, () => entry.invalidate(bad));
    await clock.advance(2000);
    expect(new Set(await Promise.all(replacements))).toEqual(new Set(["token-2"]));
    expect(provider.calls.length).toBe(2);
    // The new token rejected again at once: no refetch storm.
    const again = await entry.invalidate("token-2").catch((e: Error) => e.message);
    expect(again).toMatch(/rejected the token again/);
    expect(provider.calls.length).toBe(2);
  });

  it("stop() ends refreshing: no timers, no further calls", async () => {
    const { clock, provider, entry } = setup();
    entry.start();
    const g = entry.get();
    await clock.advance(2000);
    await g;
    entry.stop();
    expect(clock.pendingTimers).toBe(0);
    await clock.advance(120_000);
    expect(provider.calls.length).toBe(1);
    expect(entry.snapshot().state).toBe("stopped");
  });
});

describe("CredentialEngine", () => {
  it("shares one entry per key, refcounted; the last release stops it", async () => {
    const clock = new ManualClock();
    const engine = new CredentialEngine({
      refreshBuffer: 45_000,
      fetchTimeout: 10_000,
      logger: silentLogger(),
      clock,
    });
    let made = 0;
    const make = () => {
      made++;
      return new FakeProvider(clock);
    };
    const k1 = credentialKey("rds_iam", { host: "h", port: 5432, user: "u", region: "eu-west-1" });
    const k2 = credentialKey("rds_iam", { region: "eu-west-1", user: "u", port: 5432, host: "h" });
    const k3 = credentialKey("rds_iam", { host: "h", port: 5432, user: "u", region: "us-east-1" });
    expect(k1).toBe(k2);
    expect(k1).not.toBe(k3);
    const a = engine.acquire(k1, make);
    const b = engine.acquire(k2, make);
    const c = engine.acquire(k3, make);
    expect(a).toBe(b);
    expect(a).not.toBe(c);
    expect(made).toBe(2);
    engine.release(a);
    expect(a.isStopped).toBe(false);
    engine.release(b);
    expect(a.isStopped).toBe(true);
    expect(engine.size).toBe(1);
    engine.release(c);
    expect(engine.size).toBe(0);
  });
});

describe("sanitize", () => {
  it("strips tokens from error texts", () => {
    const jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
    const s = sanitize(
      `bad request: client_assertion=${jwt}&x=1 access_token: "abc123" X-Amz-Signature=deadbeef`,
    );
    expect(s).not.toContain("eyJ");
    expect(s).not.toContain("abc123");
    expect(s).not.toContain("deadbeef");
  });
});

describe("cache off (benchmark baseline)", () => {
  it("fetches once per get, concurrently, and schedules nothing", async () => {
    const clock = new ManualClock();
    const provider = new FakeProvider(clock);
    const entry = new CredentialEntry("k", provider, {
      refreshBuffer: 45_000,
      fetchTimeout: 10_000,
      clock,
      logger: silentLogger(),
      cache: false,
    });
    entry.start();
    const gets = Array.from({ length: 5 }, () => entry.get());
    await clock.advance(2000);
    expect(await Promise.all(gets)).toEqual([
      "token-1",
      "token-2",
      "token-3",
      "token-4",
      "token-5",
    ]);
    expect(provider.maxInFlight).toBe(5);
    expect(clock.pendingTimers).toBe(0);
  });
});

describe("credentials that name a user and carry a connection deadline", () => {
  class LeaseProvider implements TokenProvider {
    readonly kind = "lease";
    readonly issuesUser = true;
    readonly description = { host: "db" };
    n = 0;
    constructor(private readonly clock: ManualClock) {}
    fetch(): Promise<FetchedToken> {
      const n = ++this.n;
      const end = this.clock.wallNow() + 30_000;
      return Promise.resolve({
        secret: `pw-${n}`,
        user: `v-app-${n}`,
        expiresAt: end,
        refreshAt: this.clock.wallNow() + 20_000,
        connectionDeadline: end,
      });
    }
  }

  it("hands out user, generation and retireAt; a new lease is a new generation", async () => {
    const clock = new ManualClock();
    const provider = new LeaseProvider(clock);
    const entry = new CredentialEntry("k", provider, {
      refreshBuffer: 45_000,
      fetchTimeout: 10_000,
      clock,
      logger: silentLogger(),
    });
    entry.start();
    const t0 = clock.now();
    const first = await entry.getLogin();
    // retired 10% of the lease (3 s, under the 5 s cap) before it ends
    expect(first).toEqual({
      secret: "pw-1",
      user: "v-app-1",
      generation: 1,
      retireAt: t0 + 27_000,
    });
    expect(entry.currentGeneration).toBe(1);
    expect(entry.snapshot()).toMatchObject({ generation: 1, user: "v-app-1" });
    expect(JSON.stringify(entry.snapshot())).not.toContain("pw-1");
    await clock.advance(20_000); // the refresh hint
    expect(provider.n).toBe(2);
    expect(await entry.getLogin()).toMatchObject({ user: "v-app-2", generation: 2 });
    expect(entry.currentGeneration).toBe(2);
    entry.stop();
  });

  it("does not hand out a credential past its retireAt", async () => {
    const clock = new ManualClock();
    const provider = new LeaseProvider(clock);
    const entry = new CredentialEntry("k", provider, {
      refreshBuffer: 45_000,
      fetchTimeout: 10_000,
      clock,
      logger: silentLogger(),
    });
    await entry.getLogin(); // not started: no refresher
    await clock.advance(26_500); // 0.5 s before retireAt: within minRemaining
    expect((await entry.getLogin()).generation).toBe(2);
  });
});
