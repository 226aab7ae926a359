#!/usr/bin/env node
// The credential engine against a fetch-per-login baseline (`npm run bench:credentials`).
//
// Same workload twice, on the loopback Entra ID emulator (2 s per token, 20 s tokens) and a
// PostgreSQL that verifies every token at login: clients connect, run a query and disconnect in
// a loop through pgwarden in session mode, with a short server_lifetime so that servers keep
// logging in again. Run 1 is pgwarden as shipped; run 2 sets PGWARDEN_TOKEN_CACHE=off, so every
// server login fetches its own token, as a pooler without the engine would. Printed per run:
// provider calls, client errors, connects, and p50/p99 of the time a client waits to connect.
//
// Knobs: BENCH_SECONDS (60), BENCH_CLIENTS (40), BENCH_POOL_SIZE (20), BENCH_FETCH_MS (2000),
// BENCH_TOKEN_SECONDS (20), BENCH_SERVER_LIFETIME_MS (3000), BENCH_WORKERS (1: pgwarden's
// `workers`; with 2 the engine still runs once, in the primary, so provider calls per identity
// should not change: `BENCH_WORKERS=2 npm run bench:credentials`). BENCH_NODE: the `node` that
// `npm run bench:credentials` runs this with (and pgwarden, started with process.execPath),
// default the first on PATH; for Node.js 24, BENCH_NODE="$(bash .ci/node24)/node".
import { rmSync } from "node:fs";
import pg from "pg";
import { transpileTestSupport } from "./test-modules.mjs";

const num = (name, dflt) => Number(process.env[name] || dflt);
const cfg = {
  seconds: num("BENCH_SECONDS", 60),
  clients: num("BENCH_CLIENTS", 40),
  poolSize: num("BENCH_POOL_SIZE", 20),
  fetchMs: num("BENCH_FETCH_MS", 2000),
  tokenSeconds: num("BENCH_TOKEN_SECONDS", 20),
  serverLifetimeMs: num("BENCH_SERVER_LIFETIME_MS", 3000),
  workers: num("BENCH_WORKERS", 1),
};
const log = (m) => process.stderr.write(`[bench:credentials] ${m}\n`);

function percentile(sorted, p) {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function run(h, env, label, cacheOff) {
  const before = env.entra.requests.get("client-a") ?? 0;
  const pw = await h.pgwarden.startPgwarden({
    general: {
      tls_verify: "prefer",
      pooler_mode: "session",
      server_lifetime: cfg.serverLifetimeMs,
      checkout_timeout: 60_000,
      token_fetch_timeout: 30_000,
      workers: cfg.workers,
    },
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
        pool_size: cfg.poolSize,
        min_pool_size: 0,
      },
    ],
    env: { ...env.childEnv(), ...(cacheOff ? { PGWARDEN_TOKEN_CACHE: "off" } : {}) },
    startTimeoutMs: 120_000,
  });
  const waits = [];
  const errors = [];
  const deadline = Date.now() + cfg.seconds * 1000;
  await Promise.all(
    Array.from({ length: cfg.clients }, async () => {
      while (Date.now() < deadline) {
        const c = new pg.Client({
          host: pw.host,
          port: pw.port,
          user: "az",
          password: "pw",
          database: "appdb",
        });
        c.on("error", () => {});
        const t0 = performance.now();
        try {
          await c.connect();
          waits.push(performance.now() - t0);
          await c.query("select 1");
        } catch (err) {
          errors.push(err.message);
        } finally {
          await c.end().catch(() => {});
        }
      }
    }),
  );
  await pw.stop();
  waits.sort((a, b) => a - b);
  return {
    label,
    providerCalls: (env.entra.requests.get("client-a") ?? 0) - before,
    errors: errors.length,
    firstError: errors[0],
    connects: waits.length,
    p50: percentile(waits, 50),
    p99: percentile(waits, 99),
  };
}

async function main() {
  const { out, load } = transpileTestSupport();
  const [idEnv, pgwarden] = await Promise.all([load("identity-env"), load("harness/pgwarden")]);
  const h = { pgwarden };
  log(`node ${process.version} (${process.execPath}) runs the bench and pgwarden`);
  log(
    `starting PostgreSQL, Entra ID emulator (${cfg.fetchMs} ms per token, ${cfg.tokenSeconds} s tokens)`,
  );
  const env = await idEnv.startIdentityEnv({
    entraLifetimeSec: cfg.tokenSeconds,
    entraLatencyMs: cfg.fetchMs,
    awsLifetimeMs: 3_600_000,
  });
  try {
    await env.createIamRole("az_app");
    env.azureRoles.set("az_app", "client-a");
    log(
      `workers = ${cfg.workers}, ${cfg.clients} clients, pool_size ${cfg.poolSize}, session mode, server_lifetime ${cfg.serverLifetimeMs} ms, ${cfg.seconds} s per run`,
    );
    const results = [];
    for (const [label, off] of [
      ["pgwarden (engine)", false],
      ["fetch per login (cache off)", true],
    ]) {
      log(`run: ${label}`);
      results.push(await run(h, env, label, off));
    }
    const f = (n) => (Number.isFinite(n) ? n.toFixed(1) : "-");
    const rows = results.map((r) => [
      r.label,
      String(r.providerCalls),
      String(r.errors),
      String(r.connects),
      f(r.p50),
      f(r.p99),
    ]);
    const header = [
      "run",
      "provider calls",
      "client errors",
      "connects",
      "p50 connect ms",
      "p99 connect ms",
    ];
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    const line = (cells) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
    console.log(
      [line(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...rows.map(line)].join(
        "\n",
      ),
    );
    for (const r of results)
      if (r.firstError) log(`${r.label}: first client error: ${r.firstError}`);
  } finally {
    await env.stop();
    rmSync(out, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
