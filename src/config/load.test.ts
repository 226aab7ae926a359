// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these tests are about ${VAR} references
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { PgwardenError } from "../util/index.js";
import { ConfigError, type ConfigProblem, loadConfig, parseConfig } from "./index.js";
import type { Config } from "./types.js";

const FILES = { config: "pgwarden.toml", users: "users.toml" } as const;

const CONFIG = `
[[databases]]
name = "app"
host = "127.0.0.1"
`;

const USERS = `
[[users]]
name = "alice"
database = "app"
password = "alice-pw"
`;

function parse(config = CONFIG, users = USERS, env: Record<string, string> = {}): Config {
  return parseConfig(config, users, FILES, env);
}

function parseError(config = CONFIG, users = USERS, env: Record<string, string> = {}): ConfigError {
  try {
    parseConfig(config, users, FILES, env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

/** The one problem a config produced, checked for where it says it is. */
function onlyProblem(err: ConfigError): ConfigProblem {
  expect(err.problems).toHaveLength(1);
  return err.problems[0]!;
}

describe("defaults", () => {
  it("fills [general] from design §3 and pgdog", () => {
    expect(parse().general).toEqual({
      host: "0.0.0.0",
      port: 6432,
      pooler_mode: "transaction",
      default_pool_size: 10,
      min_pool_size: 1,
      idle_timeout: 60_000,
      server_lifetime: 86_400_000,
      checkout_timeout: 5_000,
      connect_timeout: 5_000,
      auth_type: "scram",
      tls_certificate: undefined,
      tls_private_key: undefined,
      tls_verify: "prefer",
      tls_server_ca_certificate: undefined,
      openmetrics_port: undefined,
      shutdown_timeout: 60_000,
      max_client_connections: 10_000,
      client_login_timeout: 60_000,
      max_message_size: 1_073_741_822,
      auth_failure_delay: 0,
      token_refresh_buffer: 45_000,
      token_fetch_timeout: 30_000,
      log_level: "info",
      prepared_statements: "extended",
      prepared_statements_limit: 500,
      workers: 1,
    });
  });

  it("fills databases, admin and users", () => {
    const c = parse();
    expect(c.databases).toEqual([
      { name: "app", host: "127.0.0.1", port: 5432, database_name: "app" },
    ]);
    expect(c.admin).toEqual({ name: "admin", user: "admin", password: undefined });
    expect(c.users).toEqual([
      {
        name: "alice",
        database: "app",
        password: "alice-pw",
        server_user: "alice",
        server_password: "alice-pw",
        pool_size: 10,
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
      },
    ]);
    expect(c.files).toEqual(FILES);
  });

  it("accepts empty files", () => {
    const c = parse("", "");
    expect(c.databases).toEqual([]);
    expect(c.users).toEqual([]);
    expect(c.general.port).toBe(6432);
  });

  it("resolves user pool settings from [general]", () => {
    const c = parse(
      `[general]\npooler_mode = "session"\ndefault_pool_size = 4\nmin_pool_size = 2\n${CONFIG}`,
      `${USERS}\n[[users]]\nname = "bob"\ndatabase = "app"\npool_size = 7\nmin_pool_size = 0\npooler_mode = "transaction"\n`,
    );
    expect(c.users.map((u) => [u.name, u.pool_size, u.min_pool_size, u.pooler_mode])).toEqual([
      ["alice", 4, 2, "session"],
      ["bob", 7, 0, "transaction"],
    ]);
  });

  it("caps an inherited min_pool_size at the user's own smaller pool_size", () => {
    const c = parse(`[general]\nmin_pool_size = 5\n${CONFIG}`, `${USERS}pool_size = 2\n`);
    expect(c.users[0]).toMatchObject({ pool_size: 2, min_pool_size: 2 });
  });

  it("takes every key as written", () => {
    const c = parse(
      `
[general]
host = "127.0.0.1"
port = 0
pooler_mode = "session"
default_pool_size = 3
min_pool_size = 0
idle_timeout = 1000
server_lifetime = 2000
checkout_timeout = 3000
connect_timeout = 4000
auth_type = "md5"
tls_certificate = "/tls/cert.pem"
tls_private_key = "/tls/key.pem"
tls_verify = "verify_full"
tls_server_ca_certificate = "/tls/ca.pem"
openmetrics_port = 9090
shutdown_timeout = 5000
max_client_connections = 50
token_refresh_buffer = 6000
token_fetch_timeout = 7000
log_level = "debug"
prepared_statements = "disabled"
prepared_statements_limit = 100

[[databases]]
name = "app"
host = "db.example"
port = 6543
database_name = "app_prod"

[admin]
name = "pgwarden"
user = "root"
password = "admin-pw"

[vault]
url = "https://vault.example:8200"
auth_method = "approle"
approle_role_id = "role"
approle_secret_id_file = "/vault/secret-id"
`,
      `
[[users]]
name = "iam"
database = "app"
server_user = "iam_role"
server_auth = "rds_iam"
server_iam_region = "eu-west-1"
server_iam_host = "db.abc.eu-west-1.rds.amazonaws.com"
pool_size = 5
min_pool_size = 5
pooler_mode = "session"

[[users]]
name = "az"
database = "app"
server_auth = "azure_workload_identity"
azure_client_id = "cid"
azure_tenant_id = "tid"

[[users]]
name = "v"
database = "app"
server_auth = "vault_dynamic"
server_vault_path = "database/creds/app"
vault_refresh_percent = 50

[[users]]
name = "cmd"
database = "app"
password = "client"
server_password = "server"
server_auth = "command"
server_auth_command = "/bin/get-token"
`,
    );
    expect(c.general).toMatchObject({
      host: "127.0.0.1",
      port: 0,
      auth_type: "md5",
      tls_verify: "verify_full",
      tls_server_ca_certificate: "/tls/ca.pem",
      openmetrics_port: 9090,
      log_level: "debug",
      prepared_statements: "disabled",
      prepared_statements_limit: 100,
    });
    expect(c.databases[0]).toEqual({
      name: "app",
      host: "db.example",
      port: 6543,
      database_name: "app_prod",
    });
    expect(c.admin).toEqual({ name: "pgwarden", user: "root", password: "admin-pw" });
    expect(c.users[0]).toMatchObject({
      server_user: "iam_role",
      server_auth: "rds_iam",
      server_iam_region: "eu-west-1",
      server_iam_host: "db.abc.eu-west-1.rds.amazonaws.com",
      password: undefined,
      server_password: undefined,
      pool_size: 5,
      min_pool_size: 5,
    });
    expect(c.users[1]).toMatchObject({ azure_client_id: "cid", azure_tenant_id: "tid" });
    expect(c.users[2]).toMatchObject({
      server_auth: "vault_dynamic",
      server_vault_path: "database/creds/app",
      vault_refresh_percent: 50,
    });
    expect(c.vault).toEqual({
      url: "https://vault.example:8200",
      namespace: undefined,
      auth_method: "approle",
      auth_mount: "approle",
      kubernetes_role: undefined,
      kubernetes_jwt_path: "/var/run/secrets/kubernetes.io/serviceaccount/token",
      approle_role_id: "role",
      approle_secret_id_file: "/vault/secret-id",
      token_file: undefined,
      client_token_ttl: undefined,
    });
    expect(c.users[3]).toMatchObject({
      password: "client",
      server_password: "server",
      server_auth_command: ["/bin/get-token"],
    });
  });

  it("checks what the vault modes need", () => {
    const err = parseError(CONFIG, `${USERS}server_auth = "vault_dynamic"\n`).message;
    expect(err).toContain('"vault_dynamic" needs a [vault] table in the config file');
    expect(err).toContain('"vault_dynamic" needs "server_vault_path"');
    const vault = `[vault]\nurl = "https://vault:8200"\nauth_method = "kubernetes"\n${CONFIG}`;
    expect(
      parseError(vault, `${USERS}server_auth = "vault_static"\nserver_vault_path = "app"\n`)
        .message,
    ).toContain('auth_method = "kubernetes" needs "kubernetes_role"');
    expect(parseError(CONFIG, `${USERS}server_vault_path = "app"\n`).message).toContain(
      "is only used with the vault_* modes",
    );
    const ok = parse(
      `[vault]\nurl = "https://vault:8200/"\nauth_method = "token"\ntoken_file = "/t"\nnamespace = "team"\n${CONFIG}`,
      `${USERS}server_auth = "vault_static"\nserver_vault_path = "app"\n`,
    );
    expect(ok.vault).toMatchObject({
      url: "https://vault:8200",
      auth_mount: "token",
      namespace: "team",
    });
  });

  it("checks the keys of the managed identity, Cloud SQL, role assumption and command modes", () => {
    const rds = CONFIG.replace(
      /host = "[^"]*"/,
      'host = "mydb.abc.eu-central-1.rds.amazonaws.com"',
    );
    const role = parse(
      rds,
      `${USERS}server_auth = "rds_iam"\nserver_iam_role_arn = "arn:aws:iam::123456789012:role/db-login"\nserver_iam_external_id = "ext-1"\nserver_iam_session_name = "pgw"\n`,
    ).users[0];
    expect(role).toMatchObject({
      server_iam_role_arn: "arn:aws:iam::123456789012:role/db-login",
      server_iam_external_id: "ext-1",
      server_iam_session_name: "pgw",
    });
    expect(() =>
      parse(rds, `${USERS}server_auth = "rds_iam"\nserver_iam_role_arn = "db-login"\n`),
    ).toThrow(/key "server_iam_role_arn": expected an IAM role ARN/);
    expect(() =>
      parse(rds, `${USERS}server_auth = "rds_iam"\nserver_iam_external_id = "ext-1"\n`),
    ).toThrow(/key "server_iam_external_id": needs "server_iam_role_arn"/);
    expect(() =>
      parse(CONFIG, `${USERS}server_iam_role_arn = "arn:aws:iam::123456789012:role/x"\n`),
    ).toThrow(/key "server_iam_role_arn": is only used with server_auth = "rds_iam"/);
    const mi = parse(
      CONFIG,
      `${USERS}server_auth = "azure_managed_identity"\nazure_resource_id = "/subscriptions/s/resourcegroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id"\n`,
    ).users[0];
    expect(mi?.azure_resource_id).toMatch(/userAssignedIdentities/);
    expect(() =>
      parse(
        CONFIG,
        `${USERS}server_auth = "azure_managed_identity"\nazure_resource_id = "/x"\nazure_client_id = "c"\n`,
      ),
    ).toThrow(/not both/);
    expect(
      parse(CONFIG, `${USERS}server_auth = "gcp_cloudsql_iam"\nserver_user = "app-sa@proj.iam"\n`)
        .users[0]?.server_user,
    ).toBe("app-sa@proj.iam");
    expect(() =>
      parse(
        CONFIG,
        `${USERS}server_auth = "gcp_cloudsql_iam"\nserver_user = "app-sa@proj.iam.gserviceaccount.com"\n`,
      ),
    ).toThrow(/key "server_user": Cloud SQL .* use "app-sa@proj\.iam"/);
    const cmd = parse(
      CONFIG,
      `${USERS}server_auth = "command"\nserver_auth_command = ["/bin/tok", "--user", "x"]\nserver_auth_command_ttl = 60000\n`,
    ).users[0];
    expect(cmd).toMatchObject({
      server_auth_command: ["/bin/tok", "--user", "x"],
      server_auth_command_ttl: 60000,
    });
    expect(() => parse(CONFIG, `${USERS}server_auth = "command"\n`)).toThrow(
      /needs "server_auth_command"/,
    );
    expect(() =>
      parse(CONFIG, `${USERS}server_auth = "command"\nserver_auth_command = "/bin/tok --user x"\n`),
    ).toThrow(/argv array/);
    expect(() =>
      parse(CONFIG, `${USERS}server_auth = "command"\nserver_auth_command = []\n`),
    ).toThrow(/key "server_auth_command"/);
  });

  it("refuses token auth without TLS to the server", () => {
    expect(() =>
      parse(
        `[general]\ntls_verify = "disabled"\n${CONFIG}`,
        `${USERS}server_auth = "azure_workload_identity"\n`,
      ),
    ).toThrow(
      /key "server_auth": "azure_workload_identity" sends a bearer token.*tls_verify is "disabled"/,
    );
  });

  it("infers the RDS region from the host, and asks for it when it cannot", () => {
    const rds = CONFIG.replace(
      /host = "[^"]*"/,
      'host = "mydb.abc.eu-central-1.rds.amazonaws.com"',
    );
    expect(parse(rds, `${USERS}server_auth = "rds_iam"\n`).users[0]?.server_auth).toBe("rds_iam");
    expect(() => parse(CONFIG, `${USERS}server_auth = "rds_iam"\n`)).toThrow(
      /key "server_iam_region": required: the region cannot be inferred from host/,
    );
    const viaIamHost = parse(
      CONFIG,
      `${USERS}server_auth = "rds_iam"\nserver_iam_host = "x.y.us-west-2.rds.amazonaws.com"\n`,
    );
    expect(viaIamHost.users[0]?.server_iam_host).toBe("x.y.us-west-2.rds.amazonaws.com");
  });

  it("lets [admin] in users.toml replace the one in pgwarden.toml, as pgdog does", () => {
    const c = parse(
      `[admin]\nname = "adm"\npassword = "a"\n${CONFIG}`,
      `[admin]\npassword = "b"\n${USERS}`,
    );
    expect(c.admin).toEqual({ name: "admin", user: "admin", password: "b" });
  });
});

describe("freezing", () => {
  it("deep-freezes the result", () => {
    const c = parse();
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.general)).toBe(true);
    expect(Object.isFrozen(c.databases)).toBe(true);
    expect(Object.isFrozen(c.databases[0])).toBe(true);
    expect(Object.isFrozen(c.users)).toBe(true);
    expect(Object.isFrozen(c.users[0])).toBe(true);
    expect(Object.isFrozen(c.admin)).toBe(true);
    expect(Object.isFrozen(c.files)).toBe(true);
    expect(() => {
      (c.general as { port: number }).port = 1;
    }).toThrow(TypeError);
    expect(() => (c.users as unknown[]).push({})).toThrow(TypeError);
  });
});

