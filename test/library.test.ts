// pgwarden as a library (issue 12): a Node.js service (test/fixtures/library/pg-app.mjs) imports
// `tokenSource` from "pgwarden" (the built package, through package.json "exports") and gives
// node-postgres `password: source.password`. It runs as a child process with the network guard,
// against the token-checking PostgreSQL (LDAP checker + Entra ID emulator) and the Vault
// emulator. Provider calls are counted by the emulators; that the process exits by itself
// after close() shows that no timer was left behind.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startVaultEmulator, type VaultEmulator } from "./fixtures/vault.js";
import { childEnv } from "./harness/guard.js";
import { removeOnExit, repoRoot } from "./harness/procs.js";
import { type IdentityEnv, startIdentityEnv, TENANT } from "./identity-env.js";

const LIFE = 8; // seconds: Entra ID token lifetime
const CLIENT = "client-lib";

let env: IdentityEnv;
let vault: VaultEmulator;

beforeAll(async () => {
  env = await startIdentityEnv({
    entraLifetimeSec: LIFE,
    entraLatencyMs: 300,
    awsLifetimeMs: 600_000,
  });
  await env.createIamRole("az_lib");
  env.azureRoles.set("az_lib", CLIENT);
  await env.cluster.query("create role app_users nologin");
  await env.cluster.query("create role app_static login password 'not-from-vault'");
  const dir = mkdtempSync(join(tmpdir(), "pgwarden-lib-"));
  removeOnExit(dir);
  vault = await startVaultEmulator({ cluster: env.cluster, dir, leaseSec: 6, tokenTtlSec: 60 });
  vault.addDynamicRole("app", "app_users");
  await vault.addStaticRole("app-static", "app_static", 3600);
}, 90_000);

afterAll(async () => {
  await vault?.close();
  await env?.stop();
}, 60_000);

interface ChildResult {
  out: Record<string, unknown>;
  stdout: string;
  stderr: string;
  /** ms from the result line to the process's exit. */
  exitAfterMs: number;
  code: number | null;
}

