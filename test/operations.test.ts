// Operating pgwarden: the admin console through psql, PAUSE/RESUME and RELOAD under pgbench
// load, and the Prometheus endpoint, against a real PostgreSQL and real token logins.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parsePgbench, runPgbench, runPsql } from "./harness/clients.js";
import { type Pgwarden, startPgwarden } from "./harness/pgwarden.js";
import { connect, sleep } from "./helpers.js";
import { type IdentityEnv, startIdentityEnv } from "./identity-env.js";

let env: IdentityEnv;
let pw: Pgwarden;
let metricsPort: number;

const general = () => ({
  tls_verify: "prefer",
  openmetrics_port: metricsPort,
  checkout_timeout: 30_000,
});
const databases = () => [
  { name: "appdb", host: "127.0.0.1", port: env.cluster.port, database_name: "benchdb" },
];
const users = () => [
  {
    name: "bench",
    database: "appdb",
    password: "pw",
    server_password: "bench-pw",
    pool_size: 10,
    min_pool_size: 2,
  },
  {
    name: "az",
    database: "appdb",
    password: "pw",
    server_user: "az_app",
    server_auth: "azure_workload_identity",
    pool_size: 2,
    min_pool_size: 1,
  },
];
const admin = { name: "admin", user: "ops", password: "ops-secret" };

beforeAll(async () => {
  env = await startIdentityEnv({
    entraLifetimeSec: 8,
    entraLatencyMs: 0,
    awsLifetimeMs: 3_600_000,
  });
  await env.createIamRole("az_app");
  env.azureRoles.set("az_app", "client-a");
  await env.cluster.createRole("bench", "bench-pw");
  await env.cluster.createDatabase("benchdb", "bench");
  await env.cluster.query("grant connect on database benchdb to az_app");
  const { freePort } = await import("./harness/procs.js");
  metricsPort = await freePort();
  pw = await startPgwarden({
    general: general(),
    databases: databases(),
    users: users(),
    admin,
    env: env.childEnv(),
    startTimeoutMs: 60_000,
  });
  const init = await runPgbench(["-i", "-s", "1", "-q", "appdb"], { env: clientEnv("bench") });
  expect(init.code, init.stderr).toBe(0);
}, 90_000);

afterAll(async () => {
  await pw?.stop();
  await env?.stop();
});

function clientEnv(user: string, password = "pw") {
  return { PGHOST: pw.host, PGPORT: String(pw.port), PGUSER: user, PGPASSWORD: password };
}

/** Runs admin commands through psql; returns header columns and rows of the last result. */
async function adminQuery(
  sql: string,
): Promise<{ columns: string[]; rows: string[][]; stderr: string; code: number | null }> {
  const r = await runPsql(
    ["-X", "-A", "-F", "\t", "--pset", "footer=off", "-d", "admin", "-c", sql],
    { env: clientEnv("ops", "ops-secret") },
  );
  const lines = r.stdout.split("\n").filter((l) => l.length > 0);
  return {
    columns: (lines[0] ?? "").split("\t"),
    rows: lines.slice(1).map((l) => l.split("\t")),
    stderr: r.stderr,
    code: r.code,
  };
}

async function scrape(): Promise<Map<string, number>> {
  const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toContain("text/plain");
  const out = new Map<string, number>();
  for (const line of (await res.text()).split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    expect(m, `not Prometheus text: ${line}`).not.toBeNull();
    out.set(m![1]!, Number(m![2]));
  }
  return out;
}

describe("admin console", () => {
  const expected: Record<string, string[]> = {
    "SHOW POOLS": [
      "database",
      "user",
      "cl_active",
      "cl_waiting",
      "sv_active",
      "sv_idle",
      "sv_used",
      "sv_login",
      "maxwait",
      "pool_mode",
    ],
    "SHOW CLIENTS": [
      "type",
      "user",
      "database",
      "state",
      "addr",
      "port",
      "connect_time",
      "application_name",
    ],
    "SHOW SERVERS": [
      "type",
      "user",
      "database",
      "state",
      "addr",
      "port",
      "connect_time",
      "remote_pid",
      "tls",
    ],
    "SHOW STATS": ["database", "total_xact_count", "total_query_count", "total_wait_time"],
    "SHOW DATABASES": [
      "name",
      "host",
      "port",
      "database",
      "pool_size",
      "min_pool_size",
      "pool_mode",
      "paused",
    ],
    "SHOW USERS": ["name", "pool_mode"],
    "SHOW CONFIG": ["key", "value"],
    "SHOW VERSION": ["version"],
    "SHOW CREDENTIALS": [
      "provider",
      "host",
      "port",
      "user",
      "state",
      "expires_at",
      "refresh_at",
      "age",
      "fetches",
      "failures",
      "last_error",
      "consumers",
    ],
  };
  for (const [cmd, cols] of Object.entries(expected)) {
    it(`${cmd} answers with PgBouncer's columns`, async () => {
      const keep = await connect(pw, "bench", "pw", "appdb");
      const r = await adminQuery(cmd);
      expect(r.stderr).toBe("");
      for (const c of cols) expect(r.columns).toContain(c);
      expect(r.rows.length).toBeGreaterThan(0);
      await keep.end();
    });
  }

  it("SHOW CREDENTIALS and SHOW CONFIG never show a secret", async () => {
    const creds = await adminQuery("SHOW CREDENTIALS");
    const row = creds.rows.find(
      (r) => r[creds.columns.indexOf("provider")] === "azure_workload_identity",
    );
    expect(row).toBeDefined();
    const text =
      JSON.stringify(creds) +
      JSON.stringify(await adminQuery("SHOW CONFIG")) +
      JSON.stringify(await adminQuery("SHOW USERS"));
    for (const t of env.seenTokens) expect(text.includes(t)).toBe(false);
    expect(text).not.toContain("bench-pw");
    expect(text).not.toContain("ops-secret");
  });

  it("refuses unknown commands and non-admin users", async () => {
    const r = await adminQuery("SHOW NONSENSE");
    expect(r.stderr).toMatch(/ERROR/);
    const denied = await runPsql(["-X", "-d", "admin", "-c", "SHOW POOLS"], {
      env: clientEnv("bench"),
    });
    expect(denied.code).not.toBe(0);
    // A non-admin user runs the same SCRAM exchange as anyone and fails like a wrong password.
    expect(denied.stderr).toMatch(/password authentication failed for user "bench"/);
    const wrong = await runPsql(["-X", "-d", "admin", "-c", "SHOW POOLS"], {
      env: clientEnv("ops", "wrong"),
    });
    expect(wrong.stderr).toMatch(/password authentication failed/);
  });
});