describe("ConfigError", () => {
  it("is a PgwardenError with code CONFIG and the first problem's location", () => {
    const err = parseError(`[general]\nprot = 1\n${CONFIG}`);
    expect(err).toBeInstanceOf(PgwardenError);
    expect(err).toBeInstanceOf(Error);
    expect(err.code).toBe("CONFIG");
    expect(err.name).toBe("ConfigError");
    expect([err.file, err.table, err.key]).toEqual(["pgwarden.toml", "[general]", "prot"]);
  });

  it("reports every problem, one line each", () => {
    const err = parseError(`[general]\nprot = 1\nport = "x"\n${CONFIG}`, `${USERS}pool_size = 0\n`);
    const lines = err.message.split("\n");
    expect(lines).toHaveLength(3);
    expect(lines).toEqual(err.problems.map((p) => p.message));
    for (const p of err.problems) expect(p.message.startsWith(`${p.file}: ${p.table} `)).toBe(true);
  });
});

describe("unknown keys", () => {
  it("in [general], with a hint", () => {
    const p = onlyProblem(parseError(`[general]\nprot = 6432\n${CONFIG}`));
    expect(p).toMatchObject({ file: "pgwarden.toml", table: "[general]", key: "prot" });
    expect(p.message).toBe('pgwarden.toml: [general] unknown key "prot" (did you mean "port"?)');
  });

  it("in [[databases]]", () => {
    const p = onlyProblem(parseError(`${CONFIG}\nuser = "x"\n`));
    expect(p.message).toBe('pgwarden.toml: [[databases]][0] (name "app") unknown key "user"');
  });

  it("in [admin] and [vault]", () => {
    const err = parseError(
      `[admin]\nnmae = "x"\n[vault]\nurl = "u"\nauth_method = "kubernetes"\nfoo = 1\n${CONFIG}`,
    );
    expect(err.problems.map((p) => p.message)).toEqual([
      'pgwarden.toml: [admin] unknown key "nmae" (did you mean "name"?)',
      'pgwarden.toml: [vault] unknown key "foo"',
    ]);
  });

  it("at the top level of either file", () => {
    const err = parseError(`[pools]\nx = 1\n${CONFIG}`, `[[user]]\nname = "a"\n`);
    expect(err.problems.map((p) => p.message)).toEqual([
      'pgwarden.toml: (top level) unknown key "pools"',
      'users.toml: (top level) unknown key "user" (did you mean "users"?)',
    ]);
  });

  it("in [[users]], naming the entry", () => {
    const p = onlyProblem(
      parseError(CONFIG, `${USERS}\n[[users]]\nname = "bob"\ndatabase = "app"\npoolsize = 3\n`),
    );
    expect(p).toMatchObject({
      file: "users.toml",
      table: '[[users]][1] (name "bob")',
      key: "poolsize",
    });
    expect(p.message).toBe(
      'users.toml: [[users]][1] (name "bob") unknown key "poolsize" (did you mean "pool_size"?)',
    );
  });
});

