import { describe, expect, it, vi } from "vitest";
import { type Config, parseConfig } from "../config/index.js";
import type { CredentialSnapshot } from "../credentials/index.js";
import type { PoolSnapshot, ServerSnapshot } from "../pool/index.js";
import { PgError } from "../util/index.js";
import { type AdminContext, type ClientSnapshot, executeAdmin } from "./index.js";

// ---- a small decoder for what executeAdmin returns -----------------------------------------

type Msg =
  | { type: "T"; fields: { name: string; typeOid: number }[] }
  | { type: "D"; values: (string | null)[] }
  | { type: "C"; tag: string }
  | { type: "E" | "N"; fields: Record<string, string> }
  | { type: "I" };

function decode(buffers: Buffer[]): Msg[] {
  return buffers.map((buf) => {
    const type = String.fromCharCode(buf[0]!);
    expect(buf.readInt32BE(1)).toBe(buf.length - 1);
    let off = 5;
    const cstring = (): string => {
      const end = buf.indexOf(0, off);
      const s = buf.toString("utf8", off, end);
      off = end + 1;
      return s;
    };
    switch (type) {
      case "T": {
        const n = buf.readInt16BE(off);
        off += 2;
        const fields = [];
        for (let i = 0; i < n; i++) {
          const name = cstring();
          const typeOid = buf.readInt32BE(off + 6);
          off += 18;
          fields.push({ name, typeOid });
        }
        return { type, fields };
      }
      case "D": {
        const n = buf.readInt16BE(off);
        off += 2;
        const values: (string | null)[] = [];
        for (let i = 0; i < n; i++) {
          const len = buf.readInt32BE(off);
          off += 4;
          if (len < 0) values.push(null);
          else {
            values.push(buf.toString("utf8", off, off + len));
            off += len;
          }
        }
        return { type, values };
      }
      case "C":
        return { type, tag: cstring() };
      case "E":
      case "N": {
        const fields: Record<string, string> = {};
        while (buf[off] !== 0) {
          const code = String.fromCharCode(buf[off]!);
          off++;
          fields[code] = cstring();
        }
        return { type, fields };
      }
      case "I":
        return { type };
      default:
        throw new Error(`unexpected message type ${type}`);
    }
  });
}

interface ResultSet {
  columns: string[];
  types: number[];
  rows: Record<string, string | null>[];
  tag: string;
}

/** Groups decoded messages into result sets (T D* C), plain tags, errors and notices. */
function results(msgs: Msg[]): (ResultSet | Msg)[] {
  const out: (ResultSet | Msg)[] = [];
  let cur: ResultSet | null = null;
  for (const m of msgs) {
    if (m.type === "T") {
      cur = {
        columns: m.fields.map((f) => f.name),
        types: m.fields.map((f) => f.typeOid),
        rows: [],
        tag: "",
      };
    } else if (m.type === "D") {
      if (cur === null) throw new Error("DataRow without RowDescription");
      const row: Record<string, string | null> = {};
      cur.columns.forEach((c, i) => {
        row[c] = m.values[i] ?? null;
      });
      expect(m.values.length).toBe(cur.columns.length);
      cur.rows.push(row);
    } else if (m.type === "C" && cur !== null) {
      cur.tag = m.tag;
      out.push(cur);
      cur = null;
    } else {
      out.push(m);
    }
  }
  expect(cur).toBeNull();
  return out;
}

async function run(ctx: AdminContext, sql: string): Promise<Msg[]> {
  return decode(await executeAdmin(ctx, sql));
}

async function show(ctx: AdminContext, sql: string): Promise<ResultSet> {
  const r = results(await run(ctx, sql));
  expect(r).toHaveLength(1);
  const set = r[0] as ResultSet;
  expect(set.tag).toBe("SHOW");
  return set;
}

function errorOf(msgs: Msg[]): Record<string, string> {
  const last = msgs[msgs.length - 1];
  if (last?.type !== "E") throw new Error(`expected an ErrorResponse, got ${JSON.stringify(msgs)}`);
  expect(last.fields.S).toBe("ERROR");
  return last.fields;
}

// ---- a fake context ----------------------------------------------------------------------

