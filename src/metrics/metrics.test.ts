import { afterEach, describe, expect, it } from "vitest";
import type { CredentialSnapshot } from "../credentials/index.js";
import type { PoolSnapshot } from "../pool/index.js";
import { silentLogger } from "../util/index.js";
import {
  createMetrics,
  IDENTITY_KEYS,
  type MetricsServer,
  type MetricsSource,
  startMetricsServer,
} from "./index.js";

// ---- a strict parser for the Prometheus text format (0.0.4) ---------------------------------
// Stricter than it needs to be for prom-client's output on purpose: it is the check that what we
// serve is valid exposition, so every rule a Prometheus server enforces is enforced here.

interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

interface Family {
  readonly name: string;
  type: string | undefined;
  help: string | undefined;
  readonly samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;
// Prometheus parses 0.0.4 values with Go's strconv.ParseFloat, which takes inf/infinity/nan in
// any case; prom-client relies on that and writes NaN as "Nan" (e.g. event-loop lag before its
// first sample).
const VALUE = /^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|infinity|nan))$/i;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);
const SUFFIXES: Readonly<Record<string, readonly string[]>> = {
  histogram: ["_bucket", "_sum", "_count"],
  summary: ["_sum", "_count"],
};

function parseValue(s: string, line: string): number {
  if (!VALUE.test(s)) throw new Error(`bad value "${s}" in: ${line}`);
  if (/nan$/i.test(s)) return Number.NaN;
  if (/inf(inity)?$/i.test(s)) return s.startsWith("-") ? -Infinity : Infinity;
  return Number(s);
}

/** Parses `{a="x",b="y"}` starting at `line[start] === "{"`; returns the labels and the end. */
function parseLabels(line: string, start: number): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = {};
  let i = start + 1;
  for (;;) {
    if (line[i] === "}") return { labels, end: i + 1 };
    const m = LABEL_NAME.exec(line.slice(i));
    if (!m) throw new Error(`bad label name at ${i} in: ${line}`);
    const name = m[0];
    if (name.startsWith("__")) throw new Error(`reserved label name ${name} in: ${line}`);
    if (Object.hasOwn(labels, name)) throw new Error(`duplicate label ${name} in: ${line}`);
    i += name.length;
    if (line[i] !== "=" || line[i + 1] !== '"') throw new Error(`expected =" at ${i} in: ${line}`);
    i += 2;
    let value = "";
    for (;;) {
      const ch = line[i++];
      if (ch === undefined) throw new Error(`unterminated label value in: ${line}`);
      if (ch === '"') break;
      if (ch === "\\") {
        const e = line[i++];
        if (e === "\\") value += "\\";
        else if (e === '"') value += '"';
        else if (e === "n") value += "\n";
        else throw new Error(`bad escape \\${e} in: ${line}`);
      } else value += ch;
    }
    labels[name] = value;
    if (line[i] === ",") i++;
    else if (line[i] !== "}") throw new Error(`expected , or } at ${i} in: ${line}`);
  }
}

