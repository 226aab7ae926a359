// The credential engine end to end: pgwarden as a child process with the real AWS and Azure
// SDKs, talking to loopback emulators, logging in to a real PostgreSQL that checks every token
// (design §4). Counts come from the emulators and the checker, not from pgwarden.
import { writeFileSync } from "node:fs";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Pgwarden, startPgwarden } from "./harness/pgwarden.js";
import { connect, eventually, logLines, sleep } from "./helpers.js";
import { type IdentityEnv, RDS_HOST, startIdentityEnv } from "./identity-env.js";

let env: IdentityEnv;
const started: Pgwarden[] = [];

beforeAll(async () => {
  env = await startIdentityEnv({ entraLifetimeSec: 20, entraLatencyMs: 0, awsLifetimeMs: 20_000 });
  for (const role of ["az_app", "az_other", "rds_app", "rds_other"]) await env.createIamRole(role);
  env.azureRoles.set("az_app", "client-a");
  env.azureRoles.set("az_other", "client-b");
  await env.cluster.query("grant all on schema public to public");
}, 60_000);

afterAll(async () => {
  for (const p of started) await p.stop();
  // Whatever happened above: no token, assertion or AWS secret may appear in any log line.
  const logs = started.flatMap((p) => p.logs()).join("\n");
  for (const token of env?.seenTokens ?? []) expect(logs.includes(token)).toBe(false);
  for (const list of env?.entra.assertions.values() ?? [])
    for (const a of list) expect(logs.includes(a)).toBe(false);
  expect(logs).not.toMatch(/X-Amz-Signature=[0-9a-f]{16}/);
  expect(logs).not.toMatch(/eyJ[\w-]{10,}\.[\w-]{10,}/);
  await env?.stop();
});

function db(name = "appdb") {
  return { name, host: "127.0.0.1", port: env.cluster.port, database_name: "postgres" };
}

async function pooler(
  users: Array<Record<string, unknown>>,
  general: Record<string, unknown> = {},
  databases = [db()],
) {
  const pw = await startPgwarden({
    // trace: the no-secret check at the end covers every log level.
    // These tests count server logins against one pool's pre-opened servers (a holder takes the
    // only one, the next client must log in); with workers each worker has its share of the
    // pool, so they pin one process. Workers' credential behaviour: test/workers.test.ts.
    general: {
      workers: 1,
      tls_verify: "prefer",
      token_fetch_timeout: 10_000,
      log_level: "trace",
      ...general,
    },
    databases,
    users: users.map((u) => ({ database: "appdb", password: "pw", ...u })),
    env: env.childEnv(),
    startTimeoutMs: 60_000,
  });
  started.push(pw);
  return pw;
}

const azureUser = (extra: Record<string, unknown> = {}) => ({
  name: "az",
  server_user: "az_app",
  server_auth: "azure_workload_identity",
  ...extra,
});
const rdsUser = (extra: Record<string, unknown> = {}) => ({
  name: "rds",
  server_user: "rds_app",
  server_auth: "rds_iam",
  server_iam_host: RDS_HOST,
  ...extra,
});
const entraCalls = (client = "client-a") => env.entra.requests.get(client) ?? 0;
const fetchLogs = (pw: Pgwarden, provider: string) =>
  logLines(pw).filter((l) => l.msg === "credential fetched" && l.provider === provider);

/** n clients running short transactions until `ms` has passed; returns the errors they saw. */
async function load(
  pw: Pgwarden,
  user: string,
  n: number,
  ms: number,
): Promise<{ errors: string[]; queries: number }> {
  const errors: string[] = [];
  let queries = 0;
  const deadline = Date.now() + ms;
  await Promise.all(
    Array.from({ length: n }, async () => {
      let c: pg.Client | null = null;
      while (Date.now() < deadline) {
        try {
          c ??= await connect(pw, user, "pw", "appdb");
          await c.query("select current_user, pg_backend_pid()");
          queries++;
        } catch (err) {
          errors.push((err as Error).message);
          await c?.end().catch(() => {});
          c = null;
          await sleep(200);
        }
        await sleep(20);
      }
      await c?.end().catch(() => {});
    }),
  );
  return { errors, queries };
}

