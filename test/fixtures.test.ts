// The loopback emulators of test/fixtures/ (design §4), proven against the real SDKs and a real
// PostgreSQL: RDS tokens made by @aws-sdk/rds-signer with keys from the container-credentials
// endpoint, Entra tokens fetched by @azure/identity over HTTPS, both checked at login by
// PostgreSQL's `ldap` auth through the LDAP checker. SDKs run in child processes (as pgwarden
// will) with the network guard. Tokens are handed over by IPC and never printed: assertions
// look at verification results and login outcomes, not at token text.
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fromHttp } from "@aws-sdk/credential-providers";
import { Signer } from "@aws-sdk/rds-signer";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import {
  type AwsCredentialsEndpoint,
  startAwsCredentialsEndpoint,
} from "./fixtures/aws-credentials.js";
import { type EntraEmulator, OSSRDBMS_SCOPE, startEntraEmulator } from "./fixtures/entra.js";
import { type IamPostgres, startIamPostgres } from "./fixtures/iam-postgres.js";
import { startLdapChecker } from "./fixtures/ldap-checker.js";
import { type RdsTokenExpectation, verifyRdsToken } from "./fixtures/rds-token.js";
import { type SdkChild, startSdkChild } from "./fixtures/sdk-child.js";

const REGION = "eu-west-1";
const TENANT = "7f2c1b9e-0000-4000-8000-00000000aaaa";

const cleanups: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});
function later(fn: () => Promise<void> | void): void {
  cleanups.push(fn);
}

/** The environment pgwarden needs for the default AWS chain to use the endpoint (and nothing else). */
function awsEnv(aws: AwsCredentialsEndpoint): Record<string, string | undefined> {
  return {
    AWS_CONTAINER_CREDENTIALS_FULL_URI: aws.url,
    AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: undefined,
    AWS_EC2_METADATA_DISABLED: "true",
    AWS_ACCESS_KEY_ID: undefined,
    AWS_SECRET_ACCESS_KEY: undefined,
    AWS_SESSION_TOKEN: undefined,
    AWS_PROFILE: undefined,
    AWS_CONFIG_FILE: "/nonexistent",
    AWS_SHARED_CREDENTIALS_FILE: "/nonexistent",
    AWS_REGION: REGION,
  };
}

function azureEnv(entra: EntraEmulator): Record<string, string> {
  return { NODE_EXTRA_CA_CERTS: entra.caFile, AZURE_AUTHORITY_HOST: entra.authorityHost };
}

type AwsCreds = { accessKeyId: string; hasSessionToken: boolean; expiration: number | null };
type Timed<T> = { ms: number; value?: T; error?: string; timedOut?: boolean };
type AzureToken = {
  token: string;
  tokenType: string;
  expiresOnTimestamp: number;
  refreshAfterTimestamp: number | null;
};

/** The value of a probe answer; on failure an error that names the SDK error (never a token). */
function answer<T>(r: Timed<T>): T {
  if (r.value === undefined)
    throw new Error(r.timedOut ? `timed out after ${r.ms} ms` : `SDK error: ${r.error}`);
  return r.value;
}