describe("wrong types and ranges", () => {
  it.each([
    ["port", '"ten"', 'key "port": expected a port number (0-65535, 0 = any free port), got "ten"'],
    ["port", "70000", 'key "port": expected a port number (0-65535, 0 = any free port), got 70000'],
    ["port", "-1", "got -1"],
    ["default_pool_size", "0", 'key "default_pool_size": expected a positive integer, got 0'],
    ["default_pool_size", "2.5", "expected a positive integer, got 2.5"],
    ["min_pool_size", "-1", 'key "min_pool_size": expected a non-negative integer, got -1'],
    ["idle_timeout", "true", "expected a duration in milliseconds (0-2147483647), got true"],
    ["idle_timeout", "3000000000", "got 3000000000"],
    ["connect_timeout", "0", "expected a duration in milliseconds (1-2147483647), got 0"],
    ["pooler_mode", '"statement"', 'expected one of "transaction", "session", got "statement"'],
    ["auth_type", '"scram-sha-256"', 'expected one of "scram", "md5", "plain", "trust"'],
    ["tls_verify", '"full"', 'expected one of "disabled", "prefer", "verify_ca", "verify_full"'],
    ["log_level", '"verbose"', 'key "log_level": expected one of "trace"'],
    ["host", '""', 'key "host": expected a non-empty string, got ""'],
    ["host", "[1, 2]", "expected a non-empty string, got an array"],
    ["host", "{ a = 1 }", "expected a non-empty string, got a table"],
    ["host", "1979-05-27", "expected a non-empty string, got a date"],
    ["openmetrics_port", "0", 'key "openmetrics_port": expected a port number (1-65535), got 0'],
    ["port", '"6432"', 'got "6432" (a string: write numbers without quotes)'],
    ["prepared_statements", '"full"', 'expected one of "extended", "disabled", got "full"'],
    ["prepared_statements_limit", "0", "expected a positive integer, got 0"],
    ["max_prepared_statements", "-1", "expected a non-negative integer, got -1"],
  ])("[general] %s = %s", (key, value, expected) => {
    const p = onlyProblem(parseError(`[general]\n${key} = ${value}\n${CONFIG}`));
    expect(p).toMatchObject({ file: "pgwarden.toml", table: "[general]", key });
    expect(p.message.startsWith(`pgwarden.toml: [general] key "${key}": `)).toBe(true);
    expect(p.message).toContain(expected);
  });

  it("in [[users]], like the brief's example", () => {
    const users = `${USERS}
[[users]]
name = "bob"
database = "app"

[[users]]
name = "alice"
database = "app"
pool_size = "ten"
`;
    const err = parseError(CONFIG, users);
    expect(err.problems[0]?.message).toBe(
      'users.toml: [[users]][2] (name "alice") key "pool_size": expected a positive integer, got "ten"',
    );
  });

  it("in [[databases]]", () => {
    const p = onlyProblem(parseError(`${CONFIG}port = 0\n`));
    expect(p.message).toBe(
      'pgwarden.toml: [[databases]][0] (name "app") key "port": expected a port number (1-65535), got 0',
    );
  });

  it("user enums and percentages", () => {
    const err = parseError(
      CONFIG,
      `${USERS}server_auth = "iam"\npooler_mode = "statement"\nvault_refresh_percent = 100\n`,
    );
    expect(err.problems.map((p) => p.key)).toEqual([
      "pooler_mode",
      "server_auth",
      "vault_refresh_percent",
    ]);
    expect(err.message).toContain(
      'key "server_auth": expected one of "password", "rds_iam", "azure_workload_identity"',
    );
    expect(err.message).toContain(
      'key "vault_refresh_percent": expected a percentage (1-99), got 100',
    );
  });

  it("a table written where an array of tables belongs", () => {
    const p = onlyProblem(parseError(`[databases]\nname = "app"\nhost = "h"\n`, ""));
    expect(p).toMatchObject({ table: "(top level)", key: "databases" });
    expect(p.message).toBe(
      'pgwarden.toml: (top level) key "databases": expected an array of tables ([[databases]]), got a table',
    );
  });

  it("a value written where a table belongs", () => {
    const p = onlyProblem(parseError(`general = 5\n${CONFIG}`));
    expect(p.message).toBe('pgwarden.toml: (top level) key "general": expected a table, got 5');
  });
});

