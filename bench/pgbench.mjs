#!/usr/bin/env node
// pgbench through pgwarden, two PgBouncer releases and directly, on a private PostgreSQL
// (`npm run bench`).
//
// Model. One PostgreSQL cluster (pgbench -i -s BENCH_SCALE) and, in front of it, each target:
//   pgwarden          this repository's build (dist/), transaction mode, pool BENCH_POOL_SIZE
//   pgbouncer-latest  a current PgBouncer built from its git repository (1.25 today), with
//                     max_prepared_statements = 200 (its default, written out); named in the
//                     tables by the version it reports, e.g. "pgbouncer-1.25.2"
//   pgbouncer-system  the distribution's PgBouncer (Debian 12: 1.18, no prepared statement
//                     support in transaction mode), e.g. "pgbouncer-1.18.0"
//   direct            pgbench straight to PostgreSQL, one backend per client
// Both PgBouncers run in transaction mode with the same pool size and SCRAM logins.
//
// Standard rows: for each workload, client count and protocol, one pgbench -T run per target,
// the targets in turn (interleaved, so that drift in the machine's speed hits them alike; with
// BENCH_ROUNDS > 1 the whole matrix is run again, in reverse target order every other round, and
// the tables show medians of TPS and of each CPU column, failed and aborted summed over rounds;
// below the table, each target's TPS over PgBouncer 1.25's in the same round, round by round).
// For each run:
//   TPS        pgbench's "tps = … (without initial connection time)"
//   µs/txn     CPU time of the proxy (user + sys, also shown apart) per transaction: utime+stime
//              (+cutime+cstime) of the proxy's process and all its descendants, read from
//              /proc/<pid>/stat (clock ticks, `getconf CLK_TCK`) right before and after the
//              pgbench run, divided by the transactions pgbench processed; "cpu %" is the same
//              time over the run's wall time (100 % = one core). Nothing for direct. It
//              includes the clients' logins (SCRAM): next to nothing in a full run, most of it
//              in one cut short by aborted clients.
//   failed     pgbench's "number of failed transactions" (pgbench 15 counts only serialization
//              and deadlock failures there; any other error aborts the client)
//   aborted    clients pgbench reports as aborted ("client N aborted in command …")
//   errors logged  pgbench's other error lines. With -M prepared pgbench 15 logs a failed Parse
//              ("prepared statement "P_0" already exists") and goes on; all clients use the
//              same statement names, so through a pooler that does not track prepared
//              statements the run works once every server connection has been sent each Parse,
//              and such errors are the sign of it.
// Aborts and logged errors are printed under the table, counted by message; and, on pgwarden's
// rows, the table has pgwarden / pgbouncer-latest for TPS and for µs/txn.
// With -M prepared, when clients outnumber the pool's servers pgbench runs one thread per client
// (-j = -c) for every target of that row: pgbench prepares with a blocking call, and a thread
// blocked there while another of its clients holds a server inside a transaction deadlocks any
// transaction pooler.
//
// Restart rows (BENCH_RESTART, on by default): tpcb-like `pgbench -c 20 -j BENCH_JOBS -T
// BENCH_RESTART_SECONDS -M simple -P 1` through each proxy (not direct), one at a time, with the
// cluster restarted in the middle of the run as `pg_ctl restart -m fast` does (PgCluster.restart:
// fast shutdown, new postmaster on the same port; BENCH_RESTART_DOWN_MS keeps it down longer).
// Reported: TPS, transactions, the run's wall time (pgbench stops early when all its clients
// have aborted, and runs past -T while they wait), proxy µs/txn, failed, aborted clients,
// seconds of pgbench progress with 0 tps, and how long the restart took. Each restart also
// closes the idle server connections of the other proxies.
//
// It reuses the test harness (test/harness/*.ts) rather than a copy of it: Node 20 cannot run
// TypeScript, so the harness files are transpiled into a temp folder under .tmp/ (see
// test-modules.mjs). The numbers are for comparing the targets on the same machine in the same
// minutes; pgbench, PostgreSQL and the proxy share the machine's cores.
//
// Knobs (environment):
//   BENCH_SECONDS          seconds per standard pgbench run (-T)                default 15
//   BENCH_TARGETS          comma list of pgwarden, pgbouncer-latest, pgbouncer-system, direct,
//                          pgwarden-2w, pgbouncer-latest-2p, pgwarden-b, node-floor,
//                          node-floor-pool (pgbouncer = both PgBouncers)
//                                  default all but pgwarden-2w, pgbouncer-latest-2p, -b, node-floor*
//   BENCH_B_MAIN, BENCH_B_ENV  pgwarden-b runs this dist/cli/main.js and/or with these
//                          variables ("NAME=value,..."): an A/B of two builds or settings
//   BENCH_B_NODE           pgwarden-b runs on this node binary: an A/B of two Node.js releases
//   BENCH_WORKLOADS        comma list of select-only, tpcb-like; none = no standard rows
//                                                                               default both
//   BENCH_CLIENTS          comma list of client counts (-c)                     default 50
//   BENCH_PROTOCOL         comma list of simple, extended, prepared (-M)        default simple
//   BENCH_JOBS             pgbench threads (-j), but see prepared above         default 2
//   BENCH_RATE             pgbench -R: this many transactions per second in all (0 = as fast
//                          as it goes). Below every target's top speed, all do the same work
//                          per second, so their CPU per transaction is compared under the same
//                          load, and the table gains pgbench's average latency ("lat ms",
//                          schedule lag included)                              default 0
//   BENCH_ROUNDS           times the standard matrix is run                     default 1
//   BENCH_SCALE            pgbench scale (-s)                                   default 10
//   BENCH_POOL_SIZE        server connections per pool                          default 10
//   BENCH_RESTART          1 = restart rows, 0 = none                           default 1
//   BENCH_RESTART_SECONDS  -T of the restart rows                               default 30
//   BENCH_RESTART_DOWN_MS  extra time the server stays down                     default 0
//   BENCH_JSON             also write config, machine, every run and the tables to this file
//   BENCH_IDLE_CLIENTS     idle-client rows: this many logged-in idle clients per pgwarden
//                          target (auth_type = trust), RSS summed over the instance's
//                          processes; 0 = none                                 default 0
//   PGBOUNCER_LATEST_BIN   pgbouncer-latest's binary, else .tmp/pgbouncer-latest/bin/pgbouncer
//                          in this repository; without one the target is skipped (build it with
//                          `bash ../shared/tools/build-pgbouncer.sh <pgbouncer git dir>` from
//                          the repository root)
//   BENCH_PGWARDEN_NODE_ARGS  node flags for pgwarden, e.g. "--cpu-prof --cpu-prof-dir=/tmp/p"
//   PGBOUNCER_BIN          pgbouncer-system's binary, else /usr/sbin/pgbouncer, else PATH
//   BENCH_NODE             the `node` that `npm run bench` runs this script with, default the
//                          first on PATH; pgwarden runs on the same one (the harness starts it
//                          with process.execPath) and the table header names its version.
//                          Node.js 24 LTS is the runtime pgwarden ships and is measured on:
//                          BENCH_NODE="$(bash .ci/node24)/node" npm run bench (.ci/node24
//                          installs it from the npm registry into .tmp/node24); or put its
//                          directory first on PATH. The machine's node (20) works as well.
//
// The floor. BENCH_TARGETS also takes node-floor: bench/node-floor.mjs, a 1:1 byte forwarder
// (no pool, no parsing) on pgwarden's socket layer, run by the node that runs pgwarden. Every
// byte pgwarden forwards costs it at least that read and that write, so node-floor's µs/txn is
// the least a Node.js proxy spends per transaction here; its TPS is not comparable (one
// PostgreSQL backend per client instead of a pool of BENCH_POOL_SIZE). node-floor-pool
// (bench/node-floor-pool.mjs) is the least Node.js transaction pooler on the same layer: a pool
// of BENCH_POOL_SIZE, clients logged in with no password, server replies framed only to find
// ReadyForQuery, named statements tracked by name alone (enough for pgbench `-M prepared`, not
// for other clients), nothing else. Its TPS is comparable: the ceiling of a Node.js pooler here.
//
// Workers (design §6). BENCH_TARGETS also takes pgwarden-2w: pgwarden with `workers = 2` (a
// primary and two workers; its CPU and RSS are summed over all three processes, as for any
// target's process tree). Only the worker rows:
//   1 vs 2 workers, select-only c=200 (TPS, failed, CPU µs/txn of every pgwarden process):
//     BENCH_TARGETS=pgwarden,pgwarden-2w BENCH_WORKLOADS=select-only BENCH_CLIENTS=200 \
//       BENCH_RESTART=0 npm run bench
//   RSS with 10,000 idle clients, 1 and 2 workers (no pgbench rows):
//     BENCH_TARGETS=pgwarden,pgwarden-2w BENCH_WORKLOADS=none BENCH_RESTART=0 \
//       BENCH_IDLE_CLIENTS=10000 npm run bench
//   Provider calls per identity with 2 workers: BENCH_WORKERS=2 npm run bench:credentials
// pgbouncer-latest-2p is PgBouncer's answer to the same: two pgbouncer-latest processes on one
// port (`so_reuseport = 1`), pool_size split between them as pgwarden-2w splits it, CPU summed
// over both. Two processes against two, where pgwarden-2w against one PgBouncer is not the same
// comparison.
// `node bench/pgbench.mjs --help` prints this text.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ROOT, transpileTestSupport } from "./test-modules.mjs";

