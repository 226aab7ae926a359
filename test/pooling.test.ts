// Pooling through real clients against a real PostgreSQL: sizes, timeouts, FIFO waiters,
// transaction and session pooling, dirty disconnects, server deaths.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Pgwarden, startPgwarden } from "./harness/pgwarden.js";
import { type PgCluster, startPostgres } from "./harness/postgres.js";
import { queryMessage, RawClient, rawMessage } from "./harness/raw-client.js";
import { connect, eventually, loginError, sleep } from "./helpers.js";

let cluster: PgCluster;
const started: Pgwarden[] = [];

beforeAll(async () => {
  cluster = await startPostgres();
  for (const role of ["txn", "sess", "small", "life"]) await cluster.createRole(role, `${role}-pw`);
  await cluster.createDatabase("pooldb");
  await cluster.query("grant all on database pooldb to public");
});

afterAll(async () => {
  for (const p of started) await p.stop();
  await cluster?.stop();
});

async function pooler(
  users: Array<Record<string, unknown>>,
  general: Record<string, unknown> = {},
) {
  const pw = await startPgwarden({
    // Exact pool accounting (a pool of 1 shared between clients, FIFO waiters, min_pool_size
    // servers at start) is per process: with workers each worker has its share of pool_size
    // (docs/workers.md), so these tests pin one process even under PGWARDEN_TEST_WORKERS.
    general: { workers: 1, ...general },
    databases: [{ name: "pooldb", host: cluster.host, port: cluster.port }],
    users: users.map((u) => ({
      database: "pooldb",
      password: "pw",
      server_password: `${u.name}-pw`,
      ...u,
    })),
  });
  started.push(pw);
  return pw;
}

const serverCount = async (user: string) => (await cluster.backendPids(user)).length;

describe("pool sizes", () => {
  it("opens min_pool_size at startup and never exceeds pool_size", async () => {
    const pw = await pooler([{ name: "txn", pool_size: 3, min_pool_size: 2 }]);
    expect(await serverCount("txn")).toBe(2);
    const clients = await Promise.all(
      Array.from({ length: 10 }, () => connect(pw, "txn", "pw", "pooldb")),
    );
    await Promise.all(clients.map((c) => c.query("select pg_sleep(0.2)")));
    expect(await serverCount("txn")).toBe(3);
    await Promise.all(clients.map((c) => c.end()));
    await pw.stop();
    await eventually(async () => (await serverCount("txn")) === 0, "servers closed after stop");
  });

  it("closes idle servers after idle_timeout down to min_pool_size", async () => {
    const pw = await pooler([{ name: "small", pool_size: 4, min_pool_size: 1 }], {
      idle_timeout: 500,
    });
    const clients = await Promise.all(
      Array.from({ length: 4 }, () => connect(pw, "small", "pw", "pooldb")),
    );
    await Promise.all(clients.map((c) => c.query("select pg_sleep(0.3)")));
    expect(await serverCount("small")).toBe(4);
    await eventually(
      async () => (await serverCount("small")) === 1,
      "idle servers closed down to min_pool_size",
    );
    await Promise.all(clients.map((c) => c.end()));
    await pw.stop();
  });

  it("replaces servers older than server_lifetime", async () => {
    const pw = await pooler([{ name: "life", pool_size: 1, min_pool_size: 1 }], {
      server_lifetime: 800,
    });
    const c = await connect(pw, "life", "pw", "pooldb");
    const first = (await c.query("select pg_backend_pid() as p")).rows[0].p;
    await sleep(1500);
    await eventually(
      async () => (await c.query("select pg_backend_pid() as p")).rows[0].p !== first,
      "a new backend",
    );
    await c.end();
    await pw.stop();
  });
});