function parseExposition(text: string): Map<string, Family> {
  if (!text.endsWith("\n")) throw new Error("exposition must end with a newline");
  const families = new Map<string, Family>();
  const closed = new Set<string>();
  const series = new Set<string>();
  let current: string | null = null;

  // families must be contiguous: once another family starts, the previous one may not reappear
  const enter = (name: string): Family => {
    if (current !== name) {
      if (closed.has(name)) throw new Error(`family ${name} is split across the text`);
      if (current !== null) closed.add(current);
      current = name;
    }
    let f = families.get(name);
    if (!f) {
      f = { name, type: undefined, help: undefined, samples: [] };
      families.set(name, f);
    }
    return f;
  };

  const familyOf = (sample: string): string => {
    for (const [type, suffixes] of Object.entries(SUFFIXES)) {
      for (const suffix of suffixes) {
        if (!sample.endsWith(suffix)) continue;
        const base = sample.slice(0, -suffix.length);
        if (families.get(base)?.type === type) return base;
      }
    }
    return sample;
  };

  for (const line of text.slice(0, -1).split("\n")) {
    if (line === "") continue;
    if (line.startsWith("#")) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) continue; // a plain comment
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      if (!METRIC_NAME.test(name)) throw new Error(`bad metric name in: ${line}`);
      const f = enter(name);
      if (kind === "HELP") {
        if (f.help !== undefined) throw new Error(`second HELP for ${name}`);
        f.help = rest;
      } else {
        if (f.type !== undefined) throw new Error(`second TYPE for ${name}`);
        if (f.samples.length > 0) throw new Error(`TYPE after samples for ${name}`);
        if (!TYPES.has(rest)) throw new Error(`bad type in: ${line}`);
        f.type = rest;
      }
      continue;
    }
    const nm = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
    if (!nm) throw new Error(`bad sample line: ${line}`);
    const name = nm[0];
    let i = name.length;
    let labels: Record<string, string> = {};
    if (line[i] === "{") ({ labels, end: i } = parseLabels(line, i));
    const rest = line.slice(i);
    const vm = /^ (\S+)(?: (-?\d+))?$/.exec(rest);
    if (!vm) throw new Error(`bad value/timestamp in: ${line}`);
    const value = parseValue(vm[1]!, line);
    const f = enter(familyOf(name));
    if (f.type === undefined) throw new Error(`sample before TYPE: ${line}`);
    if (f.type === "histogram" && name.endsWith("_bucket") && labels.le === undefined) {
      throw new Error(`bucket without le: ${line}`);
    }
    const id = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (series.has(id)) throw new Error(`duplicate series: ${line}`);
    series.add(id);
    f.samples.push({ name, labels, value });
  }
  return families;
}

/** Samples of `name` whose labels include `labels`. */
function samples(
  fams: Map<string, Family>,
  name: string,
  labels: Record<string, string> = {},
): Sample[] {
  const out: Sample[] = [];
  for (const f of fams.values()) {
    for (const s of f.samples) {
      if (s.name !== name) continue;
      if (Object.entries(labels).every(([k, v]) => s.labels[k] === v)) out.push(s);
    }
  }
  return out;
}

/** The one value of `name` with exactly these labels. */
function value(fams: Map<string, Family>, name: string, labels: Record<string, string>): number {
  const found = samples(fams, name, labels).filter(
    (s) => Object.keys(s.labels).length === Object.keys(labels).length,
  );
  if (found.length !== 1)
    throw new Error(`${found.length} samples of ${name} ${JSON.stringify(labels)}`);
  return found[0]!.value;
}

// ---- fakes ----------------------------------------------------------------------------------

function pool(over: Partial<PoolSnapshot> = {}): PoolSnapshot {
  return {
    user: "app",
    database: "shop",
    mode: "transaction",
    poolSize: 10,
    minPoolSize: 1,
    host: "127.0.0.1",
    port: 5432,
    serverDatabase: "shop",
    serverUser: "app",
    clActive: 2,
    clWaiting: 1,
    svActive: 2,
    svIdle: 3,
    svConnecting: 1,
    maxWaitMs: 250,
    paused: false,
    totalXact: 100,
    totalQuery: 300,
    totalWaitMs: 1500,
    checkouts: 120,
    connectFailures: 0,
    ...over,
  };
}

const T0 = Date.UTC(2030, 0, 1);

function cred(over: Partial<CredentialSnapshot> = {}): CredentialSnapshot {
  return {
    key: "rds_iam(host=db.example,port=5432,region=eu-west-1,user=iam_app)",
    provider: "rds_iam",
    description: { host: "db.example", port: 5432, user: "iam_app", region: "eu-west-1" },
    state: "valid",
    expiresAt: T0 + 900_000,
    refreshAt: T0 + 855_000,
    ageSeconds: 0,
    fetches: 3,
    failures: 1,
    consecutiveFailures: 0,
    lastError: null,
    lastFetchMs: 120,
    consumers: 2,
    generation: 3,
    user: null,
    retireAt: null,
    ...over,
  };
}