const PASSWORD = "bench-password";
const TARGETS = ["pgwarden", "pgbouncer-latest", "pgbouncer-system", "direct"];
/**
 * Targets run only when named in BENCH_TARGETS: pgwarden with `workers = 2`, two PgBouncer 1.25
 * processes on one port, pgwarden-b (A/B) and the floors.
 */
const EXTRA_TARGETS = [
  "pgwarden-2w",
  "pgbouncer-latest-2p",
  "pgwarden-b",
  "node-floor",
  "node-floor-pool",
];
const WORKLOADS = ["select-only", "tpcb-like"];
const PROTOCOLS = ["simple", "extended", "prepared"];
const RESTART_CLIENTS = 20;

function env(name, fallback) {
  const v = process.env[name];
  return v === undefined || v.trim() === "" ? fallback : v.trim();
}

function list(name, fallback, allowed) {
  const items = env(name, fallback)
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  for (const i of items)
    if (allowed && !allowed.includes(i))
      throw new Error(`${name}: unknown value ${i} (one of ${allowed.join(", ")})`);
  return items;
}

function positive(name, fallback, { zero = false } = {}) {
  const n = Number(env(name, String(fallback)));
  if (!Number.isInteger(n) || n < (zero ? 0 : 1))
    throw new Error(`${name}: expected a ${zero ? "non-negative" : "positive"} integer`);
  return n;
}