/** A fake projected service-account token (a JWT the emulator only checks for shape). */
function fakeSaToken(sub: string): string {
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${part({ alg: "RS256", typ: "JWT" })}.${part({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}.${randomBytes(32).toString("base64url")}`;
}

function tempFile(name: string, content: string): string {
  const dir = mkdtempSync(join(tmpdir(), "pgwarden-fixtures-"));
  later(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, name);
  writeFileSync(file, content);
  return file;
}

/** Flips one hex digit of X-Amz-Signature. */
function tamper(token: string): string {
  return token.replace(
    /(X-Amz-Signature=[0-9a-f]{10})([0-9a-f])/,
    (_m, head: string, c: string) => `${head}${c === "0" ? "1" : "0"}`,
  );
}

type Login = { ok: true; user: string } | { ok: false; code: string | undefined; message: string };

async function login(port: number, user: string, password: string): Promise<Login> {
  const c = new pg.Client({ host: "127.0.0.1", port, user, password, database: "postgres" });
  c.on("error", () => {});
  try {
    await c.connect();
    const r = await c.query<{ u: string }>("select current_user as u");
    return { ok: true, user: r.rows[0]!.u };
  } catch (err) {
    const e = err as Error & { code?: string };
    return { ok: false, code: e.code, message: e.message };
  } finally {
    await c.end().catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------

describe("LDAP checker (raw BER)", () => {
  /** Sends `bytes`, collects everything until the server closes. */
  function exchange(port: number, bytes: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      const s = net.connect({ host: "127.0.0.1", port }, () => s.write(bytes));
      s.on("data", (c) => {
        chunks.push(c);
        s.end(); // one answer is all we want; the server may also close first
      });
      s.on("close", () => resolve(Buffer.concat(chunks)));
      s.on("error", reject);
    });
  }

  it("answers a simple bind with success or invalidCredentials, refuses other operations", async () => {
    const ldap = await startLdapChecker(async (user, password) =>
      password === "right" ? { ok: true } : { ok: false, reason: `wrong secret for ${user}` },
    );
    later(() => ldap.close());
    const bind = (id: number, dn: string, pw: string, authTag = 0x80) => {
      const os = (tag: number, v: Buffer) => Buffer.concat([Buffer.from([tag, v.length]), v]);
      const body = Buffer.concat([
        Buffer.from([0x02, 0x01, 0x03]),
        os(0x04, Buffer.from(dn)),
        os(authTag, Buffer.from(pw)),
      ]);
      const op = os(0x60, body);
      return os(0x30, Buffer.concat([Buffer.from([0x02, 0x01, id]), op]));
    };
    // BindResponse: 30 len 02 01 <id> 61 len 0a 01 <code> ...
    const ok = await exchange(ldap.port, bind(7, "cn=alice,dc=example", "right"));
    expect([...ok.subarray(0, 3)]).toEqual([0x30, ok[1], 0x02]);
    expect(ok[4]).toBe(7);
    expect(ok[5]).toBe(0x61);
    expect(ok[9]).toBe(0); // success
    const bad = await exchange(ldap.port, bind(8, "cn=alice,dc=example", "wrong"));
    expect(bad[9]).toBe(49); // invalidCredentials
    expect(bad.toString("latin1")).toContain("wrong secret for alice");
    const sasl = await exchange(ldap.port, bind(9, "cn=bob,dc=example", "x", 0xa3));
    expect(sasl[9]).toBe(7); // authMethodNotSupported
    // a SearchRequest (APPLICATION 3): Notice of Disconnection (APPLICATION 24), protocolError
    const search = Buffer.from([0x30, 0x07, 0x02, 0x01, 0x0a, 0x63, 0x02, 0x04, 0x00]);
    const notice = await exchange(ldap.port, search);
    expect(notice[5]).toBe(0x78);
    expect(notice[9]).toBe(2);
    expect(notice.toString("latin1")).toContain("1.3.6.1.4.1.1466.20036");

    expect(ldap.stats).toMatchObject({ binds: 3, accepted: 1, rejected: 2 });
    expect(Object.fromEntries(ldap.stats.byUser)).toEqual({ alice: 2, bob: 1 });
    expect(ldap.rejections).toEqual([
      { user: "alice", reason: "wrong secret for alice" },
      { user: "bob", reason: "only simple binds are supported" },
    ]);
  });
});

// ---------------------------------------------------------------------------------------------

describe("verifyRdsToken against tokens from the real @aws-sdk/rds-signer", () => {
  const creds = {
    accessKeyId: "ASIAFIXTURETEST00001",
    secretAccessKey: randomBytes(30).toString("base64"),
    sessionToken: randomBytes(64).toString("base64"), // '+', '/' and '=' exercise the encoding
  };
  const host = "db.example.internal"; // only a string in the token: nothing connects to it
  const port = 5432;
  const expectation = (over: Partial<RdsTokenExpectation> = {}): RdsTokenExpectation => ({
    host,
    port,
    user: "app@corp",
    region: REGION,
    secretFor: (id: string) => (id === creds.accessKeyId ? creds.secretAccessKey : undefined),
    keyInfo: (id: string) =>
      id === creds.accessKeyId ? { sessionToken: creds.sessionToken } : undefined,
    ...over,
  });
  const sign = (region = REGION, username = "app@corp") =>
    new Signer({ hostname: host, port, username, region, credentials: creds }).getAuthToken();

  it("accepts a fresh token and names the key", async () => {
    expect(verifyRdsToken(await sign(), expectation())).toEqual({
      ok: true,
      accessKeyId: creds.accessKeyId,
    });
  });

  it("rejects tampering, another user, host or region, and a missing session token", async () => {
    const token = await sign();
    expect(verifyRdsToken(tamper(token), expectation())).toEqual({
      ok: false,
      reason: "signature does not match",
    });
    // DBUser edited to what the server expects: the signature no longer covers it
    const edited = token.replace("DBUser=app%40corp", "DBUser=admin");
    expect(verifyRdsToken(edited, expectation({ user: "admin" }))).toEqual({
      ok: false,
      reason: "signature does not match",
    });
    expect(verifyRdsToken(token, expectation({ user: "admin" }))).toMatchObject({ ok: false });
    expect(verifyRdsToken(token, expectation({ port: 5433 }))).toMatchObject({
      ok: false,
      reason: expect.stringContaining("not db.example.internal:5433"),
    });
    expect(verifyRdsToken(await sign("us-east-1"), expectation())).toEqual({
      ok: false,
      reason: `signed for region us-east-1, not ${REGION}`,
    });
    expect(verifyRdsToken(token, expectation({ secretFor: () => undefined }))).toMatchObject({
      ok: false,
      reason: expect.stringContaining("unknown access key"),
    });
    const noSession = await new Signer({
      hostname: host,
      port,
      username: "app@corp",
      region: REGION,
      credentials: { accessKeyId: creds.accessKeyId, secretAccessKey: creds.secretAccessKey },
    }).getAuthToken();
    expect(verifyRdsToken(noSession, expectation({ keyInfo: () => undefined }))).toEqual({
      ok: false,
      reason: "temporary access key without X-Amz-Security-Token",
    });
  });

  it("enforces X-Amz-Date + X-Amz-Expires (900 s)", async () => {
    const realNow = Date.now();
    const token = await sign();
    expect(verifyRdsToken(token, expectation({ nowMs: realNow + 890_000 }))).toMatchObject({
      ok: true,
    });
    expect(verifyRdsToken(token, expectation({ nowMs: realNow + 901_000 }))).toEqual({
      ok: false,
      reason: "token expired",
    });
    // The Signer has no clock option, but it reads the global Date: sign 20 minutes ago
    vi.useFakeTimers({ toFake: ["Date"] });
    let old: string;
    try {
      vi.setSystemTime(realNow - 20 * 60_000);
      old = await sign();
    } finally {
      vi.useRealTimers();
    }
    expect(verifyRdsToken(old, expectation())).toEqual({ ok: false, reason: "token expired" });
    // Moving X-Amz-Date by hand (same day, another hour) breaks the signature instead
    const amzDate = /X-Amz-Date=(\d{8}T\d{6}Z)/.exec(token)![1]!;
    const moved = amzDate.replace(
      /T(\d\d)/,
      (_m, h: string) => `T${String((Number(h) + 23) % 24).padStart(2, "0")}`,
    );
    expect(verifyRdsToken(token.replace(amzDate, moved), expectation())).toEqual({
      ok: false,
      reason: "signature does not match",
    });
    // a key past its own expiry cannot vouch for a token either
    expect(
      verifyRdsToken(
        token,
        expectation({
          keyInfo: () => ({ sessionToken: creds.sessionToken, expiresAtMs: realNow - 1 }),
        }),
      ),
    ).toEqual({ ok: false, reason: "the credentials that signed the token have expired" });
  });
});

// ---------------------------------------------------------------------------------------------

describe("AWS container-credentials endpoint with fromNodeProviderChain (child process)", () => {
  it("serves credentials with an expiration; the chain memoizes them while they last", async () => {
    const aws = await startAwsCredentialsEndpoint({ lifetimeMs: 3_600_000 });
    later(() => aws.close());
    const child = startSdkChild("aws", awsEnv(aws));
    later(() => child.stop());

    expect(await child.call({ op: "guarded" })).toBe(true);
    const before = Date.now();
    const c1 = answer<AwsCreds>(await child.call({ op: "credentials" }));
    expect(c1.accessKeyId).toMatch(/^ASIA[A-Z2-7]{16}$/);
    expect(c1.hasSessionToken).toBe(true);
    expect(c1.expiration).toBeGreaterThanOrEqual(before + 3_600_000 - 1000);
    expect(c1.expiration).toBeLessThanOrEqual(Date.now() + 3_600_000 + 1000);
    expect(aws.secretFor(c1.accessKeyId)).toBeDefined();
    expect(aws.requests).toBe(1);

    const c2 = answer<AwsCreds>(await child.call({ op: "credentials" }));
    expect(c2.accessKeyId).toBe(c1.accessKeyId);
    const token = answer<string>(
      await child.call({ op: "token", host: "127.0.0.1", port: 6543, user: "app" }),
    );
    expect(
      verifyRdsToken(token, {
        host: "127.0.0.1",
        port: 6543,
        user: "app",
        region: REGION, // the Signer took it from AWS_REGION
        secretFor: aws.secretFor,
        keyInfo: aws.keyInfo,
      }),
    ).toEqual({ ok: true, accessKeyId: c1.accessKeyId });
    expect(aws.requests).toBe(1);
  });

  it("SDK behaviour: credentials that expire within 15 min make every getAuthToken fetch", async () => {
    const aws = await startAwsCredentialsEndpoint({ lifetimeMs: 10 * 60_000 });
    later(() => aws.close());
    const child = startSdkChild("aws", awsEnv(aws));
    later(() => child.stop());
    const tokenOnce = async () =>
      answer(await child.call({ op: "token", host: "127.0.0.1", port: 1, user: "u" }));
    await tokenOnce();
    const n = aws.requests;
    await tokenOnce();
    await tokenOnce();
    // the Signer forces a refresh when the key expires within 15 min: one request per token
    expect(aws.requests - n).toBe(2);
    // under 5 min the memoized chain also refreshes in the background: two per token
    aws.setLifetime(60_000);
    await child.call({ op: "credentials", forceRefresh: true });
    const m = aws.requests;
    await tokenOnce();
    await tokenOnce();
    await new Promise((r) => setTimeout(r, 200)); // the background refresh is not awaited
    expect(aws.requests - m).toBe(4);
  });

  it("SDK behaviour: HTTP 500 is retried ~5 times over ~3 s; a hang wedges the memoized chain", async () => {
    const aws = await startAwsCredentialsEndpoint({ lifetimeMs: 1500 });
    later(() => aws.close());
    const child = startSdkChild("aws", awsEnv(aws));
    later(() => child.stop());

    aws.setFailure("500");
    const failed: Timed<unknown> = await child.call({ op: "credentials" });
    expect(failed.error).toMatch(/Could not load credentials from any providers/);
    expect(failed.ms).toBeGreaterThan(2500);
    // fromHttp: 1 + 3 retries (1 s apart), then fromContainerMetadata: 1
    expect(aws.requests).toBe(5);

    aws.setFailure("none");
    answer<AwsCreds>(await child.call({ op: "credentials" }));
    await new Promise((r) => setTimeout(r, 1600)); // let them expire
    aws.setFailure("hang");
    expect(await child.call({ op: "credentials", timeoutMs: 1500 })).toMatchObject({
      timedOut: true,
    });
    aws.setFailure("none");
    // The hung fetch is the chain's shared in-flight fetch: later calls wait on it forever
    // (fromHttp's 1 s requestTimeout only logs a warning in this SDK version) ...
    const requestsBefore = aws.requests;
    expect(await child.call({ op: "credentials", timeoutMs: 1500 })).toMatchObject({
      timedOut: true,
    });
    expect(aws.requests).toBe(requestsBefore);
    // ... only forceRefresh goes around it
    expect(
      answer<AwsCreds>(await child.call({ op: "credentials", forceRefresh: true })).hasSessionToken,
    ).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------

describe("Entra ID emulator with @azure/identity (child process)", () => {
  let entra: EntraEmulator;
  let child: SdkChild;
  const CLIENT_W = "0b4d3d54-1111-4000-8000-0000000000a1";
  const CLIENT_A = "0b4d3d54-2222-4000-8000-000000000a11";
  let tokenFile: string;

  beforeAll(async () => {
    entra = await startEntraEmulator({ tokenLifetimeSec: 90 });
    later(() => entra.close());
    child = startSdkChild("azure", azureEnv(entra));
    later(() => child.stop());
    tokenFile = tempFile("azure-identity-token", fakeSaToken("first"));
    for (const [name, kind, clientId] of [
      ["w", "workload", CLIENT_W],
      ["a", "assertion", CLIENT_A],
    ])
      await child.call({
        op: "create",
        name,
        kind,
        tenantId: TENANT,
        clientId,
        tokenFilePath: tokenFile,
        authorityHost: entra.authorityHost,
      });
  });

  const getToken = async (name: string, extra: Record<string, unknown> = {}) => {
    const [r] = (await child.call({
      op: "getToken",
      name,
      scope: OSSRDBMS_SCOPE,
      timeoutMs: 10_000,
      ...extra,
    })) as Timed<AzureToken>[];
    return r!;
  };

  it("WorkloadIdentityCredential gets a token the emulator verifies, expiring as issued", async () => {
    expect(await child.call({ op: "guarded" })).toBe(true);
    const t0 = Date.now();
    const t = answer(await getToken("w"));
    expect(entra.verifyToken(t.token, { clientId: CLIENT_W })).toEqual({
      ok: true,
      clientId: CLIENT_W,
    });
    expect(entra.verifyToken(t.token, { clientId: CLIENT_A })).toMatchObject({ ok: false });
    expect(t.tokenType).toBe("Bearer");
    // MSAL computes expiresOn from expires_in in whole seconds
    expect(t.expiresOnTimestamp).toBeGreaterThanOrEqual(t0 + 90_000 - 1000);
    expect(t.expiresOnTimestamp).toBeLessThanOrEqual(Date.now() + 90_000 + 1000);
    expect(t.refreshAfterTimestamp).toBeNull();
    expect(entra.verifyToken(t.token, { nowMs: t.expiresOnTimestamp + 1000 })).toEqual({
      ok: false,
      reason: "token expired",
    });
    expect(entra.requests.get(CLIENT_W)).toBe(1);
    expect(entra.assertions.get(CLIENT_W)).toEqual([readFileSync(tokenFile, "utf8")]);
    expect(entra.metadataRequests).toBeGreaterThanOrEqual(1);
    expect(entra.otherRequests).toEqual([]);
  });

  it("a rewritten token file: ClientAssertionCredential sends it, WorkloadIdentityCredential keeps its 5-min copy", async () => {
    answer(await getToken("a"));
    const first = readFileSync(tokenFile, "utf8");
    const second = fakeSaToken("second");
    writeFileSync(tokenFile, second);
    answer(await getToken("a"));
    answer(await getToken("w")); // 90 s tokens are below MSAL's 5-min cache floor: it asks again
    expect(entra.assertions.get(CLIENT_A)).toEqual([first, second]);
    expect(entra.assertions.get(CLIENT_W)).toEqual([first, first]);
  });

  it("honours refresh_in, counts concurrent requests (no de-duplication in the SDK)", async () => {
    entra.setRefreshIn(30);
    try {
      const t = answer(await getToken("a"));
      expect(t.refreshAfterTimestamp).not.toBeNull();
      expect(Math.abs(t.refreshAfterTimestamp! - (Date.now() + 30_000))).toBeLessThan(2000);
    } finally {
      entra.setRefreshIn(undefined);
    }
    entra.setLatency(300);
    try {
      const n = entra.totalRequests();
      const rs = (await child.call({
        op: "getToken",
        name: "a",
        scope: OSSRDBMS_SCOPE,
        n: 5,
        timeoutMs: 10_000,
      })) as Timed<AzureToken>[];
      for (const r of rs) expect(entra.verifyToken(answer(r).token)).toMatchObject({ ok: true });
      expect(entra.totalRequests() - n).toBe(5);
      expect(entra.inFlight.max).toBe(5);
      expect(entra.inFlight.now).toBe(0);
    } finally {
      entra.setLatency(0);
    }
  });

  it("failure modes, and what the SDK makes of them", async () => {
    const e = await startEntraEmulator({ tokenLifetimeSec: 600 });
    later(() => e.close());
    const c = startSdkChild("azure", azureEnv(e));
    later(() => c.stop());
    const create = (name: string) =>
      c.call({
        op: "create",
        name,
        kind: "assertion",
        tenantId: TENANT,
        clientId: `client-${name}`,
        tokenFilePath: tokenFile,
      }); // no authorityHost: AZURE_AUTHORITY_HOST is used
    const get = async (name: string, extra: Record<string, unknown> = {}) =>
      (
        (await c.call({
          op: "getToken",
          name,
          scope: OSSRDBMS_SCOPE,
          timeoutMs: 10_000,
          ...extra,
        })) as Timed<AzureToken>[]
      )[0]!;
    for (const n of ["ic", "s5", "s5b", "hang"]) await create(n);

    // 400 invalid_client: fails at once, and the next call goes out again
    e.setFailure("invalid_client");
    expect((await get("ic")).error).toMatch(/invalid_client/);
    expect(e.requests.get("client-ic")).toBe(1);
    e.setFailure("none");
    answer(await get("ic"));
    expect(e.requests.get("client-ic")).toBe(2);

    // HTTP 500 (maxRetries 0): one request; then MSAL throttles that credential's identical
    // request locally for 60 s, ignoring Retry-After (it looks the header up case-sensitively);
    // a new credential instance is not throttled
    e.setRetryAfter(1);
    e.setFailure("500");
    expect((await get("s5")).error).toMatch(/server_error/);
    expect(e.requests.get("client-s5")).toBe(1);
    e.setFailure("none");
    await new Promise((r) => setTimeout(r, 1200));
    expect((await get("s5")).error).toMatch(/50000/);
    expect(e.requests.get("client-s5")).toBe(1);
    await c.call({
      op: "create",
      name: "s5",
      kind: "assertion",
      tenantId: TENANT,
      clientId: "client-s5",
      tokenFilePath: tokenFile,
    });
    answer(await get("s5"));
    expect(e.requests.get("client-s5")).toBe(2);

    // hang: neither abortSignal nor requestOptions.timeout ends getToken(); only our own race
    e.setFailure("hang");
    const hung = await get("hang", { abortMs: 300, requestTimeoutMs: 300, timeoutMs: 1500 });
    expect(hung.timedOut).toBe(true);
    expect(e.inFlight.now).toBe(1);
    e.setFailure("none");
    answer(await get("hang")); // a second call does not wait for the hung one
    expect(e.requests.get("client-hang")).toBe(2);
  });
});

// ---------------------------------------------------------------------------------------------

describe("real PostgreSQL logins with cloud tokens (ldap auth → token checks)", () => {
  const RDS_ROLE = "rds_app";
  const ENTRA_ROLE = "entra_app";
  const ENTRA_CLIENT = "5d1f9a77-3333-4000-8000-00000000e001";
  let iam: IamPostgres;
  let aws: AwsCredentialsEndpoint;
  let entra: EntraEmulator;
  let awsChild: SdkChild;
  let azureChild: SdkChild;
  const seen: string[] = []; // every token used, to prove none ends up in a log

  beforeAll(async () => {
    aws = await startAwsCredentialsEndpoint({ lifetimeMs: 3_600_000 });
    later(() => aws.close());
    entra = await startEntraEmulator({ tokenLifetimeSec: 600 });
    later(() => entra.close());
    iam = await startIamPostgres({
      // the server side of both clouds: the role name says which check applies
      checker: async (user, password) => {
        if (user === RDS_ROLE)
          return verifyRdsToken(password, {
            host: "127.0.0.1",
            port: iam.cluster.port,
            user,
            region: REGION,
            secretFor: aws.secretFor,
            keyInfo: aws.keyInfo,
          });
        if (user === ENTRA_ROLE) return entra.verifyToken(password, { clientId: ENTRA_CLIENT });
        return { ok: false, reason: "no cloud identity for this role" };
      },
    });
    later(() => iam.stop());
    await iam.createIamRole(RDS_ROLE);
    await iam.createIamRole(ENTRA_ROLE);
    awsChild = startSdkChild("aws", awsEnv(aws));
    later(() => awsChild.stop());
    azureChild = startSdkChild("azure", azureEnv(entra));
    later(() => azureChild.stop());
    await azureChild.call({
      op: "create",
      kind: "workload",
      tenantId: TENANT,
      clientId: ENTRA_CLIENT,
      tokenFilePath: tempFile("sa-token", fakeSaToken("pgwarden")),
      authorityHost: entra.authorityHost,
    });
  });

  const rdsToken = async () => {
    const t = answer<string>(
      await awsChild.call({
        op: "token",
        host: "127.0.0.1",
        port: iam.cluster.port,
        user: RDS_ROLE,
      }),
    );
    seen.push(t);
    return t;
  };
  const entraToken = async () => {
    const [r] = (await azureChild.call({
      op: "getToken",
      scope: OSSRDBMS_SCOPE,
      timeoutMs: 10_000,
    })) as Timed<AzureToken>[];
    const t = answer(r!).token;
    seen.push(t);
    return t;
  };
  const authFailed = (user: string) => ({
    ok: false,
    code: "28000",
    message: `LDAP authentication failed for user "${user}"`,
  });

  it("an IAM role logs in with a Signer-made RDS token; tampered and expired ones get FATAL 28000", async () => {
    const port = iam.cluster.port;
    const good = await rdsToken();
    expect(await login(port, RDS_ROLE, good)).toEqual({ ok: true, user: RDS_ROLE });
    // the same token again: RDS tokens are reusable within their 15 minutes
    expect(await login(port, RDS_ROLE, good)).toEqual({ ok: true, user: RDS_ROLE });

    const tampered = tamper(good);
    seen.push(tampered);
    expect(await login(port, RDS_ROLE, tampered)).toEqual(authFailed(RDS_ROLE));

    // expired: keys fetched from the endpoint by the SDK (fromHttp in this process), the real
    // Signer run under a clock set 20 minutes back
    const creds = await fromHttp({ awsContainerCredentialsFullUri: aws.url })();
    const realNow = Date.now();
    vi.useFakeTimers({ toFake: ["Date"] });
    let expired: string;
    try {
      vi.setSystemTime(realNow - 20 * 60_000);
      expired = await new Signer({
        hostname: "127.0.0.1",
        port,
        username: RDS_ROLE,
        region: REGION,
        credentials: {
          accessKeyId: creds.accessKeyId,
          secretAccessKey: creds.secretAccessKey,
          ...(creds.sessionToken ? { sessionToken: creds.sessionToken } : {}),
        },
      }).getAuthToken();
    } finally {
      vi.useRealTimers();
    }
    seen.push(expired);
    expect(await login(port, RDS_ROLE, expired)).toEqual(authFailed(RDS_ROLE));
    // a token for another role does not log in as this one
    const forOther = answer<string>(
      await awsChild.call({ op: "token", host: "127.0.0.1", port, user: "someone_else" }),
    );
    seen.push(forOther);
    expect(await login(port, RDS_ROLE, forOther)).toEqual(authFailed(RDS_ROLE));

    expect(iam.ldap.rejections.filter((r) => r.user === RDS_ROLE).map((r) => r.reason)).toEqual([
      "signature does not match",
      "token expired",
      `DBUser is not ${RDS_ROLE}`,
    ]);
    expect(iam.ldap.stats.byUser.get(RDS_ROLE)).toBe(5);
  });

  it("an Entra token from the emulator logs in; once revoked it gets FATAL 28000", async () => {
    const port = iam.cluster.port;
    const before = entra.requests.get(ENTRA_CLIENT) ?? 0;
    const token = await entraToken();
    expect(entra.requests.get(ENTRA_CLIENT)).toBe(before + 1);
    expect(await login(port, ENTRA_ROLE, token)).toEqual({ ok: true, user: ENTRA_ROLE });
    // an Entra token is not an RDS token, nor the other way round
    expect(await login(port, RDS_ROLE, token)).toEqual(authFailed(RDS_ROLE));
    entra.revoke(token);
    expect(await login(port, ENTRA_ROLE, token)).toEqual(authFailed(ENTRA_ROLE));
    expect(iam.ldap.rejections.at(-1)).toEqual({ user: ENTRA_ROLE, reason: "token revoked" });
    expect(iam.ldap.stats.byUser.get(ENTRA_ROLE)).toBe(2);
  });

  it("counters add up, and no token reached any log", async () => {
    const { stats } = iam.ldap;
    expect(stats.binds).toBe(stats.accepted + stats.rejected);
    expect(stats).toMatchObject({ binds: 8, accepted: 3, rejected: 5 });
    // one container-credentials fetch served the child's chain, one the in-process fromHttp
    expect(aws.requests).toBe(2);

    const texts = [
      readFileSync(iam.cluster.logFile, "utf8"),
      JSON.stringify(iam.ldap.rejections),
      awsChild.stderr(),
      azureChild.stderr(),
    ];
    expect(seen.length).toBeGreaterThanOrEqual(5);
    for (const token of seen) {
      // the secret-bearing parts: an RDS signature / session token, a JWT signature
      const secretBits = [
        /X-Amz-Signature=([0-9a-f]{64})/.exec(token)?.[1],
        token.split(".")[2],
      ].filter((s): s is string => typeof s === "string" && s.length > 20);
      for (const text of texts) {
        expect(text.includes(token)).toBe(false);
        for (const bit of secretBits) expect(text.includes(bit)).toBe(false);
      }
    }
    // the server did log why a login failed (the checker's reason), without the token
    expect(texts[0]).toContain("LDAP diagnostics: signature does not match");
  });
});