describe("missing keys", () => {
  it("database host", () => {
    const p = onlyProblem(parseError(`[[databases]]\nname = "app"\n`));
    expect(p).toMatchObject({ table: '[[databases]][0] (name "app")', key: "host" });
    expect(p.message).toBe(
      'pgwarden.toml: [[databases]][0] (name "app") missing required key "host"',
    );
  });

  it("database name (entry then has no name label)", () => {
    const p = onlyProblem(parseError(`[[databases]]\nhost = "h"\n`, ""));
    expect(p.message).toBe('pgwarden.toml: [[databases]][0] missing required key "name"');
  });

  it("user name and database", () => {
    const err = parseError(CONFIG, `[[users]]\npassword = "x"\n`);
    expect(err.problems.map((p) => p.message)).toEqual([
      'users.toml: [[users]][0] missing required key "name"',
      'users.toml: [[users]][0] missing required key "database"',
    ]);
  });

  it("[vault] url and auth_method", () => {
    const err = parseError(`[vault]\nnamespace = "ns"\n${CONFIG}`);
    expect(err.problems.map((p) => p.message)).toEqual([
      'pgwarden.toml: [vault] missing required key "url"',
      'pgwarden.toml: [vault] missing required key "auth_method"',
    ]);
  });
});

describe("cross-key checks", () => {
  it("user database must exist", () => {
    const p = onlyProblem(parseError(CONFIG, `[[users]]\nname = "alice"\ndatabase = "nope"\n`));
    expect(p).toMatchObject({
      file: "users.toml",
      table: '[[users]][0] (name "alice")',
      key: "database",
    });
    expect(p.message).toBe(
      'users.toml: [[users]][0] (name "alice") key "database": no [[databases]] entry named "nope" (known: "app")',
    );
  });

  it("user database with no databases at all", () => {
    const p = onlyProblem(parseError("", USERS));
    expect(p.message).toContain('no [[databases]] entry named "app" (known: none defined)');
  });

  it("duplicate database names", () => {
    const p = onlyProblem(parseError(`${CONFIG}${CONFIG}`));
    expect(p).toMatchObject({ table: '[[databases]][1] (name "app")', key: "name" });
    expect(p.message).toBe(
      'pgwarden.toml: [[databases]][1] (name "app") key "name": duplicate database name "app" (first defined in [[databases]][0])',
    );
  });

  it("a database named like the admin console", () => {
    const p = onlyProblem(parseError(`[[databases]]\nname = "admin"\nhost = "h"\n`, ""));
    expect(p.message).toContain(
      '[[databases]][0] (name "admin") key "name": "admin" is the admin console',
    );
  });

  it("duplicate (user, database) pairs, while the same name on another database is fine", () => {
    const config = `${CONFIG}\n[[databases]]\nname = "other"\nhost = "h"\n`;
    expect(
      parse(config, `${USERS}\n[[users]]\nname = "alice"\ndatabase = "other"\n`).users,
    ).toHaveLength(2);
    const p = onlyProblem(parseError(config, `${USERS}${USERS}`));
    expect(p).toMatchObject({ table: '[[users]][1] (name "alice")', key: "name" });
    expect(p.message).toContain(
      'duplicate user "alice" for database "app" (first defined in [[users]][0])',
    );
  });

  it("min_pool_size above pool_size", () => {
    const p = onlyProblem(parseError(CONFIG, `${USERS}pool_size = 2\nmin_pool_size = 3\n`));
    expect(p.message).toBe(
      'users.toml: [[users]][0] (name "alice") key "min_pool_size": must not exceed "pool_size" (2), got 3',
    );
  });

  it("min_pool_size above the inherited default_pool_size", () => {
    const p = onlyProblem(
      parseError(
        `[general]\ndefault_pool_size = 2\nmin_pool_size = 0\n${CONFIG}`,
        `${USERS}min_pool_size = 3\n`,
      ),
    );
    expect(p.message).toContain(
      'key "min_pool_size": must not exceed [general] "default_pool_size" (2), got 3',
    );
  });

  it("[general] min_pool_size above default_pool_size", () => {
    const p = onlyProblem(
      parseError(`[general]\ndefault_pool_size = 2\nmin_pool_size = 3\n${CONFIG}`),
    );
    expect(p).toMatchObject({ table: "[general]", key: "min_pool_size" });
    expect(p.message).toBe(
      'pgwarden.toml: [general] key "min_pool_size": must not exceed "default_pool_size" (2), got 3',
    );
  });

  it("TLS certificate and key come together", () => {
    const a = onlyProblem(parseError(`[general]\ntls_certificate = "c.pem"\n${CONFIG}`));
    expect(a.message).toBe(
      'pgwarden.toml: [general] key "tls_private_key": required when "tls_certificate" is set (client TLS needs both)',
    );
    const b = onlyProblem(parseError(`[general]\ntls_private_key = "k.pem"\n${CONFIG}`));
    expect(b.key).toBe("tls_certificate");
  });

  it("tls_server_ca_certificate is optional for verify_ca and verify_full", () => {
    for (const mode of ["verify_ca", "verify_full"]) {
      expect(parse(`[general]\ntls_verify = "${mode}"\n${CONFIG}`).general.tls_verify).toBe(mode);
      const c = parse(
        `[general]\ntls_verify = "${mode}"\ntls_server_ca_certificate = "ca.pem"\n${CONFIG}`,
      );
      expect(c.general.tls_server_ca_certificate).toBe("ca.pem");
    }
  });

  it("max_prepared_statements (PgBouncer's name) sets the limit, or 0 turns tracking off", () => {
    const general = (lines: string) => parse(`[general]\n${lines}\n${CONFIG}`).general;
    expect(general("max_prepared_statements = 200")).toMatchObject({
      prepared_statements: "extended",
      prepared_statements_limit: 200,
    });
    expect(general("max_prepared_statements = 0")).toMatchObject({
      prepared_statements: "disabled",
      prepared_statements_limit: 500,
    });
    expect(general('max_prepared_statements = 0\nprepared_statements = "disabled"')).toMatchObject({
      prepared_statements: "disabled",
    });
    expect(general('max_prepared_statements = 50\nprepared_statements = "disabled"')).toMatchObject(
      { prepared_statements: "disabled", prepared_statements_limit: 50 },
    );
    expect("max_prepared_statements" in general("max_prepared_statements = 50")).toBe(false);
  });

  it("max_prepared_statements may not contradict prepared_statements(_limit)", () => {
    const both = onlyProblem(
      parseError(
        `[general]\nmax_prepared_statements = 200\nprepared_statements_limit = 300\n${CONFIG}`,
      ),
    );
    expect(both).toMatchObject({ table: "[general]", key: "max_prepared_statements" });
    expect(both.message).toContain('PgBouncer\'s name for "prepared_statements_limit"');
    const off = onlyProblem(
      parseError(
        `[general]\nmax_prepared_statements = 0\nprepared_statements = "extended"\n${CONFIG}`,
      ),
    );
    expect(off.message).toContain("turns prepared statement tracking off");
  });

  it("metrics and clients cannot share a port", () => {
    const p = onlyProblem(parseError(`[general]\nport = 7000\nopenmetrics_port = 7000\n${CONFIG}`));
    expect(p.message).toBe(
      'pgwarden.toml: [general] key "openmetrics_port": must differ from "port" (7000)',
    );
  });
});

