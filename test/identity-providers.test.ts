// The providers of issue #11 end to end: Azure managed identity (system- and user-assigned, by
// client id and by resource id), GCP Cloud SQL IAM (metadata server, and an external_account
// file with impersonation), AWS RDS IAM through an assumed role, and the `command` provider.
// pgwarden runs as a child process with the real SDKs, talking to loopback emulators, logging
// in to one TLS PostgreSQL whose token roles are checked by the LDAP checker against those
// emulators: only tokens an emulator issued, for that role's identity, and not expired, log in
// (design §4). Counts come from the emulators and the checker, not from pgwarden.
//
// Two pgwarden processes run side by side because Application Default Credentials are
// per-process: "A" has every provider with the GCP metadata server, "B" the GCP external
// account file.
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type AwsCredentialsEndpoint,
  startAwsCredentialsEndpoint,
} from "./fixtures/aws-credentials.js";
import { type StsEmulator, startStsEmulator } from "./fixtures/aws-sts.js";
import { type MsiEmulator, SYSTEM_IDENTITY, startMsiEmulator } from "./fixtures/azure-msi.js";
import {
  type CommandSecrets,
  type MintMode,
  makeCommandSecrets,
} from "./fixtures/command-secrets.js";
import { GCP_PROJECT, type GcpEmulator, startGcpEmulator } from "./fixtures/gcp.js";
import { IAM_GROUP, ldapHbaLine } from "./fixtures/iam-postgres.js";
import { type LdapChecker, startLdapChecker } from "./fixtures/ldap-checker.js";
import { verifyRdsToken } from "./fixtures/rds-token.js";
import type { FailureMode, TokenCheck } from "./fixtures/token-book.js";
import { type Pgwarden, startPgwarden } from "./harness/pgwarden.js";
import { type PgCluster, startPostgres } from "./harness/postgres.js";
import { removeOnExit } from "./harness/procs.js";
import { freePort } from "./harness/util.js";
import { connect, logLines, sleep } from "./helpers.js";
import { makeCerts } from "./tls-certs.js";

const RDS_HOST = "mydb.c0ffee.eu-west-1.rds.amazonaws.com";
const ROLE_ARN = "arn:aws:iam::210987654321:role/pgwarden-db-login";
const EXTERNAL_ID = "pgw-ext-7";
const MI_USER_CLIENT = "5b1f0e9e-0000-4000-8000-00000000000a";
const MI_RES_CLIENT = "5b1f0e9e-0000-4000-8000-00000000000b";
const MI_RES_ID =
  "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/pgw-res";
const VM_SA = `vm-sa@${GCP_PROJECT}.iam.gserviceaccount.com`;
const WIF_SA = `wif-sa@${GCP_PROJECT}.iam.gserviceaccount.com`;
const WIF_AUDIENCE =
  "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/pool/providers/prov";
/** Cloud SQL's database user for a service account: its email without .gserviceaccount.com. */
const cloudSqlUser = (email: string) => email.replace(/\.gserviceaccount\.com$/, "");

/** Each token role: who may log in as it, checked against the emulator that issued the token. */
type RoleCheck = (secret: string, role: string) => TokenCheck;

let cluster: PgCluster;
let ldap: LdapChecker;
let msi: MsiEmulator;
let gcp: GcpEmulator;
let aws: AwsCredentialsEndpoint;
let sts: StsEmulator;
let cmd: CommandSecrets;
let subjectTokenFile: string;
let adcFile: string;
let shimDir: string;
const roles = new Map<string, RoleCheck>();
const seenSecrets = new Set<string>();
const lastSecret = new Map<string, string>();
/** Distinct secrets accepted per role: how many token generations logged in. */
const acceptedSecrets = new Map<string, Set<string>>();
const rejectedByRole = new Map<string, number>();
const started: Pgwarden[] = [];

const LIFE = 12; // seconds: short enough to rotate several times in a test

