// Process bookkeeping for the harness: free ports, the unprivileged user servers run as, and
// cleanup of everything the harness spawned.
//
// Model: every long-lived child (postgres, pgwarden, pgbouncer) is covered three ways. (1) In
// memory: this process's 'exit' handler (and SIGINT/SIGTERM/SIGHUP) kills it synchronously.
// (2) A watchdog: a detached `sh` whose stdin is a pipe from this process; when this process dies
// in any way (even SIGKILL, where no handler runs), the pipe closes, `read` returns and the
// watchdog kills the child and removes its directory. stop() kills the watchdog first. (3) When
// the vitest global setup made a run directory (PGWARDEN_TEST_RUN_DIR), a small JSON file in
// <run dir>/procs/, so that the global teardown (or the next run, for a run whose main process
// died) kills whatever is still listed. An entry names a marker string that must appear in
// /proc/<pid>/cmdline, so that a recycled pid is never killed.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TrackedProcess {
  pid: number;
  kind: string;
  /** A string that must appear in /proc/<pid>/cmdline before the pid is signalled. */
  marker: string;
  /** Signal that ends it at once (postgres: SIGQUIT, immediate shutdown). */
  killSignal: NodeJS.Signals;
  /** A directory to remove once the process is gone. */
  dir?: string;
}

const RUN_DIR_PREFIX = "pgwarden-run-";
const tracked = new Map<number, TrackedProcess>();
const watchdogs = new Map<number, ChildProcess>();
const tempDirs = new Set<string>();

import { sleep } from "./util.js";

export { freePort, repoRoot, sleep } from "./util.js";

export interface RunAs {
  uid: number;
  gid: number;
  name: string;
}

let runAsCache: RunAs | null | undefined;

/**
 * The user servers run as: none when we are not root (run directly); as root, `postgres` (or
 * PGWARDEN_TEST_RUN_AS), because PostgreSQL and PgBouncer refuse to run as root. Spawned with
 * node's uid/gid options (setgroups, setgid, setuid in the child), so the server is our direct
 * child and signals reach it without a runuser/PAM session in between.
 */
export function runAs(): RunAs | undefined {
  if (runAsCache !== undefined) return runAsCache ?? undefined;
  if (typeof process.getuid !== "function" || process.getuid() !== 0) {
    runAsCache = null;
    return undefined;
  }
  const candidates = process.env.PGWARDEN_TEST_RUN_AS
    ? [process.env.PGWARDEN_TEST_RUN_AS]
    : ["postgres", "nobody"];
  for (const name of candidates) {
    try {
      const uid = Number(
        execFileSync("id", ["-u", name], {
          encoding: "utf8",
          stdio: ["ignore", "pipe", "ignore"],
        }).trim(),
      );
      const gid = Number(
        execFileSync("id", ["-g", name], {
          encoding: "utf8",
          stdio: ["ignore", "pipe", "ignore"],
        }).trim(),
      );
      if (Number.isInteger(uid) && Number.isInteger(gid) && uid !== 0) {
        runAsCache = { uid, gid, name };
        return runAsCache;
      }
    } catch {
      // no such user
    }
  }
  throw new Error(
    `harness: running as root but none of the users ${candidates.join(", ")} exists to run servers as`,
  );
}

/** chown -R to the run-as user (no-op when not root). */
export function chownToRunAs(path: string): void {
  const u = runAs();
  if (!u) return;
  execFileSync("chown", ["-R", `${u.uid}:${u.gid}`, path]);
}

function procsDir(): string | undefined {
  const run = process.env.PGWARDEN_TEST_RUN_DIR;
  if (!run || !existsSync(run)) return undefined;
  const d = join(run, "procs");
  mkdirSync(d, { recursive: true });
  return d;
}

/** Removes `dir` when this process exits (unless forgetTempDir was called first). */
export function removeOnExit(dir: string): void {
  installExitHandlers();
  tempDirs.add(dir);
}

export function forgetTempDir(dir: string): void {
  tempDirs.delete(dir);
}

