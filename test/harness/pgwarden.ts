// Runs the built pgwarden (dist/cli/main.js) as a child process, as users run it.
//
// Model: each instance gets a temp directory with pgwarden.toml and users.toml (smol-toml
// `stringify` of the given tables), and a child `node dist/cli/main.js --config … --users …`
// whose environment is a copy of ours with the network guard (NODE_OPTIONS=--require
// test/guard/net-guard.cjs and the guard variables). Every stdout/stderr line is kept; pgwarden
// logs JSON lines (pino), and start() resolves on the first `{"msg":"listening"}` line. When
// the port was chosen here and pgwarden could not bind it (EADDRINUSE before "listening"), a new
// port is tried. Children are tracked (procs.ts) and SIGKILLed if this process exits first.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "smol-toml";
import { childEnv } from "./guard.js";
import { forgetTempDir, freePort, removeOnExit, repoRoot, track, untrack } from "./procs.js";

export interface PgwardenConfig {
  /** [general]; `host` defaults to "127.0.0.1" and `port` to a free port. */
  general?: Record<string, unknown>;
  /** [[databases]] */
  databases: Array<Record<string, unknown>>;
  /** [[users]] (users.toml) */
  users: Array<Record<string, unknown>>;
  /** [admin] */
  admin?: Record<string, unknown>;
  /** [vault] */
  vault?: Record<string, unknown>;
}

