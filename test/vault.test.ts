// server_auth = "vault_dynamic" / "vault_static" end to end (issue 12): pgwarden runs as a child
// process and talks HTTPS to the loopback Vault emulator (test/fixtures/vault.ts), whose
// database secrets engine creates, drops and rotates real PostgreSQL roles. PostgreSQL itself
// then enforces every credential: a role whose lease ended is gone (its sessions terminated),
// a rotated static password no longer logs in. Counts come from the emulator and PostgreSQL.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startVaultEmulator, type VaultEmulator } from "./fixtures/vault.js";
import { type Pgwarden, startPgwarden } from "./harness/pgwarden.js";
import { type PgCluster, startPostgres } from "./harness/postgres.js";
import { removeOnExit } from "./harness/procs.js";
import { connect, eventually, sleep } from "./helpers.js";

const LEASE = 10; // seconds
const NAMESPACE = "team-a";
const ADMIN = { name: "admin", user: "ops", password: "ops-secret" };

let cluster: PgCluster;
let vault: VaultEmulator;
const started: Pgwarden[] = [];
const adminOutput: string[] = [];

beforeAll(async () => {
  cluster = await startPostgres();
  await cluster.query("create role app_users nologin");
  await cluster.query("grant all on schema public to public");
  await cluster.query("create role app_static login password 'initial-not-from-vault'");
  const dir = mkdtempSync(join(tmpdir(), "pgwarden-vault-"));
  removeOnExit(dir);
  vault = await startVaultEmulator({
    cluster,
    dir,
    leaseSec: LEASE,
    // pgwarden renews its client token at the first read after 2/3 of the TTL, while the token
    // still has more than 1 s left (vault-client.ts; it has no timer of its own). The window,
    // TTL/3 - 1 s, must be wider than the longest gap between two reads (6 s at 60 % of a 10 s
    // lease, 9 s seen under load): with 30 s a loaded run saw the window pass between two
    // reads, and the token was replaced by a second login instead of renewed.
    tokenTtlSec: 36,
    namespace: NAMESPACE,
  });
  vault.addDynamicRole("app", "app_users");
  await vault.addStaticRole("app-static", "app_static", 12);
}, 60_000);

afterAll(async () => {
  for (const p of started) await p.stop();
  // No secret Vault issued (passwords, client tokens, the secret id, the JWT) in any log line
  // at trace level, nor in any admin output.
  const logs = started.flatMap((p) => p.logs()).join("\n");
  const text = `${logs}\n${adminOutput.join("\n")}`;
  const leaked = [...(vault?.secrets ?? [])].filter((s) => text.includes(s));
  expect(leaked, "Vault secrets found in pgwarden's logs or admin output").toEqual([]);
  expect(text).not.toMatch(/hvs\.[\w-]{10,}/);
  await vault?.close();
  await cluster?.stop();
}, 60_000);

function vaultTable(auth: "approle" | "kubernetes" | "token"): Record<string, unknown> {
  const base = { url: vault.url, namespace: NAMESPACE, auth_method: auth };
  if (auth === "approle")
    return {
      ...base,
      approle_role_id: vault.approle.roleId,
      approle_secret_id_file: vault.approle.secretIdFile,
    };
  if (auth === "kubernetes")
    return {
      ...base,
      kubernetes_role: vault.kubernetes.role,
      kubernetes_jwt_path: vault.kubernetes.jwtFile,
    };
  return { ...base, token_file: vault.tokenFile };
}

async function pooler(
  users: Array<Record<string, unknown>>,
  auth: "approle" | "kubernetes" | "token" = "approle",
) {
  const pw = await startPgwarden({
    admin: ADMIN,
    general: { log_level: "trace", checkout_timeout: 10_000, token_fetch_timeout: 8000 },
    databases: [
      { name: "appdb", host: "127.0.0.1", port: cluster.port, database_name: "postgres" },
    ],
    users: users.map((u) => ({ database: "appdb", password: "pw", ...u })),
    vault: vaultTable(auth),
    env: { VAULT_CACERT: vault.caFile },
  });
  started.push(pw);
  return pw;
}

// biome-ignore lint/suspicious/noExplicitAny: admin rows are text columns
async function admin(pw: Pgwarden, sql: string): Promise<Array<Record<string, any>>> {
  const c = await connect(pw, ADMIN.user, ADMIN.password, ADMIN.name);
  try {
    const rows = (await c.query(sql)).rows;
    adminOutput.push(JSON.stringify(rows));
    return rows;
  } finally {
    await c.end();
  }
}

