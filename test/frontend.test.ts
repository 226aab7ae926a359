// Frontend behaviour through real clients: client auth methods, login errors, the welcome
// (ParameterStatus, BackendKeyData), cancel routing, protocol negotiation, IPv6.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runPsql } from "./harness/clients.js";
import { type Pgwarden, startPgwarden } from "./harness/pgwarden.js";
import { type PgCluster, startPostgres } from "./harness/postgres.js";
import { connect, loginError, rawExchange, sendCancel, sleep, sleepingClient } from "./helpers.js";
import { makeCerts } from "./tls-certs.js";

let cluster: PgCluster;
const started: Pgwarden[] = [];

beforeAll(async () => {
  cluster = await startPostgres();
  await cluster.createRole("app", "app-server-pw");
  await cluster.createDatabase("appdb", "app");
});

afterAll(async () => {
  for (const p of started) await p.stop();
  await cluster?.stop();
});

async function pooler(
  authType: string,
  extraUsers: Array<Record<string, unknown>> = [],
  general: Record<string, unknown> = {},
) {
  const pw = await startPgwarden({
    general: { auth_type: authType, ...general },
    databases: [{ name: "appdb", host: cluster.host, port: cluster.port }],
    users: [
      {
        name: "app",
        database: "appdb",
        password: "client-secret",
        server_password: "app-server-pw",
        pool_size: 4,
      },
      ...extraUsers,
    ],
  });
  started.push(pw);
  return pw;
}

describe("client authentication", () => {
  for (const authType of ["scram", "md5", "plain"]) {
    it(`${authType}: right password logs in, wrong one gets 28P01`, async () => {
      const pw = await pooler(authType);
      const c = await connect(pw, "app", "client-secret", "appdb");
      const r = await c.query("select current_user as u, current_database() as d");
      expect(r.rows[0]).toEqual({ u: "app", d: "appdb" });
      await c.end();
      const err = await loginError(pw, "app", "wrong", "appdb");
      expect(err.code).toBe("28P01");
      expect(err.message).toBe('password authentication failed for user "app"');
      await pw.stop();
    });
  }

  it("trust needs no password", async () => {
    const pw = await pooler("trust");
    const c = await connect(pw, "app", undefined, "appdb");
    expect((await c.query("select 1 as one")).rows[0].one).toBe(1);
    await c.end();
    await pw.stop();
  });

  it("accepts a SCRAM verifier (as PostgreSQL stores it) and an md5 hash as client passwords", async () => {
    const rows = await cluster.query("select rolpassword from pg_authid where rolname = 'app'");
    const verifier = rows[0].rolpassword as string;
    expect(verifier.startsWith("SCRAM-SHA-256$")).toBe(true);
    const md5 = `md5${createHash("md5")
      .update("md5-pw" + "app")
      .digest("hex")}`;
    for (const [authType, stored, good] of [
      ["scram", verifier, "app-server-pw"],
      ["md5", md5, "md5-pw"],
      ["plain", md5, "md5-pw"],
      ["plain", verifier, "app-server-pw"],
    ] as const) {
      const pw = await startPgwarden({
        general: { auth_type: authType },
        databases: [{ name: "appdb", host: cluster.host, port: cluster.port }],
        users: [
          { name: "app", database: "appdb", password: stored, server_password: "app-server-pw" },
        ],
      });
      started.push(pw);
      const c = await connect(pw, "app", good, "appdb");
      await c.end();
      expect((await loginError(pw, "app", "nope", "appdb")).code).toBe("28P01");
      await pw.stop();
    }
  });
});

describe("login errors", () => {
  let pw: Pgwarden;
  beforeAll(async () => {
    pw = await pooler("scram");
  });

  it("unknown database: 3D000", async () => {
    const err = await loginError(pw, "app", "client-secret", "nosuchdb");
    expect(err.code).toBe("3D000");
    expect(err.message).toBe('database "nosuchdb" does not exist');
  });

  it("unknown user: the same 28P01 as a wrong password, after a full SCRAM exchange", async () => {
    const unknown = await loginError(pw, "mallory", "x", "appdb");
    const wrong = await loginError(pw, "app", "x", "appdb");
    expect(unknown.code).toBe("28P01");
    expect(unknown.message).toBe('password authentication failed for user "mallory"');
    expect(wrong.message).toBe('password authentication failed for user "app"');
  });

  it("unknown database: 28P01 with a wrong password, 3D000 only after the password", async () => {
    const err = await loginError(pw, "app", "wrong", "nosuchdb");
    expect(err.code).toBe("28P01");
    const unknownBoth = await loginError(pw, "mallory", "x", "nosuchdb");
    expect(unknownBoth.code).toBe("28P01");
  });

  it("refuses protocol 2.0 with a clear FATAL", async () => {
    const pkt = Buffer.alloc(8 + 5);
    pkt.writeInt32BE(pkt.length, 0);
    pkt.writeInt32BE(2 << 16, 4);
    const reply = await rawExchange(pw, pkt);
    expect(String.fromCharCode(reply[0]!)).toBe("E");
    expect(reply.toString("latin1")).toContain("0A000");
    expect(reply.toString("latin1")).toContain("unsupported frontend protocol 2.0");
  });

  it("answers GSSENCRequest with N and SSLRequest with N when TLS is off", async () => {
    const gss = Buffer.alloc(8);
    gss.writeInt32BE(8, 0);
    gss.writeInt32BE(80877104, 4);
    expect((await rawExchange(pw, gss, 300)).toString()).toBe("N");
    const ssl = Buffer.alloc(8);
    ssl.writeInt32BE(8, 0);
    ssl.writeInt32BE(80877103, 4);
    expect((await rawExchange(pw, ssl, 300)).toString()).toBe("N");
  });

  it("a garbage client does not disturb a working one", async () => {
    const c = await connect(pw, "app", "client-secret", "appdb");
    await rawExchange(pw, Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 500);
    expect((await c.query("select 41 + 1 as n")).rows[0].n).toBe(42);
    await c.end();
  });
});

