// Private PostgreSQL clusters for tests (design §4): never a server the tests did not start.
//
// Model: `initdb` runs once per PostgreSQL build into a cached template directory
// (<tmpdir>/pgwarden-pg-cache-<uid>/pg<major>-<hash>), made safe under concurrent test files by
// building it in a private staging directory and renaming it into place (rename is atomic; a loser
// of the race throws its copy away). Each cluster copies the template (`cp -a`) into a fresh temp
// directory that holds the data directory and the unix socket, appends its settings to
// postgresql.conf, writes pg_hba.conf, and starts `postgres` on a free loopback port (another
// port is tried when the chosen one was taken meanwhile). As root the server runs as the
// `postgres` user (see procs.ts). The harness itself talks to the cluster as the superuser over
// the unix socket (local trust); TCP logins use passwords. stop() is a fast shutdown (SIGINT)
// followed by removal of the temp directory; crashed runs are cleaned up by procs.ts.
import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  appendFileSync,
  chmodSync,
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { chownToRunAs, freePort, runAs, sleep, track, untrack } from "./procs.js";

const execFileP = promisify(execFile);

export interface StartPostgresOptions {
  /** Enables ssl=on with these files (copied into the cluster dir, so any owner/mode will do). */
  ssl?: { certFile: string; keyFile: string };
  /** Extra pg_hba.conf lines, placed before the default `host` lines. */
  hba?: string[];
  /** Extra postgresql.conf settings (they win over the harness defaults). */
  settings?: Record<string, string>;
}

export interface PgCluster {
  host: "127.0.0.1";
  port: number;
  dataDir: string;
  /** Directory of the unix socket (the parent of dataDir). */
  socketDir: string;
  /** Server log (stdout and stderr of postgres). */
  logFile: string;
  superuser: string;
  superuserPassword: string;
  /** Runs `sql` as the superuser (unix socket) and returns the rows. */
  // biome-ignore lint/suspicious/noExplicitAny: rows are whatever the test selected
  query(sql: string, params?: unknown[]): Promise<any[]>;
  /** CREATE ROLE … LOGIN PASSWORD, stored as a SCRAM verifier (default) or an md5 hash. */
  createRole(
    name: string,
    password: string,
    opts?: { superuser?: boolean; method?: "scram" | "md5" },
  ): Promise<void>;
  createDatabase(name: string, owner?: string): Promise<void>;
  /** pids of client backends (pg_stat_activity), optionally of one user; the harness's own excluded. */
  backendPids(user?: string): Promise<number[]>;
  /**
   * What `pg_ctl restart -m fast` does: a fast shutdown (SIGINT: sessions get FATAL 57P01), the
   * postmaster's exit, then a new postmaster on the same data directory and port. `downMs` keeps
   * the server down that long between the two (connections are refused meanwhile). Resolves once
   * the new server accepts connections.
   */
  restart(opts?: { downMs?: number }): Promise<void>;
  /** Fast shutdown, then removes the temp directory. Safe to call more than once. */
  stop(): Promise<void>;
}

const SUPERUSER = "postgres";

let binDirCache: string | undefined;

/** PG_BIN, else the newest /usr/lib/postgresql/<version>/bin that has `postgres`. */
export function pgBinDir(): string {
  if (binDirCache) return binDirCache;
  const fromEnv = process.env.PG_BIN;
  if (fromEnv) {
    if (!existsSync(join(fromEnv, "postgres")))
      throw new Error(`PG_BIN=${fromEnv} has no postgres binary`);
    binDirCache = fromEnv;
    return fromEnv;
  }
  const base = "/usr/lib/postgresql";
  const versions = existsSync(base)
    ? readdirSync(base)
        .filter(
          (v) =>
            existsSync(join(base, v, "bin", "postgres")) &&
            existsSync(join(base, v, "bin", "initdb")),
        )
        .sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a))
    : [];
  const newest = versions[0];
  if (!newest) {
    throw new Error(
      "no PostgreSQL server binaries: set PG_BIN or install them (apt-get install postgresql)",
    );
  }
  binDirCache = join(base, newest, "bin");
  return binDirCache;
}

function serverVersion(bin: string): { text: string; major: string } {
  const text = execFileSync(join(bin, "postgres"), ["--version"], { encoding: "utf8" }).trim();
  const m = /\(PostgreSQL\)\s+(\d+)/.exec(text);
  return { text, major: m?.[1] ?? "unknown" };
}

const templates = new Map<string, Promise<string>>();

/** The cached initdb template for this PostgreSQL build, made once (see the header). */
export function pgTemplate(bin = pgBinDir()): Promise<string> {
  let p = templates.get(bin);
  if (!p) {
    p = makeTemplate(bin);
    p.catch(() => templates.delete(bin));
    templates.set(bin, p);
  }
  return p;
}

