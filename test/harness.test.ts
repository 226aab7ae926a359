// The PostgreSQL harness itself: a private cluster, roles, databases, backends, clean stop.
import { existsSync } from "node:fs";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { type PgCluster, startPostgres } from "./harness/postgres.js";

let cluster: PgCluster | undefined;

afterAll(async () => {
  await cluster?.stop();
});

describe("startPostgres", () => {
  it("starts a cluster, makes roles and databases, lists backends, and stops without a trace", async () => {
    const c = await startPostgres({ settings: { work_mem: "8MB" } });
    cluster = c;
    expect(c.host).toBe("127.0.0.1");
    expect(existsSync(c.dataDir)).toBe(true);
    const [settings] = await c.query(
      "select current_setting('fsync') as fsync, current_setting('max_connections') as maxc, current_setting('work_mem') as wm",
    );
    expect(settings).toEqual({ fsync: "off", maxc: "300", wm: "8MB" });

    await c.createRole("alice", "alice-pw");
    await c.createRole("bob", "bob-pw", { method: "md5" });
    await c.createDatabase("alicedb", "alice");
    const roles = await c.query(
      "select rolname, left(rolpassword, 3) as p from pg_authid where rolname in ('alice', 'bob') order by 1",
    );
    expect(roles).toEqual([
      { rolname: "alice", p: "SCR" },
      { rolname: "bob", p: "md5" },
    ]);

    // TCP logins with passwords: SCRAM for alice, MD5 for bob, the superuser's password too
    const alice = new pg.Client({
      host: c.host,
      port: c.port,
      user: "alice",
      password: "alice-pw",
      database: "alicedb",
    });
    await alice.connect();
    const r = await alice.query(
      "select current_user as u, current_database() as d, pg_backend_pid() as pid",
    );
    expect(r.rows[0]).toMatchObject({ u: "alice", d: "alicedb" });
    const bob = new pg.Client({
      host: c.host,
      port: c.port,
      user: "bob",
      password: "bob-pw",
      database: "postgres",
    });
    await bob.connect();
    const su = new pg.Client({
      host: c.host,
      port: c.port,
      user: c.superuser,
      password: c.superuserPassword,
      database: "postgres",
    });
    await su.connect();
    await su.end();
    await expect(
      new pg.Client({
        host: c.host,
        port: c.port,
        user: "alice",
        password: "wrong",
        database: "alicedb",
      }).connect(),
    ).rejects.toThrow(/password authentication failed/);

    expect(await c.backendPids("alice")).toEqual([r.rows[0].pid]);
    expect((await c.backendPids()).length).toBe(2);
    await alice.end();
    await bob.end();

    await c.stop();
    expect(existsSync(c.dataDir)).toBe(false);
    await c.stop(); // idempotent
  });

  it("runs two clusters side by side on different ports", async () => {
    const [a, b] = await Promise.all([startPostgres(), startPostgres()]);
    try {
      expect(a.port).not.toBe(b.port);
      expect((await a.query("select 1 as one"))[0].one).toBe(1);
      expect((await b.query("select 2 as two"))[0].two).toBe(2);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
    expect(existsSync(a.dataDir) || existsSync(b.dataDir)).toBe(false);
  });
  it("restarts a cluster on the same port like pg_ctl restart -m fast, keeping its data", async () => {
    const c = await startPostgres();
    try {
      await c.createRole("rs", "rs-pw");
      const client = new pg.Client({
        host: c.host,
        port: c.port,
        user: "rs",
        password: "rs-pw",
        database: "postgres",
      });
      const errors: Error[] = [];
      client.on("error", (e) => errors.push(e));
      await client.connect();
      const before = (await c.query("select pg_postmaster_start_time() as t"))[0].t;
      await c.restart({ downMs: 200 });
      // the old session was terminated by the fast shutdown
      await expect(client.query("select 1")).rejects.toThrow();
      const after = (await c.query("select pg_postmaster_start_time() as t"))[0].t;
      expect(after.getTime()).toBeGreaterThan(before.getTime());
      const again = new pg.Client({
        host: c.host,
        port: c.port,
        user: "rs",
        password: "rs-pw",
        database: "postgres",
      });
      await again.connect();
      expect((await again.query("select 1 as one")).rows[0].one).toBe(1);
      await again.end();
    } finally {
      await c.stop();
    }
  });
});