describe("secrets never appear in messages", () => {
  const secret = "hunter2-s3cret";

  it.each([
    [
      "users.toml password",
      CONFIG,
      `[[users]]\nname = "a"\ndatabase = "app"\npassword = ["${secret}"]\n`,
    ],
    [
      "users.toml server_password",
      CONFIG,
      `[[users]]\nname = "a"\ndatabase = "app"\nserver_password = { v = "${secret}" }\n`,
    ],
    ["admin password", `[admin]\npassword = ["${secret}"]\n${CONFIG}`, USERS],
    ["numeric password", CONFIG, `[[users]]\nname = "a"\ndatabase = "app"\npassword = 987654321\n`],
    ["syntax error on a password line", CONFIG, `[[users]]\nname = "a"\npassword = "${secret}\n`],
    ["syntax error after a password line", `[admin]\npassword = "${secret}"\n[general\n`, USERS],
  ])("%s", (_name, config, users) => {
    const err = parseError(config, users);
    expect(err.message).not.toContain(secret);
    expect(err.message).not.toContain("987654321");
    expect(String(err.cause ?? "")).not.toContain(secret);
    if (!err.message.includes("syntax"))
      expect(err.message).toContain("invalid value (expected a non-empty string)");
  });

  it("an empty password (e.g. from an empty variable) names the key only", () => {
    const p = onlyProblem(parseError(CONFIG, `${USERS}server_password = ""\n`));
    expect(p.message).toBe(
      'users.toml: [[users]][0] (name "alice") key "server_password": invalid value (expected a non-empty string)',
    );
  });
});