async function makeTemplate(bin: string): Promise<string> {
  const { text, major } = serverVersion(bin);
  const uid = typeof process.getuid === "function" ? process.getuid() : 0;
  const cacheRoot = join(tmpdir(), `pgwarden-pg-cache-${uid}`);
  const key = `pg${major}-${createHash("sha256").update(`${bin}\n${text}`).digest("hex").slice(0, 10)}`;
  const final = join(cacheRoot, key);
  if (existsSync(join(final, "PG_VERSION"))) return final;
  mkdirSync(cacheRoot, { recursive: true, mode: 0o755 });
  chmodSync(cacheRoot, 0o755); // the server user must traverse it
  const stage = mkdtempSync(join(cacheRoot, `${key}.stage-`));
  try {
    chmodSync(stage, 0o755);
    chownToRunAs(stage);
    const data = join(stage, "data");
    const u = runAs();
    await execFileP(
      join(bin, "initdb"),
      ["-D", data, "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
      { cwd: stage, env: serverEnv(), ...(u ? { uid: u.uid, gid: u.gid } : {}) },
    ).catch((err: Error & { stderr?: string }) => {
      throw new Error(`initdb failed: ${err.message}\n${err.stderr ?? ""}`);
    });
    try {
      renameSync(data, final);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // another process won the race: use its template
      if (!(code === "EEXIST" || code === "ENOTEMPTY") || !existsSync(join(final, "PG_VERSION")))
        throw err;
    }
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
  return final;
}

/** The environment servers get: ours without libpq variables, in the C locale. */
function serverEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^PG(?!WARDEN_|_BIN$)/.test(k) || k === "NODE_OPTIONS") continue;
    env[k] = v;
  }
  env.LC_ALL = "C";
  env.LANG = "C";
  return env;
}

function quoteSetting(v: string): string {
  return `'${v.replace(/'/g, "''")}'`;
}

