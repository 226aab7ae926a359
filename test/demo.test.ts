// `npm start` as a newcomer runs it: the demo (dist-demo/demo/main.js, built by pretest) brings
// up embedded PostgreSQL, the Entra ID emulator, the token gateway and pgwarden; psql connects
// through the printed lines; the admin console shows the Entra ID credential being refreshed
// (tokens live 20 s here, so two refreshes take about 30 s); SIGINT stops everything and leaves
// no process and no directory behind.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runPsql } from "./harness/clients.js";
import { childEnv } from "./harness/guard.js";
import { repoRoot, track, untrack } from "./harness/procs.js";
import { sleep } from "./helpers.js";

const DEMO = join(repoRoot(), "dist-demo", "demo", "main.js");
const TOKEN_SECONDS = 20;

let proc: ChildProcess | undefined;
const output: string[] = [];
let exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;

function startDemo(): void {
  if (!existsSync(DEMO))
    throw new Error(`${DEMO} does not exist: run \`npm run build\` first (npm test does it)`);
  proc = spawn(process.execPath, [DEMO, "--port", "0", "--metrics-port", "0"], {
    env: childEnv({ PGWARDEN_DEMO_TOKEN_SECONDS: String(TOKEN_SECONDS) }),
    stdio: ["ignore", "pipe", "pipe"],
  });
  const p = proc;
  if (p.pid !== undefined) track({ pid: p.pid, kind: "demo", marker: DEMO, killSignal: "SIGINT" });
  exited = new Promise((resolve) => {
    p.once("close", (code, signal) => {
      untrack(p.pid);
      resolve({ code, signal });
    });
  });
  for (const stream of [p.stdout, p.stderr]) {
    let pending = "";
    stream?.setEncoding("utf8");
    stream?.on("data", (chunk: string) => {
      const parts = (pending + chunk).split("\n");
      pending = parts.pop() ?? "";
      output.push(...parts);
    });
  }
}

const text = () => output.join("\n");

async function waitForOutput(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = pattern.exec(text());
    if (m) return m;
    if (proc?.exitCode !== null || Date.now() > deadline)
      throw new Error(`no ${pattern} in the demo's output:\n${text().slice(-4000)}`);
    await sleep(200);
  }
}

/** Calls `fn` every `intervalMs` until it returns true; fails naming `what` after `timeoutMs`. */
async function poll(
  fn: () => Promise<boolean>,
  what: string,
  timeoutMs: number,
  intervalMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}; demo output:\n${text().slice(-3000)}`);
    await sleep(intervalMs);
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

/** pids of processes whose command line mentions `s`. */
function processesMentioning(s: string): number[] {
  const found: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${name}/cmdline`, "utf8").replace(/\0/g, " ");
      if (cmd.includes(s)) found.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** SHOW CREDENTIALS through psql --csv: one object per row. */
async function showCredentials(adminUrl: string): Promise<Array<Record<string, string>>> {
  const r = await runPsql(["-X", "--csv", adminUrl, "-c", "SHOW CREDENTIALS"], {
    timeoutMs: 20_000,
  });
  expect(r.code, r.stderr).toBe(0);
  const [head, ...rows] = r.stdout.trim().split("\n");
  const cols = (head ?? "").split(",");
  // no value here contains a comma or a quote (identity is k=v separated by spaces)
  return rows.map((line) => Object.fromEntries(line.split(",").map((v, i) => [cols[i], v])));
}

afterAll(async () => {
  if (proc && proc.exitCode === null && proc.signalCode === null) {
    proc.kill("SIGINT");
    const timer = setTimeout(() => proc?.kill("SIGKILL"), 20_000);
    await exited;
    clearTimeout(timer);
  }
}, 30_000);

