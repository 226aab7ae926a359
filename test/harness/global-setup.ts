// vitest globalSetup: one run directory per test run, holding the network guard log
// (PGWARDEN_NET_GUARD_LOG) and the list of spawned processes (PGWARDEN_TEST_RUN_DIR, see
// procs.ts). Teardown kills what crashed workers left behind and fails the run if the network
// guard refused anything: reaching a non-loopback address from a test is a bug.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RUN_DIR_PREFIX, reapRunDir, sweepStaleRuns } from "./procs.js";

export default async function setup(): Promise<() => Promise<void>> {
  await sweepStaleRuns();
  const runDir = mkdtempSync(join(tmpdir(), RUN_DIR_PREFIX));
  writeFileSync(join(runDir, "owner"), String(process.pid));
  const guardLog = join(runDir, "net-guard.log");
  writeFileSync(guardLog, "");
  process.env.PGWARDEN_TEST_RUN_DIR = runDir;
  process.env.PGWARDEN_NET_GUARD_LOG = guardLog;

  return async function teardown(): Promise<void> {
    const left = await reapRunDir(runDir);
    const daemons = left.filter(
      (p) => p.kind === "postgres" || p.kind === "pgwarden" || p.kind === "pgbouncer",
    );
    if (daemons.length > 0) {
      console.warn(
        `[harness] killed ${daemons.length} process(es) the tests left running: ${daemons.map((p) => `${p.kind}:${p.pid}`).join(", ")}`,
      );
    }
    let lines: string[] = [];
    try {
      lines = readFileSync(guardLog, "utf8")
        .split("\n")
        .filter((l) => l.trim() !== "");
    } catch {
      // no log: nothing was refused
    }
    rmSync(runDir, { recursive: true, force: true });
    if (lines.length > 0) {
      const text = lines.join("\n");
      console.error(
        `\n[network guard] ${lines.length} connection(s) to non-loopback targets were refused:\n${text}\n`,
      );
      throw new Error(
        `network guard: tests tried to reach ${lines.length} non-loopback target(s):\n${text}`,
      );
    }
  };
}
