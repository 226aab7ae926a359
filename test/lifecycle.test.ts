// biome-ignore-all lint/suspicious/noTemplateCurlyInString: ${VAR} references are what these tests feed pgwarden
// The pgwarden process as users run it: config errors, ${VAR}, graceful shutdown on signals.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Pgwarden, startPgwarden } from "./harness/pgwarden.js";
import { type PgCluster, startPostgres } from "./harness/postgres.js";
import { connect, loginError, sleep } from "./helpers.js";

let cluster: PgCluster;
const started: Pgwarden[] = [];

beforeAll(async () => {
  cluster = await startPostgres();
  await cluster.createRole("life", "life-pw");
});

afterAll(async () => {
  for (const p of started) await p.stop();
  await cluster?.stop();
});

const base = () => ({
  databases: [{ name: "postgres", host: cluster.host, port: cluster.port }],
  users: [
    {
      name: "life",
      database: "postgres",
      password: "pw",
      server_password: "life-pw",
      pool_size: 2,
    },
  ],
});

async function exitOf(pw: Pgwarden): Promise<number | null> {
  return new Promise((resolve) => {
    if (pw.proc.exitCode !== null) resolve(pw.proc.exitCode);
    else pw.proc.once("exit", (code) => resolve(code));
  });
}

describe("config errors stop startup with exit code 2 and a message naming file, table and key", () => {
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ["unknown key", { general: { prot: 1 } }, /pgwarden\.toml.*\[general\].*prot/],
    [
      "wrong type",
      { general: { default_pool_size: "ten" } },
      /pgwarden\.toml.*\[general\].*default_pool_size/,
    ],
    [
      "user of an undefined database",
      { users: [{ name: "x", database: "nowhere", password: "p" }] },
      /users\.toml.*\[\[users\]\].*database/,
    ],
  ];
  for (const [what, patch, pattern] of cases) {
    it(what, async () => {
      const pw = await startPgwarden({ ...base(), ...patch, expectExit: true } as Parameters<
        typeof startPgwarden
      >[0]);
      expect(await exitOf(pw)).toBe(2);
      expect(pw.logs().join("\n")).toMatch(pattern);
    });
  }

  it("substitutes ${VAR} from the environment", async () => {
    const pw = await startPgwarden({
      ...base(),
      users: [
        {
          name: "life",
          database: "postgres",
          password: "${CLIENT_PW}",
          server_password: "${SERVER_PW}",
        },
      ],
      env: { CLIENT_PW: "from-env", SERVER_PW: "life-pw" },
    });
    started.push(pw);
    const c = await connect(pw, "life", "from-env", "postgres");
    await c.end();
    await pw.stop();
  });
});

describe("graceful shutdown", () => {
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    it(`${signal}: stops accepting, lets the open transaction finish, closes, exits 0`, async () => {
      const pw = await startPgwarden({ ...base(), general: { shutdown_timeout: 10000 } });
      started.push(pw);
      const inTx = await connect(pw, "life", "pw", "postgres");
      const idle = await connect(pw, "life", "pw", "postgres");
      const idleClosed = new Promise<void>((r) =>
        idle.once("error", () => r()).once("end", () => r()),
      );
      await inTx.query("begin");
      await inTx.query("select 1");
      const exited = exitOf(pw);
      pw.signal(signal);
      await idleClosed;
      await sleep(300);
      // New clients are turned away while the transaction is still open.
      const refused = await loginError(pw, "life", "pw", "postgres").catch((e) => ({
        code: "REFUSED",
        message: String(e),
      }));
      expect(["57P03", "ECONNREFUSED", "REFUSED"]).toContain(refused.code);
      // The open transaction can still do work and commit.
      expect((await inTx.query("select 'still here' as s")).rows[0].s).toBe("still here");
      await inTx.query("commit");
      expect(await exited).toBe(0);
      await inTx.end().catch(() => {});
    });
  }

  it("closes what is left after shutdown_timeout and still exits 0", async () => {
    const pw = await startPgwarden({ ...base(), general: { shutdown_timeout: 500 } });
    started.push(pw);
    const c = await connect(pw, "life", "pw", "postgres");
    await c.query("begin");
    const exited = exitOf(pw);
    pw.signal("SIGTERM");
    expect(await exited).toBe(0);
    const after = await c.query("select 1").catch((e) => e);
    expect(after).toBeInstanceOf(Error);
  });
});

describe("logs", () => {
  it("are JSON lines when piped and human-readable on a terminal", async () => {
    const pw = await startPgwarden({ ...base(), general: { min_pool_size: 0 } });
    started.push(pw);
    const first = pw.logs().find((l) => l.includes('"listening"'));
    expect(JSON.parse(first!).msg).toBe("listening");
    const dir = mkdtempSync(join(tmpdir(), "pgwarden-tty-"));
    writeFileSync(
      join(dir, "pgwarden.toml"),
      readFileSync(join(pw.dir, "pgwarden.toml"), "utf8").replace(/port = \d+/, "port = 0"),
    );
    writeFileSync(join(dir, "users.toml"), readFileSync(join(pw.dir, "users.toml")));
    await pw.stop();
    // The same files under a pseudo-terminal (util-linux `script`): pretty output, not JSON.
    const { childEnv } = await import("./harness/guard.js");
    const { pgwardenMain } = await import("./harness/pgwarden.js");
    const out = await new Promise<string>((resolve) => {
      const cmd = `node ${pgwardenMain()} --config ${dir}/pgwarden.toml --users ${dir}/users.toml`;
      const child = spawn("script", ["-qec", cmd, "/dev/null"], { env: childEnv() });
      let text = "";
      child.stdout.on("data", (d: Buffer) => {
        text += d.toString();
        if (text.includes("listening")) child.kill("SIGTERM");
      });
      child.on("exit", () => resolve(text));
      setTimeout(() => child.kill("SIGKILL"), 10_000);
    });
    expect(out).toContain("listening");
    expect(out).toMatch(/INFO/);
    expect(out.split("\n").some((l) => l.trim().startsWith("{"))).toBe(false);
    rmSync(dir, { recursive: true, force: true });
  });
});
