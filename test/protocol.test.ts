// The PostgreSQL protocol through the pooler: simple and extended query, pipelining, prepared
// statements, COPY, notices, LISTEN/NOTIFY, errors in transactions, huge rows, empty queries,
// and client startup parameters applied on whichever server a client lands on.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runPgbench, runPsql } from "./harness/clients.js";
import { type Pgwarden, startPgwarden } from "./harness/pgwarden.js";
import { type PgCluster, startPostgres } from "./harness/postgres.js";
import { connect, sleep } from "./helpers.js";

let cluster: PgCluster;
let pw: Pgwarden;

beforeAll(async () => {
  cluster = await startPostgres();
  await cluster.createRole("proto", "proto-pw");
  await cluster.createDatabase("protodb", "proto");
  pw = await startPgwarden({
    databases: [
      { name: "protodb", host: cluster.host, port: cluster.port },
      // Same server database, pooled by session: named statements and LISTEN live here.
      { name: "protosess", host: cluster.host, port: cluster.port, database_name: "protodb" },
    ],
    users: [
      {
        name: "proto",
        database: "protodb",
        password: "pw",
        server_password: "proto-pw",
        pool_size: 2,
        pooler_mode: "transaction",
      },
      {
        name: "proto",
        database: "protosess",
        password: "pw",
        server_password: "proto-pw",
        pool_size: 2,
        pooler_mode: "session",
      },
    ],
  });
});

afterAll(async () => {
  await pw?.stop();
  await cluster?.stop();
});

const txn = () => connect(pw, "proto", "pw", "protodb");
const sess = () => connect(pw, "proto", "pw", "protosess");
const psqlEnv = () => ({
  PGPASSWORD: "pw",
  PGHOST: pw.host,
  PGPORT: String(pw.port),
  PGUSER: "proto",
});

describe("simple query", () => {
  it("runs multi-statement queries and returns every result", async () => {
    const c = await txn();
    const res = (await c.query(
      "select 1 as a; select 'two' as b; create temp table if not exists x(i int)",
    )) as unknown as Array<{ rows: unknown[] }>;
    expect(res.map((r) => r.rows)).toEqual([[{ a: 1 }], [{ b: "two" }], []]);
    await c.end();
  });

  it("answers an empty query with EmptyQueryResponse", async () => {
    const r = await runPsql(["-X", "-d", "protodb", "-c", ""], { env: psqlEnv() });
    expect(r.code).toBe(0);
    const c = await txn();
    const res = await c.query("");
    expect(res.rows).toEqual([]);
    await c.end();
  });

  it("passes NoticeResponse through", async () => {
    const c = await txn();
    const notices: string[] = [];
    c.on("notice", (n) => notices.push(n.message ?? ""));
    await c.query("do $$ begin raise notice 'hello from the server'; end $$");
    expect(notices).toEqual(["hello from the server"]);
    await c.end();
  });

  it("reports errors inside a transaction and recovers after rollback", async () => {
    const c = await txn();
    await c.query("begin");
    const e1 = await c.query("select 1/0").catch((e) => e);
    expect(e1.code).toBe("22012");
    const e2 = await c.query("select 1").catch((e) => e);
    expect(e2.code).toBe("25P02");
    await c.query("rollback");
    expect((await c.query("select 3 as x")).rows[0].x).toBe(3);
    await c.end();
  });

  it("carries rows of 16 MB and more", async () => {
    const c = await txn();
    const size = 16 * 1024 * 1024 + 123;
    const r = await c.query(
      "select repeat('x', $1::int) as big, md5(repeat('x', $1::int)) as sum",
      [size],
    );
    expect(r.rows[0].big.length).toBe(size);
    await c.end();
  });
});

describe("extended protocol", () => {
  it("runs unnamed statements with parameters in transaction mode", async () => {
    const clients = await Promise.all([txn(), txn(), txn()]);
    for (let i = 0; i < 20; i++) {
      const rs = await Promise.all(
        clients.map((c, j) => c.query("select $1::int + $2::int as s", [i, j])),
      );
      for (const [j, r] of rs.entries()) expect(r.rows[0].s).toBe(i + j);
    }
    await Promise.all(clients.map((c) => c.end()));
  });

  it("keeps named prepared statements in session mode", async () => {
    const c = await sess();
    for (let i = 0; i < 5; i++) {
      const r = await c.query({
        name: "named_stmt",
        text: "select $1::text || '!' as v",
        values: [`v${i}`],
      });
      expect(r.rows[0].v).toBe(`v${i}!`);
    }
    const r = await c.query(
      "select count(*)::int as n from pg_prepared_statements where name = 'named_stmt'",
    );
    expect(r.rows[0].n).toBe(1);
    await c.end();
  });

  it("handles several Syncs pipelined (pgbench pipeline mode)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pgwarden-pipeline-"));
    const script = join(dir, "pipeline.sql");
    writeFileSync(script, "\\startpipeline\nselect 1;\nselect 2;\nselect 3;\n\\endpipeline\n");
    const r = await runPgbench(
      ["-n", "-M", "extended", "-c", "4", "-j", "2", "-t", "50", "-f", script, "protodb"],
      { env: psqlEnv() },
    );
    rmSync(dir, { recursive: true, force: true });
    expect(r.stderr + r.stdout).toMatch(/number of failed transactions: 0/);
    expect(r.code).toBe(0);
  });
});

