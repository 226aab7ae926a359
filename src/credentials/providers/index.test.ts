// identityFor: the credential key of each provider holds every setting that changes the secret
// (so pools that differ in one share nothing) and nothing else (so pools that do not differ share
// one entry), and the description that SHOW CREDENTIALS and the metrics show is secret-free.
import { describe, expect, it } from "vitest";
import type { DatabaseConfig, UserConfig, VaultConfig } from "../../config/index.js";
import { identityFor, vaultSecretPath } from "./index.js";

const db: DatabaseConfig = { name: "app", host: "db.example", port: 5432, database_name: "app" };

function user(extra: Partial<UserConfig>): UserConfig {
  return {
    name: "u",
    database: "app",
    password: "pw",
    server_user: "app_user",
    server_password: undefined,
    pool_size: 5,
    min_pool_size: 1,
    pooler_mode: "transaction",
    server_auth: "password",
    server_iam_region: undefined,
    server_iam_host: undefined,
    azure_client_id: undefined,
    azure_tenant_id: undefined,
    azure_resource_id: undefined,
    server_iam_role_arn: undefined,
    server_iam_external_id: undefined,
    server_iam_session_name: undefined,
    server_vault_path: undefined,
    vault_refresh_percent: undefined,
    server_auth_command: undefined,
    server_auth_command_ttl: undefined,
    ...extra,
  };
}

const key = (u: Partial<UserConfig>, env: Record<string, string> = {}, d = db) =>
  identityFor(user(u), d, env)?.key;

/** Each variation must change the key; `same` must not. */
function expectKeyCovers(
  base: Partial<UserConfig>,
  variations: Array<Partial<UserConfig>>,
  env: Record<string, string> = {},
) {
  const k0 = key(base, env);
  expect(k0).toBeDefined();
  const keys = variations.map((v) => key({ ...base, ...v }, env));
  for (const [i, k] of keys.entries()) expect(k, JSON.stringify(variations[i])).not.toBe(k0);
  expect(new Set(keys).size).toBe(keys.length);
  // a user or database name of pgwarden's own, or a pool setting, changes nothing
  expect(key({ ...base, name: "other", pool_size: 9, pooler_mode: "session" }, env)).toBe(k0);
}