function readConfig() {
  return {
    seconds: positive("BENCH_SECONDS", 15),
    targets: [
      ...new Set(
        list("BENCH_TARGETS", TARGETS.join(","), [
          ...TARGETS,
          ...EXTRA_TARGETS,
          "pgbouncer",
        ]).flatMap((t) => (t === "pgbouncer" ? ["pgbouncer-latest", "pgbouncer-system"] : [t])),
      ),
    ],
    workloads:
      env("BENCH_WORKLOADS", "") === "none"
        ? []
        : list("BENCH_WORKLOADS", WORKLOADS.join(","), WORKLOADS),
    clients: list("BENCH_CLIENTS", "50").map((c) => {
      const n = Number(c);
      if (!Number.isInteger(n) || n < 1) throw new Error(`BENCH_CLIENTS: bad count ${c}`);
      return n;
    }),
    protocols: list("BENCH_PROTOCOL", "simple", PROTOCOLS),
    jobs: positive("BENCH_JOBS", 2),
    rate: positive("BENCH_RATE", 0, { zero: true }),
    rounds: positive("BENCH_ROUNDS", 1),
    scale: positive("BENCH_SCALE", 10),
    poolSize: positive("BENCH_POOL_SIZE", 10),
    restart: env("BENCH_RESTART", "1") !== "0",
    restartSeconds: positive("BENCH_RESTART_SECONDS", 30),
    restartDownMs: positive("BENCH_RESTART_DOWN_MS", 0, { zero: true }),
    json: env("BENCH_JSON", ""),
    idleClients: positive("BENCH_IDLE_CLIENTS", 0, { zero: true }),
  };
}

if (process.argv.includes("--help") || process.argv.includes("-h")) {
  const text = readFileSync(new URL(import.meta.url), "utf8").split("\n");
  const head = [];
  for (const line of text.slice(1)) {
    if (!line.startsWith("//")) break;
    head.push(line.replace(/^\/\/ ?/, ""));
  }
  process.stdout.write(`${head.join("\n")}\n`);
  process.exit(0);
}

let cfg;
try {
  cfg = readConfig();
} catch (err) {
  process.stderr.write(`bench: ${err.message}\n`);
  process.exit(2);
}

function log(msg) {
  process.stderr.write(`[bench] ${msg}\n`);
}

// ---------------------------------------------------------------------------------------------
// CPU time of a process tree, from /proc

const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** pid → { ppid, user, sys } (clock ticks; reaped children's time included) of every process. */
function procTable() {
  const table = new Map();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let stat;
    try {
      stat = readFileSync(`/proc/${name}/stat`, "utf8");
    } catch {
      continue; // gone meanwhile
    }
    // after "pid (comm) ": state ppid … utime stime cutime cstime are stat fields 3, 4, 14-17
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    table.set(Number(name), {
      ppid: Number(f[1]),
      rssPages: Number(f[21]),
      user: Number(f[11]) + Number(f[13]),
      sys: Number(f[12]) + Number(f[14]),
    });
  }
  return table;
}

/**
 * The /proc entries (procTable()'s) of `pid`, or of each pid of an array, and all their
 * descendants; undefined when one of them is gone.
 */
function treeEntries(pid) {
  const roots = Array.isArray(pid) ? pid : [pid];
  const table = procTable();
  if (!roots.every((p) => table.has(p))) return undefined;
  const children = new Map();
  for (const [p, e] of table) {
    const kids = children.get(e.ppid) ?? [];
    kids.push(p);
    children.set(e.ppid, kids);
  }
  const out = [];
  for (const stack = [...roots]; stack.length > 0; ) {
    const p = stack.pop();
    out.push(table.get(p));
    stack.push(...(children.get(p) ?? []));
  }
  return out;
}

/** { at, user, sys } (ms, µs, µs) of treeEntries(pid); undefined when one is gone. */
function treeCpu(pid) {
  if (pid === undefined || !existsSync("/proc/self/stat")) return undefined;
  const entries = treeEntries(pid);
  if (entries === undefined) return undefined;
  let user = 0;
  let sys = 0;
  for (const e of entries) {
    user += e.user;
    sys += e.sys;
  }
  return { at: Date.now(), user: (user * 1e6) / CLK_TCK, sys: (sys * 1e6) / CLK_TCK };
}

const PAGE_SIZE = (() => {
  try {
    return Number(execFileSync("getconf", ["PAGESIZE"], { encoding: "utf8" }).trim()) || 4096;
  } catch {
    return 4096;
  }
})();

/** Resident memory (bytes) of `pid` and all its descendants, and how many processes that is. */
function treeRss(pid) {
  const entries = treeEntries(pid) ?? [];
  let bytes = 0;
  for (const e of entries) bytes += e.rssPages * PAGE_SIZE;
  return { bytes, processes: entries.length };
}

// ---------------------------------------------------------------------------------------------
// Idle clients (BENCH_IDLE_CLIENTS)

/** A logged-in client that then sits idle: StartupMessage, read up to ReadyForQuery. */
function idleClient(net, host, port) {
  return new Promise((resolve, reject) => {
    const user = "bench";
    const body = Buffer.from(`user\0${user}\0database\0bench\0application_name\0idle\0\0`);
    const startup = Buffer.alloc(8 + body.length);
    startup.writeInt32BE(startup.length, 0);
    startup.writeInt32BE(196608, 4);
    body.copy(startup, 8);
    const socket = net.connect({ host, port }, () => socket.write(startup));
    let buf = Buffer.alloc(0);
    const fail = (err) => {
      socket.destroy();
      reject(err);
    };
    socket.on("error", fail);
    socket.on("data", (chunk) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      while (buf.length >= 5) {
        const len = buf.readInt32BE(1);
        if (buf.length < len + 1) break;
        const type = String.fromCharCode(buf[0]);
        if (type === "E") return fail(new Error(buf.subarray(5, len + 1).toString("latin1")));
        if (type === "R" && buf.readInt32BE(5) !== 0)
          return fail(new Error("idle-client row needs auth_type = trust"));
        buf = buf.subarray(len + 1);
        if (type === "Z") {
          socket.removeAllListeners("data");
          return resolve(socket);
        }
      }
    });
  });
}

/**
 * RSS of a pgwarden instance (every process) before and with `n` idle logged-in clients in
 * transaction mode. Clients log in with auth_type = trust: the row measures what an idle client
 * costs to hold, not SCRAM's CPU. Logins go 200 at a time.
 */