/** Tracks a child (see the header); `watchdog: false` for short-lived ones. */
export function track(p: TrackedProcess, opts: { watchdog?: boolean } = {}): void {
  installExitHandlers();
  tracked.set(p.pid, p);
  if (opts.watchdog !== false) startWatchdog(p);
  const d = procsDir();
  if (d) {
    try {
      writeFileSync(join(d, `${p.pid}.json`), JSON.stringify(p));
    } catch {
      // bookkeeping only
    }
  }
}

export function untrack(pid: number | undefined): void {
  if (pid === undefined) return;
  tracked.delete(pid);
  const w = watchdogs.get(pid);
  if (w) {
    watchdogs.delete(pid);
    w.kill("SIGKILL");
  }
  const d = procsDir();
  if (d) rmSync(join(d, `${pid}.json`), { force: true });
}

function startWatchdog(p: TrackedProcess): void {
  const sig = p.killSignal.replace(/^SIG/, "");
  const script = [
    "trap '' INT HUP TERM",
    "read _",
    `kill -${sig} ${p.pid} 2>/dev/null`,
    "i=0",
    `while kill -0 ${p.pid} 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done`,
    `kill -KILL ${p.pid} 2>/dev/null`,
    'if [ -n "$1" ]; then rm -rf "$1"; fi',
  ].join("\n");
  try {
    const w = spawn("/bin/sh", ["-c", script, "pgwarden-watchdog", p.dir ?? ""], {
      stdio: ["pipe", "ignore", "ignore"],
      detached: true,
    });
    w.on("error", () => {});
    w.stdin?.on("error", () => {});
    w.unref();
    (w.stdin as unknown as { unref?: () => void } | null)?.unref?.();
    watchdogs.set(p.pid, w);
  } catch {
    // no watchdog: the exit handler and the run directory still cover it
  }
}

function cmdlineHas(pid: number, marker: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ").includes(marker);
  } catch {
    return false;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function killNow(p: TrackedProcess): void {
  if (!cmdlineHas(p.pid, p.marker)) return;
  try {
    process.kill(p.pid, p.killSignal);
  } catch {
    // already gone
  }
}

function removeDir(dir: string | undefined): void {
  if (!dir) return;
  try {
    rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  } catch {
    // best effort: the teardown sweep tries again
  }
}

let handlersInstalled = false;

function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  const cleanup = () => {
    for (const p of tracked.values()) killNow(p);
    for (const p of tracked.values()) removeDir(p.dir);
    for (const d of tempDirs) removeDir(d);
  };
  process.on("exit", cleanup);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    const onSignal = () => {
      cleanup();
      process.removeListener(sig, onSignal);
      // keep the default behaviour (die by this signal) unless someone else handles it
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

/** Kills what a run directory still lists (waiting briefly for it to go) and removes its dirs. */
export async function reapRunDir(runDir: string): Promise<TrackedProcess[]> {
  const d = join(runDir, "procs");
  if (!existsSync(d)) return [];
  const left: TrackedProcess[] = [];
  for (const f of readdirSync(d)) {
    try {
      left.push(JSON.parse(readFileSync(join(d, f), "utf8")) as TrackedProcess);
    } catch {
      // half-written entry
    }
    unlinkSync(join(d, f));
  }
  for (const p of left) killNow(p);
  const deadline = Date.now() + 10_000;
  for (const p of left) {
    while (alive(p.pid) && cmdlineHas(p.pid, p.marker) && Date.now() < deadline) await sleep(50);
    if (alive(p.pid) && cmdlineHas(p.pid, p.marker)) {
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    removeDir(p.dir);
  }
  return left;
}

/** Reaps run directories of earlier runs whose vitest main process is gone (a crashed run). */
export async function sweepStaleRuns(): Promise<void> {
  const base = tmpdir();
  for (const name of readdirSync(base)) {
    if (!name.startsWith(RUN_DIR_PREFIX)) continue;
    const dir = join(base, name);
    try {
      if (typeof process.getuid === "function" && statSync(dir).uid !== process.getuid()) continue;
      const owner = Number(readFileSync(join(dir, "owner"), "utf8"));
      if (Number.isInteger(owner) && owner > 0 && alive(owner)) continue;
      await reapRunDir(dir);
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // another run is sweeping it, or it is not ours
    }
  }
}

export { RUN_DIR_PREFIX };