describe("COPY", () => {
  it("COPY FROM STDIN and COPY TO STDOUT through psql", async () => {
    const rows = Array.from({ length: 5000 }, (_, i) => `${i}\trow ${i}`).join("\n");
    const setup = await runPsql(
      [
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        "protosess",
        "-c",
        "drop table if exists copy_t; create table copy_t (id int, label text)",
      ],
      { env: psqlEnv() },
    );
    expect(setup.code).toBe(0);
    const load = await runPsql(
      ["-X", "-v", "ON_ERROR_STOP=1", "-d", "protodb", "-c", "\\copy copy_t from stdin"],
      { env: psqlEnv(), input: `${rows}\n\\.\n` },
    );
    expect(load.stderr).toBe("");
    expect(load.code).toBe(0);
    const out = await runPsql(
      [
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        "protodb",
        "-c",
        "\\copy (select * from copy_t order by id) to stdout",
      ],
      { env: psqlEnv() },
    );
    expect(out.code).toBe(0);
    expect(out.stdout.trimEnd()).toBe(rows);
  });

  it("a failed COPY leaves the connection usable", async () => {
    const r = await runPsql(
      ["-X", "-d", "protodb", "-c", "\\copy copy_t from stdin", "-c", "select 'after' as s"],
      {
        env: psqlEnv(),
        input: "not-a-number\tx\n\\.\n",
      },
    );
    expect(r.stderr).toContain("invalid input syntax for type integer");
    expect(r.stdout).toContain("after");
  });
});

describe("LISTEN/NOTIFY in session mode", () => {
  it("delivers notifications to the listening client", async () => {
    const listener = await sess();
    const got: string[] = [];
    listener.on("notification", (n) => got.push(n.payload ?? ""));
    await listener.query("listen pgw_chan");
    const sender = await txn();
    await sender.query("notify pgw_chan, 'ping'");
    for (let i = 0; i < 50 && got.length === 0; i++) await sleep(50);
    expect(got).toEqual(["ping"]);
    await listener.end();
    await sender.end();
  });
});

describe("startup parameters follow the client", () => {
  it("application_name, TimeZone, DateStyle and -c options apply on a shared server", async () => {
    // Two clients with different settings share a pool of 2 in transaction mode; each always
    // sees its own settings, whichever server it gets.
    const a = await connect(pw, "proto", "pw", "protodb", {
      application_name: "client-a",
      options: "-c TimeZone=Asia/Tokyo -c search_path=a_schema,public -c DateStyle=German",
    });
    const b = await connect(pw, "proto", "pw", "protodb", {
      application_name: "client-b",
      options: "-c TimeZone=UTC",
    });
    const q =
      "select current_setting('application_name') as app, current_setting('TimeZone') as tz, current_setting('search_path') as sp, current_setting('DateStyle') as ds";
    for (let i = 0; i < 10; i++) {
      const [ra, rb] = await Promise.all([a.query(q), b.query(q)]);
      expect(ra.rows[0]).toEqual({
        app: "client-a",
        tz: "Asia/Tokyo",
        sp: "a_schema,public",
        ds: "German, DMY",
      });
      expect(rb.rows[0].app).toBe("client-b");
      expect(rb.rows[0].tz).toBe("UTC");
      expect(rb.rows[0].sp).toBe('"$user", public');
    }
    // A SET of a reported setting follows the client too.
    await b.query("set TimeZone = 'Europe/Paris'");
    for (let i = 0; i < 5; i++) {
      const [ra, rb] = await Promise.all([a.query(q), b.query(q)]);
      expect(ra.rows[0].tz).toBe("Asia/Tokyo");
      expect(rb.rows[0].tz).toBe("Europe/Paris");
    }
    await a.end();
    await b.end();
  });

  it("an invalid startup setting gets the server's error at login", async () => {
    const err = await connect(pw, "proto", "pw", "protodb", {
      options: "-c TimeZone=Not/AZone",
    }).catch((e) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err.code).toBe("22023");
    const ok = await txn();
    expect((await ok.query("select 1 as x")).rows[0].x).toBe(1);
    await ok.end();
  });
});