const ADMIN_PASSWORD = "admin-pw-Zq81";
const SECRETS = [ADMIN_PASSWORD, "alice-pw-9x", "alice-server-pw-77", "bob-pw-3k", "tok-SECRET-42"];

const CONFIG_TOML = `
[general]
port = 6543
default_pool_size = 7

[[databases]]
name = "app"
host = "db1.internal"

[[databases]]
name = "reports"
host = "db2.internal"
port = 5433
database_name = "reporting"

[admin]
user = "ops"
password = "${ADMIN_PASSWORD}"
`;

const USERS_TOML = `
[[users]]
name = "alice"
database = "app"
password = "alice-pw-9x"
server_password = "alice-server-pw-77"
pool_size = 3

[[users]]
name = "bob"
database = "reports"
password = "bob-pw-3k"
pooler_mode = "session"
server_auth = "rds_iam"
server_iam_region = "eu-west-1"
`;

function pool(over: Partial<PoolSnapshot>): PoolSnapshot {
  return {
    user: "alice",
    database: "app",
    mode: "transaction",
    poolSize: 3,
    minPoolSize: 1,
    host: "db1.internal",
    port: 5432,
    serverDatabase: "app",
    serverUser: "alice",
    clActive: 0,
    clWaiting: 0,
    svActive: 0,
    svIdle: 0,
    svConnecting: 0,
    maxWaitMs: 0,
    paused: false,
    totalXact: 0,
    totalQuery: 0,
    totalWaitMs: 0,
    checkouts: 0,
    connectFailures: 0,
    ...over,
  };
}

const T0 = Date.UTC(2026, 0, 2, 3, 4, 5);

function fakeContext(over: Partial<AdminContext> = {}) {
  const config: Config = parseConfig(
    CONFIG_TOML,
    USERS_TOML,
    { config: "/etc/pgwarden.toml", users: "/etc/users.toml" },
    {},
  );
  const pools: PoolSnapshot[] = [
    pool({
      clActive: 2,
      clWaiting: 1,
      svActive: 2,
      svIdle: 1,
      svConnecting: 1,
      maxWaitMs: 2345.6,
      totalXact: 100,
      totalQuery: 250,
      totalWaitMs: 12.5,
      checkouts: 90,
      connectFailures: 1,
    }),
    pool({
      user: "bob",
      database: "reports",
      mode: "session",
      host: "db2.internal",
      port: 5433,
      serverDatabase: "reporting",
      serverUser: "bob",
      svIdle: 2,
      paused: true,
      totalXact: 5,
      totalQuery: 6,
      totalWaitMs: 1,
      checkouts: 5,
    }),
  ];
  const servers: ServerSnapshot[] = [
    {
      user: "alice",
      database: "app",
      state: "active",
      host: "db1.internal",
      port: 5432,
      backendPid: 4242,
      connectTime: T0,
      tls: true,
      serverUser: "app",
      credentialGeneration: 0,
      retireAt: null,
    },
    {
      user: "alice",
      database: "app",
      state: "idle",
      host: "db1.internal",
      port: 5432,
      backendPid: 4243,
      connectTime: T0 + 1000,
      tls: false,
      serverUser: "v-app-1",
      credentialGeneration: 2,
      retireAt: T0 + 60_000,
    },
  ];
  const clients: ClientSnapshot[] = [
    {
      user: "alice",
      database: "app",
      state: "active",
      addr: "10.0.0.5",
      port: 51000,
      connectTime: T0 + 2000,
      pid: 17,
      serverPid: 4242,
      tls: true,
      applicationName: "billing",
    },
    {
      user: "alice",
      database: "app",
      state: "waiting",
      addr: "10.0.0.6",
      port: 51001,
      connectTime: T0 + 3000,
      pid: 18,
      serverPid: 0,
      tls: false,
      applicationName: "",
    },
    {
      user: "bob",
      database: "reports",
      state: "idle",
      addr: "10.0.0.7",
      port: 51002,
      connectTime: T0 + 4000,
      pid: 19,
      serverPid: 0,
      tls: false,
      applicationName: "psql",
    },
  ];
  const credentials: CredentialSnapshot[] = [
    {
      key: "rds_iam(host=db2.internal,port=5433,region=eu-west-1,user=bob)",
      provider: "rds_iam",
      description: { host: "db2.internal", port: 5433, user: "bob", region: "eu-west-1" },
      state: "valid",
      expiresAt: T0 + 900_000,
      refreshAt: T0 + 855_000,
      ageSeconds: 12.7,
      fetches: 3,
      failures: 1,
      consecutiveFailures: 0,
      lastError: "HTTP 500 from provider; access_token=tok-SECRET-42",
      lastFetchMs: 120.4,
      consumers: 1,
      generation: 3,
      user: null,
      retireAt: null,
    },
    {
      key: "azure_workload_identity(client_id=c1,tenant_id=t1)",
      provider: "azure_workload_identity",
      description: { tenant_id: "t1", client_id: "c1", client_secret: "tok-SECRET-42" },
      state: "cold",
      expiresAt: null,
      refreshAt: null,
      ageSeconds: null,
      fetches: 0,
      failures: 0,
      consecutiveFailures: 0,
      lastError: null,
      lastFetchMs: null,
      consumers: 2,
      generation: 0,
      user: null,
      retireAt: null,
    },
  ];
  const ctx = {
    version: "0.1.0",
    pools: () => pools,
    servers: () => servers,
    clients: () => clients,
    credentials: () => credentials,
    config: () => config,
    reload: vi.fn(async () => "reloaded: 1 added, 0 removed, 0 replaced, 0 resized, 2 unchanged"),
    pause: vi.fn(async (_db?: string) => {}),
    resume: vi.fn((_db?: string) => {}),
    reconnect: vi.fn((_db?: string) => {}),
    shutdown: vi.fn(() => {}),
    ...over,
  };
  return ctx;
}