function runApp(scenario: Record<string, unknown>, extraEnv: Record<string, string | undefined>) {
  const script = join(repoRoot(), "test", "fixtures", "library", "pg-app.mjs");
  if (!existsSync(join(repoRoot(), "dist", "lib", "index.js")))
    throw new Error("dist/lib/index.js is missing: run `npm run build` first");
  return new Promise<ChildResult>((resolve, reject) => {
    const proc = spawn(process.execPath, [script], {
      cwd: repoRoot(),
      env: childEnv({ ...extraEnv, LIB_SCENARIO: JSON.stringify(scenario) }),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    let resultAt = 0;
    const kill = setTimeout(() => proc.kill("SIGKILL"), 120_000);
    proc.stdout.setEncoding("utf8");
    proc.stderr.setEncoding("utf8");
    proc.stdout.on("data", (s: string) => {
      stdout += s;
      if (resultAt === 0 && stdout.includes("\n")) resultAt = Date.now();
    });
    proc.stderr.on("data", (s: string) => {
      stderr += s;
    });
    proc.on("error", reject);
    proc.on("exit", (code) => {
      clearTimeout(kill);
      const line = stdout.split("\n")[0] ?? "";
      try {
        resolve({
          out: JSON.parse(line) as Record<string, unknown>,
          stdout,
          stderr,
          exitAfterMs: resultAt === 0 ? -1 : Date.now() - resultAt,
          code,
        });
      } catch {
        reject(
          new Error(`no result from the app (exit ${code}): ${stdout}\n${stderr.slice(-3000)}`),
        );
      }
    });
  });
}

describe("tokenSource with node-postgres", () => {
  it("azure_workload_identity: pg.Pool of 20 over 2.5 token lifetimes, 0 errors, ~1 provider call per lifetime, shared, exits after close()", async () => {
    const before = env.entra.requests.get(CLIENT) ?? 0;
    const ms = LIFE * 2.5 * 1000;
    const r = await runApp(
      {
        kind: "pool",
        clients: 20,
        ms,
        maxLifetimeSeconds: 2,
        source: {
          server_auth: "azure_workload_identity",
          host: "127.0.0.1",
          port: env.cluster.port,
          user: "az_lib",
          azure_client_id: CLIENT,
          azure_tenant_id: TENANT,
        },
        pg: {
          host: "127.0.0.1",
          port: env.cluster.port,
          database: "postgres",
          user: "az_lib",
          ssl: true,
        },
      },
      env.childEnv(CLIENT),
    );
    const calls = (env.entra.requests.get(CLIENT) ?? 0) - before;
    const o = r.out;
    console.log(
      `[measure] library azure: 20 clients ${ms / 1000} s, token ${LIFE} s: queries=${o.queries} errors=${(o.errors as string[]).length} provider_calls=${calls} fetches=${o.fetches} refresh_armed_before_close=${o.refreshArmedBeforeClose} after_close=${o.refreshArmedAfterClose} exit_after_result_ms=${r.exitAfterMs}`,
    );
    expect(o.errors).toEqual([]);
    expect(o.queries as number).toBeGreaterThan(500);
    expect(o.users).toEqual(["az_lib"]);
    // refresh at 3/4 of each lifetime: one call at start, then one per 0.75 lifetime
    expect(calls).toBeGreaterThanOrEqual(3);
    expect(calls).toBeLessThanOrEqual(Math.ceil(ms / (LIFE * 750)) + 1);
    // a refresh may have started (counted by the source) and not reached the emulator before exit
    expect(o.fetches as number).toBeGreaterThanOrEqual(calls);
    expect(o.fetches as number).toBeLessThanOrEqual(calls + 1);
    expect(o.sharedSecret).toBe(true);
    expect(o.sameEntry).toBe(true);
    expect(o.consumersBeforeClose).toBe(2);
    expect(o.stateAfterClose).toBe("stopped");
    expect(o.timersAfterClose).toBe(0);
    expect(o.refreshArmedBeforeClose).toBe(true);
    expect(o.refreshArmedAfterClose).toBe(false);
    expect(String(o.afterClose)).toMatch(/used after close/);
    expect(r.code).toBe(0);
    expect(r.exitAfterMs).toBeGreaterThanOrEqual(0);
    expect(r.exitAfterMs).toBeLessThan(2000);
    // no token in what the app printed (the snapshot included)
    expect(r.stdout + r.stderr).not.toMatch(/eyJ[\w-]{10,}\.[\w-]{10,}/);
  }, 120_000);

  it("vault_static with pg.Pool, and vault_dynamic via login(): users and passwords from Vault", async () => {
    const vaultEnv = { VAULT_CACERT: vault.caFile };
    const vaultSettings = {
      url: vault.url,
      auth_method: "approle",
      approle_role_id: vault.approle.roleId,
      approle_secret_id_file: vault.approle.secretIdFile,
    };
    const pgTarget = { host: "127.0.0.1", port: env.cluster.port, database: "postgres", ssl: true };
    const loginsBefore = vault.logins.get("approle") ?? 0;
    const s = await runApp(
      {
        kind: "pool",
        clients: 5,
        ms: 3000,
        maxLifetimeSeconds: 1,
        source: {
          server_auth: "vault_static",
          host: "127.0.0.1",
          port: env.cluster.port,
          user: "app_static",
          server_vault_path: "app-static",
          vault: vaultSettings,
        },
        pg: { ...pgTarget, user: "app_static" },
      },
      vaultEnv,
    );
    expect(s.out.errors).toEqual([]);
    expect(s.out.users).toEqual(["app_static"]);
    expect(s.out.fetches).toBe(1);
    expect(vault.reads.get("static-creds/app-static")).toBe(1);
    const readsBefore = vault.reads.get("creds/app") ?? 0;
    const d = await runApp(
      {
        kind: "login",
        ms: 10_000,
        source: {
          server_auth: "vault_dynamic",
          host: "127.0.0.1",
          port: env.cluster.port,
          user: "ignored",
          server_vault_path: "app",
          vault_refresh_percent: 50,
          vault: vaultSettings,
        },
        pg: pgTarget,
      },
      vaultEnv,
    );
    const reads = (vault.reads.get("creds/app") ?? 0) - readsBefore;
    console.log(
      `[measure] library vault_dynamic 10 s, lease 6 s at 50%: logins=${d.out.queries} errors=${(d.out.errors as string[]).length} reads=${reads} users=${(d.out.users as string[]).length} exit_after_result_ms=${d.exitAfterMs}`,
    );
    expect(d.out.errors).toEqual([]);
    expect((d.out.users as string[]).length).toBeGreaterThanOrEqual(3);
    for (const u of d.out.users as string[]) expect(u).toMatch(/^v-approle-app-/);
    expect(reads).toBeLessThanOrEqual(5);
    expect(d.out.timersAfterClose).toBe(0);
    expect(d.out.refreshArmedBeforeClose).toBe(true);
    expect(d.out.refreshArmedAfterClose).toBe(false);
    expect(d.exitAfterMs).toBeLessThan(2000);
    // one Vault login per process
    expect((vault.logins.get("approle") ?? 0) - loginsBefore).toBe(2);
    const printed = s.stdout + s.stderr + d.stdout + d.stderr;
    expect([...vault.secrets].filter((x) => printed.includes(x))).toEqual([]);
  }, 120_000);
});