/** n clients of `user` running short transactions until `ms` has passed. */
async function load(pw: Pgwarden, user: string, n: number, ms: number) {
  const errors: string[] = [];
  const users = new Set<string>();
  let queries = 0;
  const deadline = Date.now() + ms;
  await Promise.all(
    Array.from({ length: n }, async () => {
      let c: pg.Client | null = null;
      while (Date.now() < deadline) {
        try {
          c ??= await connect(pw, user, "pw", "appdb");
          const r = await c.query("select current_user as u");
          users.add(r.rows[0].u);
          queries++;
        } catch (err) {
          errors.push((err as Error).message);
          await c?.end().catch(() => {});
          c = null;
          await sleep(200);
        }
        await sleep(25);
      }
      await c?.end().catch(() => {});
    }),
  );
  return { errors, queries, users };
}

const ended = () => vault.leases.filter((l) => l.terminated !== undefined);

describe("vault_dynamic", () => {
  let pw: Pgwarden;

  it("40 clients for more than three leases: 0 errors, no connection outlives its lease, one read per lease period", async () => {
    const loginsBefore = vault.logins.get("approle") ?? 0;
    pw = await pooler([
      {
        name: "dyn",
        server_auth: "vault_dynamic",
        server_vault_path: "app",
        vault_refresh_percent: 60,
        pool_size: 10,
        min_pool_size: 2,
      },
    ]);
    const readsBefore = vault.reads.get("creds/app") ?? 0;
    const renewalsBefore = vault.renewals;
    const ms = LEASE * 3.4 * 1000;
    const t0 = Date.now();
    const sample = (async () => {
      await sleep(LEASE * 1000 * 1.3);
      return admin(pw, "SHOW SERVERS");
    })();
    const r = await load(pw, "dyn", 40, ms);
    const servers = await sample;
    const elapsed = (Date.now() - t0) / 1000;
    // let the leases that ended during the load be revoked
    await sleep(1500);
    const reads = (vault.reads.get("creds/app") ?? 0) - readsBefore + 1; // + the read at start
    const done = ended();
    const terminated = done.reduce((a, l) => a + (l.terminated ?? 0), 0);
    console.log(
      `[measure] vault_dynamic 40 clients ${elapsed.toFixed(1)} s (lease ${LEASE} s, refresh at 60%): queries=${r.queries} errors=${r.errors.length} reads=${reads} leases_ended=${done.length} sessions_terminated_by_revocation=${terminated} logins=${(vault.logins.get("approle") ?? 0) - loginsBefore} renewals=${vault.renewals - renewalsBefore} distinct_users=${r.users.size}`,
    );
    expect(r.errors).toEqual([]);
    expect(r.queries).toBeGreaterThan(1000);
    expect(done.length).toBeGreaterThanOrEqual(3);
    expect(terminated, "sessions still open when their lease ended").toBe(0);
    // one read at start, then one per 0.6 lease
    expect(reads).toBeGreaterThanOrEqual(Math.floor(elapsed / (LEASE * 0.6)));
    expect(reads).toBeLessThanOrEqual(Math.ceil(elapsed / (LEASE * 0.6)) + 1);
    expect(vault.logins.get("approle") ?? 0).toBe(loginsBefore + 1);
    expect(vault.renewals - renewalsBefore).toBeGreaterThanOrEqual(1);
    // every query ran as a Vault-issued role
    for (const u of r.users) expect(u).toMatch(/^v-approle-app-/);
    expect(r.users.size).toBeGreaterThanOrEqual(3);
    // SHOW SERVERS: which credential each connection uses, never the secret
    expect(servers.length).toBeGreaterThan(0);
    for (const s of servers) {
      expect(s.server_user).toMatch(/^v-approle-app-/);
      expect(Number(s.credential)).toBeGreaterThanOrEqual(2);
      expect(s.retire_at).not.toBeNull();
    }
    const creds = await admin(pw, "SHOW CREDENTIALS");
    expect(creds).toHaveLength(1);
    expect(creds[0]).toMatchObject({ provider: "vault_dynamic", user: "dyn" });
    expect(creds[0]!.credential_user).toMatch(/^v-approle-app-/);
    expect(Number(creds[0]!.generation)).toBe(reads);
    expect(creds[0]!.identity).toContain("path=database/creds/app");
    expect(creds[0]!.identity).toContain(`namespace=${NAMESPACE}`);
  }, 120_000);

  it("Vault down for less than the remaining lease: 0 errors on the valid lease", async () => {
    // just after a new lease: the outage covers its refresh point (60%) but ends before its end
    const gen0 = Number((await admin(pw, "SHOW CREDENTIALS"))[0]!.generation);
    await eventually(
      async () => Number((await admin(pw, "SHOW CREDENTIALS"))[0]!.generation) > gen0,
      "a new lease",
      LEASE * 1000,
    );
    const readsBefore = vault.reads.get("creds/app") ?? 0;
    const refusedBefore = vault.refusedWhileDown;
    const run = load(pw, "dyn", 20, LEASE * 1000);
    await sleep(1000);
    vault.knobs.down = true;
    await sleep(LEASE * 1000 * 0.6);
    vault.knobs.down = false;
    const r = await run;
    await sleep(1500);
    const refused = vault.refusedWhileDown - refusedBefore;
    const terminated = ended().reduce((a, l) => a + (l.terminated ?? 0), 0);
    console.log(
      `[measure] vault down ${(LEASE * 0.6).toFixed(1)} s inside a ${LEASE} s lease: errors=${r.errors.length} queries=${r.queries} refused_requests=${refused} reads_after=${(vault.reads.get("creds/app") ?? 0) - readsBefore} sessions_terminated_by_revocation=${terminated}`,
    );
    expect(refused).toBeGreaterThanOrEqual(1);
    expect(r.errors).toEqual([]);
    expect(terminated).toBe(0);
  }, 60_000);

  it("Vault down past the lease: a FATAL naming the user and Vault, then recovery without restart", async () => {
    vault.knobs.down = true;
    // the held lease ends; pgwarden closed its connections before that, new logins need Vault
    let err: string | null = null;
    await eventually(
      async () => {
        try {
          const c = await connect(pw, "dyn", "pw", "appdb");
          await c.query("select 1");
          await c.end();
          return false;
        } catch (e) {
          err = (e as Error).message;
          return true;
        }
      },
      "a login failure once the lease is over",
      LEASE * 1000 + 5000,
    );
    console.log(`[measure] client error while Vault is down: ${err}`);
    expect(err).toMatch(/vault_dynamic/);
    expect(err).toMatch(/user=dyn/);
    expect(err).toContain(vault.url);
    expect(err).toMatch(/Vault is sealed|503/);
    const downAt = Date.now();
    vault.knobs.down = false;
    await eventually(
      async () => {
        try {
          const c = await connect(pw, "dyn", "pw", "appdb");
          const u = (await c.query("select current_user as u")).rows[0].u as string;
          await c.end();
          return u.startsWith("v-approle-app-");
        } catch {
          return false;
        }
      },
      "recovery after Vault is back",
      45_000,
    );
    console.log(
      `[measure] recovered ${((Date.now() - downAt) / 1000).toFixed(1)} s after Vault came back`,
    );
    const terminated = ended().reduce((a, l) => a + (l.terminated ?? 0), 0);
    expect(terminated).toBe(0);
  }, 120_000);
});