describe("identityFor", () => {
  it("rds_iam with a role: role, external id and session name are in the key", () => {
    const base = {
      server_auth: "rds_iam" as const,
      server_iam_region: "eu-west-1",
      server_iam_role_arn: "arn:aws:iam::123456789012:role/a",
    };
    expectKeyCovers(base, [
      { server_iam_role_arn: "arn:aws:iam::123456789012:role/b" },
      { server_iam_external_id: "x1" },
      { server_iam_session_name: "s1" },
      { server_iam_role_arn: undefined },
      { server_user: "other" },
      { server_iam_region: "us-east-1" },
    ]);
    expect(key(base, { AWS_ENDPOINT_URL_STS: "http://127.0.0.1:1" })).not.toBe(key(base));
    expect(identityFor(user(base), db, {})?.make().description).toMatchObject({
      role_arn: "arn:aws:iam::123456789012:role/a",
    });
  });

  it("azure_managed_identity: system-assigned, by client id, by resource id, and the endpoint", () => {
    const base = { server_auth: "azure_managed_identity" as const };
    expectKeyCovers(
      base,
      [{ azure_client_id: "c1" }, { azure_client_id: "c2" }, { azure_resource_id: "/r/1" }],
      { IDENTITY_ENDPOINT: "http://127.0.0.1:1/msi/token" },
    );
    expect(key(base, { IDENTITY_ENDPOINT: "http://127.0.0.1:2/msi/token" })).not.toBe(
      key(base, { IDENTITY_ENDPOINT: "http://127.0.0.1:1/msi/token" }),
    );
    // the server user does not change an Entra token
    expect(key({ ...base, server_user: "x" })).toBe(key(base));
  });

  it("gcp_cloudsql_iam: the server user and the ADC source", () => {
    const base = { server_auth: "gcp_cloudsql_iam" as const, server_user: "sa@p.iam" };
    expectKeyCovers(base, [{ server_user: "sb@p.iam" }], { GCE_METADATA_HOST: "127.0.0.1:1" });
    expect(key(base, { GOOGLE_APPLICATION_CREDENTIALS: "/a.json" })).not.toBe(
      key(base, { GOOGLE_APPLICATION_CREDENTIALS: "/b.json" }),
    );
    expect(key(base, { GOOGLE_APPLICATION_CREDENTIALS: "/a.json" })).not.toBe(key(base));
  });

  it("command: argv, ttl, and the server coordinates the command receives", () => {
    const base = {
      server_auth: "command" as const,
      server_auth_command: ["/bin/tok", "--a"],
      server_auth_command_ttl: 60_000,
    };
    expectKeyCovers(base, [
      { server_auth_command: ["/bin/tok", "--b"] },
      { server_auth_command: ["/bin/tok", "--a", "x"] },
      { server_auth_command_ttl: 30_000 },
      { server_user: "other" },
    ]);
    // ["a b"] and ["a", "b"] are different argvs
    expect(key({ ...base, server_auth_command: ["/bin/tok --a"] })).not.toBe(key(base));
    expect(key(base, {}, { ...db, port: 5433 })).not.toBe(key(base));
    expect(key(base, {}, { ...db, database_name: "other" })).not.toBe(key(base));
    expect(() => identityFor(user({ server_auth: "command" }), db, {})).toThrow(
      /needs "server_auth_command"/,
    );
  });

  it("vault: path, mode, refresh percent, server and every [vault] login setting are in the key", () => {
    const vault: VaultConfig = {
      url: "https://vault:8200",
      namespace: "ns",
      auth_method: "approle",
      auth_mount: "approle",
      kubernetes_role: undefined,
      kubernetes_jwt_path: "/jwt",
      approle_role_id: "rid",
      approle_secret_id_file: "/sid",
      token_file: undefined,
      client_token_ttl: undefined,
    };
    const vkey = (u: Partial<UserConfig>, v: VaultConfig = vault, d = db) =>
      identityFor(user(u), d, {}, v)?.key;
    const base = { server_auth: "vault_dynamic" as const, server_vault_path: "app" };
    const k0 = vkey(base);
    const variants = [
      vkey({ ...base, server_vault_path: "other" }),
      vkey({ ...base, server_auth: "vault_static" }),
      vkey({ ...base, vault_refresh_percent: 50 }),
      vkey(base, { ...vault, url: "https://vault2:8200" }),
      vkey(base, { ...vault, namespace: "other" }),
      vkey(base, { ...vault, auth_mount: "approle-eu" }),
      vkey(base, { ...vault, approle_role_id: "rid2" }),
      vkey(base, vault, { ...db, port: 5433 }),
    ];
    expect(new Set([k0, ...variants]).size).toBe(variants.length + 1);
    // the pool's own names do not split the identity; the database name does not either
    expect(
      vkey({ ...base, name: "x", server_user: "y" }, vault, { ...db, database_name: "z" }),
    ).toBe(k0);
    const id = identityFor(user(base), db, {}, vault);
    const p = id?.make();
    expect(p?.issuesUser).toBe(true);
    expect(JSON.stringify(p?.description)).not.toMatch(/sid|secret/);
    expect(() => identityFor(user(base), db, {})).toThrow(/needs a \[vault\] table/);
  });

  it("vaultSecretPath: a role name goes to the database mount, a path is kept", () => {
    expect(vaultSecretPath("dynamic", "app")).toBe("database/creds/app");
    expect(vaultSecretPath("static", "app")).toBe("database/static-creds/app");
    expect(vaultSecretPath("dynamic", "/v1/db-eu/creds/app/")).toBe("db-eu/creds/app");
  });
});