describe("TOML syntax errors", () => {
  it("name the file, line and column", () => {
    const p = onlyProblem(parseError(`[general]\nport = 6432\nhost = \n`));
    expect(p).toMatchObject({ file: "pgwarden.toml", table: undefined, key: undefined });
    expect(p.message).toMatch(/^pgwarden\.toml:3:\d+: TOML syntax error: /);
  });

  it("in users.toml", () => {
    const p = onlyProblem(parseError(CONFIG, `[[users]\n`));
    expect(p.message).toMatch(/^users\.toml:1:\d+: TOML syntax error: /);
  });

  it("in both files at once", () => {
    const err = parseError("a = ", "b = ");
    expect(err.problems.map((p) => p.file)).toEqual(["pgwarden.toml", "users.toml"]);
  });
});

describe("${VAR} substitution", () => {
  it("replaces references in string values of every table", () => {
    const c = parse(
      `[general]\nhost = "\${LISTEN}"\npooler_mode = "\${MODE}"\n[[databases]]\nname = "app"\nhost = "\${PGHOST}.internal"\n`,
      `[[users]]\nname = "alice"\ndatabase = "app"\npassword = "\${PW}"\nserver_password = "pre-\${PW}-\${PW}"\n`,
      { LISTEN: "127.0.0.1", MODE: "session", PGHOST: "db", PW: "pw" },
    );
    expect(c.general.host).toBe("127.0.0.1");
    expect(c.general.pooler_mode).toBe("session");
    expect(c.databases[0]?.host).toBe("db.internal");
    expect(c.users[0]).toMatchObject({ password: "pw", server_password: "pre-pw-pw" });
  });

  it("leaves non-string values and $${ escapes alone", () => {
    const c = parse(CONFIG, `${USERS}server_password = "a$\${B}c"\n`, {});
    expect(c.users[0]?.server_password).toBe("a${B}c");
  });

  it("a substituted value is validated like a written one", () => {
    const p = onlyProblem(
      parseError(`[general]\npooler_mode = "\${MODE}"\n${CONFIG}`, USERS, { MODE: "statement" }),
    );
    expect(p.message).toBe(
      'pgwarden.toml: [general] key "pooler_mode": expected one of "transaction", "session", got "statement"',
    );
  });

  it("an undefined variable names file, table, key and variable", () => {
    const p = onlyProblem(parseError(CONFIG, `${USERS}server_password = "\${DB_PASSWORD}"\n`));
    expect(p).toMatchObject({
      file: "users.toml",
      table: '[[users]][0] (name "alice")',
      key: "server_password",
    });
    expect(p.message).toBe(
      'users.toml: [[users]][0] (name "alice") key "server_password": undefined environment variable "DB_PASSWORD"',
    );
  });

  it("an undefined variable is reported once, not again as a type error", () => {
    const p = onlyProblem(parseError(`[general]\npooler_mode = "\${MODE}"\n${CONFIG}`));
    expect(p.message).toContain('key "pooler_mode": undefined environment variable "MODE"');
  });

  it("a malformed reference is an error", () => {
    const p = onlyProblem(
      parseError(`[[databases]]\nname = "app"\nhost = "\${PGHOST:-localhost}"\n`, ""),
    );
    expect(p.key).toBe("host");
    expect(p.message).toContain('malformed "${" reference');
  });

  it("only uses the env it is given", () => {
    process.env.PGWARDEN_TEST_ONLY_IN_PROCESS_ENV = "x";
    try {
      const p = onlyProblem(
        parseError(`[general]\nhost = "\${PGWARDEN_TEST_ONLY_IN_PROCESS_ENV}"\n${CONFIG}`),
      );
      expect(p.message).toContain("undefined environment variable");
    } finally {
      delete process.env.PGWARDEN_TEST_ONLY_IN_PROCESS_ENV;
    }
  });
});