describe("cold start", () => {
  it("20 connections with a 2 s token fetch: one provider call, startup about one fetch long", async () => {
    env.entra.setLatency(2000);
    env.entra.setLifetime(600);
    const before = entraCalls();
    const t0 = Date.now();
    const pw = await pooler([azureUser({ pool_size: 20, min_pool_size: 20 })]);
    const startupMs = Date.now() - t0;
    expect(entraCalls() - before).toBe(1);
    expect(env.entra.inFlight.max).toBe(1);
    expect((await env.cluster.backendPids("az_app")).length).toBe(20);
    console.log(
      `[measure] cold start: ${startupMs} ms to listening with 20 servers, 2000 ms token fetch, ${entraCalls() - before} provider call(s)`,
    );
    const c = await connect(pw, "az", "pw", "appdb");
    expect((await c.query("select current_user as u")).rows[0].u).toBe("az_app");
    await c.end();
    await pw.stop();
    env.entra.setLatency(0);
  }, 90_000);
});

describe("rotation under load", () => {
  it("100 clients over several 20 s token lifetimes: no client error, about one fetch per refresh, never two at once", async () => {
    env.entra.setLatency(2000);
    env.entra.setLifetime(20);
    env.aws.setLifetime(20_000);
    env.entra.inFlight.max = 0;
    const entraBefore = entraCalls();
    const awsBefore = env.aws.requests;
    const loginsBefore = env.ldap.stats.accepted;
    // server_lifetime makes servers log in again all the time, each time with the current token.
    const pw = await pooler(
      [
        azureUser({ pool_size: 10, min_pool_size: 2 }),
        rdsUser({ pool_size: 10, min_pool_size: 2 }),
      ],
      { server_lifetime: 2500 },
    );
    const runMs = 45_000;
    const [az, rds] = await Promise.all([load(pw, "az", 50, runMs), load(pw, "rds", 50, runMs)]);
    const entraCallsMade = entraCalls() - entraBefore;
    const rdsFetches = fetchLogs(pw, "rds_iam").length;
    console.log(
      `[measure] rotation: ${runMs / 1000}s, azure ${az.queries} queries / ${az.errors.length} errors / ${entraCallsMade} Entra calls (max in flight ${env.entra.inFlight.max}); rds ${rds.queries} queries / ${rds.errors.length} errors / ${rdsFetches} token fetches / ${env.aws.requests - awsBefore} credential-endpoint calls; ${env.ldap.stats.accepted - loginsBefore} token logins`,
    );
    expect(az.errors).toEqual([]);
    expect(rds.errors).toEqual([]);
    // 20 s tokens refresh about every 15-16 s (+2 s fetch): 45 s ≈ 1 warm + 2-3 refreshes.
    expect(entraCallsMade).toBeGreaterThanOrEqual(3);
    expect(entraCallsMade).toBeLessThanOrEqual(5);
    expect(env.entra.inFlight.max).toBe(1);
    expect(rdsFetches).toBeGreaterThanOrEqual(3);
    expect(rdsFetches).toBeLessThanOrEqual(5);
    expect(env.ldap.stats.accepted - loginsBefore).toBeGreaterThan(40);
    await pw.stop();
    env.entra.setLatency(0);
  }, 120_000);
});

describe("sharing", () => {
  it("pools with the same identity share one refresher; other users or regions do not", async () => {
    const pw = await pooler(
      [
        rdsUser({ database: "appdb" }),
        rdsUser({ database: "otherdb" }),
        rdsUser({ name: "rds2", server_user: "rds_other" }),
        rdsUser({ name: "rds3", server_iam_region: "us-east-1", min_pool_size: 0 }),
        azureUser({ database: "appdb" }),
        azureUser({ database: "otherdb" }),
      ],
      {},
      [db("appdb"), db("otherdb")],
    );
    const lines = logLines(pw);
    const refreshers = lines
      .filter((l) => l.msg === "credential refresher started")
      .map((l) => l.credential as string);
    expect(refreshers.length).toBe(4);
    expect(refreshers.filter((k) => k.startsWith("rds_iam(")).length).toBe(3);
    expect(refreshers.filter((k) => k.startsWith("azure_workload_identity(")).length).toBe(1);
    expect(fetchLogs(pw, "rds_iam").length).toBe(3);
    expect(fetchLogs(pw, "azure_workload_identity").length).toBe(1);
    for (const database of ["appdb", "otherdb"]) {
      const c = await connect(pw, "rds", "pw", database);
      expect((await c.query("select current_user as u")).rows[0].u).toBe("rds_app");
      await c.end();
    }
    await pw.stop();
  });
});