describe("waiting for a server", () => {
  it("a client that waits past checkout_timeout gets a clear error, others carry on", async () => {
    const pw = await pooler([{ name: "small", pool_size: 1, min_pool_size: 0 }], {
      checkout_timeout: 400,
    });
    const holder = await connect(pw, "small", "pw", "pooldb");
    await holder.query("begin");
    // The login needs no server (the pool knows its server's parameters from the holder's
    // login); the first query waits for one and, with the only one held, times out.
    const waiter = await connect(pw, "small", "pw", "pooldb");
    const err = await waiter.query("select 1").catch((e) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err.code).toBe("53300");
    expect(err.message).toContain("checkout_timeout");
    await holder.query("commit");
    const later = await connect(pw, "small", "pw", "pooldb");
    expect((await later.query("select 1 as x")).rows[0].x).toBe(1);
    await later.end();
    await holder.end();
    await pw.stop();
  });

  it("serves waiters first come, first served", async () => {
    const pw = await pooler([{ name: "small", pool_size: 1, min_pool_size: 1 }], {
      checkout_timeout: 20000,
    });
    const holder = await connect(pw, "small", "pw", "pooldb");
    const others = await Promise.all(
      Array.from({ length: 4 }, () => connect(pw, "small", "pw", "pooldb")),
    );
    await holder.query("begin");
    const order: number[] = [];
    const runs: Array<Promise<unknown>> = [];
    for (let i = 0; i < others.length; i++) {
      runs.push(others[i]!.query("select 1").then(() => order.push(i)));
      await sleep(100); // make the arrival order unambiguous
    }
    await sleep(200);
    expect(order).toEqual([]);
    await holder.query("commit");
    await Promise.all(runs);
    expect(order).toEqual([0, 1, 2, 3]);
    await Promise.all([holder, ...others].map((c) => c.end()));
    await pw.stop();
  });
});

describe("transaction pooling", () => {
  it("shares one server between clients between transactions, never inside one", async () => {
    const pw = await pooler([
      { name: "txn", pool_size: 1, min_pool_size: 1, pooler_mode: "transaction" },
    ]);
    const a = await connect(pw, "txn", "pw", "pooldb");
    const b = await connect(pw, "txn", "pw", "pooldb");
    const pidA = (await a.query("select pg_backend_pid() as p")).rows[0].p;
    const pidB = (await b.query("select pg_backend_pid() as p")).rows[0].p;
    expect(pidA).toBe(pidB);
    await a.query("begin");
    await a.query("create temp table t_inside (x int)");
    const bDone = b.query("select 2 as y");
    let bFinished = false;
    void bDone.then(() => {
      bFinished = true;
    });
    await sleep(300);
    expect(bFinished).toBe(false); // b waits: the only server is inside a's transaction
    await a.query("rollback");
    expect((await bDone).rows[0].y).toBe(2);
    await a.end();
    await b.end();
    await pw.stop();
  });

  it("a client that disconnects inside a transaction never hands the dirty server on", async () => {
    const pw = await pooler([
      { name: "txn", pool_size: 1, min_pool_size: 1, pooler_mode: "transaction" },
    ]);
    const a = await connect(pw, "txn", "pw", "pooldb");
    await a.query("begin");
    const xid = (await a.query("select txid_current() as x")).rows[0].x;
    expect(xid).toBeTruthy();
    // biome-ignore lint/suspicious/noExplicitAny: abrupt close of the socket, as a crashed app would
    (a as any).connection.stream.destroy();
    const b = await connect(pw, "txn", "pw", "pooldb");
    const r = await b.query(
      "select txid_current_if_assigned() as x, current_setting('transaction_isolation') as iso",
    );
    expect(r.rows[0].x).toBeNull();
    const st = await b.query(
      "select count(*)::int as n from pg_stat_activity where usename = 'txn' and state like 'idle in transaction%'",
    );
    expect(st.rows[0].n).toBe(0);
    await b.end();
    await pw.stop();
  });
});

