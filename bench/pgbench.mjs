#!/usr/bin/env node
// pgbench through pgwarden, PgBouncer and directly, on a private PostgreSQL (`npm run bench`).
//
// It reuses the test harness (test/harness/*.ts) rather than a copy of it: Node 20 cannot run
// TypeScript, so the harness files are transpiled (type stripping only, with the `typescript`
// devDependency) into a temp folder under .tmp/ and imported from there. The numbers are for
// comparing the targets on the same machine in the same minutes; the runs are interleaved (for
// each workload and client count: pgwarden, PgBouncer, direct in turn) so that drift in the
// machine's speed hits all three alike.
//
// Knobs (environment):
//   BENCH_SECONDS    seconds per pgbench run (-T)                 default 15
//   BENCH_TARGETS    comma list of pgwarden,pgbouncer,direct     default all three
//   BENCH_CLIENTS    comma list of client counts (-c)            default 10,50,200
//   BENCH_WORKLOADS  comma list of select-only,tpcb-like         default both
//   BENCH_SCALE      pgbench scale (-s)                           default 10
//   BENCH_POOL_SIZE  server connections per pool                  default 10
//   BENCH_JOBS       pgbench threads (-j)                         default 2
//   BENCH_PROTOCOL   simple | extended (-M)                       default simple
//   BENCH_JSON       also write the results to this file as JSON
import { rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { transpileTestSupport } from "./test-modules.mjs";

const PASSWORD = "bench-password";

function env(name, fallback) {
  const v = process.env[name];
  return v === undefined || v === "" ? fallback : v;
}

const cfg = {
  seconds: Number(env("BENCH_SECONDS", "15")),
  targets: env("BENCH_TARGETS", "pgwarden,pgbouncer,direct")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean),
  clients: env("BENCH_CLIENTS", "10,50,200").split(",").map(Number),
  workloads: env("BENCH_WORKLOADS", "select-only,tpcb-like")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean),
  scale: Number(env("BENCH_SCALE", "10")),
  poolSize: Number(env("BENCH_POOL_SIZE", "10")),
  jobs: Number(env("BENCH_JOBS", "2")),
  protocol: env("BENCH_PROTOCOL", "simple"),
  json: env("BENCH_JSON", ""),
};

for (const t of cfg.targets) {
  if (!["pgwarden", "pgbouncer", "direct"].includes(t))
    throw new Error(`BENCH_TARGETS: unknown target ${t}`);
}
for (const w of cfg.workloads) {
  if (!["select-only", "tpcb-like"].includes(w))
    throw new Error(`BENCH_WORKLOADS: unknown workload ${w}`);
}

/** The test harness modules the bench needs (see test-modules.mjs). */
async function loadHarness() {
  const { out, load } = transpileTestSupport();
  const [postgres, pgwarden, pgbouncer, clients] = await Promise.all([
    load("harness/postgres"),
    load("harness/pgwarden"),
    load("harness/pgbouncer"),
    load("harness/clients"),
  ]);
  return { out, postgres, pgwarden, pgbouncer, clients };
}

function log(msg) {
  process.stderr.write(`[bench] ${msg}\n`);
}

function fmt(n, digits = 0) {
  return Number.isFinite(n) ? n.toFixed(digits) : "-";
}