describe("provider outages", () => {
  it("an outage shorter than the token's life: no client error, retries back off", async () => {
    env.entra.setLifetime(40);
    env.entra.setLatency(200);
    const pw = await pooler([azureUser({ pool_size: 10, min_pool_size: 2 })], {
      server_lifetime: 2000,
    });
    const t0 = Date.now();
    const times: number[] = [];
    const count = () => times.push(Date.now());
    const before = entraCalls();
    const run = load(pw, "az", 20, 42_000);
    await sleep(22_000 - (Date.now() - t0));
    env.entra.setFailure("500");
    const failBefore = entraCalls();
    const outageStart = Date.now();
    // Sample the provider's request counter to see when the retries came.
    let last = entraCalls();
    while (Date.now() - outageStart < 11_000) {
      await sleep(100);
      if (entraCalls() !== last) {
        last = entraCalls();
        count();
      }
    }
    env.entra.setFailure("none");
    const outageRequests = entraCalls() - failBefore;
    const { errors, queries } = await run;
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    console.log(
      `[measure] short outage: ${queries} queries, ${errors.length} errors, ${outageRequests} requests during 11 s outage, gaps ${gaps.join(",")} ms`,
    );
    expect(errors).toEqual([]);
    expect(outageRequests).toBeGreaterThanOrEqual(2);
    expect(outageRequests).toBeLessThanOrEqual(8);
    for (let i = 1; i < gaps.length; i++)
      expect(gaps[i]!).toBeGreaterThanOrEqual(gaps[i - 1]! * 0.9);
    expect(entraCalls() - before).toBeLessThan(15);
    await pw.stop();
  }, 90_000);

  it("an outage longer than the token's life: clear errors for new connections, open ones keep working, recovery without restart", async () => {
    env.entra.setLifetime(12);
    env.entra.setLatency(100);
    const pw = await pooler([
      azureUser({ pool_size: 3, min_pool_size: 1, pooler_mode: "session" }),
    ]);
    const holder = await connect(pw, "az", "pw", "appdb");
    env.entra.setFailure("500");
    await sleep(14_000); // the 12 s token has expired, every refresh failed
    const err = (await connect(pw, "az", "pw", "appdb").catch((e: Error) => e)) as Error;
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toMatch(/azure_workload_identity/);
    expect(err.message).toMatch(/no valid token|could not get a token/);
    expect(err.message).toMatch(/500|server_error|Internal/i);
    // The server connection opened before expiry is not affected.
    expect((await holder.query("select 'still connected' as s")).rows[0].s).toBe("still connected");
    env.entra.setFailure("none");
    await eventually(
      async () => {
        const c = await connect(pw, "az", "pw", "appdb").catch(() => null);
        if (!c) return false;
        await c.end();
        return true;
      },
      "recovery after the provider came back",
      45_000,
    );
    await holder.end();
    await pw.stop();
  }, 120_000);
});

describe("rejected tokens and rotated federated tokens", () => {
  it("a token the server rejects is replaced once and the login retried; a rotated token file is sent as the next assertion", async () => {
    env.entra.setLifetime(600);
    env.entra.setLatency(0);
    const pw = await pooler([
      azureUser({ pool_size: 3, min_pool_size: 1, pooler_mode: "session" }),
    ]);
    const first = await connect(pw, "az", "pw", "appdb");
    const callsBefore = entraCalls();
    const rejectedBefore = env.ldap.stats.rejected;
    // Kubernetes rewrote the projected token; then the database revoked the token in use.
    writeFileSync(env.tokenFile, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyb3RhdGVkIn0.second-assertion");
    env.entra.revoke(env.lastToken.get("az_app")!);
    const second = await connect(pw, "az", "pw", "appdb");
    expect((await second.query("select current_user as u")).rows[0].u).toBe("az_app");
    expect(env.ldap.stats.rejected - rejectedBefore).toBe(1);
    expect(entraCalls() - callsBefore).toBe(1);
    expect(env.entra.assertions.get("client-a")!.at(-1)).toContain("second-assertion");
    expect(
      logLines(pw).some((l) => l.msg === "server rejected the token; fetching a new one"),
    ).toBe(true);
    await first.end();
    await second.end();
    await pw.stop();
  });
});