export interface StartPgwardenOptions extends PgwardenConfig {
  /** Added to the child's environment; `undefined` removes a variable. */
  env?: Record<string, string | undefined>;
  /** Extra command-line arguments after --config/--users. */
  args?: string[];
  /**
   * A command that execs node in the same process (e.g. `["prlimit", "--nofile=100:100", "--"]`
   * to run pgwarden with few file descriptors); the pid stays pgwarden's.
   */
  prefix?: string[];
  /** Resolve at once after spawning, without waiting for "listening" (config-error tests). */
  expectExit?: boolean;
  /** How long to wait for "listening" (default 30 s). */
  startTimeoutMs?: number;
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Pgwarden {
  /** Where clients connect (the listen host; a wildcard host maps to 127.0.0.1). */
  host: string;
  port: number;
  /** Temp directory holding pgwarden.toml and users.toml (removed by stop()). */
  dir: string;
  configFile: string;
  usersFile: string;
  proc: ChildProcess;
  /** Resolves when the process has exited and its output is read. */
  exited: Promise<ExitStatus>;
  /** All stdout and stderr lines so far, in arrival order. */
  logs(): string[];
  /**
   * Resolves with the first line, at index `fromLine` (default 0) or later, for which `pred`
   * is true; `pred` gets the parsed JSON object, or the raw string for a non-JSON line. Pass
   * `pw.logs().length` as `fromLine` to wait only for lines that come after now. Rejects when
   * the timeout (default 10 s) passes or the process exits first.
   */
  // biome-ignore lint/suspicious/noExplicitAny: log lines are free-form JSON
  waitForLog(pred: (line: any) => boolean, timeoutMs?: number, fromLine?: number): Promise<any>;
  /** Rewrites pgwarden.toml and users.toml (host/port stay unless given), e.g. before SIGHUP. */
  writeConfig(config: PgwardenConfig): void;
  signal(sig: NodeJS.Signals): void;
  /** Sends `signal` (default SIGTERM), SIGKILL after `timeoutMs` (default 10 s). Idempotent. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<ExitStatus>;
}

/** pids of a pgwarden's worker processes (its children), empty with workers = 1. */
export function workerPids(pw: Pgwarden): number[] {
  const pid = pw.proc.pid;
  if (pid === undefined) return [];
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
      .trim()
      .split(/\s+/)
      .filter((p) => p !== "")
      .map(Number);
  } catch {
    return [];
  }
}

/** dist/cli/main.js of this repository, or PGWARDEN_MAIN. */
export function pgwardenMain(): string {
  return process.env.PGWARDEN_MAIN ?? join(repoRoot(), "dist", "cli", "main.js");
}

const WILDCARDS = new Set(["0.0.0.0", "*", "", "::"]);

/**
 * PGWARDEN_TEST_WORKERS=N (e.g. 2) runs every pgwarden the tests start with `workers = N`
 * unless the test sets `workers` itself, so CI can run the whole suite on several processes.
 */
function testWorkers(): number | undefined {
  const v = process.env.PGWARDEN_TEST_WORKERS;
  return v === undefined || v === "" ? undefined : Number(v);
}

function writeFiles(dir: string, cfg: PgwardenConfig, host: unknown, port: unknown): void {
  const general = { ...(cfg.general ?? {}) };
  if (general.host === undefined) general.host = host;
  if (general.port === undefined) general.port = port;
  const workers = testWorkers();
  if (general.workers === undefined && workers !== undefined) general.workers = workers;
  writeFileSync(
    join(dir, "pgwarden.toml"),
    stringify({
      general,
      databases: cfg.databases,
      admin: cfg.admin,
      ...(cfg.vault ? { vault: cfg.vault } : {}),
    }),
  );
  writeFileSync(join(dir, "users.toml"), stringify({ users: cfg.users }));
}

function parseLine(line: string): unknown {
  if (!line.startsWith("{")) return line;
  try {
    return JSON.parse(line) as unknown;
  } catch {
    return line;
  }
}

export async function startPgwarden(opts: StartPgwardenOptions): Promise<Pgwarden> {
  const main = pgwardenMain();
  if (!existsSync(main))
    throw new Error(
      `${main} does not exist: run \`npm run build\` first (npm test does it in pretest)`,
    );
  const fixedPort = opts.general?.port !== undefined;
  for (let attempt = 1; ; attempt++) {
    const pw = await spawnOnce(opts, main);
    if (opts.expectExit) return pw;
    try {
      await pw.waitForLog(
        (l) => typeof l === "object" && l !== null && l.msg === "listening",
        opts.startTimeoutMs ?? 30_000,
      );
      return pw;
    } catch (err) {
      const status = await pw.stop("SIGKILL", 1000);
      const text = pw.logs().join("\n");
      if (!fixedPort && attempt < 4 && /EADDRINUSE/.test(text)) continue;
      throw new Error(
        `pgwarden did not start listening (${(err as Error).message}); exit ${status.signal ?? status.code}; output:\n${text.slice(-4000)}`,
      );
    }
  }
}

async function spawnOnce(opts: StartPgwardenOptions, main: string): Promise<Pgwarden> {
  const dir = mkdtempSync(join(tmpdir(), "pgwarden-"));
  removeOnExit(dir);
  const host = opts.general?.host ?? "127.0.0.1";
  const port = opts.general?.port ?? (await freePort());
  writeFiles(dir, opts, host, port);
  const configFile = join(dir, "pgwarden.toml");
  const usersFile = join(dir, "users.toml");
  let currentHost = host;
  let currentPort = port;

  const argv = [main, "--config", configFile, "--users", usersFile, ...(opts.args ?? [])];
  const [cmd, ...cmdArgs] = opts.prefix?.length
    ? [...opts.prefix, process.execPath, ...argv]
    : [process.execPath, ...argv];
  const proc = spawn(cmd!, cmdArgs, {
    cwd: dir,
    env: childEnv(opts.env ?? {}),
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (proc.pid !== undefined)
    track({ pid: proc.pid, kind: "pgwarden", marker: configFile, killSignal: "SIGKILL", dir });

  const lines: string[] = [];
  const parsed: unknown[] = [];
  type Waiter = {
    pred: (line: unknown) => boolean;
    from: number;
    resolve: (v: unknown) => void;
    reject: (e: Error) => void;
  };
  const waiters = new Set<Waiter>();
  let status: ExitStatus | undefined;

  const offer = (index: number) => {
    const value = parsed[index];
    for (const w of waiters) {
      if (index < w.from) continue;
      let hit = false;
      try {
        hit = w.pred(value);
      } catch {
        hit = false;
      }
      if (hit) {
        waiters.delete(w);
        w.resolve(value);
      }
    }
  };
  const push = (line: string) => {
    lines.push(line);
    parsed.push(parseLine(line));
    offer(lines.length - 1);
  };
  const pending = { stdout: "", stderr: "" };
  for (const name of ["stdout", "stderr"] as const) {
    const stream = proc[name];
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      const parts = (pending[name] + chunk).split("\n");
      pending[name] = parts.pop() ?? "";
      for (const p of parts) push(p.endsWith("\r") ? p.slice(0, -1) : p);
    });
  }
  const flush = () => {
    for (const name of ["stdout", "stderr"] as const) {
      if (pending[name]) push(pending[name]);
      pending[name] = "";
    }
  };

  const exited = new Promise<ExitStatus>((resolve) => {
    let exitTimer: NodeJS.Timeout | undefined;
    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      if (status) return;
      if (exitTimer) clearTimeout(exitTimer);
      flush();
      status = { code, signal };
      untrack(proc.pid);
      const tail = lines.slice(-20).join("\n");
      for (const w of waiters)
        w.reject(new Error(`pgwarden exited (${signal ?? code}) first; last lines:\n${tail}`));
      waiters.clear();
      resolve(status);
    };
    proc.once("close", (code, signal) => finish(code, signal));
    // a grandchild holding our pipes must not delay the exit status for long
    proc.once("exit", (code, signal) => {
      exitTimer = setTimeout(() => finish(code, signal), 2000);
      exitTimer.unref();
    });
    proc.once("error", (err) => {
      push(`harness: spawn failed: ${err.message}`);
      finish(proc.exitCode ?? 127, null);
    });
  });

