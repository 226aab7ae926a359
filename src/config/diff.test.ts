import { describe, expect, it } from "vitest";
import { diffConfig, isEmptyDiff, parseConfig, RESTART_KEYS } from "./index.js";
import type { Config } from "./types.js";

const FILES = { config: "pgwarden.toml", users: "users.toml" };

const BASE_CONFIG = `
[general]
port = 6432
idle_timeout = 60000

[[databases]]
name = "app"
host = "db1"

[[databases]]
name = "reports"
host = "db2"
`;

const BASE_USERS = `
[[users]]
name = "alice"
database = "app"
password = "a"

[[users]]
name = "alice"
database = "reports"
password = "a"

[[users]]
name = "bob"
database = "reports"
password = "b"
`;

function cfg(config = BASE_CONFIG, users = BASE_USERS): Config {
  return parseConfig(config, users, FILES, {});
}

const alice = { name: "alice", database: "app" };
const aliceReports = { name: "alice", database: "reports" };
const bob = { name: "bob", database: "reports" };

describe("diffConfig", () => {
  it("finds nothing between equal configs", () => {
    const d = diffConfig(cfg(), cfg());
    expect(d).toEqual({
      general: [],
      databases: { added: [], removed: [], changed: [] },
      users: { added: [], removed: [], changed: [], resized: [] },
      admin: [],
    });
    expect(isEmptyDiff(d)).toBe(true);
  });

  it("names changed [general] keys, including ones that went back to their default", () => {
    const next = cfg(
      BASE_CONFIG.replace("port = 6432", "port = 7000").replace(
        "idle_timeout = 60000\n",
        'idle_timeout = 1\nlog_level = "debug"\n',
      ),
    );
    expect(diffConfig(cfg(), next).general).toEqual(["port", "idle_timeout", "log_level"]);
    expect(diffConfig(next, cfg()).general).toEqual(["port", "idle_timeout", "log_level"]);
  });

  it("reports prepared statement settings as reloadable [general] keys, the alias by its target", () => {
    const next = cfg(
      BASE_CONFIG.replace(
        "idle_timeout = 60000\n",
        'idle_timeout = 60000\nprepared_statements = "disabled"\nmax_prepared_statements = 50\n',
      ),
    );
    const d = diffConfig(cfg(), next);
    expect(d.general).toEqual(["prepared_statements", "prepared_statements_limit"]);
    expect(d.general.filter((k) => RESTART_KEYS.has(k))).toEqual([]);
  });

  it("databases added, removed and changed", () => {
    const next = cfg(
      `${BASE_CONFIG.replace('name = "reports"\nhost = "db2"', 'name = "reports"\nhost = "db2"\nport = 5433')}
[[databases]]
name = "new"
host = "db3"
`,
    );
    const d = diffConfig(cfg(), next);
    expect(d.databases).toEqual({ added: ["new"], removed: [], changed: ["reports"] });
    // The pools on a moved database need new server connections.
    expect(d.users.changed).toEqual([aliceReports, bob]);
    expect(d.users.resized).toEqual([]);

    const fewer = cfg(
      BASE_CONFIG.replace('[[databases]]\nname = "reports"\nhost = "db2"\n', ""),
      BASE_USERS.split('\n[[users]]\nname = "alice"\ndatabase = "reports"')[0],
    );
    const d2 = diffConfig(cfg(), fewer);
    expect(d2.databases).toEqual({ added: [], removed: ["reports"], changed: [] });
    expect(d2.users.removed).toEqual([aliceReports, bob]);
  });

  it("database_name counts as a change; the name is the identity", () => {
    const next = cfg(BASE_CONFIG.replace('host = "db1"', 'host = "db1"\ndatabase_name = "app_v2"'));
    const d = diffConfig(cfg(), next);
    expect(d.databases.changed).toEqual(["app"]);
    expect(d.users.changed).toEqual([alice]);
  });

  it("users identified by (name, database)", () => {
    const next = cfg(
      BASE_CONFIG,
      `${BASE_USERS.replace('name = "bob"\ndatabase = "reports"', 'name = "bob"\ndatabase = "app"')}`,
    );
    const d = diffConfig(cfg(), next);
    expect(d.users.added).toEqual([{ name: "bob", database: "app" }]);
    expect(d.users.removed).toEqual([bob]);
    expect(d.users.changed).toEqual([]);
  });

  it("resized when only pool_size / min_pool_size change", () => {
    const next = cfg(
      BASE_CONFIG,
      BASE_USERS.replace('password = "b"', 'password = "b"\npool_size = 3\nmin_pool_size = 0'),
    );
    const d = diffConfig(cfg(), next);
    expect(d.users.resized).toEqual([bob]);
    expect(d.users.changed).toEqual([]);
  });

  it("a default_pool_size change resizes every user that inherits it", () => {
    const next = cfg(BASE_CONFIG.replace("port = 6432", "port = 6432\ndefault_pool_size = 20"));
    const d = diffConfig(cfg(), next);
    expect(d.general).toEqual(["default_pool_size"]);
    expect(d.users.resized).toEqual([alice, aliceReports, bob]);
  });

  it("changed when anything else of the pool changes, even alongside a resize", () => {
    const next = cfg(
      BASE_CONFIG,
      BASE_USERS.replace('password = "b"', 'password = "b2"\npool_size = 3').replace(
        'database = "app"\npassword = "a"',
        'database = "app"\npassword = "a"\nserver_auth = "rds_iam"\nserver_iam_region = "eu-west-1"',
      ),
    );
    const d = diffConfig(cfg(), next);
    expect(d.users.changed).toEqual([alice, bob]);
    expect(d.users.resized).toEqual([]);
  });

  it("a pooler_mode change inherited from [general] changes every pool that inherits it", () => {
    const next = cfg(BASE_CONFIG.replace("port = 6432", 'port = 6432\npooler_mode = "session"'));
    const d = diffConfig(cfg(), next);
    expect(d.general).toEqual(["pooler_mode"]);
    expect(d.users.changed).toEqual([alice, aliceReports, bob]);
  });

  it("admin keys", () => {
    const next = cfg(`${BASE_CONFIG}\n[admin]\npassword = "x"\n`);
    const d = diffConfig(cfg(), next);
    expect(d.admin).toEqual(["password"]);
    expect(isEmptyDiff(d)).toBe(false);
  });

  it("is pure: inputs untouched, frozen configs accepted", () => {
    const a = cfg();
    const b = cfg(BASE_CONFIG.replace("port = 6432", "port = 7000"));
    const snapshot = JSON.stringify([a, b]);
    diffConfig(a, b);
    expect(JSON.stringify([a, b])).toBe(snapshot);
  });
});