async function idleRow(h, cluster, workers, n) {
  const net = await import("node:net");
  const pw = await h.pgwarden.startPgwarden({
    general: {
      pooler_mode: "transaction",
      auth_type: "trust",
      workers,
      max_client_connections: n + 100,
      client_login_timeout: 0,
    },
    databases: [{ name: "bench", host: cluster.host, port: cluster.port, database_name: "bench" }],
    users: [
      { name: "bench", database: "bench", server_password: PASSWORD, pool_size: cfg.poolSize },
    ],
  });
  const sockets = [];
  try {
    await sleep(1000);
    const before = treeRss(pw.proc.pid);
    const t0 = Date.now();
    let failed = 0;
    let firstError = "";
    for (let i = 0; i < n; i += 200) {
      const batch = await Promise.allSettled(
        Array.from({ length: Math.min(200, n - i) }, () => idleClient(net, pw.host, pw.port)),
      );
      for (const b of batch) {
        if (b.status === "fulfilled") sockets.push(b.value);
        else {
          failed++;
          firstError ||= b.reason?.message ?? String(b.reason);
        }
      }
    }
    const loginSeconds = (Date.now() - t0) / 1000;
    await sleep(2000);
    const after = treeRss(pw.proc.pid);
    return {
      target: workers === 1 ? "pgwarden" : `pgwarden-${workers}w`,
      workers,
      clients: sockets.length,
      failed,
      firstError,
      processes: after.processes,
      rssBeforeMb: before.bytes / 2 ** 20,
      rssMb: after.bytes / 2 ** 20,
      kbPerClient: (after.bytes - before.bytes) / 1024 / Math.max(1, sockets.length),
      loginSeconds,
    };
  } finally {
    for (const s of sockets) s.destroy();
    await pw.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// Targets

/** pgbouncer-latest's binary: PGBOUNCER_LATEST_BIN, else .tmp/pgbouncer-latest/bin/pgbouncer. */
function latestPgbouncerBin() {
  const fromEnv = env("PGBOUNCER_LATEST_BIN", "");
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw new Error(`PGBOUNCER_LATEST_BIN=${fromEnv} does not exist`);
    return fromEnv;
  }
  const local = join(ROOT, ".tmp", "pgbouncer-latest", "bin", "pgbouncer");
  return existsSync(local) ? local : undefined;
}

/**
 * Starts the targets of cfg.targets that can run here. Returns { targets, notes }: each target
 * is { key, name, host, port, pid?, bin?, version? }; notes say why a target was skipped.
 */
async function startTargets(h, cluster, started) {
  const targets = [];
  const notes = [];
  // `processes` PgBouncers on one port (so_reuseport, PgBouncer's way to use more than one
  // core), pool_size split by pgwarden's own rule for workers (src/cluster/split.ts)
  const bouncer = async (key, bin, version, settings, processes = 1) => {
    const { share } = await import("../dist/cluster/split.js");
    const pids = [];
    let host;
    let port;
    for (let i = 0; i < processes; i++) {
      const pb = await h.pgbouncer.startPgbouncer({
        bin,
        port,
        databases: { bench: `host=${cluster.host} port=${cluster.port} dbname=bench` },
        users: [{ name: "bench", password: PASSWORD }],
        settings: {
          pool_mode: "transaction",
          default_pool_size: share(cfg.poolSize, i, processes, 1),
          auth_type: "scram-sha-256",
          ...(processes > 1 ? { so_reuseport: 1 } : {}),
          ...settings,
        },
      });
      started.push(pb);
      host = pb.host;
      port = pb.port;
      pids.push(pb.proc.pid);
    }
    const name = `pgbouncer-${version}${processes > 1 ? `-${processes}p` : ""}`;
    const taken = targets.some((t) => t.name === name);
    targets.push({
      key,
      name: taken ? `${name}-${key.slice("pgbouncer-".length)}` : name,
      host,
      port,
      pid: processes > 1 ? pids : pids[0],
      bin,
      version,
    });
  };
  for (const key of cfg.targets) {
    if (key === "pgwarden" || key === "pgwarden-b" || key === "pgwarden-2w") {
      const workers = key === "pgwarden-2w" ? 2 : 1;
      // pgwarden-b: the same with BENCH_B_MAIN (another build's dist/cli/main.js) and/or
      // BENCH_B_ENV ("NAME=value,..."), for an A/B of two builds or settings in one run
      const b = key === "pgwarden-b";
      const bEnv = Object.fromEntries(
        (b ? env("BENCH_B_ENV", "") : "")
          .split(",")
          .filter(Boolean)
          .map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
      );
      const bMain = b ? env("BENCH_B_MAIN", "") : "";
      log(`starting ${key}`);
      const nodeArgs = env("BENCH_PGWARDEN_NODE_ARGS", "");
      const mainBefore = process.env.PGWARDEN_MAIN;
      if (bMain) process.env.PGWARDEN_MAIN = bMain; // read by the harness while starting
      // (pgwarden-b on another node: the harness's node, passed as $0, is replaced)
      const bNode = b ? env("BENCH_B_NODE", "") : "";
      if (bNode)
        log(`pgwarden-b runs on ${bNode} (${execFileSync(bNode, ["-v"]).toString().trim()})`);
      const pw = await h.pgwarden.startPgwarden({
        // node's own flags (--cpu-prof is not allowed in NODE_OPTIONS): sh execs node with them
        prefix:
          nodeArgs || bNode
            ? ["sh", "-c", `exec ${bNode ? JSON.stringify(bNode) : '"$0"'} ${nodeArgs} "$@"`]
            : undefined,
        env: bEnv,
        general: {
          pooler_mode: "transaction",
          default_pool_size: cfg.poolSize,
          checkout_timeout: 120_000,
          // (only when set: an older build of pgwarden-b may not know the key)
          ...(workers > 1 ? { workers } : {}),
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
      if (mainBefore === undefined) delete process.env.PGWARDEN_MAIN;
      else process.env.PGWARDEN_MAIN = mainBefore;
      started.push(pw);
      targets.push({ key, name: key, host: pw.host, port: pw.port, pid: pw.proc.pid });
    } else if (key === "pgbouncer-latest" || key === "pgbouncer-latest-2p") {
      const bin = latestPgbouncerBin();
      const version = bin && h.pgbouncer.pgbouncerVersion(bin);
      if (!bin || !version) {
        notes.push(
          `pgbouncer-latest skipped: ${bin ? `${bin} --version failed` : "no binary"}. Build PgBouncer from its git repository with \`bash ../shared/tools/build-pgbouncer.sh <pgbouncer git dir>\` run from the repository root (it writes .tmp/pgbouncer-latest/bin/pgbouncer), or set PGBOUNCER_LATEST_BIN.`,
        );
        continue;
      }
      const processes = key === "pgbouncer-latest-2p" ? 2 : 1;
      log(
        `starting PgBouncer ${version} (${bin})${processes > 1 ? `, ${processes} processes` : ""}`,
      );
      await bouncer(key, bin, version, { max_prepared_statements: 200 }, processes);
    } else if (key === "pgbouncer-system") {
      const bin = h.pgbouncer.pgbouncerBin();
      const version = h.pgbouncer.pgbouncerVersion(bin);
      if (!version) {
        notes.push(
          `pgbouncer-system skipped: ${bin} does not run (apt-get install pgbouncer, or set PGBOUNCER_BIN).`,
        );
        continue;
      }
      log(`starting PgBouncer ${version} (${bin})`);
      await bouncer(key, bin, version, {});
    } else if (key === "direct") {
      targets.push({ key, name: "direct", host: cluster.host, port: cluster.port });
    } else if (key === "node-floor" || key === "node-floor-pool") {
      log(`starting ${key}`);
      const floor = await startNodeFloor(
        cluster,
        key === "node-floor"
          ? ["node-floor.mjs"]
          : ["node-floor-pool.mjs", "bench", PASSWORD, "bench", String(cfg.poolSize)],
      );
      started.push(floor);
      targets.push({ key, name: key, host: "127.0.0.1", port: floor.port, pid: floor.proc.pid });
    }
  }
  return { targets, notes };
}

/**
 * bench/node-floor.mjs, a 1:1 byte forwarder on pgwarden's socket layer (no pooling, no parsing),
 * on the node that runs pgwarden: the least CPU per transaction a Node.js proxy spends; or
 * bench/node-floor-pool.mjs, the least Node.js transaction pooler. `[script, ...args]`.
 */
async function startNodeFloor(cluster, [script, ...args]) {
  const node = process.execPath;
  const proc = spawn(
    node,
    [join(ROOT, "bench", script), "0", cluster.host, String(cluster.port), ...args],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  const port = await new Promise((resolve, reject) => {
    let out = "";
    proc.stdout.on("data", (d) => {
      out += d;
      const m = /listening (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    proc.once("exit", (code) => reject(new Error(`${script} exited with ${code}`)));
  });
  return {
    proc,
    port,
    stop: async () => {
      if (proc.exitCode !== null) return;
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGTERM");
      await exited;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// One pgbench run

/**
 * Runs pgbench against `target` and returns its row: the run's parameters, pgbench's numbers
 * (tps, processed, failed, latencyAvgMs), aborted clients (and the first abort message), the
 * proxy's CPU (userUs, sysUs, cpuUsPerTxn, …), progress lines' zero-tps seconds when `-P 1`
 * was given, and `error` when pgbench printed no summary. `during(elapsed)` runs alongside.
 */
async function pgbench(h, target, run, during) {
  const args = [
    "-n",
    "-c",
    String(run.clients),
    "-j",
    String(run.jobs),
    "-T",
    String(run.seconds),
    "-M",
    run.protocol,
    ...(run.workload === "select-only" ? ["-S"] : []),
    ...(run.rate > 0 ? ["-R", String(run.rate)] : []),
    ...(run.progress ? ["-P", "1"] : []),
    "-h",
    target.host,
    "-p",
    String(target.port),
    "-U",
    "bench",
    "bench",
  ];
  const before = treeCpu(target.pid);
  const startedAt = Date.now();
  const running = h.clients.runPgbench(args, {
    env: { PGPASSWORD: PASSWORD },
    timeoutMs: run.seconds * 1000 + 150_000,
  });
  const extra = during ? await during() : {};
  const r = await running;
  const finished = Date.now();
  const after = treeCpu(target.pid);

  const row = {
    ...run,
    target: target.name,
    command: `pgbench ${args.slice(0, args.indexOf("-h")).join(" ")}`,
    exit: r.code,
    tps: Number.NaN,
    processed: 0,
    failed: 0,
    ...extra,
  };
  try {
    Object.assign(row, h.clients.parsePgbench(r.stdout));
  } catch {
    // pgbench 15 prints no tps when no transaction completed, e.g. when its clients' logins
    // took all of -T on a busy machine
    const none = /number of transactions actually processed: 0\b/.test(r.stdout);
    const last = r.stderr.trim().split("\n").pop() ?? "";
    row.error = none
      ? "no transaction processed"
      : (last || `exit ${r.code}, no summary`).replace(/^pgbench: (error|fatal): /, "");
    row.output = r.stdout.slice(-2000);
  }
  const problems = h.clients.parsePgbenchProblems(r.stderr);
  row.aborted = problems.abortedClients;
  row.errorsLogged = problems.errors.length;
  row.abortReasons = countReasons(problems.aborts);
  row.errorReasons = countReasons(problems.errors);
  if (problems.aborts.length || problems.errors.length || row.error)
    row.stderr = r.stderr.slice(0, 20_000); // for BENCH_JSON
  if (run.progress) {
    const intervals = [...r.stderr.matchAll(/progress: [\d.]+ s, ([\d.]+) tps/g)];
    row.zeroTpsSeconds = intervals.filter((m) => Number(m[1]) === 0).length;
  }
  row.wallSeconds = (finished - startedAt) / 1000;
  if (before && after) {
    row.userUs = after.user - before.user;
    row.sysUs = after.sys - before.sys;
    row.cpuPercent = ((row.userUs + row.sysUs) / ((after.at - before.at) * 1000)) * 100;
    if (row.processed > 0) {
      row.userUsPerTxn = row.userUs / row.processed;
      row.sysUsPerTxn = row.sysUs / row.processed;
      row.cpuUsPerTxn = row.userUsPerTxn + row.sysUsPerTxn;
    }
  }
  return row;
}

/**
 * { reason: count } of pgbench's abort or error lines, the reason being the message without
 * the client and command numbers ("FATAL: terminating connection due to administrator command").
 */
function countReasons(lines, into = {}) {
  for (const line of lines) {
    const reason = line
      .replace(
        /^client \d+ (script \d+ )?aborted in command \d+ (query \d+: |\(\w+\) of script \d+; )?/,
        "",
      )
      .replace(/\s+/g, " ");
    into[reason] = (into[reason] ?? 0) + 1;
  }
  return into;
}

function mergeReasons(rows, key) {
  const out = {};
  for (const r of rows) for (const [k, n] of Object.entries(r[key])) out[k] = (out[k] ?? 0) + n;
  return out;
}

function describe(row) {
  const cpu =
    row.cpuUsPerTxn === undefined
      ? ""
      : `, ${fmt(row.cpuUsPerTxn, 1)} µs/txn (${fmt(row.userUsPerTxn, 1)} user, ${fmt(row.sysUsPerTxn, 1)} sys)`;
  const lat = row.rate > 0 ? `, latency ${fmt(row.latencyAvgMs, 3)} ms` : "";
  return `${fmt(row.tps)} tps${cpu}${lat}, failed ${row.failed}, aborted ${row.aborted}${row.errorsLogged ? `, ${row.errorsLogged} errors logged` : ""}${row.error ? ` (${row.error})` : ""}`;
}

// ---------------------------------------------------------------------------------------------
// Tables

function fmt(n, digits = 0) {
  return typeof n === "number" && Number.isFinite(n) ? n.toFixed(digits) : "-";
}

function median(values) {
  const v = values.filter((x) => typeof x === "number" && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

function table(header, body) {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
  return [
    line(header),
    `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`,
    ...body.map(line),
  ].join("\n");
}

/** One summary per (workload, protocol, clients, target) over the rounds, with the ratios. */
function summarize(runs, targets, reference) {
  const cells = new Map();
  for (const r of runs) {
    const key = [r.workload, r.protocol, r.clients, r.target].join("\t");
    const cell = cells.get(key) ?? [];
    cell.push(r);
    cells.set(key, cell);
  }
  const rows = [];
  for (const cell of cells.values()) {
    const first = cell[0];
    const error = cell.find((r) => r.error)?.error;
    rows.push({
      workload: first.workload,
      protocol: first.protocol,
      clients: first.clients,
      jobs: first.jobs,
      target: first.target,
      runs: cell.length,
      tps: median(cell.map((r) => r.tps)),
      cpuUsPerTxn: median(cell.map((r) => r.cpuUsPerTxn)),
      userUsPerTxn: median(cell.map((r) => r.userUsPerTxn)),
      sysUsPerTxn: median(cell.map((r) => r.sysUsPerTxn)),
      cpuPercent: median(cell.map((r) => r.cpuPercent)),
      latencyAvgMs: median(cell.map((r) => r.latencyAvgMs)),
      failed: cell.reduce((s, r) => s + r.failed, 0),
      aborted: cell.reduce((s, r) => s + r.aborted, 0),
      errorsLogged: cell.reduce((s, r) => s + r.errorsLogged, 0),
      ...(error ? { error } : {}),
      abortReasons: mergeReasons(cell, "abortReasons"),
      errorReasons: mergeReasons(cell, "errorReasons"),
    });
  }
  const order = (r) => [
    WORKLOADS.indexOf(r.workload),
    PROTOCOLS.indexOf(r.protocol),
    r.clients,
    targets.findIndex((t) => t.name === r.target),
  ];
  rows.sort((a, b) => {
    const x = order(a);
    const y = order(b);
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i] - y[i];
    return 0;
  });
  if (reference) {
    for (const pw of rows.filter((r) => r.target === "pgwarden")) {
      const pb = rows.find(
        (r) =>
          r.target === reference &&
          r.workload === pw.workload &&
          r.protocol === pw.protocol &&
          r.clients === pw.clients,
      );
      if (!pb) continue;
      pw.tpsRatio = pw.tps / pb.tps;
      pw.cpuRatio = pw.cpuUsPerTxn / pb.cpuUsPerTxn;
    }
  }
  return rows;
}

/**
 * With several rounds: each target's TPS over the reference's in the same round, how often it
 * was ahead, and the geometric mean of those ratios. TPS moves a lot from round to round on a
 * shared machine, so the spread says more than one median beside another.
 */
function roundRatios(runs, targets, reference) {
  const lines = [];
  const groups = new Map();
  for (const r of runs) {
    if (!Number.isFinite(r.tps) || r.tps <= 0) continue;
    const key = [r.workload, r.protocol, r.clients].join("\t");
    const byRound = groups.get(key) ?? new Map();
    const at = byRound.get(r.round) ?? new Map();
    at.set(r.target, r.tps);
    byRound.set(r.round, at);
    groups.set(key, byRound);
  }
  for (const [key, byRound] of groups) {
    const [workload, protocol, clients] = key.split("\t");
    for (const t of targets) {
      if (t.name === reference || t.key === "direct") continue;
      const ratios = [];
      for (const at of byRound.values()) {
        const a = at.get(t.name);
        const b = at.get(reference);
        if (a !== undefined && b !== undefined) ratios.push(a / b);
      }
      if (ratios.length < 2) continue;
      const ahead = ratios.filter((x) => x >= 1).length;
      const gmean = Math.exp(ratios.reduce((s, x) => s + Math.log(x), 0) / ratios.length);
      lines.push(
        `  ${workload} -M ${protocol} -c ${clients} ${t.name}: ${ratios.map((x) => fmt(x, 2)).join(" ")}; ahead in ${ahead} of ${ratios.length}; geometric mean ${fmt(gmean, 3)}`,
      );
    }
  }
  return lines;
}

function standardTable(rows, reference, latency) {
  const ref = reference ?? "pgbouncer";
  // [header, cell] per column; "lat ms" only with BENCH_RATE
  const columns = [
    ["workload", (r) => r.workload],
    ["protocol", (r) => r.protocol],
    ["clients", (r) => String(r.clients)],
    ["-j", (r) => String(r.jobs)],
    ["target", (r) => r.target],
    ["TPS", (r) => (r.error && !Number.isFinite(r.tps) ? "error" : fmt(r.tps))],
    ["µs/txn", (r) => fmt(r.cpuUsPerTxn, 1)],
    ["user", (r) => fmt(r.userUsPerTxn, 1)],
    ["sys", (r) => fmt(r.sysUsPerTxn, 1)],
    ["cpu %", (r) => fmt(r.cpuPercent)],
    ...(latency ? [["lat ms", (r) => fmt(r.latencyAvgMs, 3)]] : []),
    ["failed", (r) => String(r.failed)],
    ["aborted", (r) => String(r.aborted)],
    ["errors logged", (r) => String(r.errorsLogged)],
    [`TPS pgwarden/${ref}`, (r) => (r.tpsRatio === undefined ? "" : fmt(r.tpsRatio, 2))],
    [`µs/txn pgwarden/${ref}`, (r) => (r.cpuRatio === undefined ? "" : fmt(r.cpuRatio, 2))],
  ];
  return table(
    columns.map(([header]) => header),
    rows.map((r) => columns.map(([, cell]) => cell(r))),
  );
}

function restartTable(rows) {
  return table(
    ["target", "TPS", "txns", "wall s", "µs/txn", "failed", "aborted", "zero-tps s", "restart ms"],
    rows.map((r) => [
      r.target,
      r.error && !Number.isFinite(r.tps) ? "error" : fmt(r.tps),
      String(r.processed),
      fmt(r.wallSeconds, 1),
      fmt(r.cpuUsPerTxn, 1),
      String(r.failed),
      String(r.aborted),
      fmt(r.zeroTpsSeconds),
      fmt(r.restartMs),
    ]),
  );
}

/** For each row that has them: its error, and its aborts and logged errors by reason. */
function problems(rows, label) {
  const out = [];
  const reasons = (counts) =>
    Object.entries(counts)
      .map(([reason, n]) => `${n} × ${reason}`)
      .join("; ");
  for (const r of rows) {
    if (r.error) out.push(`  ${label(r)}: ${r.error}`);
    if (Object.keys(r.abortReasons).length)
      out.push(`  ${label(r)}: aborted: ${reasons(r.abortReasons)}`);
    if (Object.keys(r.errorReasons).length)
      out.push(`  ${label(r)}: errors logged: ${reasons(r.errorReasons)}`);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

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

function machine(h) {
  const cpus = os.cpus();
  const pg = execFileSync(join(h.postgres.pgBinDir(), "postgres"), ["--version"], {
    encoding: "utf8",
  }).trim();
  let commit = "unknown";
  try {
    commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], {
      cwd: ROOT,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
  } catch {
    // not a git checkout
  }
  return {
    pgwardenCommit: commit,
    postgres: pg,
    node: process.version,
    cpus: `${cpus.length} x ${cpus[0]?.model ?? "cpu"}`,
    clockTicks: CLK_TCK,
  };
}

async function main() {
  const h = await loadHarness();
  const started = [];
  const stopAll = async () => {
    for (const s of started.reverse()) await s.stop().catch(() => {});
    rmSync(h.out, { recursive: true, force: true });
  };
  try {
    const info = machine(h);
    info.loadStart = os.loadavg().map((l) => l.toFixed(2));
    const maxClients = Math.max(...cfg.clients, RESTART_CLIENTS);
    log(`node ${process.version} (${process.execPath}) runs the bench and pgwarden`);
    log(`starting PostgreSQL (${h.postgres.pgBinDir()})`);
    const cluster = await h.postgres.startPostgres({
      settings: {
        max_connections: String(Math.max(300, maxClients + 4 * cfg.poolSize + 20)),
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

    const { targets, notes } = await startTargets(h, cluster, started);
    for (const n of notes) log(n);
    const reference = targets.find((t) => t.key === "pgbouncer-latest")?.name;

    // standard rows, interleaved
    const runs = [];
    for (let round = 1; round <= cfg.rounds; round++) {
      const order = round % 2 ? targets : [...targets].reverse();
      for (const workload of cfg.workloads) {
        for (const clients of cfg.clients) {
          for (const protocol of cfg.protocols) {
            const jobs =
              protocol === "prepared" && clients > cfg.poolSize
                ? clients
                : Math.min(cfg.jobs, clients);
            for (const target of order) {
              const row = await pgbench(h, target, {
                round,
                workload,
                protocol,
                clients,
                jobs,
                seconds: cfg.seconds,
                rate: cfg.rate,
              });
              runs.push(row);
              log(
                `${cfg.rounds > 1 ? `round ${round} ` : ""}${workload} -M ${protocol} -c ${clients} -j ${jobs} ${target.name}: ${describe(row)}`,
              );
            }
          }
        }
      }
    }
    const standard = summarize(runs, targets, reference);

    // restart rows
    const restart = [];
    if (cfg.restart) {
      for (const target of targets.filter(
        (t) => t.key !== "direct" && !t.key.startsWith("node-floor"),
      )) {
        log(
          `restart row ${target.name}: ${cfg.restartSeconds} s, restart after ${cfg.restartSeconds / 2} s`,
        );
        const row = await pgbench(
          h,
          target,
          {
            workload: "tpcb-like",
            protocol: "simple",
            clients: RESTART_CLIENTS,
            jobs: Math.min(cfg.jobs, RESTART_CLIENTS),
            seconds: cfg.restartSeconds,
            progress: true,
          },
          async () => {
            await sleep((cfg.restartSeconds * 1000) / 2);
            const t0 = Date.now();
            await cluster.restart({ downMs: cfg.restartDownMs });
            return { restartMs: Date.now() - t0 };
          },
        );
        restart.push(row);
        log(`restart row ${target.name}: ${describe(row)}, restart took ${row.restartMs} ms`);
      }
    }
    // idle-client rows
    const idle = [];
    if (cfg.idleClients > 0) {
      for (const key of cfg.targets.filter((t) => t.startsWith("pgwarden"))) {
        const workers = key === "pgwarden-2w" ? 2 : 1;
        log(`idle row ${key}: ${cfg.idleClients} idle clients`);
        const row = await idleRow(h, cluster, workers, cfg.idleClients);
        idle.push(row);
        log(
          `idle row ${key}: ${row.clients} clients, RSS ${fmt(row.rssMb)} MB over ${row.processes} processes (${fmt(row.rssBeforeMb)} MB before), ${row.failed} failed`,
        );
      }
    }
    info.loadEnd = os.loadavg().map((l) => l.toFixed(2));

    // report
    const out = [];
    const versions = targets
      .filter((t) => t.version)
      .map((t) => `${t.name}: ${t.bin}`)
      .join("; ");
    out.push(
      "",
      `${info.postgres}; node ${info.node}; ${info.cpus}; pgwarden ${info.pgwardenCommit}${versions ? `; ${versions}` : ""}`,
      `load average ${info.loadStart.join(" ")} at the start, ${info.loadEnd.join(" ")} at the end`,
    );
    if (standard.length > 0) {
      out.push(
        "",
        `pgbench -T ${cfg.seconds}${cfg.rate > 0 ? ` -R ${cfg.rate}` : ""}, scale ${cfg.scale}, pool size ${cfg.poolSize}, transaction mode, SCRAM logins; targets interleaved` +
          (cfg.rounds > 1
            ? `, ${cfg.rounds} rounds (TPS and CPU: medians; failed, aborted: totals)`
            : ""),
        "µs/txn: proxy CPU (user + sys) per transaction; cpu %: proxy CPU over the run (100 = one core)",
        "",
        standardTable(standard, reference, cfg.rate > 0),
      );
      // (at a fixed rate every target's TPS is the rate: no ratios to show)
      const rr =
        cfg.rounds > 1 && reference && cfg.rate === 0 ? roundRatios(runs, targets, reference) : [];
      if (rr.length)
        out.push("", `TPS over ${reference}'s in the same round, round by round:`, ...rr);
      const p = problems(
        standard,
        (r) => `${r.workload} -M ${r.protocol} -c ${r.clients} ${r.target}`,
      );
      if (p.length) out.push("", "pgbench errors:", ...p);
    }
    if (restart.length > 0) {
      out.push(
        "",
        `restart: tpcb-like pgbench -c ${RESTART_CLIENTS} -j ${Math.min(cfg.jobs, RESTART_CLIENTS)} -T ${cfg.restartSeconds} -M simple, PostgreSQL restarted (fast shutdown${cfg.restartDownMs ? `, ${cfg.restartDownMs} ms down` : ""}) after ${cfg.restartSeconds / 2} s`,
        "",
        restartTable(restart),
      );
      const p = problems(restart, (r) => r.target);
      if (p.length) out.push("", "pgbench errors:", ...p);
    }
    if (idle.length > 0) {
      out.push(
        "",
        `idle clients: ${cfg.idleClients} logged-in clients (auth_type = trust) left idle, transaction mode, pool size ${cfg.poolSize}; RSS summed over every process of the instance (primary and workers)`,
        "",
        table(
          [
            "target",
            "processes",
            "idle clients",
            "failed",
            "RSS before (MB)",
            "RSS (MB)",
            "KB/client",
            "logins (s)",
          ],
          idle.map((r) => [
            r.target,
            String(r.processes),
            String(r.clients),
            String(r.failed),
            fmt(r.rssBeforeMb),
            fmt(r.rssMb),
            fmt(r.kbPerClient, 1),
            fmt(r.loginSeconds, 1),
          ]),
        ),
      );
      for (const r of idle)
        if (r.firstError) out.push(`${r.target}: first login error: ${r.firstError}`);
    }
    if (notes.length) out.push("", ...notes);
    process.stdout.write(`${out.join("\n")}\n`);

    if (cfg.json)
      writeFileSync(
        cfg.json,
        `${JSON.stringify(
          {
            config: cfg,
            machine: info,
            targets: targets.map(({ key, name, bin, version }) => ({ key, name, bin, version })),
            notes,
            standard,
            restart,
            idle,
            runs,
          },
          null,
          2,
        )}\n`,
      );
  } finally {
    await stopAll();
  }
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${err?.stack ?? err}\n`);
  process.exitCode = 1;
});