function expectNoSecrets(buffers: Buffer[]): void {
  const all = Buffer.concat(buffers).toString("latin1");
  for (const s of SECRETS) expect(all).not.toContain(s);
  // No column and no SHOW CONFIG key is about a password ("password" as a server_auth value is).
  for (const m of decode(buffers)) {
    if (m.type === "T") for (const f of m.fields) expect(f.name).not.toMatch(/password|secret/i);
    if (m.type === "D") expect(m.values[0] ?? "").not.toMatch(/password|secret/i);
  }
}

const INT4 = 23;
const TEXT = 25;
const NUMERIC = 1700;

// ---- SHOW commands -----------------------------------------------------------------------

describe("SHOW POOLS", () => {
  it("has PgBouncer's columns and one row per pool", async () => {
    const r = await show(fakeContext(), "SHOW POOLS");
    expect(r.columns).toEqual([
      "database",
      "user",
      "cl_active",
      "cl_waiting",
      "cl_active_cancel_req",
      "cl_waiting_cancel_req",
      "sv_active",
      "sv_active_cancel",
      "sv_being_canceled",
      "sv_idle",
      "sv_used",
      "sv_tested",
      "sv_login",
      "maxwait",
      "maxwait_us",
      "pool_mode",
      "load_balance_hosts",
    ]);
    expect(r.types[0]).toBe(TEXT);
    expect(r.types[2]).toBe(INT4);
    expect(r.rows).toHaveLength(2);
    expect(r.rows[0]).toMatchObject({
      database: "app",
      user: "alice",
      cl_active: "2",
      cl_waiting: "1",
      sv_active: "2",
      sv_idle: "1",
      sv_login: "1",
      sv_used: "0",
      maxwait: "2",
      maxwait_us: "345600",
      pool_mode: "transaction",
      load_balance_hosts: null,
    });
    expect(r.rows[1]).toMatchObject({ database: "reports", user: "bob", pool_mode: "session" });
  });
});

const SOCKET_COLUMNS = [
  "type",
  "user",
  "database",
  "replication",
  "state",
  "addr",
  "port",
  "local_addr",
  "local_port",
  "connect_time",
  "request_time",
  "wait",
  "wait_us",
  "close_needed",
  "ptr",
  "link",
  "remote_pid",
  "tls",
  "application_name",
  "prepared_statements",
  "id",
];