describe("npm start (the demo)", () => {
  it("connects through the printed lines, shows token refreshes, and cleans up on SIGINT", async () => {
    startDemo();
    await waitForOutput(/Ctrl-C stops everything/, 90_000);
    const iamUrl = (await waitForOutput(/psql "(postgres:\/\/app_iam:[^"]+)"/, 1000))[1]!;
    const userUrl = (await waitForOutput(/psql "(postgres:\/\/app_user:[^"]+)"/, 1000))[1]!;
    const adminUrl = (await waitForOutput(/psql "(postgres:\/\/admin:[^"]+\/admin)"/, 1000))[1]!;
    const metricsUrl = (
      await waitForOutput(/curl -s (http:\/\/127\.0\.0\.1:\d+\/metrics)/, 1000)
    )[1]!;
    const procs = await waitForOutput(
      /processes: demo (\d+), pgwarden (\d+), postgres (\d+), watchdog (\d+)/,
      1000,
    );
    const pids = {
      demo: Number(procs[1]),
      pgwarden: Number(procs[2]),
      postgres: Number(procs[3]),
      watchdog: Number(procs[4]),
    };
    const dir = (await waitForOutput(/^files: (\S+)/m, 1000))[1]!;
    expect(pids.demo).toBe(proc?.pid);
    expect(existsSync(dir)).toBe(true);
    for (const pid of [pids.pgwarden, pids.postgres, pids.watchdog]) expect(alive(pid)).toBe(true);

    // queries through pgwarden, as the token user and as the password user
    const q1 = await runPsql(["-X", "-At", iamUrl, "-c", "select current_user, 6 * 7"]);
    expect(q1.stderr).toBe("");
    expect(q1.stdout.trim()).toBe("app_iam|42");
    const q2 = await runPsql(["-X", "-At", userUrl, "-c", "select current_user"]);
    expect(q2.stdout.trim()).toBe("app_user");

    // the admin console: one Entra ID credential, valid, fetched at least once
    const first = (await showCredentials(adminUrl)).find(
      (r) => r.provider === "azure_workload_identity",
    );
    expect(first, "SHOW CREDENTIALS has the azure_workload_identity row").toBeDefined();
    expect(first?.state).toBe("valid");
    const fetches0 = Number(first?.fetches);
    expect(fetches0).toBeGreaterThanOrEqual(1);

    const metrics = await (await fetch(metricsUrl)).text();
    expect(metrics).toMatch(
      /pgwarden_credential_fetch_total\{provider="azure_workload_identity",[^}]*result="ok"\} \d+/,
    );

    // two refreshes (about 15 s apart with 20 s tokens), seen in the console and in the log
    let latest: Record<string, string> | undefined;
    await poll(
      async () => {
        latest = (await showCredentials(adminUrl)).find(
          (r) => r.provider === "azure_workload_identity",
        );
        return Number(latest?.fetches) >= fetches0 + 2;
      },
      `SHOW CREDENTIALS fetches >= ${fetches0 + 2}`,
      80_000,
      2_000,
    );
    expect(latest?.failures).toBe("0");
    // a refresh may be under way at this very moment
    expect(["valid", "refreshing"]).toContain(latest?.state);
    await waitForOutput(/credential fetched \(refresh #2\)/, 5_000);

    // a fresh server login uses the refreshed token, and the gateway accepts it
    const accepted = () =>
      (text().match(/token login #\d+ accepted for role app_iam/g) ?? []).length;
    const before = accepted();
    const rc = await runPsql(["-X", "-At", adminUrl, "-c", "RECONNECT app"]);
    expect(rc.code, rc.stderr).toBe(0);
    await poll(
      async () => {
        const q = await runPsql(["-X", "-At", iamUrl, "-c", "select 1"]);
        expect(q.stdout.trim()).toBe("1");
        return accepted() > before;
      },
      "a new token login after RECONNECT",
      20_000,
      500,
    );
    expect(text()).not.toMatch(/REJECTED/);

    // never a token in the output: no JWT of the emulator (eyJ….eyJ….<signature>)
    expect(text()).not.toMatch(/eyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]{20,}/);

    // Ctrl-C
    proc?.kill("SIGINT");
    const status = await Promise.race([
      exited,
      sleep(40_000).then(() => {
        throw new Error(`the demo did not exit after SIGINT:\n${text().slice(-3000)}`);
      }),
    ]);
    expect(status).toEqual({ code: 0, signal: null });
    expect(text()).toMatch(/stopped; removed /);
    for (const [kind, pid] of Object.entries(pids))
      expect(alive(pid), `${kind} (pid ${pid}) is still running`).toBe(false);
    expect(processesMentioning(dir)).toEqual([]);
    expect(existsSync(dir)).toBe(false);
  }, 180_000);
});