describe("loadConfig", () => {
  const dir = mkdtempSync(join(tmpdir(), "pgwarden-config-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("reads both files and records their absolute paths", () => {
    const config = join(dir, "pgwarden.toml");
    const users = join(dir, "users.toml");
    writeFileSync(config, CONFIG);
    writeFileSync(users, `${USERS}server_password = "\${PW}"\n`);
    const c = loadConfig(relative(process.cwd(), config), users, { PW: "from-env" });
    expect(c.files).toEqual({ config, users });
    expect(c.users[0]?.server_password).toBe("from-env");
    expect(Object.isFrozen(c)).toBe(true);
  });

  it("names the file in errors", () => {
    const config = join(dir, "bad.toml");
    writeFileSync(config, `[general]\nprot = 1\n`);
    const users = join(dir, "users-empty.toml");
    writeFileSync(users, "");
    const err = (() => {
      try {
        loadConfig(config, users, {});
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toBe(
      `${config}: [general] unknown key "prot" (did you mean "port"?)`,
    );
  });

  it("a missing file is a ConfigError naming it", () => {
    const missing = join(dir, "nope.toml");
    expect(() => loadConfig(join(dir, "pgwarden.toml"), missing, {})).toThrow(
      new ConfigError([
        { file: missing, table: undefined, key: undefined, message: `${missing}: file not found` },
      ]),
    );
  });
});