// A client that waits for a server is read on (no two syscalls to pause and resume it per
// wait), but only up to 64 KiB: past that its socket is paused, so a client that floods while
// it waits fills its own kernel buffers, not pgwarden's memory. Both client paths: the plain
// one, and the prepared-statement rewriter's (switched on by a named Parse), which also holds
// messages back behind a reply still to come (a running DEALLOCATE ALL) under the same limit.
describe("a client that floods while it waits", () => {
  it.each([
    ["plain", false],
    ["prepared-statement", true],
  ])("%s path: is paused once it has sent 64 KiB", async (_what, named) => {
    const pw = await pooler([
      { name: "txn", pool_size: 1, min_pool_size: 1, pooler_mode: "transaction" },
    ]);
    const holder = await connect(pw, "txn", "pw", "pooldb");
    await holder.query("begin"); // the only server is held from now on
    const raw = await RawClient.connect(pw);
    await raw.login("txn", "pw", "pooldb");
    const parse = rawMessage("P", Buffer.from("s1\0select 1\0\0\0", "latin1"));
    const bind = rawMessage("B", Buffer.from("\0s1\0\0\0\0\0\0\0", "latin1"));
    const execute = rawMessage("E", Buffer.from("\0\0\0\0\0", "latin1"));
    const sync = rawMessage("S");
    const one = named ? Buffer.concat([bind, execute, sync]) : queryMessage("select 1");
    if (named) raw.send(Buffer.concat([parse, sync]));
    const { offered, taken } = await flood(raw, one);
    // Paused: what left the client is its pause threshold plus the kernel's socket buffers
    // (a few MB on loopback). Read on, all of it would have been taken.
    expect(taken).toBeLessThan(16 * 1024 * 1024);
    expect(offered).toBeLessThan(48 * 1024 * 1024);
    raw.close();
    await holder.query("rollback");
    expect((await holder.query("select 7 as x")).rows[0].x).toBe(7);
    await holder.end();
    await pw.stop();
  });
  it("prepared-statement path: pipelining behind a running DEALLOCATE ALL is paused past 64 KiB, then read on", async () => {
    const pw = await pooler([
      { name: "txn", pool_size: 1, min_pool_size: 1, pooler_mode: "transaction" },
    ]);
    const raw = await RawClient.connect(pw);
    await raw.login("txn", "pw", "pooldb");
    raw.send(
      Buffer.concat([rawMessage("P", "s1\0select length($1::text)\0\0\0"), rawMessage("S")]),
    );
    await raw.until("Z");
    // Named messages after a query that may deallocate everything wait for its completion
    // (held back in pgwarden): 3 s here, well past the flood below even on a loaded machine.
    raw.send(queryMessage("select pg_sleep(3); deallocate all"));
    const param = Buffer.alloc(60_000, 0x61);
    const len = Buffer.alloc(4);
    len.writeInt32BE(param.length);
    const bindBody = Buffer.concat([
      Buffer.from("\0s1\0\0\0\0\x01", "latin1"),
      len,
      param,
      Buffer.from([0, 0]),
    ]);
    const one = Buffer.concat([
      rawMessage("B", bindBody),
      rawMessage("E", Buffer.from("\0\0\0\0\0", "latin1")),
      rawMessage("S"),
    ]);
    const { offered, taken } = await flood(raw, one);
    expect(taken).toBeLessThan(16 * 1024 * 1024);
    expect(offered).toBeLessThan(48 * 1024 * 1024);
    // DEALLOCATE ALL completes, the hold ends, and the client is read again.
    await eventually(
      () => raw.socket.bytesWritten - raw.socket.writableLength > taken,
      "the client is read again after the hold",
    );
    raw.close();
    const c = await connect(pw, "txn", "pw", "pooldb");
    expect((await c.query("select 7 as x")).rows[0].x).toBe(7);
    await c.end();
    await pw.stop();
  });
});

