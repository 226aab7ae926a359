// Hot reload: SIGHUP applies a new config as a diff. Unchanged pools keep their backends, a
// resized pool grows in place, a removed user's pool drains and its credential refresher stops,
// an invalid config changes nothing.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Pgwarden, startPgwarden } from "./harness/pgwarden.js";
import { connect, eventually, loginError, logLines, sleep } from "./helpers.js";
import { type IdentityEnv, startIdentityEnv } from "./identity-env.js";

let env: IdentityEnv;
let pw: Pgwarden;

const general = { tls_verify: "prefer", token_fetch_timeout: 10_000 };
const databases = () => [
  { name: "appdb", host: "127.0.0.1", port: env.cluster.port, database_name: "postgres" },
];
const user = (name: string, extra: Record<string, unknown> = {}) => ({
  name,
  database: "appdb",
  password: "pw",
  server_password: `${name}-pw`,
  ...extra,
});
const azure = (extra: Record<string, unknown> = {}) => ({
  name: "az",
  database: "appdb",
  password: "pw",
  server_user: "az_app",
  server_auth: "azure_workload_identity",
  ...extra,
});

beforeAll(async () => {
  env = await startIdentityEnv({
    entraLifetimeSec: 8,
    entraLatencyMs: 0,
    awsLifetimeMs: 3_600_000,
  });
  await env.createIamRole("az_app");
  env.azureRoles.set("az_app", "client-a");
  for (const r of ["keep", "grow", "gone"]) await env.cluster.createRole(r, `${r}-pw`);
  pw = await startPgwarden({
    general,
    databases: databases(),
    users: [
      user("keep", { pool_size: 2, min_pool_size: 2 }),
      user("grow", { pool_size: 2, min_pool_size: 2 }),
      user("gone", { pool_size: 2, min_pool_size: 1 }),
      azure({ pool_size: 2, min_pool_size: 1 }),
    ],
    env: env.childEnv(),
    startTimeoutMs: 60_000,
  });
}, 60_000);

afterAll(async () => {
  await pw?.stop();
  await env?.stop();
});

const pids = async (role: string) => (await env.cluster.backendPids(role)).sort();

async function reloadWith(users: Array<Record<string, unknown>>): Promise<Record<string, unknown>> {
  const from = pw.logs().length;
  pw.writeConfig({ general, databases: databases(), users });
  pw.signal("SIGHUP");
  return pw.waitForLog(
    (l) =>
      typeof l === "object" &&
      (l.msg === "configuration reloaded" ||
        l.msg === "configuration reload failed; keeping the running configuration"),
    20_000,
    from,
  );
}

describe("reload on SIGHUP", () => {
  it("an invalid users.toml leaves service untouched and the error is logged", async () => {
    const keepBefore = await pids("keep");
    const c = await connect(pw, "keep", "pw", "appdb");
    writeFileSync(
      join(pw.dir, "users.toml"),
      '[[users]]\nname = "keep"\ndatabase = "appdb"\npool_size = "many"\n',
    );
    const from = pw.logs().length;
    pw.signal("SIGHUP");
    const line = await pw.waitForLog(
      (l) =>
        typeof l === "object" &&
        l.msg === "configuration reload failed; keeping the running configuration",
      10_000,
      from,
    );
    expect(line.err).toMatch(/users\.toml.*\[\[users\]\]\[0\].*pool_size/);
    expect((await c.query("select 'still serving' as s")).rows[0].s).toBe("still serving");
    expect(await pids("keep")).toEqual(keepBefore);
    for (const u of ["grow", "gone", "az"]) (await connect(pw, u, "pw", "appdb")).end();
    await c.end();
  });

  it("resizes one pool, removes another user, keeps the rest, and stops the removed user's refresher", async () => {
    const keepBefore = await pids("keep");
    const growBefore = await pids("grow");
    expect(keepBefore.length).toBe(2);
    expect(growBefore.length).toBe(2);
    const gone = await connect(pw, "gone", "pw", "appdb");
    await gone.query("begin");
    await gone.query("select 1");

    // Remove the Azure user and "gone"; grow "grow" to 4.
    const line = await reloadWith([
      user("keep", { pool_size: 2, min_pool_size: 2 }),
      user("grow", { pool_size: 4, min_pool_size: 4 }),
    ]);
    expect(line.msg).toBe("configuration reloaded");
    expect(line.removed).toEqual(expect.arrayContaining(["gone/appdb", "az/appdb"]));
    expect(line.resized).toEqual(["grow/appdb"]);
    expect(line.kept).toEqual(["keep/appdb"]);

    // Unchanged pool: same backends. Resized pool: its old backends plus two new ones.
    expect(await pids("keep")).toEqual(keepBefore);
    await eventually(async () => (await pids("grow")).length === 4, "grow reaches 4 servers");
    expect(await pids("grow")).toEqual(expect.arrayContaining(growBefore));

    // The removed user: new logins are refused as PostgreSQL refuses an unknown role (the same
    // 28P01 as a wrong password); the open transaction finishes, then its server closes.
    expect((await loginError(pw, "gone", "pw", "appdb")).code).toBe("28P01");
    expect((await gone.query("select 'finishing' as s")).rows[0].s).toBe("finishing");
    await gone.query("commit");
    await eventually(
      async () => (await pids("gone")).length === 0,
      "the removed user's servers closed",
    );
    await gone.end().catch(() => {});

    // The removed identity's refresher is gone: no more provider calls, although its 8 s tokens
    // would have been refreshed several times by now.
    await eventually(
      () => logLines(pw).some((l) => l.msg === "credential refresher stopped"),
      "refresher stopped",
    );
    const calls = env.entra.requests.get("client-a") ?? 0;
    await sleep(12_000);
    expect(env.entra.requests.get("client-a") ?? 0).toBe(calls);
    expect(await pids("az_app")).toEqual([]);
  }, 60_000);

  it("a changed pool drains to a new one; an unchanged identity keeps its token", async () => {
    await reloadWith([
      user("keep", { pool_size: 2, min_pool_size: 2 }),
      user("grow", { pool_size: 4, min_pool_size: 4 }),
      azure({ pool_size: 2, min_pool_size: 1 }),
    ]);
    const afterAdd = env.entra.requests.get("client-a") ?? 0;
    const c = await connect(pw, "az", "pw", "appdb");
    expect((await c.query("select current_user as u")).rows[0].u).toBe("az_app");
    // pooler_mode change: a new pool for az; same identity, so no new token fetch.
    const line = await reloadWith([
      user("keep", { pool_size: 2, min_pool_size: 2 }),
      user("grow", { pool_size: 4, min_pool_size: 4 }),
      azure({ pool_size: 2, min_pool_size: 1, pooler_mode: "session" }),
    ]);
    expect(line.replaced).toEqual(["az/appdb"]);
    expect(env.entra.requests.get("client-a") ?? 0).toBe(afterAdd);
    // The transaction-mode client moves to the new pool on its next transaction.
    expect((await c.query("select 'moved' as s")).rows[0].s).toBe("moved");
    await c.end();
  }, 60_000);
});
