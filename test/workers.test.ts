// Workers (design §6): `workers = 2` is one instance in three processes (the primary and two
// workers). Real PostgreSQL, real clients: cancel keys route to the owning worker whichever
// worker accepted the CancelRequest, the admin console and /metrics show both workers, a reload
// under pgbench load fails nothing, a SIGKILLed worker is replaced (its clients see an error,
// new clients are served; it runs the configuration and the TLS certificate the instance
// loaded), and token rotation costs the provider what it costs one process.
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTestCa } from "./fixtures/test-ca.js";
import { parsePgbench, runPgbench } from "./harness/clients.js";
import { type Pgwarden, startPgwarden, workerPids } from "./harness/pgwarden.js";
import { type PgCluster, startPostgres } from "./harness/postgres.js";
import { freePort } from "./harness/procs.js";
import { connect, eventually, sendCancel, sleep, sleepingClient } from "./helpers.js";
import { startIdentityEnv } from "./identity-env.js";

const ADMIN = { name: "admin", user: "ops", password: "ops-secret" };

/** The worker a client's cancel key names (low 7 bits of its BackendKeyData pid). */
// biome-ignore lint/suspicious/noExplicitAny: node-pg keeps the key on the client
const workerOf = (c: any): number => (c.processID as number) & 127;

