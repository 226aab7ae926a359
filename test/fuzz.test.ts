// Mutation fuzzing of a real pgwarden child against a real PostgreSQL (design §7: "no byte from a
// client can take the process down"). For each session state the fuzzer drives raw sockets
// there with valid bytes (startup, SCRAM, queries), then sends mutated bytes (bit flips, bad
// lengths such as 0x80000000/0xFFFFFFFF/0..3, random types, truncations, duplicated and spliced
// messages from a corpus of valid frontend messages), cut into writes that often split a header.
// Meanwhile "bystander" clients (node-postgres) run checked queries through the same pools.
//
// After each batch: the pgwarden process is alive; every fuzzed socket was closed by pgwarden,
// or closed once the fuzzer closed its side (no hang), and none got pgwarden's "internal error";
// the bystanders saw no error and no wrong result; once the bystanders are paused, SHOW POOLS and
// SHOW CLIENTS come back to the baseline (no leaked session, no server still leased or waited
// for); a fresh login works; and the child's RSS stays within +64 MB of its baseline.
//
// FUZZ_SEED=<n> replays a run's inputs (timing may differ); FUZZ_SECONDS=<s> sets the fuzzing
// time shared by the states (default 45); FUZZ_REGRESSIONS=0 leaves out the fixed inputs of
// known bugs that each state's first batch sends before the random ones.
import { readFileSync } from "node:fs";
import pg from "pg";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  ADMIN_UNSAFE,
  chunkify,
  headerOffsets,
  hex,
  type Kind,
  make,
  mutate,
} from "./fuzz/mutate.js";
import { deriveSeed, Rng } from "./fuzz/rng.js";
import { errorFields, fe, type LoginState, login, RawConn, splitBackend } from "./fuzz/wire.js";
import { type Pgwarden, startPgwarden } from "./harness/pgwarden.js";
import { type PgCluster, startPostgres } from "./harness/postgres.js";
import { sleep } from "./helpers.js";

const SEED = process.env.FUZZ_SEED
  ? Number(process.env.FUZZ_SEED) >>> 0
  : Math.floor(Math.random() * 0x100000000);
const FUZZ_SECONDS = Number(process.env.FUZZ_SECONDS ?? 45);
const REGRESSIONS = process.env.FUZZ_REGRESSIONS !== "0";

/** Quiet time after which a fuzzed socket that pgwarden keeps open is closed by us (FIN). */
const QUIET_MS = 300;
/** After our FIN, pgwarden must close within this. */
const CLOSE_BOUND_MS = 5_000;
/** After a batch, pools and clients must be back to the baseline within this. */
const SETTLE_MS = 8_000;
const RSS_SLACK_KB = 64 * 1024;
/** Megabytes a client sends while its login waits for a server (state (c), regression 1). */
const FLOOD_MB = 160;
const FUZZ_POOL_SIZE = 3;
const INTERNAL_ERROR = "pgwarden: internal error";

const USERS = {
  fuzz: { name: "fuzz", password: "fuzz-pw" },
  by: { name: "by", password: "by-pw" },
  admin: { name: "ops", password: "ops-pw" },
};

let cluster: PgCluster;
let pw: Pgwarden | null = null;
let env: Env | null = null;

// ---- bystanders ------------------------------------------------------------------------------

