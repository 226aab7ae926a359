// PgBouncer for comparisons (bench, and tests that want the reference behaviour).
//
// Model: a temp directory with pgbouncer.ini and an auth_file (userlist.txt with plain
// passwords, so PgBouncer can run SCRAM both towards clients and towards PostgreSQL), and
// `pgbouncer <ini>` started on a free loopback port; as root it runs as the server user of
// procs.ts (PgBouncer refuses root). Ready once its port accepts a TCP connection.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chownToRunAs, freePort, runAs, sleep, track, untrack } from "./procs.js";

export interface StartPgbouncerOptions {
  /** [databases] entries: name → connection string, e.g. "host=127.0.0.1 port=5432 dbname=app". */
  databases: Record<string, string>;
  /** Users of the auth_file, with plain passwords. */
  users: Array<{ name: string; password: string }>;
  /**
   * [pgbouncer] settings over the defaults (pool_mode transaction, auth_type scram-sha-256, …),
   * written as given: settings a release does not know (`max_prepared_statements` before 1.21)
   * are for the caller to leave out.
   */
  settings?: Record<string, string | number>;
  /** The binary to run (e.g. a newer PgBouncer built from source); default `pgbouncerBin()`. */
  bin?: string;
  /**
   * Listen on this port instead of a free one: a second PgBouncer on another's port, both with
   * `so_reuseport = 1` (PgBouncer's way to use more than one core). Started when its own log
   * says it listens, as the port answers already.
   */
  port?: number;
}

export interface Pgbouncer {
  host: "127.0.0.1";
  port: number;
  dir: string;
  logFile: string;
  proc: ChildProcess;
  stop(): Promise<void>;
}

/** PGBOUNCER_BIN, else /usr/sbin/pgbouncer, else pgbouncer on PATH. */
export function pgbouncerBin(): string {
  if (process.env.PGBOUNCER_BIN) return process.env.PGBOUNCER_BIN;
  return existsSync("/usr/sbin/pgbouncer") ? "/usr/sbin/pgbouncer" : "pgbouncer";
}

/** The version `bin --version` reports ("1.25.2" of "PgBouncer 1.25.2"); undefined if it cannot run. */
export function pgbouncerVersion(bin: string = pgbouncerBin()): string | undefined {
  try {
    const out = execFileSync(bin, ["--version"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
      timeout: 10_000,
    });
    return /PgBouncer\s+(\S+)/i.exec(out)?.[1];
  } catch {
    return undefined;
  }
}

function quoteUserlist(s: string): string {
  return `"${s.replace(/"/g, '""')}"`;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on("error", () => resolve(false));
  });
}

export async function startPgbouncer(opts: StartPgbouncerOptions): Promise<Pgbouncer> {
  const bin = opts.bin ?? pgbouncerBin();
  for (let attempt = 1; ; attempt++) {
    const dir = mkdtempSync(join(tmpdir(), "pgw-bouncer-"));
    const port = opts.port ?? (await freePort());
    const logFile = join(dir, "pgbouncer.log");
    const settings: Record<string, string | number> = {
      listen_addr: "127.0.0.1",
      listen_port: port,
      unix_socket_dir: dir,
      auth_type: "scram-sha-256",
      auth_file: join(dir, "userlist.txt"),
      pool_mode: "transaction",
      default_pool_size: 10,
      max_client_conn: 2000,
      max_db_connections: 0,
      logfile: logFile,
      pidfile: join(dir, "pgbouncer.pid"),
      ignore_startup_parameters: "extra_float_digits,options",
      log_connections: 0,
      log_disconnections: 0,
      ...opts.settings,
    };
    const ini = [
      "[databases]",
      ...Object.entries(opts.databases).map(([name, conn]) => `${name} = ${conn}`),
      "",
      "[pgbouncer]",
      ...Object.entries(settings).map(([k, v]) => `${k} = ${v}`),
      "",
    ].join("\n");
    const iniFile = join(dir, "pgbouncer.ini");
    writeFileSync(iniFile, ini);
    writeFileSync(
      join(dir, "userlist.txt"),
      opts.users.map((u) => `${quoteUserlist(u.name)} ${quoteUserlist(u.password)}\n`).join(""),
      { mode: 0o600 },
    );
    writeFileSync(logFile, "");
    chownToRunAs(dir);
    const out = openSync(join(dir, "stdout.log"), "a");
    const u = runAs();
    let proc: ChildProcess;
    try {
      proc = spawn(bin, [iniFile], {
        cwd: dir,
        stdio: ["ignore", out, out],
        ...(u ? { uid: u.uid, gid: u.gid } : {}),
      });
    } finally {
      closeSync(out);
    }
    if (proc.pid !== undefined)
      track({ pid: proc.pid, kind: "pgbouncer", marker: iniFile, killSignal: "SIGKILL", dir });
    let exited = false;
    proc.once("exit", () => {
      exited = true;
    });
    proc.once("error", () => {
      exited = true;
    });
    const deadline = Date.now() + 15_000;
    const up = async () =>
      opts.port === undefined
        ? canConnect(port)
        : readFileSync(logFile, "utf8").includes("listening on 127.0.0.1") && canConnect(port);
    while (!exited && Date.now() < deadline && !(await up())) await sleep(30);
    const stop = async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
          proc.once("exit", () => {
            clearTimeout(t);
            resolve();
          });
          proc.kill("SIGTERM"); // immediate shutdown
        });
      }
      untrack(proc.pid);
      rmSync(dir, { recursive: true, force: true });
    };
    if (!exited && (await up())) {
      let stopping: Promise<void> | undefined;
      return {
        host: "127.0.0.1",
        port,
        dir,
        logFile,
        proc,
        stop: () => {
          stopping ??= stop();
          return stopping;
        },
      };
    }
    const log = [readFileSync(logFile, "utf8"), readFileSync(join(dir, "stdout.log"), "utf8")].join(
      "\n",
    );
    await stop();
    if (attempt < 4 && opts.port === undefined && /Address already in use/.test(log)) continue;
    throw new Error(`pgbouncer did not start on port ${port}:\n${log.slice(-3000)}`);
  }
}