describe("workers = 2", () => {
  let cluster: PgCluster;
  let pw: Pgwarden;
  let metricsPort: number;
  const users = (poolSize: number) => [
    {
      name: "app",
      database: "appdb",
      password: "client-pw",
      server_password: "app-pw",
      pool_size: poolSize,
    },
  ];
  const databases = () => [{ name: "appdb", host: cluster.host, port: cluster.port }];
  const general = () => ({
    workers: 2,
    pooler_mode: "transaction",
    checkout_timeout: 20_000,
    openmetrics_port: metricsPort,
    shutdown_timeout: 3000,
  });

  beforeAll(async () => {
    cluster = await startPostgres();
    await cluster.createRole("app", "app-pw");
    await cluster.createDatabase("appdb", "app");
    metricsPort = await freePort();
    pw = await startPgwarden({
      general: general(),
      databases: databases(),
      users: users(8),
      admin: ADMIN,
    });
  }, 120_000);

  afterAll(async () => {
    await pw?.stop();
    await cluster?.stop();
  });

  const admin = () => connect(pw, ADMIN.user, ADMIN.password, "admin");

  /**
   * At least `n` clients, and at least one on each worker. node:cluster's round-robin alternates
   * workers; with reusePort (Node 22.12+) the kernel picks by connection hash, so keep
   * connecting until both workers have one.
   */
  async function clientsOnBothWorkers(n: number) {
    const clients = [];
    while (clients.length < n || new Set(clients.map(workerOf)).size < 2) {
      if (clients.length >= 40) throw new Error("40 connections, all on one worker");
      clients.push(await connect(pw, "app", "client-pw", "appdb"));
    }
    return clients;
  }

  /** pool_size of the app pool as /metrics shows it (the whole instance). */
  async function poolSizeMetric(): Promise<number> {
    const body = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const m = /^pgwarden_pool_size\{[^}]*user="app"[^}]*\} (\d+)$/m.exec(body);
    if (m === null) throw new Error("no pgwarden_pool_size for app in /metrics");
    return Number(m[1]);
  }

  it("runs the primary and two workers, and logs listening once", async () => {
    expect(workerPids(pw)).toHaveLength(2);
    expect(pw.logs().filter((l) => l.includes('"msg":"listening"'))).toHaveLength(1);
    // reusePort where the runtime has it (Node 22.12+, 23.1+), node:cluster's round-robin before
    const [major = 0, minor = 0] = process.versions.node.split(".").map(Number);
    const reusePort = major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
    const listening = await pw.waitForLog((l) => l.msg === "listening");
    expect(listening.accept).toBe(reusePort ? "reusePort" : "cluster round-robin");
  });

  it("cancels a query whose CancelRequest lands on the other worker", async () => {
    // Round-robin spreads the victims and the cancel connections over the two workers: each
    // victim's key is sent on two connections in a row (one per worker, the second a no-op once
    // the query is gone), and three connections per round make the victims alternate workers.
    // Every cancel must work, and the log must show cancels routed across workers.
    const owners = new Set<number>();
    const from = pw.logs().length;
    const routed = () =>
      pw
        .logs()
        .slice(from)
        .filter((l) => l.includes("routed to the worker that owns")).length;
    for (let i = 0; i < 4 || (i < 24 && (owners.size < 2 || routed() === 0)); i++) {
      const victim = await sleepingClient(pw, "app", "client-pw", "appdb", 30);
      const { processID, secretKey } = victim;
      await sleep(200);
      await Promise.all([
        sendCancel(pw, processID, secretKey),
        sleep(20).then(() => sendCancel(pw, processID, secretKey)),
      ]);
      const code = await Promise.race([victim.outcome, sleep(5000).then(() => "still running")]);
      expect(code).toBe("57014");
      expect((await victim.client.query("select 'alive' as s")).rows[0].s).toBe("alive");
      owners.add(workerOf(victim.client));
      await victim.client.end();
    }
    expect([...owners].sort()).toEqual([0, 1]);
    expect(routed()).toBeGreaterThan(0);
  }, 60_000);

  it("a wrong secret cancels nothing, on either worker", async () => {
    const victim = await sleepingClient(pw, "app", "client-pw", "appdb", 1.5);
    await sleep(200);
    for (let i = 0; i < 4; i++) await sendCancel(pw, victim.processID, victim.secretKey ^ 1, 100);
    expect(await victim.outcome).toBe("done");
    await victim.client.end();
  });

  it("SHOW POOLS, SHOW CLIENTS and /metrics cover every worker", async () => {
    const clients = await clientsOnBothWorkers(4);
    // each worker's share of the pool (4 + 4) must hold its clients' transactions
    for (const w of [0, 1])
      while (clients.filter((c) => workerOf(c) === w).length > 4)
        await clients
          .splice(
            clients.findIndex((c) => workerOf(c) === w),
            1,
          )[0]
          ?.end();
    for (const c of clients) await c.query("begin; select 1");
    const n = clients.length;
    const a = await admin();
    const pools = (await a.query("show pools")).rows.filter((r) => r.user === "app");
    expect(pools).toHaveLength(1);
    expect(pools[0].cl_active).toBe(n);
    expect(pools[0].sv_active).toBe(n);
    const rows = (await a.query("show clients")).rows.filter((r) => r.user === "app");
    expect(rows).toHaveLength(n);
    expect(new Set(rows.map((r) => r.worker))).toEqual(new Set([0, 1]));
    const servers = (await a.query("show servers")).rows.filter((r) => r.state === "active");
    expect(new Set(servers.map((r) => r.worker))).toEqual(new Set([0, 1]));
    const body = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(body).toMatch(
      new RegExp(`^pgwarden_pool_clients_active\\{[^}]*user="app"[^}]*\\} ${n}$`, "m"),
    );
    // pool_size is split 4 + 4 and summed back.
    expect(body).toMatch(/^pgwarden_pool_size\{[^}]*user="app"[^}]*\} 8$/m);
    for (const c of clients) {
      await c.query("commit");
      await c.end();
    }
    await a.end();
  });

  it("PAUSE and RESUME act on every worker", async () => {
    const a = await admin();
    await a.query("pause appdb");
    const clients = await clientsOnBothWorkers(2);
    const results = clients.map((c) => c.query("select 1 as x").then(() => Date.now()));
    await sleep(500);
    const resumedAt = Date.now();
    await a.query("resume appdb");
    for (const t of await Promise.all(results)) expect(t).toBeGreaterThanOrEqual(resumedAt);
    for (const c of clients) await c.end();
    await a.end();
  });

  it("reload under pgbench load: SIGHUP and RELOAD resize both workers, 0 failed", async () => {
    const init = await runPgbench(["-i", "-s", "1", "-q", "appdb"], { env: benchEnv() });
    expect(init.code, init.stderr).toBe(0);
    const bench = runPgbench(["-n", "-S", "-c", "16", "-j", "2", "-T", "8", "appdb"], {
      env: benchEnv(),
      timeoutMs: 60_000,
    });
    const a = await admin();
    for (const size of [4, 10, 6]) {
      await sleep(1500);
      const from = pw.logs().length;
      pw.writeConfig({ general: general(), databases: databases(), users: users(size) });
      if (size === 10) await a.query("reload");
      else pw.signal("SIGHUP");
      await pw.waitForLog((l) => l.msg === "configuration reloaded", 10_000, from);
      const reloadedWorkers = () =>
        pw
          .logs()
          .slice(from)
          .filter((l) => l.includes('"msg":"worker configuration reloaded"')).length;
      await eventually(() => reloadedWorkers() === 2, "both workers log their reload", 3000);
      const body = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      expect(body).toMatch(
        new RegExp(`^pgwarden_pool_size\\{[^}]*user="app"[^}]*\\} ${size}$`, "m"),
      );
    }
    const r = await bench;
    expect(r.code, r.stderr).toBe(0);
    const stats = parsePgbench(r.stdout);
    expect(stats.failed).toBe(0);
    expect(stats.processed).toBeGreaterThan(100);
    await a.end();
  }, 60_000);

  it("a SIGKILLed worker is replaced: its clients get an error, new clients are served", async () => {
    const before = workerPids(pw);
    expect(before).toHaveLength(2);
    const clients = await clientsOnBothWorkers(4);
    const errors = clients.map(
      (c) =>
        new Promise<string>((resolve) => {
          c.on("error", (e) => resolve(e.message));
          c.on("end", () => resolve("end"));
        }),
    );
    const from = pw.logs().length;
    const listening = await pw.waitForLog((l) => l.msg === "listening");
    const victimWorker = 1;
    const victimPid = listening.worker_pids[victimWorker] as number;
    expect(before).toContain(victimPid);
    process.kill(victimPid, "SIGKILL");
    const onVictim = clients.filter((c) => workerOf(c) === victimWorker);
    const onOther = clients.filter((c) => workerOf(c) !== victimWorker);
    expect(onVictim.length).toBeGreaterThan(0);
    for (const c of onVictim) {
      const failed = await c.query("select 1").then(
        () => false,
        () => true,
      );
      expect(failed).toBe(true);
    }
    for (const [i, c] of clients.entries())
      if (workerOf(c) === victimWorker)
        expect(await Promise.race([errors[i], sleep(2000).then(() => "hang")])).not.toBe("hang");
    for (const c of onOther) expect((await c.query("select 2 as x")).rows[0].x).toBe(2);
    await pw.waitForLog((l) => l.msg === "worker ready" && l.worker === victimWorker, 15_000, from);
    await eventually(() => {
      const now = workerPids(pw);
      return now.length === 2 && !now.includes(victimPid);
    }, "a replacement worker");
    const fresh = await clientsOnBothWorkers(4);
    for (const c of fresh) expect((await c.query("select 3 as x")).rows[0].x).toBe(3);
    for (const c of [...fresh, ...onOther]) await c.end();
  }, 60_000);

  it("a replacement worker runs what the instance loaded, not files edited since (not reloaded)", async () => {
    const sizeBefore = await poolSizeMetric();
    // The files on disk now say something the instance never loaded, and could not load.
    pw.writeConfig({ general: general(), databases: databases(), users: users(0) });
    const from = pw.logs().length;
    const listening = await pw.waitForLog((l) => l.msg === "listening");
    const victimWorker = 0;
    const victimPid = workerPids(pw).find((p) => p === listening.worker_pids[victimWorker]);
    if (victimPid === undefined) throw new Error("worker 0 is not the one that started");
    process.kill(victimPid, "SIGKILL");
    // Its replacement takes the configuration text from the primary: it starts and serves.
    await pw.waitForLog((l) => l.msg === "worker ready" && l.worker === victimWorker, 15_000, from);
    const clients = await clientsOnBothWorkers(4);
    for (const c of clients) expect((await c.query("select 4 as x")).rows[0].x).toBe(4);
    for (const c of clients) await c.end();
    expect(
      pw
        .logs()
        .slice(from)
        .filter((l) => l.includes('"msg":"worker died')),
    ).toHaveLength(1);
    // A reload of those files is refused as a whole, and both workers keep serving.
    pw.signal("SIGHUP");
    const failure = await pw.waitForLog(
      (l) => l.msg === "configuration reload failed; keeping the running configuration",
      5000,
      from,
    );
    expect(String(failure.err)).toMatch(/pool_size/);
    const again = await clientsOnBothWorkers(4);
    for (const c of again) expect((await c.query("select 5 as x")).rows[0].x).toBe(5);
    for (const c of again) await c.end();
    // Files whose TLS certificate is not there: the primary refuses them (it reads the files
    // the configuration names with it, config/attachments.ts), every worker keeps the running
    // pool size.
    const from2 = pw.logs().length;
    pw.writeConfig({
      general: {
        ...general(),
        tls_certificate: "/nonexistent/pgwarden-cert.pem",
        tls_private_key: "/nonexistent/pgwarden-key.pem",
      },
      databases: databases(),
      users: users(9),
    });
    pw.signal("SIGHUP");
    const failure2 = await pw.waitForLog(
      (l) => l.msg === "configuration reload failed; keeping the running configuration",
      5000,
      from2,
    );
    expect(String(failure2.err)).toMatch(/pgwarden-cert\.pem/);
    expect(await poolSizeMetric()).toBe(sizeBefore);
    const third = await clientsOnBothWorkers(4);
    for (const c of third) expect((await c.query("select 6 as x")).rows[0].x).toBe(6);
    for (const c of third) await c.end();
    pw.writeConfig({ general: general(), databases: databases(), users: users(sizeBefore) });
  }, 60_000);

  it("SIGTERM stops every worker and the primary", async () => {
    const pids = workerPids(pw);
    const status = await pw.stop("SIGTERM", 15_000);
    expect(status.code).toBe(0);
    for (const p of pids) expect(() => process.kill(p, 0)).toThrow();
  }, 30_000);

  function benchEnv() {
    return { PGHOST: pw.host, PGPORT: String(pw.port), PGUSER: "app", PGPASSWORD: "client-pw" };
  }
});

