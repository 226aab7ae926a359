// Server connections: authentication methods, long passwords, TLS per tls_verify, and
// connect_timeout, against real PostgreSQL servers.
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Pgwarden, startPgwarden } from "./harness/pgwarden.js";
import { type PgCluster, startPostgres } from "./harness/postgres.js";
import { connect, loginError } from "./helpers.js";
import { makeCerts, type TestCerts } from "./tls-certs.js";

let cluster: PgCluster;
let certs: TestCerts;
const started: Pgwarden[] = [];
const LONG = "L".repeat(12_000);

beforeAll(async () => {
  certs = makeCerts("DNS:localhost");
  cluster = await startPostgres({
    ssl: { certFile: certs.certFile, keyFile: certs.keyFile },
    hba: [
      "host all md5user 127.0.0.1/32 md5",
      "host all clearuser 127.0.0.1/32 password",
      "host all longclear 127.0.0.1/32 password",
      "hostnossl all tlsonly 0.0.0.0/0 reject",
    ],
  });
  await cluster.createRole("md5user", "md5-secret", { method: "md5" });
  await cluster.createRole("clearuser", "clear-secret");
  await cluster.createRole("scramuser", "scram-secret");
  await cluster.createRole("longclear", LONG);
  await cluster.createRole("longscram", LONG);
  await cluster.createRole("tlsonly", "tls-secret");
});

afterAll(async () => {
  for (const p of started) await p.stop();
  await cluster?.stop();
});

async function pooler(
  users: Array<Record<string, unknown>>,
  general: Record<string, unknown> = {},
  host: string = cluster.host,
) {
  const pw = await startPgwarden({
    general: { tls_verify: "disabled", ...general },
    databases: [{ name: "postgres", host, port: cluster.port }],
    users: users.map((u) => ({ database: "postgres", password: "client", min_pool_size: 0, ...u })),
  });
  started.push(pw);
  return pw;
}

describe("server authentication", () => {
  it("logs in with md5, cleartext and SCRAM-SHA-256, and passwords of 12 KB", async () => {
    const pw = await pooler([
      { name: "md5user", server_password: "md5-secret" },
      { name: "clearuser", server_password: "clear-secret" },
      { name: "scramuser", server_password: "scram-secret" },
      { name: "longclear", server_password: LONG },
      { name: "longscram", server_password: LONG },
    ]);
    for (const user of ["md5user", "clearuser", "scramuser", "longclear", "longscram"]) {
      const c = await connect(pw, user, "client", "postgres");
      expect((await c.query("select current_user as u")).rows[0].u).toBe(user);
      await c.end();
    }
    await pw.stop();
  });

  it("a wrong server password reaches the client as the server's FATAL", async () => {
    const pw = await pooler([{ name: "scramuser", server_password: "not-it" }]);
    const err = await loginError(pw, "scramuser", "client", "postgres");
    expect(err.code).toBe("28P01");
    expect(err.message).toContain('password authentication failed for user "scramuser"');
    expect(err.message).not.toContain("not-it");
    await pw.stop();
  });
});

describe("TLS to the server", () => {
  const sslQuery = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";

  it("disabled: plain connection", async () => {
    const pw = await pooler([{ name: "scramuser", server_password: "scram-secret" }], {
      tls_verify: "disabled",
    });
    const c = await connect(pw, "scramuser", "client", "postgres");
    expect((await c.query(sslQuery)).rows[0].ssl).toBe(false);
    await c.end();
    expect(
      (
        await loginError(
          await pooler([{ name: "tlsonly", server_password: "tls-secret" }]),
          "tlsonly",
          "client",
          "postgres",
        )
      ).code,
    ).toBe("28000");
  });

  it("prefer: TLS when the server offers it, without verification", async () => {
    const pw = await pooler([{ name: "tlsonly", server_password: "tls-secret" }], {
      tls_verify: "prefer",
    });
    const c = await connect(pw, "tlsonly", "client", "postgres");
    expect((await c.query(sslQuery)).rows[0].ssl).toBe(true);
    await c.end();
  });

  it("verify_ca: checks the chain, not the name", async () => {
    const pw = await pooler([{ name: "tlsonly", server_password: "tls-secret" }], {
      tls_verify: "verify_ca",
      tls_server_ca_certificate: certs.caFile,
    });
    const c = await connect(pw, "tlsonly", "client", "postgres");
    expect((await c.query(sslQuery)).rows[0].ssl).toBe(true);
    await c.end();
  });

  it("verify_ca without the right CA fails with a clear error", async () => {
    const other = makeCerts("DNS:localhost");
    const pw = await pooler([{ name: "tlsonly", server_password: "tls-secret" }], {
      tls_verify: "verify_ca",
      tls_server_ca_certificate: other.caFile,
    });
    const err = await loginError(pw, "tlsonly", "client", "postgres");
    expect(err.code).toBe("08006");
    expect(err.message).toMatch(/TLS/);
  });

  it("verify_full: checks the name too", async () => {
    const good = await pooler(
      [{ name: "tlsonly", server_password: "tls-secret" }],
      { tls_verify: "verify_full", tls_server_ca_certificate: certs.caFile },
      "localhost",
    );
    const c = await connect(good, "tlsonly", "client", "postgres");
    expect((await c.query(sslQuery)).rows[0].ssl).toBe(true);
    await c.end();
    const bad = await pooler(
      [{ name: "tlsonly", server_password: "tls-secret" }],
      { tls_verify: "verify_full", tls_server_ca_certificate: certs.caFile },
      "127.0.0.1",
    );
    const err = await loginError(bad, "tlsonly", "client", "postgres");
    expect(err.code).toBe("08006");
    expect(err.message).toMatch(/127\.0\.0\.1|altnames|Hostname/i);
  });
});

describe("connect_timeout", () => {
  it("a server that never answers fails the login after connect_timeout, clearly", async () => {
    const sockets: net.Socket[] = [];
    const blackhole = net.createServer((s) => sockets.push(s));
    await new Promise<void>((r) => blackhole.listen(0, "127.0.0.1", r));
    const port = (blackhole.address() as net.AddressInfo).port;
    const pw = await startPgwarden({
      general: { connect_timeout: 700, tls_verify: "disabled" },
      databases: [{ name: "hole", host: "127.0.0.1", port }],
      users: [
        { name: "u", database: "hole", password: "client", server_password: "x", min_pool_size: 0 },
      ],
    });
    started.push(pw);
    const err = await loginError(pw, "u", "client", "hole");
    expect(err.code).toBe("08006");
    expect(err.message).toContain("timed out after 700 ms");
    for (const s of sockets) s.destroy();
    blackhole.close();
  });
});