function table(rows) {
  const header = ["workload", "clients", "target", "TPS", "failed", "pgwarden/PgBouncer"];
  const body = rows.map((r) => [
    r.workload,
    String(r.clients),
    r.target,
    fmt(r.tps),
    r.error ? `error: ${r.error}` : String(r.failed),
    r.ratio === undefined ? "" : fmt(r.ratio, 2),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
  return [
    line(header),
    `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`,
    ...body.map(line),
  ].join("\n");
}

async function main() {
  const h = await loadHarness();
  const started = [];
  const stopAll = async () => {
    for (const s of started.reverse()) await s.stop().catch(() => {});
    rmSync(h.out, { recursive: true, force: true });
  };
  try {
    const maxClients = Math.max(...cfg.clients);
    log(`starting PostgreSQL (${h.postgres.pgBinDir()})`);
    const cluster = await h.postgres.startPostgres({
      settings: {
        max_connections: String(Math.max(300, maxClients + 20)),
        shared_buffers: "256MB",
      },
    });
    started.push(cluster);
    await cluster.createRole("bench", PASSWORD);
    await cluster.createDatabase("bench", "bench");
    log(`pgbench -i -s ${cfg.scale}`);
    const init = await h.clients.runPgbench(
      [
        "-i",
        "-q",
        "-s",
        String(cfg.scale),
        "-h",
        cluster.host,
        "-p",
        String(cluster.port),
        "-U",
        "bench",
        "bench",
      ],
      { env: { PGPASSWORD: PASSWORD }, timeoutMs: 600_000 },
    );
    if (init.code !== 0) throw new Error(`pgbench -i failed:\n${init.stderr}`);

    const endpoints = {};
    if (cfg.targets.includes("pgwarden")) {
      log("starting pgwarden");
      const pw = await h.pgwarden.startPgwarden({
        general: {
          pooler_mode: "transaction",
          default_pool_size: cfg.poolSize,
          checkout_timeout: 120_000,
        },
        databases: [
          { name: "bench", host: cluster.host, port: cluster.port, database_name: "bench" },
        ],
        users: [
          {
            name: "bench",
            database: "bench",
            password: PASSWORD,
            server_password: PASSWORD,
            pool_size: cfg.poolSize,
          },
        ],
      });
      started.push(pw);
      endpoints.pgwarden = { host: pw.host, port: pw.port };
    }
    if (cfg.targets.includes("pgbouncer")) {
      log("starting PgBouncer");
      const pb = await h.pgbouncer.startPgbouncer({
        databases: { bench: `host=${cluster.host} port=${cluster.port} dbname=bench` },
        users: [{ name: "bench", password: PASSWORD }],
        settings: {
          pool_mode: "transaction",
          default_pool_size: cfg.poolSize,
          auth_type: "scram-sha-256",
        },
      });
      started.push(pb);
      endpoints.pgbouncer = { host: pb.host, port: pb.port };
    }
    if (cfg.targets.includes("direct"))
      endpoints.direct = { host: cluster.host, port: cluster.port };

    const rows = [];
    for (const workload of cfg.workloads) {
      for (const clients of cfg.clients) {
        for (const target of ["pgwarden", "pgbouncer", "direct"]) {
          const ep = endpoints[target];
          if (!ep) continue;
          const args = [
            "-n",
            "-c",
            String(clients),
            "-j",
            String(Math.min(cfg.jobs, clients)),
            "-T",
            String(cfg.seconds),
            "-M",
            cfg.protocol,
            ...(workload === "select-only" ? ["-S"] : []),
            "-h",
            ep.host,
            "-p",
            String(ep.port),
            "-U",
            "bench",
            "bench",
          ];
          const r = await h.clients.runPgbench(args, {
            env: { PGPASSWORD: PASSWORD },
            timeoutMs: cfg.seconds * 1000 + 180_000,
          });
          const row = {
            workload,
            clients,
            target,
            tps: Number.NaN,
            failed: Number.NaN,
            code: r.code,
          };
          try {
            Object.assign(row, h.clients.parsePgbench(r.stdout));
          } catch {
            row.error = (r.stderr.trim().split("\n").pop() ?? "no output").slice(0, 80);
          }
          if (r.code !== 0 && !row.error)
            row.error = `exit ${r.code}: ${r.stderr.trim().split("\n").pop() ?? ""}`.slice(0, 80);
          rows.push(row);
          log(
            `${workload} c=${clients} ${target}: ${fmt(row.tps)} tps, failed ${row.failed}${row.error ? ` (${row.error})` : ""}`,
          );
        }
        const pw = rows.find(
          (r) => r.workload === workload && r.clients === clients && r.target === "pgwarden",
        );
        const pb = rows.find(
          (r) => r.workload === workload && r.clients === clients && r.target === "pgbouncer",
        );
        if (pw && pb) pw.ratio = pw.tps / pb.tps;
      }
    }

    const cpus = os.cpus();
    const versions = `${h.postgres.pgBinDir()}; node ${process.version}; ${cpus.length} x ${cpus[0]?.model ?? "cpu"}`;
    process.stdout.write(
      `\npgbench -M ${cfg.protocol} -j ${cfg.jobs} -T ${cfg.seconds}, scale ${cfg.scale}, pool size ${cfg.poolSize}, transaction mode, SCRAM logins\n` +
        `${versions}\n\n${table(rows)}\n`,
    );
    if (cfg.json)
      writeFileSync(
        cfg.json,
        `${JSON.stringify({ config: cfg, machine: versions, rows }, null, 2)}\n`,
      );
  } finally {
    await stopAll();
  }
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${err?.stack ?? err}\n`);
  process.exitCode = 1;
});