describe("welcome and cancel", () => {
  let pw: Pgwarden;
  beforeAll(async () => {
    pw = await pooler("scram");
  });

  it("sends the server's ParameterStatus set and its own BackendKeyData", async () => {
    const client = new pg.Client({
      host: pw.host,
      port: pw.port,
      user: "app",
      password: "client-secret",
      database: "appdb",
    });
    const params: Record<string, string> = {};
    // biome-ignore lint/suspicious/noExplicitAny: node-pg's connection is not typed
    (client as any).connection.on(
      "parameterStatus",
      (m: { parameterName: string; parameterValue: string }) => {
        params[m.parameterName] = m.parameterValue;
      },
    );
    await client.connect();
    expect(params.server_version).toMatch(/^\d+/);
    expect(params.client_encoding).toBe("UTF8");
    expect(params.integer_datetimes).toBe("on");
    const serverPid = (await client.query("select pg_backend_pid() as p")).rows[0].p as number;
    // biome-ignore lint/suspicious/noExplicitAny: processID is set from BackendKeyData
    const keyPid = (client as any).processID as number;
    expect(keyPid).toBeGreaterThan(0);
    expect(keyPid).not.toBe(serverPid);
    await client.end();
  });

  it("cancels the running query with the owner's key, and not with a wrong key", async () => {
    const victim = await sleepingClient(pw, "app", "client-secret", "appdb", 30);
    await sleep(300);
    await sendCancel(pw, victim.processID, victim.secretKey ^ 1);
    await sleep(500);
    const stillRunning = await Promise.race([
      victim.outcome.then(() => false),
      sleep(200).then(() => true),
    ]);
    expect(stillRunning).toBe(true);
    await sendCancel(pw, victim.processID, victim.secretKey);
    expect(await victim.outcome).toBe("57014");
    expect((await victim.client.query("select 'alive' as s")).rows[0].s).toBe("alive");
    await victim.client.end();
  });
});

describe("listeners", () => {
  it("listens on IPv6 loopback", async () => {
    const pw = await pooler("scram", [], { host: "::1" });
    const c = await connect({ host: "::1", port: pw.port }, "app", "client-secret", "appdb");
    expect((await c.query("select 1 as x")).rows[0].x).toBe(1);
    await c.end();
    await pw.stop();
  });

  it("serves IPv4 and IPv6 when host is 0.0.0.0", async () => {
    const pw = await pooler("scram", [], { host: "0.0.0.0" });
    for (const host of ["127.0.0.1", "::1"]) {
      const c = await connect({ host, port: pw.port }, "app", "client-secret", "appdb");
      await c.end();
    }
    await pw.stop();
  });
});

describe("client TLS", () => {
  it("serves TLS when tls_certificate/tls_private_key are set; clients can verify it", async () => {
    const certs = makeCerts("DNS:localhost,IP:127.0.0.1");
    const pw = await pooler("scram", [], {
      tls_certificate: certs.certFile,
      tls_private_key: certs.keyFile,
    });
    const c = await connect(pw, "app", "client-secret", "appdb", {
      ssl: { ca: readFileSync(certs.caFile, "utf8"), servername: "localhost" },
    });
    // biome-ignore lint/suspicious/noExplicitAny: the socket node-pg upgraded
    const stream = (c as any).connection.stream as {
      encrypted?: boolean;
      getPeerCertificate(): { subject: { CN: string } };
    };
    expect(stream.encrypted).toBe(true);
    expect(stream.getPeerCertificate().subject.CN).toBe("pgwarden test server");
    expect((await c.query("select 1 as x")).rows[0].x).toBe(1);
    await c.end();
    const psql = await runPsql(
      [
        "-X",
        "-At",
        "-c",
        "select 'over tls'",
        `host=127.0.0.1 port=${pw.port} user=app dbname=appdb sslmode=verify-ca sslrootcert=${certs.caFile}`,
      ],
      { env: { PGPASSWORD: "client-secret" } },
    );
    expect(psql.stderr).toBe("");
    expect(psql.stdout.trim()).toBe("over tls");
    await pw.stop();
  });

  it("without certificates, sslmode=require is refused and prefer falls back to plain", async () => {
    const pw = await pooler("scram");
    const env = { PGPASSWORD: "client-secret" };
    const conn = (mode: string) =>
      `host=127.0.0.1 port=${pw.port} user=app dbname=appdb sslmode=${mode}`;
    const required = await runPsql(["-X", "-At", "-c", "select 1", conn("require")], { env });
    expect(required.code).not.toBe(0);
    expect(required.stderr).toContain("server does not support SSL");
    const preferred = await runPsql(["-X", "-At", "-c", "select 'plain'", conn("prefer")], { env });
    expect(preferred.stdout.trim()).toBe("plain");
    await pw.stop();
  });
});