describe("under pgbench load", () => {
  it("PAUSE holds and RESUME releases a running pgbench without errors", async () => {
    const bench = runPgbench(["-n", "-c", "10", "-j", "2", "-T", "8", "appdb"], {
      env: clientEnv("bench"),
      timeoutMs: 60_000,
    });
    await sleep(2000);
    const paused = await adminQuery("PAUSE appdb");
    expect(paused.stderr).toBe("");
    await sleep(300);
    const pools = await adminQuery("SHOW POOLS");
    const row = pools.rows.find((r) => r[pools.columns.indexOf("user")] === "bench")!;
    expect(Number(row[pools.columns.indexOf("sv_active")])).toBe(0);
    expect(Number(row[pools.columns.indexOf("cl_waiting")])).toBeGreaterThan(0);
    await sleep(1500);
    expect((await adminQuery("RESUME appdb")).stderr).toBe("");
    const r = await bench;
    expect(r.code, r.stderr).toBe(0);
    expect(parsePgbench(r.stdout).failed).toBe(0);
  }, 60_000);

  it("RELOAD from psql during pgbench -c 20 -T 20 causes zero failed transactions", async () => {
    const bench = runPgbench(["-n", "-c", "20", "-j", "2", "-T", "20", "appdb"], {
      env: clientEnv("bench"),
      timeoutMs: 90_000,
    });
    await sleep(3000);
    const before = await env.cluster.backendPids("bench");
    pw.writeConfig({
      general: general(),
      databases: databases(),
      users: users().map((u) => (u.name === "bench" ? { ...u, pool_size: 12 } : u)),
      admin,
    });
    const reload = await adminQuery("RELOAD");
    expect(reload.stderr).toMatch(/NOTICE: +reloaded: 0 added, 0 removed, 0 replaced, 1 resized/);
    await sleep(3000);
    pw.writeConfig({ general: general(), databases: databases(), users: users(), admin });
    expect((await adminQuery("RELOAD")).stderr).not.toMatch(/ERROR/);
    const r = await bench;
    expect(r.code, r.stderr).toBe(0);
    expect(parsePgbench(r.stdout).failed).toBe(0);
    // The resize kept the pool: its first servers are still there.
    const after = await env.cluster.backendPids("bench");
    expect(after.filter((p) => before.includes(p)).length).toBeGreaterThan(0);
  }, 90_000);
});

describe("metrics", () => {
  it("/metrics parses as Prometheus text; counters move with traffic and token fetches", async () => {
    const a = await scrape();
    const xact = (m: Map<string, number>) =>
      m.get('pgwarden_transactions_total{user="bench",database="appdb"}') ?? 0;
    const fetches = (m: Map<string, number>) =>
      [...m.entries()]
        .filter(
          ([k]) => k.startsWith("pgwarden_credential_fetch_total{") && k.includes('result="ok"'),
        )
        .reduce((s, [, v]) => s + v, 0);
    const c = await connect(pw, "bench", "pw", "appdb");
    for (let i = 0; i < 25; i++) await c.query("select 1");
    await c.end();
    await sleep(9000); // an 8 s token is refreshed in the meantime
    const b = await scrape();
    expect(xact(b)).toBeGreaterThanOrEqual(xact(a) + 25);
    expect(fetches(b)).toBeGreaterThan(fetches(a));
    expect([...b.keys()].some((k) => k.startsWith("pgwarden_credential_expiry_seconds{"))).toBe(
      true,
    );
    expect([...b.keys()].some((k) => k.startsWith("pgwarden_process_cpu"))).toBe(true);
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    for (const t of env.seenTokens) expect(text.includes(t)).toBe(false);
  }, 30_000);
});

describe("RECONNECT and SHUTDOWN", () => {
  it("RECONNECT replaces a database's idle servers with new ones", async () => {
    const c = await connect(pw, "bench", "pw", "appdb");
    await c.query("select 1");
    await c.end();
    const before = await env.cluster.backendPids("bench");
    expect(before.length).toBeGreaterThan(0);
    const r = await adminQuery("RECONNECT appdb");
    expect(r.stderr).toBe("");
    await sleep(1500); // maintenance refills min_pool_size with new connections
    const after = await env.cluster.backendPids("bench");
    expect(after.length).toBeGreaterThan(0);
    expect(after.filter((p) => before.includes(p))).toEqual([]);
  });

  it("SHUTDOWN stops pgwarden, which exits 0", async () => {
    await adminQuery("SHUTDOWN");
    const status = await pw.exited;
    expect(status.code).toBe(0);
  });
});