describe("SHOW CLIENTS", () => {
  it("lists every client with PgBouncer's socket columns", async () => {
    const r = await show(fakeContext(), "show clients");
    expect(r.columns).toEqual(SOCKET_COLUMNS);
    expect(r.rows.map((x) => x.state)).toEqual(["active", "waiting", "idle"]);
    expect(r.rows[0]).toMatchObject({
      type: "C",
      user: "alice",
      database: "app",
      replication: "none",
      addr: "10.0.0.5",
      port: "51000",
      connect_time: new Date(T0 + 2000).toISOString(),
      ptr: "c17",
      link: "s4242",
      remote_pid: "0",
      tls: "TLS",
      application_name: "billing",
      id: "17",
    });
    expect(r.rows[1]).toMatchObject({ link: "", tls: "" });
  });
});

describe("SHOW SERVERS", () => {
  it("lists every server, linked to the client holding it", async () => {
    const r = await show(fakeContext(), "SHOW SERVERS");
    expect(r.columns).toEqual([...SOCKET_COLUMNS, "server_user", "credential", "retire_at"]);
    expect(r.rows).toHaveLength(2);
    expect(r.rows[0]).toMatchObject({
      type: "S",
      user: "alice",
      database: "app",
      state: "active",
      addr: "db1.internal",
      port: "5432",
      connect_time: new Date(T0).toISOString(),
      ptr: "s4242",
      link: "c17",
      remote_pid: "4242",
      tls: "TLS",
      application_name: "billing",
    });
    expect(r.rows[0]).toMatchObject({ server_user: "app", credential: "0", retire_at: null });
    expect(r.rows[1]).toMatchObject({ state: "idle", link: "", application_name: "", tls: "" });
    // a Vault dynamic login: its own role, the credential's generation, when it will be closed
    expect(r.rows[1]).toMatchObject({
      server_user: "v-app-1",
      credential: "2",
      retire_at: new Date(T0 + 60_000).toISOString(),
    });
  });
});

describe("SHOW STATS", () => {
  it("sums the pools of each database", async () => {
    const r = await show(fakeContext(), "SHOW STATS");
    expect(r.columns.slice(0, 13)).toEqual([
      "database",
      "total_server_assignment_count",
      "total_xact_count",
      "total_query_count",
      "total_received",
      "total_sent",
      "total_xact_time",
      "total_query_time",
      "total_wait_time",
      "total_client_parse_count",
      "total_server_parse_count",
      "total_bind_count",
      "total_client_login_count",
    ]);
    expect(r.columns).toContain("avg_xact_count");
    expect(r.types[1]).toBe(NUMERIC);
    expect(r.rows).toEqual([
      expect.objectContaining({
        database: "app",
        total_server_assignment_count: "90",
        total_xact_count: "100",
        total_query_count: "250",
        total_wait_time: "12500",
        total_received: "0",
        total_server_connect_failures: "1",
      }),
      expect.objectContaining({ database: "reports", total_xact_count: "5" }),
    ]);
  });

  it("adds up pools of the same database", async () => {
    const base = fakeContext();
    const ctx = fakeContext({
      pools: () => [...base.pools(), pool({ user: "carol", totalXact: 11, totalWaitMs: 0.5 })],
    });
    const r = await show(ctx, "SHOW STATS");
    expect(r.rows[0]).toMatchObject({ database: "app", total_xact_count: "111" });
    expect(r.rows[0]?.total_wait_time).toBe("13000");
  });
});

describe("SHOW DATABASES", () => {
  it("lists the configured databases", async () => {
    const r = await show(fakeContext(), "SHOW DATABASES");
    expect(r.columns).toEqual([
      "name",
      "host",
      "port",
      "database",
      "force_user",
      "pool_size",
      "min_pool_size",
      "reserve_pool_size",
      "server_lifetime",
      "pool_mode",
      "load_balance_hosts",
      "max_connections",
      "current_connections",
      "max_client_connections",
      "current_client_connections",
      "paused",
      "disabled",
    ]);
    expect(r.rows).toEqual([
      expect.objectContaining({
        name: "app",
        host: "db1.internal",
        port: "5432",
        database: "app",
        force_user: null,
        pool_size: "7",
        min_pool_size: "1",
        server_lifetime: "86400",
        current_connections: "4",
        current_client_connections: "2",
        paused: "0",
        disabled: "0",
      }),
      expect.objectContaining({
        name: "reports",
        port: "5433",
        database: "reporting",
        current_connections: "2",
        current_client_connections: "1",
        paused: "1",
      }),
    ]);
  });
});