function logTail(file: string, lines = 30): string {
  try {
    return readFileSync(file, "utf8").split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

async function connectAdmin(socketDir: string, port: number): Promise<pg.Client> {
  const c = new pg.Client({ host: socketDir, port, user: SUPERUSER, database: "postgres" });
  c.on("error", () => {});
  await c.connect();
  return c;
}

/** Starts a private cluster; see the header for what it sets up. */
export async function startPostgres(opts: StartPostgresOptions = {}): Promise<PgCluster> {
  const bin = pgBinDir();
  const template = await pgTemplate(bin);
  const tmp = mkdtempSync(join(tmpdir(), "pgw-pg-"));
  const dataDir = join(tmp, "data");
  const logFile = join(dataDir, "postgres.log");
  let proc: ChildProcess | undefined;
  try {
    await execFileP("cp", ["-a", template, dataDir]);
    const settings: Record<string, string> = {
      listen_addresses: "127.0.0.1",
      unix_socket_directories: tmp,
      max_connections: "300",
      fsync: "off",
      synchronous_commit: "off",
      full_page_writes: "off",
      password_encryption: "scram-sha-256",
      logging_collector: "off",
      log_destination: "stderr",
      log_line_prefix: "%m [%p] %q%u@%d ",
      log_timezone: "UTC",
      timezone: "UTC",
    };
    if (opts.ssl) {
      copyFileSync(opts.ssl.certFile, join(tmp, "server.crt"));
      copyFileSync(opts.ssl.keyFile, join(tmp, "server.key"));
      chmodSync(join(tmp, "server.key"), 0o600);
      Object.assign(settings, {
        ssl: "on",
        ssl_cert_file: join(tmp, "server.crt"),
        ssl_key_file: join(tmp, "server.key"),
      });
    }
    Object.assign(settings, opts.settings ?? {});
    appendFileSync(
      join(dataDir, "postgresql.conf"),
      `\n# pgwarden test harness\n${Object.entries(settings)
        .map(([k, v]) => `${k} = ${quoteSetting(v)}`)
        .join("\n")}\n`,
    );
    // `md5` as the catch-all method: PostgreSQL then runs SCRAM for roles stored as SCRAM
    // verifiers and MD5 for roles stored as md5 hashes, so both kinds of roles log in.
    const hba = [
      `local all ${SUPERUSER} trust`,
      ...(opts.hba ?? []),
      "host all all 127.0.0.1/32 md5",
      "host all all ::1/128 md5",
    ];
    writeFileSync(join(dataDir, "pg_hba.conf"), `${hba.join("\n")}\n`);
    chmodSync(tmp, 0o700);
    chownToRunAs(tmp);

    let port = 0;
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      writeFileSync(logFile, "");
      chownToRunAs(logFile);
      const started = await launch(bin, dataDir, tmp, port, logFile);
      if (started.ok) {
        proc = started.proc;
        break;
      }
      const log = logTail(logFile);
      if (
        attempt < 5 &&
        /Address already in use|could not bind|could not create any TCP\/IP sockets/.test(log)
      )
        continue;
      throw new Error(`postgres did not start (port ${port}): ${started.why}\n${log}`);
    }
    let pgProc = proc;
    const superuserPassword = randomBytes(12).toString("hex");
    const withClient = async <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => {
      const c = await connectAdmin(tmp, port);
      try {
        return await fn(c);
      } finally {
        await c.end().catch(() => {});
      }
    };
    await withClient((c) =>
      c.query(
        `alter role ${c.escapeIdentifier(SUPERUSER)} password ${c.escapeLiteral(superuserPassword)}`,
      ),
    );

    let stopping: Promise<void> | undefined;
    const cluster: PgCluster = {
      host: "127.0.0.1",
      port,
      dataDir,
      socketDir: tmp,
      logFile,
      superuser: SUPERUSER,
      superuserPassword,
      query: (sql, params) => withClient(async (c) => (await c.query(sql, params)).rows),
      createRole: (name, password, o = {}) =>
        withClient(async (c) => {
          await c.query(
            `set password_encryption = '${o.method === "md5" ? "md5" : "scram-sha-256"}'`,
          );
          await c.query(
            `create role ${c.escapeIdentifier(name)} login${o.superuser ? " superuser" : ""} password ${c.escapeLiteral(password)}`,
          );
        }),
      createDatabase: (name, owner) =>
        withClient(async (c) => {
          await c.query(
            `create database ${c.escapeIdentifier(name)}${owner ? ` owner ${c.escapeIdentifier(owner)}` : ""}`,
          );
        }),
      backendPids: (user) =>
        withClient(async (c) => {
          const r = await c.query<{ pid: number }>(
            "select pid from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()" +
              " and ($1::text is null or usename = $1::text) order by pid",
            [user ?? null],
          );
          return r.rows.map((row) => row.pid);
        }),
      restart: async (o = {}) => {
        if (stopping) throw new Error("restart() after stop()");
        pgProc.kill("SIGINT");
        if (!(await waitExit(pgProc, 30_000))) throw new Error("postgres did not stop for restart");
        untrack(pgProc.pid);
        if (o.downMs) await sleep(o.downMs);
        const started = await launch(bin, dataDir, tmp, port, logFile);
        if (!started.ok)
          throw new Error(`postgres did not restart: ${started.why}\n${logTail(logFile)}`);
        pgProc = started.proc;
      },
      stop: () => {
        stopping ??= stopServer(pgProc, tmp);
        return stopping;
      },
    };
    return cluster;
  } catch (err) {
    if (proc) await stopServer(proc, tmp).catch(() => {});
    else rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

type Launch = { ok: true; proc: ChildProcess } | { ok: false; why: string };

async function launch(
  bin: string,
  dataDir: string,
  socketDir: string,
  port: number,
  logFile: string,
): Promise<Launch> {
  const fd = openSync(logFile, "a");
  const u = runAs();
  let proc: ChildProcess;
  try {
    proc = spawn(join(bin, "postgres"), ["-D", dataDir, "-p", String(port)], {
      stdio: ["ignore", fd, fd],
      env: serverEnv(),
      cwd: socketDir,
      ...(u ? { uid: u.uid, gid: u.gid } : {}),
    });
  } finally {
    closeSync(fd);
  }
  let exited: string | undefined;
  proc.once("exit", (code, signal) => {
    exited = `exited with ${signal ?? code}`;
  });
  proc.once("error", (err) => {
    exited = `spawn failed: ${err.message}`;
  });
  if (proc.pid !== undefined)
    track({
      pid: proc.pid,
      kind: "postgres",
      marker: dataDir,
      killSignal: "SIGQUIT",
      dir: socketDir,
    });
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exited) {
      untrack(proc.pid);
      return { ok: false, why: exited };
    }
    try {
      const c = await connectAdmin(socketDir, port);
      await c.end();
      return { ok: true, proc };
    } catch {
      // starting up, or not listening yet
    }
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      untrack(proc.pid);
      return { ok: false, why: "not ready after 60 s" };
    }
    await sleep(40);
  }
}

function waitExit(proc: ChildProcess, ms: number): Promise<boolean> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      proc.removeListener("exit", onExit);
      resolve(false);
    }, ms);
    const onExit = () => {
      clearTimeout(t);
      resolve(true);
    };
    proc.once("exit", onExit);
  });
}

async function stopServer(proc: ChildProcess, tmp: string): Promise<void> {
  // SIGINT = fast shutdown; SIGQUIT = immediate; SIGKILL if all else fails
  for (const [sig, ms] of [
    ["SIGINT", 20_000],
    ["SIGQUIT", 5_000],
    ["SIGKILL", 5_000],
  ] as const) {
    if (await waitExit(proc, 0)) break;
    proc.kill(sig);
    if (await waitExit(proc, ms)) break;
  }
  untrack(proc.pid);
  rmSync(tmp, { recursive: true, force: true, maxRetries: 5 });
}