class Gate {
  private open = true;
  private waiters: Array<() => void> = [];
  wait(): Promise<void> {
    return this.open ? Promise.resolve() : new Promise((r) => this.waiters.push(r));
  }
  close(): void {
    this.open = false;
  }
  openAll(): void {
    this.open = true;
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

/** A node-postgres client running checked queries in a loop until stopped. */
class Bystander {
  client: pg.Client | null = null;
  readonly errors: string[] = [];
  busy = false;
  ops = 0;
  private stopped = false;
  private loop: Promise<void> = Promise.resolve();

  constructor(
    private readonly target: { host: string; port: number },
    readonly user: { name: string; password: string },
    readonly name: string,
    private readonly gate: Gate,
  ) {}

  async start(): Promise<void> {
    await this.connect();
    this.loop = this.run();
  }

  private async connect(): Promise<void> {
    const c = new pg.Client({
      host: this.target.host,
      port: this.target.port,
      user: this.user.name,
      password: this.user.password,
      database: "appdb",
      // A different application_name per bystander: servers change hands with a settings sync.
      application_name: this.name,
      connectionTimeoutMillis: 30_000,
      query_timeout: 30_000,
    });
    c.on("error", (e) => this.errors.push(`${this.name}: connection error: ${e.message}`));
    this.client = c;
    await c.connect();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      await this.gate.wait();
      if (this.stopped) break;
      this.busy = true;
      try {
        await this.op();
        this.ops++;
      } catch (e) {
        this.errors.push(`${this.name}: ${(e as Error).message}`);
        await endSoon(this.client);
        try {
          await this.connect();
        } catch (e2) {
          this.errors.push(`${this.name}: reconnect failed: ${(e2 as Error).message}`);
          await sleep(200);
        }
      } finally {
        this.busy = false;
      }
    }
  }

  private async op(): Promise<void> {
    const c = this.client!;
    const n = Math.floor(Math.random() * 1_000_000);
    const check = (got: unknown, want: unknown, what: string) => {
      if (got !== want)
        throw new Error(`wrong result for ${what}: ${String(got)} != ${String(want)}`);
    };
    switch (n % 4) {
      case 0: {
        const r = await c.query(`select ${n}::int as v`);
        check(r.rows[0]?.v, n, "simple query");
        return;
      }
      case 1: {
        const s = `s${n}-${"x".repeat(n % 300)}`;
        const r = await c.query("select $1::text as v", [s]);
        check(r.rows[0]?.v, s, "extended query");
        return;
      }
      case 2: {
        await c.query("begin");
        const r = await c.query("select $1::int + 1 as v", [n]);
        check(r.rows[0]?.v, n + 1, "query in a transaction");
        await c.query("commit");
        return;
      }
      default: {
        const r = await c.query("select g, repeat('y', 100) as pad from generate_series(1, 200) g");
        check(r.rows.length, 200, "row count");
        check(r.rows[199]?.g, 200, "last row");
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.gate.openAll();
    await Promise.race([this.loop, sleep(2000)]);
    await endSoon(this.client);
  }
}

// ---- the environment: pgwarden, bystanders, holders, admin monitor ----------------------------

interface PoolRow {
  database: string;
  user: string;
  cl_active: number;
  cl_waiting: number;
  sv_active: number;
  sv_idle: number;
  sv_login: number;
}

interface Env {
  pw: Pgwarden;
  gate: Gate;
  bystanders: Bystander[];
  /** Clients of the fuzz pool that hold every server in BEGIN during state (c). */
  holders: pg.Client[];
  monitor: pg.Client;
  rssBaselineKb: number;
}

async function startPooler(): Promise<Pgwarden> {
  return startPgwarden({
    general: {
      // The fuzz states hold every server of the pool in BEGIN and watch one process's RSS:
      // exact per-process pool accounting, so one process even under PGWARDEN_TEST_WORKERS.
      workers: 1,
      pooler_mode: "transaction",
      auth_type: "scram",
      checkout_timeout: 60_000,
      connect_timeout: 10_000,
      min_pool_size: 1,
    },
    databases: [{ name: "appdb", host: cluster.host, port: cluster.port, database_name: "appdb" }],
    users: [
      {
        name: USERS.fuzz.name,
        database: "appdb",
        password: USERS.fuzz.password,
        server_user: "app",
        server_password: "app-pw",
        pool_size: FUZZ_POOL_SIZE,
      },
      {
        name: USERS.by.name,
        database: "appdb",
        password: USERS.by.password,
        server_user: "app",
        server_password: "app-pw",
        pool_size: 2,
      },
    ],
    admin: { name: "admin", user: USERS.admin.name, password: USERS.admin.password },
  });
}

async function pgClient(
  p: Pgwarden,
  user: { name: string; password: string },
  database = "appdb",
  extra: Partial<pg.ClientConfig> = {},
): Promise<pg.Client> {
  const c = new pg.Client({
    host: p.host,
    port: p.port,
    user: user.name,
    password: user.password,
    database,
    connectionTimeoutMillis: 20_000,
    query_timeout: 30_000,
    ...extra,
  });
  c.on("error", () => {});
  await c.connect();
  return c;
}

function alive(p: Pgwarden): boolean {
  return p.proc.exitCode === null && p.proc.signalCode === null;
}

function rssKb(p: Pgwarden): number {
  const status = readFileSync(`/proc/${p.proc.pid}/status`, "utf8");
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(status);
  return m ? Number(m[1]) : 0;
}

async function startEnv(): Promise<Env> {
  const p = await startPooler();
  pw = p;
  const gate = new Gate();
  const bystanders = [
    new Bystander(p, USERS.fuzz, "by-fuzz-1", gate),
    new Bystander(p, USERS.fuzz, "by-fuzz-2", gate),
    new Bystander(p, USERS.by, "by-other-1", gate),
    new Bystander(p, USERS.by, "by-other-2", gate),
  ];
  const monitor = await pgClient(p, USERS.admin, "admin");
  const holders: pg.Client[] = [];
  for (let i = 0; i < FUZZ_POOL_SIZE; i++)
    holders.push(await pgClient(p, USERS.fuzz, "appdb", { application_name: `holder-${i}` }));
  for (const b of bystanders) await b.start();
  const e: Env = { pw: p, gate, bystanders, holders, monitor, rssBaselineKb: 0 };
  // Warm up, then take the memory baseline.
  await sleep(1000);
  const problems = await settle(e);
  if (problems.length > 0) throw new Error(`baseline not reached:\n${problems.join("\n")}`);
  e.rssBaselineKb = rssKb(p);
  e.gate.openAll();
  return e;
}

/** client.end(), but not waiting long for a connection whose pgwarden died. */
async function endSoon(c: pg.Client | null): Promise<void> {
  if (!c) return;
  await Promise.race([c.end().catch(() => {}), sleep(1000)]);
}

async function stopEnv(e: Env): Promise<void> {
  await Promise.all(e.bystanders.map((b) => b.stop()));
  await Promise.all([...e.holders, e.monitor].map(endSoon));
  await e.pw.stop("SIGTERM", 5000);
}

async function showPools(e: Env): Promise<PoolRow[]> {
  return (await e.monitor.query("SHOW POOLS")).rows as PoolRow[];
}

async function showClients(e: Env): Promise<Array<{ user: string; state: string }>> {
  return (await e.monitor.query("SHOW CLIENTS")).rows;
}

/**
 * Pauses the bystanders, then waits until the pools and clients are back to the baseline: only
 * the bystanders, holders and monitor connected, no server leased, logging in or waited for.
 * Returns what is wrong (empty when fine); the bystanders stay paused.
 */
async function settle(e: Env): Promise<string[]> {
  e.gate.close();
  const idleBy = performance.now() + 35_000;
  while (e.bystanders.some((b) => b.busy) && performance.now() < idleBy) await sleep(10);
  const stuck = e.bystanders.filter((b) => b.busy).map((b) => b.name);
  if (stuck.length > 0) return [`bystanders stuck in a query for 35 s: ${stuck.join(", ")}`];
  const expectedClients = e.bystanders.length + e.holders.length + 1;
  const deadline = performance.now() + SETTLE_MS;
  let last = "";
  for (;;) {
    if (!alive(e.pw)) return ["pgwarden exited"];
    try {
      const pools = await showPools(e);
      const clients = await showClients(e);
      const bad = pools.filter(
        (p) =>
          Number(p.cl_waiting) !== 0 ||
          Number(p.sv_active) !== 0 ||
          Number(p.sv_login) !== 0 ||
          Number(p.cl_active) !== 0,
      );
      if (bad.length === 0 && clients.length === expectedClients) return [];
      last =
        `pools: ${JSON.stringify(pools)}\nclients (${clients.length}, expected ${expectedClients}): ` +
        JSON.stringify(clients.map((c) => `${c.user}/${c.state}`));
    } catch (err) {
      last = `admin query failed: ${(err as Error).message}`;
    }
    if (performance.now() > deadline)
      return [`not back to baseline ${SETTLE_MS} ms after the batch:\n${last}`];
    await sleep(50);
  }
}

/** The checks after each batch (see the header). Returns the problems found. */
async function checkInvariants(e: Env): Promise<string[]> {
  const problems: string[] = [];
  if (!alive(e.pw)) {
    problems.push(`pgwarden exited (${e.pw.proc.exitCode ?? e.pw.proc.signalCode})`);
  } else {
    problems.push(...(await settle(e)));
    if (alive(e.pw)) {
      try {
        const c = await pgClient(e.pw, USERS.fuzz);
        const r = await c.query("select 42 as v");
        if (r.rows[0]?.v !== 42) problems.push("fresh login: wrong result");
        await c.end();
      } catch (err) {
        problems.push(`fresh login failed: ${(err as Error).message}`);
      }
      const rss = rssKb(e.pw);
      if (rss > e.rssBaselineKb + RSS_SLACK_KB)
        problems.push(
          `RSS ${rss} kB, baseline ${e.rssBaselineKb} kB (+${RSS_SLACK_KB} kB allowed)`,
        );
    } else {
      problems.push(`pgwarden exited (${e.pw.proc.exitCode ?? e.pw.proc.signalCode})`);
    }
  }
  for (const b of e.bystanders) {
    if (b.errors.length > 0) problems.push(...b.errors.splice(0).map((x) => `bystander ${x}`));
  }
  e.gate.openAll();
  return problems;
}

function logTail(p: Pgwarden, n = 60): string {
  return p
    .logs()
    .filter((l) => !l.includes('"level":30'))
    .slice(-n)
    .join("\n");
}

// ---- fuzz cases ------------------------------------------------------------------------------

interface Seed {
  buf: Buffer;
  typed: boolean;
}

/** A state's setup for one case: valid bytes that bring the socket there, then what to mutate. */
interface Setup {
  what: string;
  /** Valid bytes written in the same write as the first fuzzed chunk (e.g. the last login step). */
  prefix?: Buffer;
  seeds: Seed[];
  kinds: readonly Kind[];
  /** A fixed input instead of a mutation (regression inputs); `delayMs` between its writes. */
  fixed?: { chunks: Buffer[]; what: string; delayMs?: number };
}

interface State {
  id: string;
  title: string;
  /** Cases per batch. */
  perBatch: number;
  setup(conn: RawConn, rng: Rng, regression: number | null): Promise<Setup>;
  /** Fixed inputs of known bugs, run as the first batch. */
  regressions?: number;
  /** Runs after every case of the batch has sent its bytes (state (c) releases its holders). */
  afterSend?(e: Env): Promise<void>;
  beforeSend?(e: Env): Promise<void>;
}

interface CaseReport {
  desc: string;
  outcome: "closed" | "closed-after-fin" | "hang" | "setup-failed";
  problems: string[];
  codes: string[];
}

const LOGGED_IN_KINDS: readonly Kind[] = [
  "query",
  "query",
  "parse",
  "bind",
  "describe",
  "execute",
  "sync",
  "flush",
  "close",
  "copy-data",
  "copy-done",
  "copy-fail",
  "terminate",
  "function-call",
  "password",
  "garbage",
];

function typed(buf: Buffer): Seed {
  return { buf, typed: true };
}

/** 1–3 corpus messages to mutate. */
function seedsFrom(rng: Rng, kinds: readonly Kind[]): Seed[] {
  const n = rng.range(1, 3);
  const out: Seed[] = [];
  for (let i = 0; i < n; i++) {
    const k = rng.pick(kinds);
    out.push({ buf: make(rng, k), typed: k !== "garbage" && !k.startsWith("startup") });
  }
  return out;
}

async function loginFuzz(conn: RawConn, params: Record<string, string> = {}): Promise<LoginState> {
  return login(conn, {
    user: USERS.fuzz.name,
    password: USERS.fuzz.password,
    database: "appdb",
    params,
  });
}

/** The known crash: a valid query and, in the same write, a header whose length is 0x80000000. */
function queryThenBadHeader(len = 0x80000000): Buffer {
  const bad = Buffer.alloc(5);
  bad[0] = 0x51;
  bad.writeUInt32BE(len, 1);
  return Buffer.concat([fe.query("select 1"), bad]);
}

const STATES: State[] = [
  {
    id: "a",
    title: "before and inside the startup packet",
    perBatch: 8,
    async setup(_conn, rng) {
      const start = rng.weighted<Seed[]>([
        [4, [{ buf: make(rng, "startup"), typed: false }]],
        [
          2,
          [
            { buf: fe.ssl(), typed: false },
            { buf: make(rng, "startup"), typed: false },
          ],
        ],
        [
          1,
          [
            { buf: fe.gssenc(), typed: false },
            { buf: make(rng, "startup"), typed: false },
          ],
        ],
        [1, [{ buf: make(rng, "cancel"), typed: false }]],
        [1, [{ buf: make(rng, "startup-admin"), typed: false }]],
        [1, [{ buf: make(rng, "startup-v2"), typed: false }]],
        [1, [{ buf: make(rng, "garbage"), typed: false }]],
      ]);
      return {
        what: "fresh connection",
        seeds: start,
        kinds: ["startup", "ssl", "gssenc", "cancel", "startup-admin", "sasl-initial", "garbage"],
      };
    },
  },
  {
    id: "b",
    title: "during SCRAM authentication",
    perBatch: 6,
    async setup(conn, rng) {
      const admin = rng.bool(0.25);
      const user = admin ? USERS.admin : USERS.fuzz;
      const database = admin ? "admin" : "appdb";
      if (rng.bool()) {
        const s = await login(conn, {
          user: user.name,
          password: user.password,
          database,
          until: "sasl",
        });
        return {
          what: `${user.name}: AuthenticationSASL received`,
          seeds: [typed(fe.saslInitial("SCRAM-SHA-256", s.clientFirst))],
          kinds: ["sasl-initial", "sasl-response", "password", "query", "garbage"],
        };
      }
      const s = await login(conn, {
        user: user.name,
        password: rng.bool(0.8) ? user.password : "wrong",
        database,
        until: "continue",
      });
      return {
        what: `${user.name}: AuthenticationSASLContinue received`,
        seeds: [typed(fe.saslResponse(s.clientFinal!))],
        kinds: ["sasl-response", "password", "query", "terminate", "garbage"],
      };
    },
  },
  {
    id: "c",
    title: "logged in, waiting for a server (every server held in BEGIN)",
    perBatch: 6,
    regressions: 2,
    async setup(conn, rng, regression) {
      if (regression === 1) {
        // The login itself waits for a server (its welcome needs one) while the client keeps
        // sending: what pgwarden buffers meanwhile must stay bounded (the RSS check sees it).
        const s = await login(conn, {
          user: USERS.fuzz.name,
          password: USERS.fuzz.password,
          database: "appdb",
          until: "continue",
        });
        const mb = fe.copyData(Buffer.alloc((1 << 20) - 5, 0x61));
        return {
          what: "SASLContinue received",
          seeds: [],
          kinds: [],
          fixed: {
            chunks: [
              fe.saslResponse(s.clientFinal!),
              ...Array.from({ length: FLOOD_MB }, () => mb),
            ],
            what: `SASLResponse, then ${FLOOD_MB} MB of CopyData while the login waits for a server`,
          },
        };
      }
      await loginFuzz(conn);
      if (regression === 0)
        return {
          what: "logged in",
          seeds: [],
          kinds: [],
          fixed: { chunks: [queryThenBadHeader()], what: "Q 'select 1' + 'Q' 0x80000000" },
        };
      return {
        what: "logged in",
        ...(rng.bool() ? { prefix: fe.query("select 1") } : {}),
        seeds: seedsFrom(rng, LOGGED_IN_KINDS),
        kinds: LOGGED_IN_KINDS,
      };
    },
    async beforeSend(e) {
      for (const h of e.holders) await h.query("begin");
      await Promise.all(e.holders.map((h) => h.query("select 1")));
    },
    async afterSend(e) {
      await sleep(150);
      const pools = await showPools(e);
      const fuzzPool = pools.find((p) => p.user === USERS.fuzz.name);
      waitingSeen = Math.max(waitingSeen, Number(fuzzPool?.cl_waiting ?? 0));
      await Promise.all(e.holders.map((h) => h.query("commit")));
    },
  },
  {
    id: "d",
    title: "while its settings are synced (application_name/search_path differ)",
    perBatch: 6,
    regressions: 1,
    async setup(conn, rng, regression) {
      const params = {
        application_name: `fz-${rng.seed()}`,
        ...(rng.bool() ? { search_path: `public, fz${rng.int(1000)}` } : {}),
      };
      if (regression !== null || rng.bool()) {
        // The last login step and the fuzz in one write: the bytes wait while the login's
        // checkout syncs the new application_name.
        const s = await login(conn, {
          user: USERS.fuzz.name,
          password: USERS.fuzz.password,
          database: "appdb",
          params,
          until: "continue",
        });
        const prefix = fe.saslResponse(s.clientFinal!);
        if (regression !== null)
          return {
            what: `SASLContinue received (${JSON.stringify(params)})`,
            seeds: [],
            kinds: [],
            fixed: {
              chunks: [Buffer.concat([prefix, queryThenBadHeader()])],
              what: "SASLResponse + Q 'select 1' + 'Q' 0x80000000",
            },
          };
        return {
          what: `SASLContinue received (${JSON.stringify(params)}); fuzz sent with the SASLResponse`,
          prefix: Buffer.concat([prefix, ...(rng.bool() ? [fe.query("select 1")] : [])]),
          seeds: seedsFrom(rng, LOGGED_IN_KINDS),
          kinds: LOGGED_IN_KINDS,
        };
      }
      await loginFuzz(conn, params);
      return {
        what: `logged in (${JSON.stringify(params)}); fuzz sent with the first query`,
        prefix: fe.query("select 1"),
        seeds: seedsFrom(rng, LOGGED_IN_KINDS),
        kinds: LOGGED_IN_KINDS,
      };
    },
  },
  {
    id: "e",
    title: "leased, mid-transaction",
    // Each case holds a server in a transaction: no more cases than servers.
    perBatch: FUZZ_POOL_SIZE,
    async setup(conn, rng) {
      await loginFuzz(conn);
      conn.write(fe.query("begin"));
      const z = await conn.readUntil("Z");
      if (z.body[0] !== 0x54) throw new Error("BEGIN did not leave a transaction open");
      let what = "logged in, BEGIN done";
      if (rng.bool(0.3)) {
        // Mid extended-protocol batch too: Parse/Bind/Execute without Sync.
        conn.write(
          Buffer.concat([
            fe.parse("", "select 1"),
            fe.bind("", "", []),
            fe.execute("", 0),
            fe.flush(),
          ]),
        );
        await conn.readUntil("C");
        what += ", P/B/E/H sent without Sync";
      }
      return { what, seeds: seedsFrom(rng, LOGGED_IN_KINDS), kinds: LOGGED_IN_KINDS };
    },
  },
  {
    id: "f",
    title: "in COPY FROM STDIN",
    // Each case holds a server in a transaction: no more cases than servers.
    perBatch: FUZZ_POOL_SIZE,
    async setup(conn, rng) {
      await loginFuzz(conn);
      conn.write(fe.query("copy fuzz_copy from stdin"));
      await conn.readUntil("G");
      const kinds: Kind[] = [
        "copy-data",
        "copy-data",
        "copy-data",
        "copy-done",
        "copy-fail",
        "query",
        "sync",
        "terminate",
        "garbage",
      ];
      return { what: "logged in, CopyInResponse received", seeds: seedsFrom(rng, kinds), kinds };
    },
  },
  {
    id: "g",
    title: "in the admin console",
    perBatch: 6,
    async setup(conn, rng) {
      await login(conn, {
        user: USERS.admin.name,
        password: USERS.admin.password,
        database: "admin",
      });
      const kinds: Kind[] = [
        "admin-query",
        "admin-query",
        "admin-query",
        "query",
        "parse",
        "sync",
        "terminate",
        "garbage",
      ];
      return { what: "admin console, logged in", seeds: seedsFrom(rng, kinds), kinds };
    },
  },
  {
    id: "h",
    title: "logged in and idle (a server is leased on demand)",
    perBatch: 6,
    regressions: 2,
    async setup(conn, rng, regression) {
      await loginFuzz(conn);
      if (regression === 0) {
        // A header cut in two: its first bytes go to the server that the client leases for
        // them, the rest makes the length 0x80000000.
        return {
          what: "logged in",
          seeds: [],
          kinds: [],
          fixed: {
            chunks: [Buffer.from([0x64, 0x80]), Buffer.from([0x00, 0x00, 0x00])],
            delayMs: 50,
            what: "write 'd' 0x80, then 00 00 00 (CopyData header with length 0x80000000, split)",
          },
        };
      }
      if (regression === 1) {
        return {
          what: "logged in",
          seeds: [],
          kinds: [],
          fixed: {
            chunks: [Buffer.from([0x51, 0x00]), Buffer.from([0x00, 0x00, 0x02])],
            delayMs: 50,
            what: "write 'Q' 00, then 00 00 02 (Query header with length 2, split)",
          },
        };
      }
      return { what: "logged in", seeds: seedsFrom(rng, LOGGED_IN_KINDS), kinds: LOGGED_IN_KINDS };
    },
  },
  {
    id: "i",
    title: "named statements held back behind a running DEALLOCATE ALL (statement rewriter on)",
    // Each case holds a server while its query sleeps: no more cases than servers.
    perBatch: FUZZ_POOL_SIZE,
    async setup(conn, rng) {
      await loginFuzz(conn);
      conn.write(Buffer.concat([fe.parse("fz1", "select 1"), fe.sync()]));
      await conn.readUntil("Z");
      // The query sleeps, then drops every prepared statement: the rewriter holds the Bind of
      // fz1 sent after it, and whatever the fuzz sends next, until it completes.
      conn.write(
        Buffer.concat([
          fe.query("select pg_sleep(0.3); deallocate all"),
          fe.bind("", "fz1", []),
          fe.execute("", 0),
          fe.sync(),
        ]),
      );
      return {
        what: "fz1 prepared; DEALLOCATE ALL running, a Bind of fz1 held back behind it",
        seeds: seedsFrom(rng, LOGGED_IN_KINDS),
        kinds: LOGGED_IN_KINDS,
      };
    },
  },
];

let waitingSeen = 0;

interface Prepared {
  conn: RawConn | null;
  desc: string;
  chunks: Buffer[];
  delays: number[];
  /** Bytes received before the fuzzed bytes were sent. */
  receivedBefore: number;
  /** Past the startup packet: pgwarden answers in typed messages only. */
  typedStream: boolean;
  setupError?: string;
}

async function prepareCase(st: State, rng: Rng, regression: number | null): Promise<Prepared> {
  let conn: RawConn | null = null;
  try {
    conn = await RawConn.connect(pw!.host, pw!.port);
    const s = await st.setup(conn, rng, regression);
    let chunks: Buffer[];
    let desc: string;
    let delays: number[] | null = null;
    if (s.fixed) {
      chunks = s.fixed.chunks;
      desc = `${s.what}; fixed input: ${s.fixed.what}`;
      delays = chunks.map((_, i) => (i === 0 ? 0 : (s.fixed?.delayMs ?? 0)));
    } else {
      let m = mutate(rng, s.seeds, s.kinds);
      if (st.id === "g") {
        for (let i = 0; i < 20 && ADMIN_UNSAFE.test(m.bytes.toString("latin1")); i++)
          m = mutate(rng, s.seeds, s.kinds);
        if (ADMIN_UNSAFE.test(m.bytes.toString("latin1")))
          m = { bytes: fe.query("SHOW VERSION"), ops: ["(unsafe mutation replaced)"] };
      }
      const prefix = s.prefix ?? Buffer.alloc(0);
      const bytes = Buffer.concat([prefix, m.bytes]);
      chunks = chunkify(rng, bytes, headerOffsets(bytes, prefix.length));
      // The prefix always goes whole, in the first write.
      if (prefix.length > 0 && chunks[0]!.length < prefix.length) {
        chunks = chunkify(rng, m.bytes, headerOffsets(m.bytes));
        chunks[0] = Buffer.concat([prefix, chunks[0]!]);
      }
      desc = `${s.what}; ops [${m.ops.join(" ")}]`;
    }
    delays ??= chunks.map(() => (rng.bool(0.5) ? 0 : rng.range(1, 30)));
    return {
      conn,
      desc,
      chunks,
      delays,
      receivedBefore: conn.received().length,
      typedStream: st.id !== "a",
    };
  } catch (err) {
    conn?.destroy();
    return {
      conn: null,
      desc: `setup of state (${st.id})`,
      chunks: [],
      delays: [],
      receivedBefore: 0,
      typedStream: false,
      setupError: (err as Error).message,
    };
  }
}

async function send(p: Prepared): Promise<void> {
  if (!p.conn) return;
  for (let i = 0; i < p.chunks.length; i++) {
    if (i > 0 && p.delays[i]! > 0) await sleep(p.delays[i]!);
    p.conn.write(p.chunks[i]!);
  }
}

async function observe(p: Prepared): Promise<CaseReport> {
  const shown = p.chunks.length > 8 ? p.chunks.slice(0, 4) : p.chunks;
  const writes =
    shown.map((c) => hex(c)).join(" | ") +
    (shown.length < p.chunks.length ? ` | … (${p.chunks.length} writes)` : "");
  const desc = `${p.desc}; writes: ${writes}`;
  if (!p.conn)
    return {
      desc,
      outcome: "setup-failed",
      problems: [`setup failed: ${p.setupError}`],
      codes: [],
    };
  const conn = p.conn;
  try {
    let outcome: CaseReport["outcome"];
    if (await conn.settle(QUIET_MS, 30_000)) outcome = "closed";
    else if (await conn.finAndWait(CLOSE_BOUND_MS)) outcome = "closed-after-fin";
    else outcome = "hang";
    const problems: string[] = [];
    if (outcome === "hang")
      problems.push(
        `hang: pgwarden did not close the connection ${CLOSE_BOUND_MS} ms after the client's FIN`,
      );
    const all = conn.received();
    if (all.includes(INTERNAL_ERROR)) problems.push(`client got "${INTERNAL_ERROR}"`);
    const after = all.subarray(p.receivedBefore);
    const codes: string[] = [];
    const { messages } = splitBackend(after);
    for (const m of messages) if (m.type === "E") codes.push(errorFields(m.body).C ?? "?");
    // Past the startup packet, pgwarden closes a session on its own only with an ErrorResponse,
    // or after a Terminate (0x58 somewhere in what was sent: a conservative test).
    const sent = Buffer.concat(p.chunks);
    if (
      outcome === "closed" &&
      p.typedStream &&
      messages[messages.length - 1]?.type !== "E" &&
      !sent.includes(0x58)
    )
      problems.push(`closed without an ErrorResponse (received: ${hex(after)})`);
    return { desc, outcome, problems, codes };
  } finally {
    conn.destroy();
  }
}

async function runBatch(
  st: State,
  rng: Rng,
  regression: number | null,
): Promise<{ reports: CaseReport[]; hookProblems: string[] }> {
  const n = regression === null ? st.perBatch : 1;
  const rngs = Array.from({ length: n }, () => new Rng(rng.seed()));
  const prepared = await Promise.all(rngs.map((r) => prepareCase(st, r, regression)));
  const hookProblems: string[] = [];
  try {
    await st.beforeSend?.(env!);
  } catch (err) {
    hookProblems.push(`holding the servers failed: ${(err as Error).message}`);
  }
  await Promise.all(prepared.map(send));
  // Memory while the batch's bytes are in flight (before anything is released): whatever
  // pgwarden reads it must not buffer without bound. Give it time to read what it will.
  const drainBy = performance.now() + 2000;
  while (
    prepared.some((p) => p.conn && p.conn.socket.writableLength > 0) &&
    performance.now() < drainBy
  )
    await sleep(20);
  if (alive(env!.pw)) {
    const rss = rssKb(env!.pw);
    if (rss > env!.rssBaselineKb + RSS_SLACK_KB)
      hookProblems.push(
        `RSS ${rss} kB during the batch, baseline ${env!.rssBaselineKb} kB (+${RSS_SLACK_KB} kB allowed)`,
      );
  }
  try {
    await st.afterSend?.(env!);
  } catch (err) {
    hookProblems.push(`releasing the servers failed: ${(err as Error).message}`);
  }
  return { reports: await Promise.all(prepared.map(observe)), hookProblems };
}

// ---- the tests -------------------------------------------------------------------------------

beforeAll(async () => {
  console.log(`[fuzz] FUZZ_SEED=${SEED} FUZZ_SECONDS=${FUZZ_SECONDS}`);
  cluster = await startPostgres();
  await cluster.createRole("app", "app-pw");
  await cluster.createDatabase("appdb", "app");
  const c = new pg.Client({
    host: cluster.host,
    port: cluster.port,
    user: "app",
    password: "app-pw",
    database: "appdb",
  });
  await c.connect();
  await c.query("create table fuzz_copy (a text)");
  await c.end();
});

afterAll(async () => {
  if (env) await stopEnv(env).catch(() => {});
  await pw?.stop("SIGKILL", 1000);
  await cluster?.stop();
});

beforeEach(async () => {
  // A state that crashed pgwarden must not take the other states' runs with it.
  if (env && !alive(env.pw)) {
    await stopEnv(env).catch(() => {});
    env = null;
  }
  env ??= await startEnv();
}, 120_000);

const perStateMs = (FUZZ_SECONDS * 1000) / STATES.length;

describe(`fuzzing a live pgwarden (seed ${SEED})`, () => {
  for (const st of STATES) {
    it(
      `(${st.id}) ${st.title}`,
      async () => {
        const e = env!;
        const rng = new Rng(deriveSeed(SEED, st.id));
        const stats = {
          cases: 0,
          batches: 0,
          outcomes: {} as Record<string, number>,
          codes: {} as Record<string, number>,
        };
        if (st.id === "c") waitingSeen = 0;
        const batches: Array<number | null> = [];
        if (REGRESSIONS) for (let i = 0; i < (st.regressions ?? 0); i++) batches.push(i);
        const deadline = performance.now() + perStateMs;
        for (let b = 0; b < batches.length || performance.now() < deadline; b++) {
          const regression = b < batches.length ? batches[b]! : null;
          const { reports, hookProblems } = await runBatch(st, rng, regression);
          stats.batches++;
          for (const r of reports) {
            stats.cases++;
            stats.outcomes[r.outcome] = (stats.outcomes[r.outcome] ?? 0) + 1;
            for (const c of r.codes) stats.codes[c] = (stats.codes[c] ?? 0) + 1;
          }
          // When pgwarden died, every open session was closed without a word: that is the
          // crash, reported once below, not a finding per case.
          // (Checked after the invariants: the sockets close before the exit is seen here.)
          const invariants = await checkInvariants(e);
          const died = !alive(e.pw);
          const problems = reports.flatMap((r) =>
            r.problems
              .filter((p) => !(died && p.startsWith("closed without an ErrorResponse")))
              .map((p) => `${p}\n    case: ${r.desc}`),
          );
          problems.push(...hookProblems, ...invariants);
          if (problems.length > 0) {
            const cases = reports.map((r, i) => `  #${i} [${r.outcome}] ${r.desc}`).join("\n");
            throw new Error(
              `state (${st.id}) ${st.title}: batch ${b}${regression !== null ? ` (regression input ${regression})` : ""} failed.\n` +
                `Replay: FUZZ_SEED=${SEED} npx vitest run test/fuzz.test.ts -t "(${st.id})"\n` +
                `Problems:\n  ${problems.join("\n  ")}\n` +
                `Cases of this batch:\n${cases}\n` +
                `pgwarden log (warnings and errors, last lines):\n${logTail(e.pw)}`,
            );
          }
        }
        console.log(
          `[fuzz] (${st.id}) seed ${SEED}: ${JSON.stringify(stats)}, RSS ${rssKb(e.pw)} kB (baseline ${e.rssBaselineKb} kB)`,
        );
        if (st.id === "c" && stats.batches > batches.length) {
          // Soundness: fuzzed clients really waited for a server (more waiters than the two
          // bystanders of the pool could make).
          expect(waitingSeen).toBeGreaterThan(2);
        }
        expect(stats.cases).toBeGreaterThan(0);
      },
      perStateMs + 120_000,
    );
  }
});