class FakeSource implements MetricsSource {
  poolList: PoolSnapshot[] = [pool()];
  credList: CredentialSnapshot[] = [cred()];
  clientCounts: { total: number; byState: Record<string, number> } = {
    total: 4,
    byState: { active: 2, waiting: 1, idle: 1 },
  };
  pools() {
    return this.poolList;
  }
  credentials() {
    return this.credList;
  }
  clients() {
    return this.clientCounts;
  }
}

// ---- tests ----------------------------------------------------------------------------------

const servers: MetricsServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function serve(source: MetricsSource, now?: () => number): Promise<number> {
  const { registry } = createMetrics(source, now ? { now } : {});
  const server = await startMetricsServer({
    host: "127.0.0.1",
    port: 0,
    registry,
    logger: silentLogger(),
  });
  servers.push(server);
  return server.port;
}

async function scrape(port: number): Promise<{ text: string; fams: Map<string, Family> }> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  return { text, fams: parseExposition(text) };
}

describe("metrics endpoint", () => {
  it("serves valid exposition: pgwarden_ names, declared types, pool values", async () => {
    const port = await serve(new FakeSource(), () => T0);
    const { fams } = await scrape(port);

    for (const f of fams.values()) {
      expect(f.name).toMatch(METRIC_NAME);
      expect(f.name.startsWith("pgwarden_")).toBe(true);
      expect(f.type).toBeDefined();
      expect(f.help).toBeDefined();
      if (f.type === "counter") expect(f.name.endsWith("_total")).toBe(true);
    }
    // prom-client's process metrics, prefixed
    expect(fams.get("pgwarden_process_cpu_user_seconds_total")?.type).toBe("counter");
    expect(fams.get("pgwarden_nodejs_heap_size_used_bytes")?.type).toBe("gauge");

    const p = { user: "app", database: "shop" };
    const types: Record<string, string> = {
      pgwarden_clients: "gauge",
      pgwarden_pool_clients_active: "gauge",
      pgwarden_pool_clients_waiting: "gauge",
      pgwarden_pool_servers: "gauge",
      pgwarden_pool_size: "gauge",
      pgwarden_pool_max_wait_seconds: "gauge",
      pgwarden_transactions_total: "counter",
      pgwarden_queries_total: "counter",
      pgwarden_checkouts_total: "counter",
      pgwarden_checkout_wait_seconds_total: "counter",
      pgwarden_server_connect_failures_total: "counter",
      pgwarden_credential_fetch_total: "counter",
      pgwarden_credential_refresh_failures_total: "counter",
      pgwarden_credential_expiry_seconds: "gauge",
      pgwarden_credential_fetch_seconds: "gauge",
      pgwarden_credential_consumers: "gauge",
      pgwarden_credential_consecutive_failures: "gauge",
    };
    for (const [name, type] of Object.entries(types)) expect(fams.get(name)?.type).toBe(type);

    expect(value(fams, "pgwarden_clients", { state: "active" })).toBe(2);
    expect(value(fams, "pgwarden_clients", { state: "waiting" })).toBe(1);
    expect(value(fams, "pgwarden_clients", { state: "idle" })).toBe(1);
    expect(samples(fams, "pgwarden_clients", { state: "other" })).toHaveLength(0);
    expect(value(fams, "pgwarden_pool_clients_active", p)).toBe(2);
    expect(value(fams, "pgwarden_pool_clients_waiting", p)).toBe(1);
    expect(value(fams, "pgwarden_pool_servers", { ...p, state: "active" })).toBe(2);
    expect(value(fams, "pgwarden_pool_servers", { ...p, state: "idle" })).toBe(3);
    expect(value(fams, "pgwarden_pool_servers", { ...p, state: "connecting" })).toBe(1);
    expect(value(fams, "pgwarden_pool_size", p)).toBe(10);
    expect(value(fams, "pgwarden_pool_max_wait_seconds", p)).toBe(0.25);
    expect(value(fams, "pgwarden_transactions_total", p)).toBe(100);
    expect(value(fams, "pgwarden_queries_total", p)).toBe(300);
    expect(value(fams, "pgwarden_checkouts_total", p)).toBe(120);
    expect(value(fams, "pgwarden_checkout_wait_seconds_total", p)).toBe(1.5);
    expect(value(fams, "pgwarden_server_connect_failures_total", p)).toBe(0);

    const c = {
      provider: "rds_iam",
      identity: "host=db.example port=5432 user=iam_app region=eu-west-1",
    };
    expect(value(fams, "pgwarden_credential_fetch_total", { ...c, result: "ok" })).toBe(2);
    expect(value(fams, "pgwarden_credential_fetch_total", { ...c, result: "error" })).toBe(1);
    expect(value(fams, "pgwarden_credential_refresh_failures_total", c)).toBe(1);
    expect(value(fams, "pgwarden_credential_expiry_seconds", c)).toBe(900);
    expect(value(fams, "pgwarden_credential_fetch_seconds", c)).toBe(0.12);
    expect(value(fams, "pgwarden_credential_consumers", c)).toBe(2);
    expect(value(fams, "pgwarden_credential_consecutive_failures", c)).toBe(0);
  });

  it("reads the snapshots at each scrape: counters rise, expiry falls, gone pools vanish", async () => {
    const src = new FakeSource();
    let now = T0;
    const port = await serve(src, () => now);
    const p = { user: "app", database: "shop" };
    const c = {
      provider: "rds_iam",
      identity: "host=db.example port=5432 user=iam_app region=eu-west-1",
    };

    const before = (await scrape(port)).fams;
    src.poolList = [
      pool({
        totalXact: 150,
        totalQuery: 420,
        checkouts: 170,
        totalWaitMs: 2500,
        connectFailures: 2,
        clWaiting: 4,
      }),
      pool({ user: "report", database: "shop", totalXact: 7 }),
    ];
    src.credList = [cred({ fetches: 5, failures: 2, consecutiveFailures: 1, lastFetchMs: 2000 })];
    src.clientCounts = { total: 9, byState: { active: 5, idle: 2 } };
    now = T0 + 60_000;
    const after = (await scrape(port)).fams;

    for (const name of [
      "pgwarden_transactions_total",
      "pgwarden_queries_total",
      "pgwarden_checkouts_total",
      "pgwarden_checkout_wait_seconds_total",
      "pgwarden_server_connect_failures_total",
    ]) {
      expect(value(after, name, p)).toBeGreaterThan(value(before, name, p));
    }
    expect(value(after, "pgwarden_pool_clients_waiting", p)).toBe(4);
    expect(value(after, "pgwarden_transactions_total", { user: "report", database: "shop" })).toBe(
      7,
    );
    expect(value(after, "pgwarden_credential_fetch_total", { ...c, result: "ok" })).toBe(3);
    expect(value(after, "pgwarden_credential_fetch_total", { ...c, result: "error" })).toBe(2);
    expect(value(after, "pgwarden_credential_consecutive_failures", c)).toBe(1);
    expect(value(after, "pgwarden_credential_fetch_seconds", c)).toBe(2);
    expect(value(after, "pgwarden_credential_expiry_seconds", c)).toBe(840);
    expect(value(after, "pgwarden_credential_expiry_seconds", c)).toBeLessThan(
      value(before, "pgwarden_credential_expiry_seconds", c),
    );
    // total counts a client in no listed state: it shows as "other" so the states sum to total
    expect(value(after, "pgwarden_clients", { state: "other" })).toBe(2);
    expect(samples(after, "pgwarden_clients", { state: "waiting" })).toHaveLength(0);

    src.poolList = [];
    src.credList = [cred({ expiresAt: null, lastFetchMs: null })];
    const gone = (await scrape(port)).fams;
    expect(samples(gone, "pgwarden_pool_size")).toHaveLength(0);
    expect(samples(gone, "pgwarden_transactions_total")).toHaveLength(0);
    expect(samples(gone, "pgwarden_credential_expiry_seconds")).toHaveLength(0);
    expect(samples(gone, "pgwarden_credential_fetch_seconds")).toHaveLength(0);
    expect(samples(gone, "pgwarden_credential_consumers")).toHaveLength(1);
  });

  it("computes expiry from the wall clock by default", async () => {
    const src = new FakeSource();
    src.credList = [cred({ expiresAt: Date.now() + 600_000 })];
    const port = await serve(src);
    const c = {
      provider: "rds_iam",
      identity: "host=db.example port=5432 user=iam_app region=eu-west-1",
    };
    const first = value((await scrape(port)).fams, "pgwarden_credential_expiry_seconds", c);
    expect(first).toBeGreaterThan(590);
    expect(first).toBeLessThanOrEqual(600);
    await new Promise((r) => setTimeout(r, 25));
    const second = value((await scrape(port)).fams, "pgwarden_credential_expiry_seconds", c);
    expect(second).toBeLessThan(first);
  });

  it("never lets fetch_total{result=ok} go down while a fetch is in flight", async () => {
    const src = new FakeSource();
    const port = await serve(src, () => T0);
    const c = {
      provider: "rds_iam",
      identity: "host=db.example port=5432 user=iam_app region=eu-west-1",
    };
    const ok = async () =>
      value((await scrape(port)).fams, "pgwarden_credential_fetch_total", { ...c, result: "ok" });
    const seen: number[] = [];

    src.credList = [cred({ fetches: 3, failures: 1, state: "valid" })];
    seen.push(await ok()); // 2
    src.credList = [cred({ fetches: 4, failures: 1, state: "refreshing" })];
    seen.push(await ok()); // still 2: the 4th fetch has not succeeded yet
    src.credList = [cred({ fetches: 4, failures: 2, state: "retrying" })];
    seen.push(await ok()); // it failed: still 2
    src.credList = [cred({ fetches: 5, failures: 2, state: "valid" })];
    seen.push(await ok()); // 3
    // no cache: two fetches started, the state does not show them; the value may run ahead but
    // must not fall back when they fail
    src.credList = [cred({ fetches: 7, failures: 2, state: "valid" })];
    seen.push(await ok());
    src.credList = [cred({ fetches: 7, failures: 4, state: "valid" })];
    seen.push(await ok());
    expect(seen.slice(0, 4)).toEqual([2, 2, 2, 3]);
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThanOrEqual(seen[i - 1]!);

    // the entry was dropped and recreated (fetches went down): a genuine counter reset
    src.credList = [cred({ fetches: 1, failures: 0, state: "valid" })];
    expect(await ok()).toBe(1);
  });

  it("builds credential labels only from the allow-listed description keys", async () => {
    const src = new FakeSource();
    src.credList = [
      cred({
        description: {
          host: "db.example",
          port: 5432,
          user: "iam_app",
          region: "eu-west-1",
          // not on the allow-list: must not reach a label
          signing_note: "zz-not-a-label-zz",
        },
      }),
      cred({
        key: "azure_workload_identity(client=c1,file=/var/run/a,tenant=t1)",
        provider: "azure_workload_identity",
        description: { tenant_id: "t1", client_id: "c1" },
      }),
      // same identity label as the one above, another token file: one series, summed
      cred({
        key: "azure_workload_identity(client=c1,file=/var/run/b,tenant=t1)",
        provider: "azure_workload_identity",
        description: { tenant_id: "t1", client_id: "c1" },
        expiresAt: T0 + 30_000,
        consumers: 1,
      }),
    ];
    const port = await serve(src, () => T0);
    const { text, fams } = await scrape(port);
    expect(text).not.toContain("zz-not-a-label-zz");
    expect(text).not.toContain("signing_note");

    const allowed = new Set<string>(IDENTITY_KEYS);
    let checked = 0;
    for (const f of fams.values()) {
      if (!f.name.startsWith("pgwarden_credential_")) continue;
      for (const s of f.samples) {
        checked++;
        for (const k of Object.keys(s.labels))
          expect(["provider", "identity", "result"]).toContain(k);
        for (const part of (s.labels.identity ?? "").split(" ")) {
          const eq = part.indexOf("=");
          expect(eq).toBeGreaterThan(0);
          expect(allowed.has(part.slice(0, eq))).toBe(true);
        }
      }
    }
    expect(checked).toBeGreaterThan(0);

    const az = { provider: "azure_workload_identity", identity: "tenant_id=t1 client_id=c1" };
    expect(value(fams, "pgwarden_credential_consumers", az)).toBe(3);
    expect(value(fams, "pgwarden_credential_fetch_total", { ...az, result: "ok" })).toBe(4);
    expect(value(fams, "pgwarden_credential_expiry_seconds", az)).toBe(30);
  });

  it("answers 404 off /metrics, 405 for other methods, and stops on close()", async () => {
    const { registry } = createMetrics(new FakeSource(), { defaultMetrics: false });
    const server = await startMetricsServer({
      host: "127.0.0.1",
      port: 0,
      registry,
      logger: silentLogger(),
    });
    const base = `http://127.0.0.1:${server.port}`;
    expect((await fetch(`${base}/`)).status).toBe(404);
    expect((await fetch(`${base}/metricsx`)).status).toBe(404);
    const post = await fetch(`${base}/metrics`, { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
    const withQuery = await fetch(`${base}/metrics?x=1`);
    expect(withQuery.status).toBe(200);
    const text = await withQuery.text();
    parseExposition(text);
    expect(text).not.toContain("process_cpu");

    await server.close();
    await expect(fetch(`${base}/metrics`)).rejects.toThrow();
  });

  it("answers 500 when a collector throws, and keeps serving", async () => {
    const src = new FakeSource();
    let broken = true;
    src.pools = () => {
      if (broken) throw new Error("boom");
      return [pool()];
    };
    const port = await serve(src);
    expect((await fetch(`http://127.0.0.1:${port}/metrics`)).status).toBe(500);
    broken = false;
    await scrape(port);
  });

  it("reads each snapshot list once per scrape, so one scrape describes one instant", async () => {
    const src = new FakeSource();
    const calls = { pools: 0, credentials: 0 };
    const pools = src.pools.bind(src);
    const credentials = src.credentials.bind(src);
    src.pools = () => {
      calls.pools++;
      return pools();
    };
    src.credentials = () => {
      calls.credentials++;
      return credentials();
    };
    const port = await serve(src);
    await scrape(port);
    await scrape(port);
    expect(calls).toEqual({ pools: 2, credentials: 2 });
  });

  it("rejects when the port is taken", async () => {
    const port = await serve(new FakeSource());
    const { registry } = createMetrics(new FakeSource(), { defaultMetrics: false });
    await expect(
      startMetricsServer({ host: "127.0.0.1", port, registry, logger: silentLogger() }),
    ).rejects.toThrow(/EADDRINUSE/);
  });
});

describe("the test's exposition parser", () => {
  it("rejects what Prometheus rejects", () => {
    const ok = '# HELP a_total x\n# TYPE a_total counter\na_total{l="v"} 1\n';
    expect(parseExposition(ok).get("a_total")?.samples).toHaveLength(1);
    const bad = [
      "a 1", // no trailing newline
      "a 1\n", // no TYPE
      "# TYPE a gauge\n# TYPE a gauge\na 1\n",
      "# TYPE a gauge\na 1\na 2\n", // duplicate series
      '# TYPE a gauge\na{l="v} 1\n',
      '# TYPE a gauge\na{1l="v"} 1\n',
      '# TYPE a gauge\na{l="v",l="w"} 1\n',
      "# TYPE a gauge\na one\n",
      "# TYPE a gauge\na nanx\n",
      '# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na{x="y"} 1\n', // split family
      "# TYPE 1a gauge\n",
      "# TYPE h histogram\nh_bucket 1\n", // bucket without le
    ];
    for (const text of bad) expect(() => parseExposition(text), text).toThrow();
  });
});