describe("SHOW USERS", () => {
  it("lists one row per [[users]] entry, without passwords", async () => {
    const ctx = fakeContext();
    const raw = await executeAdmin(ctx, "SHOW USERS");
    const [r] = results(decode(raw)) as ResultSet[];
    expect(r?.columns).toEqual([
      "name",
      "pool_size",
      "reserve_pool_size",
      "pool_mode",
      "max_user_connections",
      "current_connections",
      "max_user_client_connections",
      "current_client_connections",
      "database",
      "server_user",
      "server_auth",
    ]);
    expect(r?.rows).toEqual([
      expect.objectContaining({
        name: "alice",
        pool_size: "3",
        pool_mode: "transaction",
        current_connections: "4",
        current_client_connections: "2",
        database: "app",
        server_user: "alice",
        server_auth: "password",
      }),
      expect.objectContaining({
        name: "bob",
        pool_size: "7",
        pool_mode: "session",
        database: "reports",
        server_auth: "rds_iam",
      }),
    ]);
    expectNoSecrets(raw);
  });
});

describe("SHOW CONFIG", () => {
  it("shows every general key and the admin keys, but no password", async () => {
    const raw = await executeAdmin(fakeContext(), "SHOW CONFIG");
    const [r] = results(decode(raw)) as ResultSet[];
    expect(r?.columns).toEqual(["key", "value", "default", "changeable"]);
    const byKey = new Map(r?.rows.map((x) => [x.key, x]));
    expect(byKey.get("port")).toEqual({
      key: "port",
      value: "6543",
      default: "6432",
      changeable: "no",
    });
    expect(byKey.get("default_pool_size")).toMatchObject({
      value: "7",
      default: "10",
      changeable: "yes",
    });
    expect(byKey.get("tls_certificate")).toMatchObject({ value: "", default: "" });
    expect(byKey.get("token_refresh_buffer")).toMatchObject({ value: "45000" });
    expect(byKey.get("admin.user")).toMatchObject({ value: "ops", default: "admin" });
    expect(byKey.has("admin.password")).toBe(false);
    expectNoSecrets(raw);
  });
});

describe("SHOW VERSION", () => {
  it("names pgwarden and its version", async () => {
    const r = await show(fakeContext(), "SHOW VERSION");
    expect(r.columns).toEqual(["version"]);
    expect(r.rows).toEqual([{ version: "pgwarden 0.1.0" }]);
  });
});

describe("SHOW CREDENTIALS", () => {
  it("shows one row per credential key and never a secret", async () => {
    const raw = await executeAdmin(fakeContext(), "SHOW CREDENTIALS");
    const [r] = results(decode(raw)) as ResultSet[];
    expect(r?.columns).toEqual([
      "provider",
      "host",
      "port",
      "user",
      "identity",
      "state",
      "expires_at",
      "refresh_at",
      "age",
      "fetches",
      "failures",
      "last_error",
      "consumers",
      "consecutive_failures",
      "last_fetch_ms",
      "generation",
      "credential_user",
      "retire_at",
    ]);
    expect(r?.rows[0]).toEqual({
      provider: "rds_iam",
      host: "db2.internal",
      port: "5433",
      user: "bob",
      identity: "region=eu-west-1",
      state: "valid",
      expires_at: "2026-01-02T03:19:05.000Z",
      refresh_at: "2026-01-02T03:18:20.000Z",
      age: "12",
      fetches: "3",
      failures: "1",
      last_error: expect.stringContaining("HTTP 500 from provider"),
      consumers: "1",
      consecutive_failures: "0",
      last_fetch_ms: "120",
      generation: "3",
      credential_user: null,
      retire_at: null,
    });
    expect(r?.rows[1]).toMatchObject({
      provider: "azure_workload_identity",
      host: "",
      port: null, // an Entra ID identity has no port
      user: "",
      identity: "client_id=c1 tenant_id=t1",
      state: "cold",
      expires_at: null,
      refresh_at: null,
      age: null,
      last_error: null,
      consumers: "2",
    });
    expectNoSecrets(raw);
  });
});