describe("workers = 2 with client TLS", () => {
  it("a replacement worker serves the certificate the instance loaded, not the file as edited since", async () => {
    const cluster = await startPostgres();
    const a = makeTestCa({ san: "DNS:localhost", serverCn: "certificate a" });
    const b = makeTestCa({ san: "DNS:localhost", serverCn: "certificate b" });
    const dir = mkdtempSync(join(tmpdir(), "pgwarden-workers-tls-"));
    const cert = join(dir, "cert.pem");
    const key = join(dir, "key.pem");
    copyFileSync(a.certFile, cert);
    copyFileSync(a.keyFile, key);
    let pw: Pgwarden | undefined;
    try {
      await cluster.createRole("app", "app-pw");
      pw = await startPgwarden({
        general: {
          workers: 2,
          pooler_mode: "transaction",
          tls_certificate: cert,
          tls_private_key: key,
        },
        databases: [
          { name: "appdb", host: cluster.host, port: cluster.port, database_name: "postgres" },
        ],
        users: [
          { name: "app", database: "appdb", password: "client-pw", server_password: "app-pw" },
        ],
      });
      const listening = await pw.waitForLog((l) => l.msg === "listening");
      // The files now hold another certificate; the instance was not reloaded.
      copyFileSync(b.certFile, cert);
      copyFileSync(b.keyFile, key);
      const from = pw.logs().length;
      const victim = 1;
      process.kill(listening.worker_pids[victim] as number, "SIGKILL");
      await pw.waitForLog((l) => l.msg === "worker ready" && l.worker === victim, 15_000, from);
      // Clients that trust only the first certificate's CA get through on both workers.
      const ssl = { ca: readFileSync(a.caFile, "utf8"), servername: "localhost" };
      const clients = [];
      while (clients.length < 4 || new Set(clients.map(workerOf)).size < 2) {
        if (clients.length >= 40) throw new Error("40 connections, all on one worker");
        clients.push(await connect(pw, "app", "client-pw", "appdb", { ssl }));
      }
      for (const c of clients) {
        // biome-ignore lint/suspicious/noExplicitAny: the socket node-pg upgraded
        const stream = (c as any).connection.stream as {
          getPeerCertificate(): { subject: { CN: string } };
        };
        expect(stream.getPeerCertificate().subject.CN).toBe("certificate a");
        expect((await c.query("select 1 as x")).rows[0].x).toBe(1);
        await c.end();
      }
    } finally {
      await pw?.stop();
      await cluster.stop();
      for (const d of [dir, a.dir, b.dir]) rmSync(d, { recursive: true, force: true });
    }
  }, 60_000);
});

