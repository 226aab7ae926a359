// Load through the pooler with pgbench, as the acceptance asks: 50 clients over a pool
// of 10 in transaction mode, simple and extended protocol, zero failed transactions; and psql.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parsePgbench, runPgbench, runPsql } from "./harness/clients.js";
import { type Pgwarden, startPgwarden } from "./harness/pgwarden.js";
import { type PgCluster, startPostgres } from "./harness/postgres.js";

let cluster: PgCluster;
let pw: Pgwarden;

beforeAll(async () => {
  cluster = await startPostgres();
  await cluster.createRole("bench", "bench-pw");
  await cluster.createDatabase("benchdb", "bench");
  pw = await startPgwarden({
    general: { pooler_mode: "transaction", checkout_timeout: 30000 },
    databases: [{ name: "benchdb", host: cluster.host, port: cluster.port }],
    users: [
      {
        name: "bench",
        database: "benchdb",
        password: "client-pw",
        server_password: "bench-pw",
        pool_size: 10,
      },
    ],
  });
  const init = await runPgbench(["-i", "-s", "2", "-q", "benchdb"], { env: env() });
  expect(init.code, init.stderr).toBe(0);
}, 120_000);

afterAll(async () => {
  await pw?.stop();
  await cluster?.stop();
});

function env() {
  return { PGHOST: pw.host, PGPORT: String(pw.port), PGUSER: "bench", PGPASSWORD: "client-pw" };
}

describe("pgbench through pgwarden", () => {
  for (const mode of ["simple", "extended"]) {
    it(`-c 50 -j 2 -T 10 -M ${mode}: zero failed transactions, never more than 10 servers`, async () => {
      const r = await runPgbench(["-n", "-c", "50", "-j", "2", "-T", "10", "-M", mode, "benchdb"], {
        env: env(),
        timeoutMs: 60000,
      });
      expect(r.code, r.stderr).toBe(0);
      const stats = parsePgbench(r.stdout);
      expect(stats.failed).toBe(0);
      expect(stats.processed).toBeGreaterThan(100);
      expect((await cluster.backendPids("bench")).length).toBeLessThanOrEqual(10);
    }, 60_000);
  }

  it("psql runs queries through it", async () => {
    const r = await runPsql(
      ["-X", "-At", "-d", "benchdb", "-c", "select count(*) from pgbench_branches"],
      { env: env() },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe("2");
  });
});