/**
 * Writes `one` over and over (in 64 KiB blocks, up to 48 MB) until the socket takes no more for
 * 300 ms. Returns the bytes offered and the bytes that left the client (taken by the peer).
 */
async function flood(raw: RawClient, one: Buffer): Promise<{ offered: number; taken: number }> {
  const block = Buffer.concat(Array.from({ length: Math.ceil(65536 / one.length) }, () => one));
  let offered = 0;
  while (offered < 48 * 1024 * 1024) {
    offered += block.length;
    if (raw.socket.write(block)) continue;
    const drained = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 300);
      raw.socket.once("drain", () => {
        clearTimeout(t);
        resolve(true);
      });
    });
    if (!drained) break;
  }
  return { offered, taken: raw.socket.bytesWritten - raw.socket.writableLength };
}

describe("session pooling", () => {
  it("binds a server to the client and resets it with DISCARD ALL before reuse", async () => {
    const pw = await pooler(
      [{ name: "sess", pool_size: 1, min_pool_size: 1, pooler_mode: "session" }],
      { checkout_timeout: 300 },
    );
    const a = await connect(pw, "sess", "pw", "pooldb");
    const pidA = (await a.query("select pg_backend_pid() as p")).rows[0].p;
    await a.query("set work_mem = '7MB'");
    await a.query("prepare sess_stmt as select 1");
    await a.query("create temp table sess_tmp (x int)");
    // While a holds the session, another client cannot get a server.
    const blocked = await loginError(pw, "sess", "pw", "pooldb");
    expect(blocked.code).toBe("53300");
    await a.end();
    const b = await connect(pw, "sess", "pw", "pooldb");
    const r = await b.query(
      "select pg_backend_pid() as p, current_setting('work_mem') as wm, (select count(*)::int from pg_prepared_statements) as ps, to_regclass('pg_temp.sess_tmp') as tmp",
    );
    expect(r.rows[0]).toEqual({ p: pidA, wm: "4MB", ps: 0, tmp: null });
    await b.end();
    await pw.stop();
  });
});

describe("server failures", () => {
  it("a server that dies: its client gets an error, the others carry on, the pool refills", async () => {
    const pw = await pooler([
      { name: "sess", pool_size: 3, min_pool_size: 3, pooler_mode: "session" },
    ]);
    const clients = await Promise.all(
      Array.from({ length: 3 }, () => connect(pw, "sess", "pw", "pooldb")),
    );
    const pids = await Promise.all(
      clients.map(async (c) => (await c.query("select pg_backend_pid() as p")).rows[0].p as number),
    );
    const victim = clients[0]!;
    const errored = new Promise<Error>((resolve) => victim.once("error", resolve));
    await cluster.query("select pg_terminate_backend($1)", [pids[0]]);
    const failure = await victim.query("select 1").catch((e) => e);
    expect(failure).toBeInstanceOf(Error);
    await Promise.race([errored, sleep(1000)]);
    for (const c of clients.slice(1))
      expect((await c.query("select 'ok' as s")).rows[0].s).toBe("ok");
    await eventually(
      async () => (await serverCount("sess")) === 3,
      "pool refilled to min_pool_size",
    );
    const fresh = await connect(pw, "sess", "pw", "pooldb");
    expect((await fresh.query("select 1 as x")).rows[0].x).toBe(1);
    await Promise.all([fresh, ...clients.slice(1)].map((c) => c.end()));
    await pw.stop();
  });

  it("an idle server that dies is dropped without any client noticing", async () => {
    const pw = await pooler([{ name: "txn", pool_size: 2, min_pool_size: 2 }]);
    const c = await connect(pw, "txn", "pw", "pooldb");
    await cluster.query(
      "select pg_terminate_backend(pid) from pg_stat_activity where usename = 'txn'",
    );
    await sleep(200);
    expect((await c.query("select 'still fine' as s")).rows[0].s).toBe("still fine");
    await c.end();
    await pw.stop();
  });
});