describe("token rotation with workers = 2", () => {
  it("provider calls per identity equal one process's, under the same load", async () => {
    const env = await startIdentityEnv({
      entraLifetimeSec: 6,
      entraLatencyMs: 50,
      awsLifetimeMs: 3_600_000,
    });
    try {
      await env.createIamRole("az_app");
      env.azureRoles.set("az_app", "client-a");
      const run = async (workers: number) => {
        const pw = await startPgwarden({
          general: { workers, tls_verify: "prefer", token_fetch_timeout: 10_000 },
          databases: [
            { name: "appdb", host: "127.0.0.1", port: env.cluster.port, database_name: "postgres" },
          ],
          users: [
            {
              name: "az",
              database: "appdb",
              password: "pw",
              server_user: "az_app",
              server_auth: "azure_workload_identity",
              pool_size: 4,
            },
          ],
          env: env.childEnv(),
          startTimeoutMs: 60_000,
        });
        const before = env.entra.requests.get("client-a") ?? 0;
        // 14 s of load on 6 s tokens: several rotations, logins on both workers
        const deadline = Date.now() + 14_000;
        let errors = 0;
        let queries = 0;
        await Promise.all(
          Array.from({ length: 6 }, async () => {
            while (Date.now() < deadline) {
              try {
                const c = await connect(pw, "az", "pw", "appdb");
                await c.query("select 1");
                await c.end();
                queries++;
              } catch {
                errors++;
              }
              await sleep(150);
            }
          }),
        );
        const calls = (env.entra.requests.get("client-a") ?? 0) - before;
        const credentials = pw
          .logs()
          .filter((l) => l.includes('"msg":"credential refresher started"'));
        await pw.stop();
        return { calls, errors, queries, refreshers: credentials.length };
      };
      const one = await run(1);
      const two = await run(2);
      console.log(
        `[measure] rotation: workers=1 ${JSON.stringify(one)}; workers=2 ${JSON.stringify(two)}`,
      );
      expect(one.errors).toBe(0);
      expect(two.errors).toBe(0);
      expect(two.refreshers).toBe(1);
      // same schedule: equal up to one refresh landing either side of the end of the window
      expect(Math.abs(two.calls - one.calls)).toBeLessThanOrEqual(1);
      expect(two.calls).toBeGreaterThanOrEqual(3);
    } finally {
      await env.stop();
    }
  }, 120_000);
});