function setAll(opts: { lifetimeSec?: number; latencyMs?: number; failure?: FailureMode }) {
  for (const k of [msi.knobs, gcp.knobs]) {
    if (opts.lifetimeSec !== undefined) k.lifetimeSec = opts.lifetimeSec;
    if (opts.latencyMs !== undefined) k.latencyMs = opts.latencyMs;
    if (opts.failure !== undefined) k.failure = opts.failure;
  }
  if (opts.lifetimeSec !== undefined) {
    sts.knobs.lifetimeMs = opts.lifetimeSec * 1000;
    cmd.setLifetime(opts.lifetimeSec);
  }
  if (opts.latencyMs !== undefined) sts.knobs.latencyMs = opts.latencyMs;
  if (opts.failure !== undefined) {
    sts.knobs.failure = opts.failure;
    cmd.setMode(opts.failure === "none" ? "ok" : opts.failure === "500" ? "fail" : "hang");
  }
}

beforeAll(async () => {
  const knobs = () => ({ lifetimeSec: LIFE, latencyMs: 0, failure: "none" as FailureMode });
  msi = await startMsiEmulator(knobs());
  msi.addUserAssigned(MI_USER_CLIENT, `${MI_RES_ID}-u`);
  msi.addUserAssigned(MI_RES_CLIENT, MI_RES_ID);
  gcp = await startGcpEmulator(knobs(), VM_SA);
  aws = await startAwsCredentialsEndpoint({ lifetimeMs: 120_000 });
  sts = await startStsEmulator({
    lifetimeMs: LIFE * 1000,
    callerSecret: (id) => aws.secretFor(id),
  });
  sts.addRole(ROLE_ARN, EXTERNAL_ID);
  cmd = makeCommandSecrets();
  cmd.setLifetime(LIFE);

  const dir = mkdtempSync(join(tmpdir(), "pgwarden-idp-"));
  removeOnExit(dir);
  // Workload identity federation: the platform's OIDC token, and the ADC file pointing at the
  // loopback STS and impersonation endpoints.
  subjectTokenFile = join(dir, "oidc-token");
  writeFileSync(subjectTokenFile, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJrOHMtc2EifQ.subject-one");
  gcp.setSubjectToken(WIF_AUDIENCE, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJrOHMtc2EifQ.subject-one");
  adcFile = join(dir, "external-account.json");
  writeFileSync(
    adcFile,
    JSON.stringify({
      type: "external_account",
      audience: WIF_AUDIENCE,
      subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
      token_url: gcp.stsUrl,
      service_account_impersonation_url: gcp.impersonationUrl(WIF_SA),
      credential_source: { file: subjectTokenFile },
    }),
  );
  // design §4: without GOOGLE_CLOUD_PROJECT the library may run gcloud, which resolves names
  // outside any Node guard; this one fails at once.
  shimDir = join(dir, "bin");
  mkdirSync(shimDir);
  writeFileSync(
    join(shimDir, "gcloud"),
    '#!/bin/sh\necho "gcloud is disabled in tests" >&2\nexit 1\n',
  );
  chmodSync(join(shimDir, "gcloud"), 0o755);

  const awsRole: RoleCheck = (secret, role) => {
    const r = verifyRdsToken(secret, {
      host: RDS_HOST,
      port: cluster.port,
      user: role,
      region: "eu-west-1",
      // only keys of the assumed role sign: the base credentials would be refused
      secretFor: (id) => sts.issued.get(id)?.secretAccessKey,
      keyInfo: (id) => sts.issued.get(id),
    });
    return r.ok
      ? { ok: true, claims: { sub: r.accessKeyId, scope: "", exp: 0, iat: 0, jti: "" } }
      : r;
  };
  roles.set("mi_sys", (s) => msi.verify(s, SYSTEM_IDENTITY));
  roles.set("mi_user", (s) => msi.verify(s, MI_USER_CLIENT));
  roles.set("mi_res", (s) => msi.verify(s, MI_RES_CLIENT));
  // Cloud SQL naming: the role is the account's email without .gserviceaccount.com
  roles.set(cloudSqlUser(VM_SA), (s, role) => gcp.verify(s, `${role}.gserviceaccount.com`));
  roles.set(cloudSqlUser(WIF_SA), (s, role) => gcp.verify(s, `${role}.gserviceaccount.com`));
  roles.set("rds_role", awsRole);
  roles.set("cmd_json", (s, role) => cmd.verify(s, role));
  roles.set("cmd_bare", (s, role) => cmd.verify(s, role));

  ldap = await startLdapChecker(async (user, password) => {
    seenSecrets.add(password);
    lastSecret.set(user, password);
    const check = roles.get(user);
    const r: TokenCheck = check ? check(password, user) : { ok: false, reason: "no such role" };
    if (r.ok) {
      const set = acceptedSecrets.get(user) ?? new Set<string>();
      set.add(password);
      acceptedSecrets.set(user, set);
      return { ok: true };
    }
    rejectedByRole.set(user, (rejectedByRole.get(user) ?? 0) + 1);
    return { ok: false, reason: r.reason };
  });
  const certs = makeCerts("DNS:localhost,IP:127.0.0.1");
  cluster = await startPostgres({
    ssl: { certFile: certs.certFile, keyFile: certs.keyFile },
    hba: [ldapHbaLine(ldap.port)],
  });
  await cluster.query(`create role ${IAM_GROUP} nologin`);
  for (const role of roles.keys())
    await cluster.query(`create role "${role}" login in role ${IAM_GROUP}`);
  await cluster.query("grant all on schema public to public");
}, 90_000);

afterAll(async () => {
  for (const p of started) await p.stop();
  // Whatever happened above, no secret reached any log line, at trace level.
  const logs = started.flatMap((p) => p.logs()).join("\n");
  const secrets = [
    ...seenSecrets,
    ...(msi?.issued ?? []),
    ...(gcp?.issued ?? []),
    ...[...(sts?.issued.values() ?? [])].flatMap((k) => [k.secretAccessKey, k.sessionToken]),
  ];
  const leaked = secrets.filter((s) => s.length > 8 && logs.includes(s));
  expect(leaked.length, "secrets found in pgwarden's logs").toBe(0);
  expect(logs).not.toMatch(/X-Amz-Signature=[0-9a-f]{16}/);
  expect(logs).not.toMatch(/eyJ[\w-]{10,}\.[\w-]{10,}/);
  expect(logs).not.toMatch(/ya29\.[\w-]{10,}/);
  expect(logs).not.toMatch(/cmdtok\.[\w-]+\.\d+\.[\w-]+\.[\w-]{10,}/);
  await cluster?.stop();
  await ldap?.close();
  await msi?.close();
  await gcp?.close();
  await aws?.close();
  await sts?.close();
}, 60_000);

function childEnv(gcpMode: "metadata" | "file"): Record<string, string | undefined> {
  return {
    PATH: `${shimDir}:${process.env.PATH ?? ""}`,
    IDENTITY_ENDPOINT: msi.endpoint,
    IDENTITY_HEADER: msi.header,
    GCE_METADATA_HOST: gcp.metadataHost,
    GCE_METADATA_IP: gcp.metadataHost,
    METADATA_SERVER_DETECTION: gcpMode === "metadata" ? "assume-present" : "none",
    GOOGLE_APPLICATION_CREDENTIALS: gcpMode === "file" ? adcFile : undefined,
    AWS_CONTAINER_CREDENTIALS_FULL_URI: aws.url,
    AWS_ENDPOINT_URL_STS: sts.url,
    AWS_ACCESS_KEY_ID: undefined,
    AWS_SECRET_ACCESS_KEY: undefined,
    AWS_SESSION_TOKEN: undefined,
    AWS_REGION: "eu-west-1",
  };
}

const db = () => ({
  name: "appdb",
  host: "127.0.0.1",
  port: cluster.port,
  database_name: "postgres",
});

/** Users of pgwarden "A" (every provider, GCP via the metadata server). */
function usersA(pool: Record<string, unknown>, few: Record<string, unknown> = pool) {
  return [
    { name: "mi_sys", server_auth: "azure_managed_identity", ...pool },
    {
      name: "mi_user",
      server_auth: "azure_managed_identity",
      azure_client_id: MI_USER_CLIENT,
      ...pool,
    },
    { name: "mi_res", server_auth: "azure_managed_identity", azure_resource_id: MI_RES_ID, ...few },
    { name: "gcp_vm", server_user: cloudSqlUser(VM_SA), server_auth: "gcp_cloudsql_iam", ...pool },
    {
      name: "rds_role",
      server_auth: "rds_iam",
      server_iam_host: RDS_HOST,
      server_iam_role_arn: ROLE_ARN,
      server_iam_external_id: EXTERNAL_ID,
      server_iam_session_name: "pgwarden-test",
      ...pool,
    },
    { name: "cmd_json", server_auth: "command", server_auth_command: cmd.argv("json"), ...pool },
    {
      name: "cmd_bare",
      server_auth: "command",
      server_auth_command: cmd.argv("bare"),
      server_auth_command_ttl: LIFE * 1000,
      ...few,
    },
  ];
}
const usersB = (pool: Record<string, unknown>) => [
  { name: "gcp_wif", server_user: cloudSqlUser(WIF_SA), server_auth: "gcp_cloudsql_iam", ...pool },
];

const ADMIN = { name: "admin", user: "ops", password: "ops-secret" };

async function pooler(
  which: "A" | "B",
  users: Array<Record<string, unknown>>,
  general: Record<string, unknown> = {},
) {
  const pw = await startPgwarden({
    admin: ADMIN,
    general: {
      // Schedules here count from "listening" (outage windows, SHOW CREDENTIALS states) and
      // rejected-secret logins count one pool's servers: one process. With workers the primary
      // fetches before its workers start, seconds before "listening". Workers' credential
      // behaviour: test/workers.test.ts and `BENCH_WORKERS=2 npm run bench:credentials`.
      workers: 1,
      tls_verify: "prefer",
      token_fetch_timeout: 8000,
      checkout_timeout: 20_000,
      log_level: "trace",
      ...general,
    },
    databases: [db()],
    users: users.map((u) => ({ database: "appdb", password: "pw", ...u })),
    env: childEnv(which === "A" ? "metadata" : "file"),
    startTimeoutMs: 60_000,
  });
  started.push(pw);
  return pw;
}

/** Provider calls so far, per identity, from the emulators (and the command's own count). */
function providerCalls(): Record<string, number> {
  return {
    mi_sys: msi.requests.get(SYSTEM_IDENTITY) ?? 0,
    mi_user: msi.requests.get(MI_USER_CLIENT) ?? 0,
    mi_res: msi.requests.get(MI_RES_CLIENT) ?? 0,
    gcp_vm: gcp.requests.get(VM_SA) ?? 0,
    gcp_wif: gcp.requests.get(WIF_SA) ?? 0,
    gcp_wif_sts: gcp.requests.get(`sts:${WIF_AUDIENCE}`) ?? 0,
    rds_role: sts.requests.get(ROLE_ARN) ?? 0,
    cmd_json: cmd.calls("cmd_json"),
    cmd_bare: cmd.calls("cmd_bare"),
  };
}
function delta(before: Record<string, number>): Record<string, number> {
  const now = providerCalls();
  return Object.fromEntries(Object.entries(now).map(([k, v]) => [k, v - (before[k] ?? 0)]));
}
const roleOf: Record<string, string> = {
  mi_sys: "mi_sys",
  mi_user: "mi_user",
  mi_res: "mi_res",
  gcp_vm: cloudSqlUser(VM_SA),
  gcp_wif: cloudSqlUser(WIF_SA),
  rds_role: "rds_role",
  cmd_json: "cmd_json",
  cmd_bare: "cmd_bare",
};

/** n clients of `user` running short transactions until `ms` has passed. */
async function load(pw: Pgwarden, user: string, n: number, ms: number) {
  const errors: string[] = [];
  let queries = 0;
  const deadline = Date.now() + ms;
  await Promise.all(
    Array.from({ length: n }, async () => {
      let c: pg.Client | null = null;
      while (Date.now() < deadline) {
        try {
          c ??= await connect(pw, user, "pw", "appdb");
          await c.query("select current_user");
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
  return { user, errors, queries };
}

async function checkLogins(pw: Pgwarden, users: string[]) {
  for (const u of users) {
    const c = await connect(pw, u, "pw", "appdb");
    expect((await c.query("select current_user as u")).rows[0].u).toBe(roleOf[u]);
    await c.end();
  }
}

describe("cold start", () => {
  it("20 server connections per identity at start: one provider call per identity", async () => {
    setAll({ lifetimeSec: 600, latencyMs: 1000, failure: "none" });
    const before = providerCalls();
    const pool = { pool_size: 20, min_pool_size: 20 };
    const metricsPort = await freePort();
    const [a, b] = await Promise.all([
      pooler("A", usersA(pool, { pool_size: 2, min_pool_size: 1 }), {
        openmetrics_port: metricsPort,
      }),
      pooler("B", usersB(pool)),
    ]);
    const d = delta(before);
    console.log(`[measure] cold start, provider calls per identity: ${JSON.stringify(d)}`);
    for (const k of [
      "mi_sys",
      "mi_user",
      "mi_res",
      "gcp_vm",
      "gcp_wif",
      "gcp_wif_sts",
      "rds_role",
      "cmd_json",
      "cmd_bare",
    ])
      expect(d[k], k).toBe(1);
    for (const u of ["mi_sys", "mi_user", "gcp_vm", "rds_role", "cmd_json"])
      expect((await cluster.backendPids(roleOf[u]!)).length, u).toBe(20);
    expect((await cluster.backendPids(roleOf.gcp_wif!)).length).toBe(20);
    await checkLogins(a, [
      "mi_sys",
      "mi_user",
      "mi_res",
      "gcp_vm",
      "rds_role",
      "cmd_json",
      "cmd_bare",
    ]);
    await checkLogins(b, ["gcp_wif"]);
    // The RDS token's expiry is capped by the assumed role's credentials (10 min here), not 15 min.
    const rdsFetch = logLines(a).find(
      (l) => l.msg === "credential fetched" && l.provider === "rds_iam",
    );
    const left = Date.parse(String(rdsFetch?.expires_at)) - Date.now();
    expect(left).toBeLessThan(600_000);
    expect(msi.refused).toEqual([]);
    expect(gcp.refused).toEqual([]);
    expect(sts.refused).toEqual([]);

    // SHOW CREDENTIALS: one row per identity, one fetch each, never a secret.
    const adminClient = await connect(a, ADMIN.user, ADMIN.password, ADMIN.name);
    const rows = (await adminClient.query("SHOW CREDENTIALS")).rows as Array<
      Record<string, unknown>
    >;
    await adminClient.end();
    const text = JSON.stringify(rows);
    console.log(
      `[measure] SHOW CREDENTIALS: ${rows.map((r) => `${r.provider} user=${r.user} ${r.identity} ${r.state} fetches=${r.fetches}`).join("; ")}`,
    );
    const byProvider = (p: string) => rows.filter((r) => r.provider === p);
    expect(
      byProvider("azure_managed_identity")
        .map((r) => r.identity)
        .sort(),
    ).toEqual([
      "assigned=system",
      `assigned=user client_id=${MI_USER_CLIENT}`,
      `assigned=user resource_id=${MI_RES_ID}`,
    ]);
    expect(byProvider("gcp_cloudsql_iam").map((r) => [r.user, r.identity])).toEqual([
      [cloudSqlUser(VM_SA), "source=adc"],
    ]);
    expect(byProvider("rds_iam").map((r) => r.identity)).toEqual([
      `region=eu-west-1 role_arn=${ROLE_ARN}`,
    ]);
    expect(
      byProvider("command")
        .map((r) => r.user)
        .sort(),
    ).toEqual(["cmd_bare", "cmd_json"]);
    for (const r of rows) {
      expect(r.state, String(r.provider)).toBe("valid");
      expect(Number(r.fetches)).toBe(1);
    }
    for (const secret of seenSecrets) expect(text.includes(secret)).toBe(false);
    // Metrics: a fetch counter per identity, no secret in any label.
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    for (const p of ["azure_managed_identity", "gcp_cloudsql_iam", "rds_iam", "command"])
      expect(metrics).toMatch(
        new RegExp(
          `pgwarden_credential_fetch_total\\{provider="${p}",identity="[^"]*",result="ok"\\} 1`,
        ),
      );
    for (const secret of seenSecrets) expect(metrics.includes(secret)).toBe(false);
    await a.stop();
    await b.stop();
    setAll({ latencyMs: 0 });
  }, 120_000);
});

describe("rotation under load", () => {
  it("40 clients per provider for more than two token lifetimes: no client error, tokens rotate", async () => {
    setAll({ lifetimeSec: LIFE, latencyMs: 300, failure: "none" });
    const before = providerCalls();
    const acceptedBefore = new Map([...acceptedSecrets].map(([k, v]) => [k, v.size]));
    const pool = { pool_size: 4, min_pool_size: 1 };
    const general = { server_lifetime: 2000 };
    const [a, b] = await Promise.all([
      pooler("A", usersA(pool), general),
      pooler("B", usersB(pool), general),
    ]);
    const runMs = 2.5 * LIFE * 1000;
    const results = await Promise.all([
      load(a, "mi_sys", 20, runMs),
      load(a, "mi_user", 20, runMs),
      load(a, "gcp_vm", 20, runMs),
      load(b, "gcp_wif", 20, runMs),
      load(a, "rds_role", 40, runMs),
      load(a, "cmd_json", 20, runMs),
      load(a, "cmd_bare", 20, runMs),
    ]);
    const d = delta(before);
    const generations = Object.fromEntries(
      results.map((r) => [
        r.user,
        (acceptedSecrets.get(roleOf[r.user]!)?.size ?? 0) -
          (acceptedBefore.get(roleOf[r.user]!) ?? 0),
      ]),
    );
    console.log(
      `[measure] rotation ${runMs / 1000}s, ${LIFE}s tokens: ${results.map((r) => `${r.user} ${r.queries} queries/${r.errors.length} errors`).join("; ")}; provider calls ${JSON.stringify(d)}; token generations that logged in ${JSON.stringify(generations)}`,
    );
    for (const r of results) expect(r.errors, r.user).toEqual([]);
    for (const r of results) {
      // 12 s tokens refresh about every 9 s: 30 s = the warm fetch + 2-3 refreshes
      expect(d[r.user], r.user).toBeGreaterThanOrEqual(3);
      expect(d[r.user], r.user).toBeLessThanOrEqual(6);
      expect(generations[r.user], r.user).toBeGreaterThanOrEqual(3);
    }
    // The RDS token's expiry is the assumed role's credentials' (12 s), not signing + 15 min.
    for (const l of logLines(a).filter(
      (l) => l.msg === "credential fetched" && l.provider === "rds_iam",
    )) {
      const life = Date.parse(String(l.expires_at)) - Date.parse(String(l.time));
      expect(life).toBeLessThanOrEqual(LIFE * 1000 + 1000);
    }
    // single-flight: never two requests at once for one identity
    for (const [id, f] of msi.inFlight) expect(f.max, id).toBe(1);
    await a.stop();
    await b.stop();
    setAll({ latencyMs: 0 });
  }, 150_000);
});

describe("provider outage", () => {
  it("an outage shorter than the token's remaining life, over a refresh: no client error", async () => {
    const life = 30;
    setAll({ lifetimeSec: life, latencyMs: 100, failure: "none" });
    const pool = { pool_size: 4, min_pool_size: 1 };
    const general = { server_lifetime: 2000 };
    const [a, b] = await Promise.all([
      pooler("A", usersA(pool), general),
      pooler("B", usersB(pool), general),
    ]);
    const t0 = Date.now();
    const runMs = 32_000;
    const run = Promise.all([
      load(a, "mi_user", 10, runMs),
      load(a, "gcp_vm", 10, runMs),
      load(b, "gcp_wif", 10, runMs),
      load(a, "rds_role", 10, runMs),
      load(a, "cmd_json", 10, runMs),
    ]);
    // The refresh is due at 22.5 s (expiry minus a quarter of the life) minus up to 1.5 s of
    // jitter, up to 1 s of expiry rounding (epoch seconds) and the start-up: 19.5-22.5 s. The
    // outage covers it and ends with about 5 s of the token left.
    await sleep(18_000 - (Date.now() - t0));
    const before = providerCalls();
    setAll({ failure: "500" });
    await sleep(6_000);
    const during = delta(before);
    setAll({ failure: "none" });
    const results = await run;
    console.log(
      `[measure] 6 s outage over the refresh of ${life}s tokens: ${results.map((r) => `${r.user} ${r.queries} queries/${r.errors.length} errors`).join("; ")}; provider calls during the outage ${JSON.stringify(during)}`,
    );
    for (const r of results) expect(r.errors, r.user).toEqual([]);
    for (const u of ["mi_user", "gcp_vm", "gcp_wif_sts", "rds_role", "cmd_json"])
      expect(during[u], `${u} tried during the outage`).toBeGreaterThanOrEqual(1);
    await a.stop();
    await b.stop();
  }, 120_000);
});

describe("rejected secrets", () => {
  it("a secret the server rejects is replaced once and the login retried", async () => {
    setAll({ lifetimeSec: 600, latencyMs: 0, failure: "none" });
    const session = { pool_size: 3, min_pool_size: 1, pooler_mode: "session" };
    const [a, b] = await Promise.all([pooler("A", usersA(session)), pooler("B", usersB(session))]);
    const users: Array<[Pgwarden, string]> = [
      [a, "mi_sys"],
      [a, "mi_user"],
      [a, "gcp_vm"],
      [b, "gcp_wif"],
      [a, "rds_role"],
      [a, "cmd_json"],
    ];
    const holders = await Promise.all(users.map(([pw, u]) => connect(pw, u, "pw", "appdb")));
    const before = providerCalls();
    const rejectedBefore = new Map(rejectedByRole);
    // The database stops accepting the secret in use (revoked, rotated password, …).
    for (const [, u] of users) {
      const role = roleOf[u]!;
      const s = lastSecret.get(role)!;
      if (u.startsWith("mi_")) msi.revoke(s);
      else if (u.startsWith("gcp_")) gcp.revoke(s);
      else if (u.startsWith("cmd_")) cmd.revoke(s);
      else {
        // an RDS token cannot be revoked: the role's key is
        const keyId = /X-Amz-Credential=([^%&]+)/.exec(s)?.[1] ?? "";
        sts.issued.delete(keyId);
      }
    }
    const second = await Promise.all(users.map(([pw, u]) => connect(pw, u, "pw", "appdb")));
    for (const [i, [, u]] of users.entries())
      expect((await second[i]!.query("select current_user as u")).rows[0].u).toBe(roleOf[u]);
    const d = delta(before);
    const rejected = Object.fromEntries(
      users.map(([, u]) => [
        u,
        (rejectedByRole.get(roleOf[u]!) ?? 0) - (rejectedBefore.get(roleOf[u]!) ?? 0),
      ]),
    );
    console.log(
      `[measure] rejection: server rejections ${JSON.stringify(rejected)}, provider calls ${JSON.stringify(d)}`,
    );
    for (const [, u] of users) {
      expect(rejected[u], u).toBe(1);
      expect(d[u], u).toBe(1);
    }
    for (const c of [...holders, ...second]) await c.end();
    await a.stop();
    await b.stop();
  }, 90_000);
});

describe("command failures", () => {
  it("a failing command gives logins a clear error naming the user, with stderr sanitized and stdout never shown", async () => {
    const modes: MintMode[] = ["fail", "empty", "big", "hang"];
    const secrets = modes.map((m) => {
      const c = makeCommandSecrets();
      c.setMode(m);
      return c;
    });
    const pw = await startPgwarden({
      // room for a node command to start on a loaded machine; "hang" waits all of it
      general: { tls_verify: "prefer", token_fetch_timeout: 5000, log_level: "trace" },
      databases: [db()],
      users: modes.map((m, i) => ({
        name: `cmd_${m}`,
        database: "appdb",
        password: "pw",
        server_user: "cmd_json",
        server_auth: "command",
        server_auth_command: secrets[i]!.argv("json"),
        min_pool_size: 0,
      })),
      env: childEnv("metadata"),
      startTimeoutMs: 60_000,
    });
    started.push(pw);
    const want: Record<string, RegExp> = {
      fail: /exited with status 2; stderr: mint: backend unavailable for cmd_json \(token=\[redacted\]/,
      empty: /printed nothing on stdout/,
      big: /printed more than 65536 bytes/,
      hang: /timed out|token_fetch_timeout/,
    };
    for (const m of modes) {
      const err = (await connect(pw, `cmd_${m}`, "pw", "appdb").catch((e: Error) => e)) as Error;
      expect(err, m).toBeInstanceOf(Error);
      console.log(`[measure] command ${m}: client sees: ${err.message}`);
      expect(err.message, m).toMatch(/command/);
      expect(err.message, m).toMatch(/cmd_json/);
      expect(err.message, m).toMatch(want[m]!);
      expect(err.message).not.toContain("abc123def");
    }
    await pw.stop();
    const logs = pw.logs().join("\n");
    expect(logs).not.toContain("abc123def");
    expect(logs).not.toContain("x".repeat(64));
    expect(logs).toMatch(/token=\[redacted\]/);
  }, 60_000);
});