// ---- commands ----------------------------------------------------------------------------

describe("commands", () => {
  it("RELOAD reports what changed in a NOTICE", async () => {
    const ctx = fakeContext();
    const msgs = await run(ctx, "reload;");
    expect(ctx.reload).toHaveBeenCalledOnce();
    expect(msgs).toEqual([
      {
        type: "N",
        fields: expect.objectContaining({ S: "NOTICE", M: expect.stringContaining("1 added") }),
      },
      { type: "C", tag: "RELOAD" },
    ]);
  });

  it("a failed RELOAD is F0000 with a sanitized reason", async () => {
    const ctx = fakeContext({
      reload: async () => {
        throw new Error("/etc/users.toml: bad key; password=tok-SECRET-42");
      },
    });
    const raw = await executeAdmin(ctx, "RELOAD");
    const err = errorOf(decode(raw));
    expect(err.C).toBe("F0000");
    expect(err.D).toContain("/etc/users.toml");
    for (const s of SECRETS) expect(Buffer.concat(raw).toString()).not.toContain(s);
  });

  it("PAUSE / RESUME / RECONNECT act on all databases or on one", async () => {
    const ctx = fakeContext();
    expect(await run(ctx, "PAUSE")).toEqual([{ type: "C", tag: "PAUSE" }]);
    expect(ctx.pause).toHaveBeenLastCalledWith(undefined);
    expect(await run(ctx, "pause app")).toEqual([{ type: "C", tag: "PAUSE" }]);
    expect(ctx.pause).toHaveBeenLastCalledWith("app");
    expect(await run(ctx, "RESUME reports;")).toEqual([{ type: "C", tag: "RESUME" }]);
    expect(ctx.resume).toHaveBeenLastCalledWith("reports");
    expect(await run(ctx, "Resume")).toEqual([{ type: "C", tag: "RESUME" }]);
    expect(ctx.resume).toHaveBeenLastCalledWith(undefined);
    expect(await run(ctx, "RECONNECT app")).toEqual([{ type: "C", tag: "RECONNECT" }]);
    expect(ctx.reconnect).toHaveBeenLastCalledWith("app");
    expect(await run(ctx, "reconnect")).toEqual([{ type: "C", tag: "RECONNECT" }]);
    expect(ctx.reconnect).toHaveBeenLastCalledWith(undefined);
  });

  it("an unknown database is 3D000 and nothing is done", async () => {
    const ctx = fakeContext();
    for (const cmd of ["PAUSE", "RESUME", "RECONNECT"]) {
      const err = errorOf(await run(ctx, `${cmd} nosuch`));
      expect(err.C).toBe("3D000");
      expect(err.M).toBe("no such database: nosuch");
    }
    // Names keep their case, as config names are compared as written.
    expect(errorOf(await run(ctx, "PAUSE APP")).C).toBe("3D000");
    expect(ctx.pause).not.toHaveBeenCalled();
    expect(ctx.resume).not.toHaveBeenCalled();
    expect(ctx.reconnect).not.toHaveBeenCalled();
  });

  it("takes quoted database names", async () => {
    const base = fakeContext();
    const config = base.config();
    const ctx = fakeContext({
      config: () => ({
        ...config,
        databases: [...config.databases, { ...config.databases[0]!, name: 'My-"Db"' }],
      }),
    });
    expect(await run(ctx, 'PAUSE "My-""Db"""')).toEqual([{ type: "C", tag: "PAUSE" }]);
    expect(ctx.pause).toHaveBeenLastCalledWith('My-"Db"');
  });

  it("SHUTDOWN starts the shutdown and answers", async () => {
    const ctx = fakeContext();
    expect(await run(ctx, "shutdown")).toEqual([{ type: "C", tag: "SHUTDOWN" }]);
    expect(ctx.shutdown).toHaveBeenCalledOnce();
  });

  it("a PgError from the context passes through as an ERROR", async () => {
    const ctx = fakeContext({
      pause: async () => {
        throw new PgError("FATAL", "55000", "already paused");
      },
    });
    const err = errorOf(await run(ctx, "PAUSE"));
    expect(err).toMatchObject({ S: "ERROR", C: "55000", M: "already paused" });
  });

  it("any other failure is XX000 with a sanitized detail", async () => {
    const ctx = fakeContext({
      credentials: () => {
        throw new Error("boom token=tok-SECRET-42");
      },
    });
    const raw = await executeAdmin(ctx, "SHOW CREDENTIALS");
    expect(errorOf(decode(raw)).C).toBe("XX000");
    expect(Buffer.concat(raw).toString()).not.toContain("tok-SECRET-42");
  });
});