  let stopping: Promise<ExitStatus> | undefined;
  const pw: Pgwarden = {
    get host() {
      return WILDCARDS.has(String(currentHost)) ? "127.0.0.1" : String(currentHost);
    },
    get port() {
      return Number(currentPort);
    },
    dir,
    configFile,
    usersFile,
    proc,
    exited,
    logs: () => lines.slice(),
    waitForLog(pred, timeoutMs = 10_000, fromLine = 0) {
      for (let i = fromLine; i < parsed.length; i++) {
        try {
          if (pred(parsed[i])) return Promise.resolve(parsed[i]);
        } catch {
          // not this line
        }
      }
      if (status) {
        return Promise.reject(
          new Error(`pgwarden has exited (${status.signal ?? status.code}); no such line`),
        );
      }
      return new Promise((resolve, reject) => {
        const w: Waiter = {
          pred,
          from: fromLine,
          resolve: (v) => {
            clearTimeout(timer);
            resolve(v);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        };
        const timer = setTimeout(() => {
          waiters.delete(w);
          reject(
            new Error(
              `timed out after ${timeoutMs} ms waiting for a log line; last lines:\n${lines.slice(-20).join("\n")}`,
            ),
          );
        }, timeoutMs);
        waiters.add(w);
      });
    },
    writeConfig(cfg) {
      currentHost = cfg.general?.host ?? currentHost;
      currentPort = cfg.general?.port ?? currentPort;
      writeFiles(dir, cfg, currentHost, currentPort);
    },
    signal(sig) {
      if (!status) proc.kill(sig);
    },
    stop(sig = "SIGTERM", timeoutMs = 10_000) {
      stopping ??= (async () => {
        if (!status) {
          proc.kill(sig);
          const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
          await exited;
          clearTimeout(timer);
        }
        rmSync(dir, { recursive: true, force: true });
        forgetTempDir(dir);
        return exited;
      })();
      return stopping;
    },
  };
  return pw;
}
