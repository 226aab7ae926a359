// psql and pgbench as users run them (spawned with argument arrays, never through a shell).
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { pgBinDir } from "./postgres.js";
import { track, untrack } from "./procs.js";

export interface RunOptions {
  /** Added to the environment; `undefined` removes a variable. */
  env?: Record<string, string | undefined>;
  /** Written to stdin, which is then closed (stdin is /dev/null without it). */
  input?: string;
  /** SIGKILL after this long (default 120 s); the result then has timedOut and code null. */
  timeoutMs?: number;
  cwd?: string;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface PgbenchStats {
  tps: number;
  failed: number;
  processed: number;
  latencyAvgMs?: number;
}

/** A client binary of the server's build (PG_BIN / newest installed), else from PATH. */
export function pgTool(name: string): string {
  try {
    const p = join(pgBinDir(), name);
    if (existsSync(p)) return p;
  } catch {
    // no server binaries: PATH it is
  }
  return name;
}

/**
 * The environment for libpq clients: ours without any libpq connection variable (PGHOST,
 * PGPASSWORD, …: tests name their own server), no ~/.pgpass or ~/.psqlrc, no GSSAPI, a connect
 * timeout, then `extra`.
 */
export function clientEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^PG(?!WARDEN_|_BIN$)/.test(k)) continue;
    env[k] = v;
  }
  env.PGPASSFILE = "/nonexistent/pgwarden-test/pgpass";
  env.PSQLRC = "/dev/null";
  env.PGGSSENCMODE = "disable";
  env.PGCONNECT_TIMEOUT = "20";
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

/** Runs `cmd args` and collects its output. Never rejects for a non-zero exit. */
export function runCommand(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const proc = spawn(cmd, args, {
      env: clientEnv(opts.env ?? {}),
      stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
    });
    if (proc.pid !== undefined)
      track({ pid: proc.pid, kind: cmd, marker: cmd, killSignal: "SIGKILL" }, { watchdog: false });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    proc.stdout?.setEncoding("utf8").on("data", (c: string) => {
      stdout += c;
    });
    proc.stderr?.setEncoding("utf8").on("data", (c: string) => {
      stderr += c;
    });
    if (opts.input !== undefined && proc.stdin) {
      proc.stdin.on("error", () => {}); // EPIPE when the program exits without reading it all
      proc.stdin.end(opts.input);
    }
    const timer = setTimeout(() => {
      timedOut = true;
      proc.kill("SIGKILL");
    }, opts.timeoutMs ?? 120_000);
    proc.once("error", (err) => {
      clearTimeout(timer);
      untrack(proc.pid);
      reject(new Error(`cannot run ${cmd}: ${err.message}`));
    });
    proc.once("close", (code, signal) => {
      clearTimeout(timer);
      untrack(proc.pid);
      if (timedOut) stderr += `\n[harness] ${cmd} killed after ${opts.timeoutMs ?? 120_000} ms`;
      resolve({ code: timedOut ? null : code, signal, stdout, stderr, timedOut });
    });
  });
}

export function runPsql(args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return runCommand(pgTool("psql"), args, opts);
}

export function runPgbench(args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return runCommand(pgTool("pgbench"), args, opts);
}

/**
 * Reads pgbench's summary: "number of transactions actually processed: N[/M]", "number of
 * failed transactions: N (x%)" (pgbench 15+; taken as 0 when absent, since older pgbench aborts
 * the client on an error and exits non-zero instead), "latency average = X ms", and
 * "tps = N (without initial connection time)". Throws when there is no tps or processed line.
 */
export function parsePgbench(stdout: string): PgbenchStats {
  const processed = /number of transactions actually processed:\s*(\d+)/.exec(stdout);
  const failed = /number of failed transactions:\s*(\d+)/.exec(stdout);
  const latency = /latency average\s*=\s*([\d.]+)\s*ms/.exec(stdout);
  const tps =
    /tps\s*=\s*([\d.]+)\s*\(without initial connection time\)/.exec(stdout) ??
    /tps\s*=\s*([\d.]+)/.exec(stdout);
  if (!processed?.[1] || !tps?.[1]) throw new Error(`not a pgbench summary:\n${stdout}`);
  const stats: PgbenchStats = {
    tps: Number(tps[1]),
    failed: failed?.[1] ? Number(failed[1]) : 0,
    processed: Number(processed[1]),
  };
  if (latency?.[1]) stats.latencyAvgMs = Number(latency[1]);
  return stats;
}

export interface PgbenchProblems {
  /** How many distinct clients pgbench reported as aborted. */
  abortedClients: number;
  /** Its abort lines ("client N aborted …"), without the "pgbench: error: " prefix. */
  aborts: string[];
  /**
   * Its other error lines, logged without aborting a client: with -M prepared, pgbench 15
   * logs a failed Parse ("prepared statement … already exists") and goes on.
   */
  errors: string[];
}

/**
 * Reads pgbench's stderr for clients it aborted, "client N aborted in command M (SQL) of script
 * S; <message>", "client N script S aborted in command M query Q: <message>", "client N aborted
 * while establishing connection", … (a client counted once; pgbench then exits with code 2, its
 * summary still on stdout), and for the errors it logged without aborting a client.
 *
 * pgbench's threads share stderr and write a message's "pgbench: ", "error: " and text apart, so
 * with many threads the prefixes of several messages can land on one line ("pgbench:pgbench:
 * error: ERROR:  …" and then " error: ERROR:  …"). Each text is whole, though: an abort line, a
 * server error ("ERROR:  …", "FATAL:  …") or another text after "pgbench: error: "; "Run was
 * aborted; …" (it only says that a client was) and -P progress lines are left out.
 */
export function parsePgbenchProblems(stderr: string): PgbenchProblems {
  const ids = new Set<string>();
  const aborts: string[] = [];
  const errors: string[] = [];
  for (const line of stderr.split("\n")) {
    const abort = /\bclient (\d+) (?:script \d+ )?aborted\b.*/.exec(line);
    const serverError = /\b(?:ERROR|FATAL|PANIC):\s.*/.exec(line);
    const text = line
      .replace(/pgbench:\s*(?:error:\s*)?/g, "")
      .replace(/^\s*error:\s*/, "")
      .trim();
    if (abort) {
      ids.add(abort[1] ?? "");
      aborts.push(abort[0].trim());
    } else if (serverError) {
      errors.push(serverError[0].trim());
    } else if (
      line.includes("pgbench: error: ") &&
      text &&
      !/^Run was aborted|^progress: /.test(text)
    ) {
      errors.push(text);
    }
  }
  return { abortedClients: ids.size, aborts, errors };
}