// ---- parsing -----------------------------------------------------------------------------

describe("parsing", () => {
  it("an empty query gives EmptyQueryResponse", async () => {
    for (const q of ["", "   ", ";", " ; ;", "-- just a comment"]) {
      expect(await run(fakeContext(), q)).toEqual([{ type: "I" }]);
    }
  });

  it("is case-insensitive, takes a trailing semicolon, comments and quoted words", async () => {
    for (const q of [
      "show version",
      "SHOW VERSION;",
      "  Show\n\tVersion ;  ",
      "/* a /* nested */ comment */ show version -- trailing",
      'SHOW "version"',
    ]) {
      expect((await show(fakeContext(), q)).columns).toEqual(["version"]);
    }
  });

  it("runs several statements in order", async () => {
    const ctx = fakeContext();
    const r = results(await run(ctx, "show version; show pools; pause app"));
    expect(r).toHaveLength(3);
    expect((r[0] as ResultSet).columns).toEqual(["version"]);
    expect((r[1] as ResultSet).columns[0]).toBe("database");
    expect(r[2]).toEqual({ type: "C", tag: "PAUSE" });
  });

  it("stops at the first error, as PostgreSQL does", async () => {
    const ctx = fakeContext();
    const msgs = await run(ctx, "show version; bogus; shutdown");
    const r = results(msgs);
    expect(r).toHaveLength(2);
    expect((r[0] as ResultSet).columns).toEqual(["version"]);
    expect(errorOf(msgs).C).toBe("42601");
    expect(ctx.shutdown).not.toHaveBeenCalled();
  });

  it("a ';' inside quotes does not split", async () => {
    const ctx = fakeContext();
    const err = errorOf(await run(ctx, 'pause "a;b"'));
    expect(err).toMatchObject({ C: "3D000", M: "no such database: a;b" });
  });

  it("unknown commands are 42601 and list the valid ones", async () => {
    for (const q of [
      "bogus",
      "SHOW",
      "SHOW nothing",
      "SHOW POOLS extra",
      "RELOAD now",
      "SHUTDOWN WAIT_FOR_CLIENTS",
      "PAUSE a b",
      "select 1",
      "show constructor",
      "SHOW 'pools'",
      'SHOW "pools',
    ]) {
      const err = errorOf(await run(fakeContext(), q));
      expect(err.C, q).toBe("42601");
      expect(err.M).toContain("invalid command");
      expect(err.M).toContain(
        "SHOW POOLS|CLIENTS|SERVERS|STATS|DATABASES|USERS|CONFIG|VERSION|CREDENTIALS",
      );
      expect(err.M).toContain("RELOAD, PAUSE [db], RESUME [db], RECONNECT [db], SHUTDOWN");
    }
  });

  it("SET of a driver's session parameter is ignored, as PgBouncer does", async () => {
    for (const q of ["SET client_encoding = 'UTF8'", "set DateStyle to ISO;"]) {
      expect(await run(fakeContext(), q)).toEqual([
        { type: "N", fields: expect.objectContaining({ S: "NOTICE", M: "SET ignored" }) },
        { type: "C", tag: "SET" },
      ]);
    }
  });

  it("SET of anything else is 0A000", async () => {
    const err = errorOf(await run(fakeContext(), "SET default_pool_size = 5"));
    expect(err.C).toBe("0A000");
    expect(err.H).toContain("RELOAD");
    expect(errorOf(await run(fakeContext(), "SET x")).C).toBe("42601");
  });

  it("SHOW of a driver's session parameter answers PgBouncer's fixed value", async () => {
    const r = await show(fakeContext(), "SHOW client_encoding");
    expect(r.columns).toEqual(["client_encoding"]);
    expect(r.rows).toEqual([{ client_encoding: "UTF-8" }]);
  });
});