describe("vault_static", () => {
  it("rotations under load: 0 errors, the role's password follows Vault's", async () => {
    const pw = await pooler([
      {
        name: "stat",
        server_auth: "vault_static",
        server_vault_path: "app-static",
        pool_size: 5,
        min_pool_size: 1,
      },
    ]);
    const rotBefore = vault.rotations.get("app-static") ?? 0;
    const readsBefore = vault.reads.get("static-creds/app-static") ?? 0;
    // RECONNECT every 3 s makes pgwarden log in again and again, across rotations
    let stop = false;
    const reconnects = (async () => {
      while (!stop) {
        await sleep(3000);
        if (!stop) await admin(pw, "RECONNECT");
      }
    })();
    const r = await load(pw, "stat", 10, 30_000);
    stop = true;
    await reconnects;
    const rotations = (vault.rotations.get("app-static") ?? 0) - rotBefore;
    const reads = (vault.reads.get("static-creds/app-static") ?? 0) - readsBefore;
    console.log(
      `[measure] vault_static 10 clients 30 s, rotation every 12 s: queries=${r.queries} errors=${r.errors.length} rotations=${rotations} reads=${reads}`,
    );
    expect(r.errors).toEqual([]);
    expect(rotations).toBeGreaterThanOrEqual(2);
    expect([...r.users]).toEqual(["app_static"]);
    expect(reads).toBeLessThanOrEqual(rotations * 3 + 2);
    const creds = await admin(pw, "SHOW CREDENTIALS");
    expect(creds[0]).toMatchObject({ provider: "vault_static", credential_user: "app_static" });
    await pw.stop();
  }, 90_000);
});

describe("auth methods", () => {
  it("kubernetes and token_file log in once and read through the namespace", async () => {
    for (const auth of ["kubernetes", "token"] as const) {
      const before = vault.logins.get(auth) ?? 0;
      const pw = await pooler(
        [
          {
            name: "dyn",
            server_auth: "vault_dynamic",
            server_vault_path: "app",
            pool_size: 4,
            min_pool_size: 4,
          },
          {
            name: "dyn2",
            server_auth: "vault_dynamic",
            server_vault_path: "database/creds/app",
            pool_size: 2,
            min_pool_size: 1,
          },
        ],
        auth,
      );
      for (const u of ["dyn", "dyn2"]) {
        const c = await connect(pw, u, "pw", "appdb");
        expect((await c.query("select current_user as u")).rows[0].u).toMatch(/^v-approle-app-/);
        await c.end();
      }
      // two identities (their paths differ), one Vault login for both
      expect((vault.logins.get(auth) ?? 0) - before, auth).toBe(1);
      await pw.stop();
    }
  }, 60_000);
});
