// The front door under hostile or unlucky clients: broken headers while waiting for a server,
// oversized messages, connections that never log in, floods past the file-descriptor limit,
// probing for user and database names, and PostgreSQL's manners at the edges of a session.
// Every case runs against a real PostgreSQL through a pgwarden child process, and checks that
// pgwarden is still up and serving the clients that did nothing wrong.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startupMessage } from "../src/protocol/index.js";
import { type Pgwarden, startPgwarden } from "./harness/pgwarden.js";
import { type PgCluster, startPostgres } from "./harness/postgres.js";
import { errorFields, queryMessage, RawClient, rawMessage } from "./harness/raw-client.js";
import { connect, loginError, sleep } from "./helpers.js";

let cluster: PgCluster;
const started: Pgwarden[] = [];

beforeAll(async () => {
  cluster = await startPostgres();
  await cluster.createRole("door", "door-pw");
  await cluster.createDatabase("doordb", "door");
  await cluster.createRole("fresh", "fresh-pw");
});

afterAll(async () => {
  for (const pw of started) await pw.stop().catch(() => {});
  await cluster?.stop();
});

async function pooler(general: Record<string, unknown> = {}, extra: { prefix?: string[] } = {}) {
  const user = (name: string) => ({
    name,
    database: "doordb",
    password: "pw",
    server_password: `${name}-pw`,
    pool_size: 2,
    min_pool_size: 0,
    pooler_mode: "transaction",
  });
  const pw = await startPgwarden({
    general: { checkout_timeout: 5000, ...general },
    databases: [{ name: "doordb", host: cluster.host, port: cluster.port }],
    users: [user("door"), user("fresh")],
    admin: { name: "admin", user: "ops", password: "ops-secret" },
    ...extra,
  });
  started.push(pw);
  return pw;
}

/** A client that keeps querying; collects any error it sees. */
function bystander(pw: Pgwarden) {
  const errors: Error[] = [];
  let stop = false;
  let n = 0;
  const done = (async () => {
    const c = await connect(pw, "door", "pw", "doordb");
    c.on("error", (e) => errors.push(e));
    while (!stop) {
      try {
        await c.query("select 1");
        n++;
      } catch (e) {
        errors.push(e as Error);
      }
      await sleep(20);
    }
    await c.end();
  })();
  return {
    errors,
    count: () => n,
    stop: async () => {
      stop = true;
      await done;
    },
  };
}

async function holdAll(pw: Pgwarden, n: number) {
  const holders = await Promise.all(
    Array.from({ length: n }, () => connect(pw, "door", "pw", "doordb")),
  );
  for (const h of holders) await h.query("begin");
  return holders;
}

const alive = (pw: Pgwarden) => pw.proc.exitCode === null && pw.proc.signalCode === null;

describe("broken messages never take pgwarden down", () => {
  let pw: Pgwarden;
  beforeAll(async () => {
    // One process: holdAll takes every server of the pool (pool_size 2), which with workers = 2
    // (PGWARDEN_TEST_WORKERS) is split 1 + 1 and the holders may land on the same worker.
    pw = await pooler({ workers: 1 });
  });

  for (const [what, length] of [
    ["a length >= 0x80000000", 0x8000_0000],
    ["a length below 4", 3],
  ] as const) {
    it(`${what} sent while waiting for a server: 08P01 for that client alone`, async () => {
      const holders = await holdAll(pw, 2);
      const raw = await RawClient.connect(pw);
      await raw.login("door", "pw", "doordb"); // no server needed: the pool knows its parameters
      raw.send(Buffer.concat([queryMessage("select 1"), rawMessage("Q", "", length)]));
      await sleep(200); // it is waiting for a server now
      for (const h of holders) await h.query("commit");
      expect(await raw.waitClosed(5000)).toBe(true);
      const errs = raw.errors();
      expect(errs).toHaveLength(1);
      expect(errs[0]!.S).toBe("FATAL");
      expect(errs[0]!.C).toBe("08P01");
      // the broken header was never forwarded: the query before it got no server
      expect(raw.received.some((m) => m.type === "T")).toBe(false);
      expect(alive(pw)).toBe(true);
      for (const h of holders) expect((await h.query("select 2 as x")).rows[0].x).toBe(2);
      for (const h of holders) await h.end();
    });
  }

  it("the same bytes on a leased server: 08P01, and the pool keeps serving", async () => {
    const by = bystander(pw);
    const raw = await RawClient.connect(pw);
    await raw.login("door", "pw", "doordb");
    raw.send(Buffer.concat([queryMessage("select 1"), rawMessage("Q", "", 0xffff_ffff)]));
    expect(await raw.waitClosed(5000)).toBe(true);
    expect(raw.errors().map((e) => e.C)).toEqual(["08P01"]);
    await sleep(200);
    await by.stop();
    expect(by.errors).toEqual([]);
    expect(by.count()).toBeGreaterThan(0);
  });

  it("a Terminate whose header is split across writes: the server that got its first byte is not reused", async () => {
    const raw = await RawClient.connect(pw);
    await raw.login("door", "pw", "doordb");
    raw.send("X"); // leases a server and sends it this byte
    await sleep(100);
    raw.send(Buffer.from([0, 0, 0, 4]));
    expect(await raw.waitClosed(5000)).toBe(true);
    expect(raw.errors()).toEqual([]);
    // the next client gets the most recently released server, if it was released
    const c = await connect(pw, "door", "pw", "doordb", { query_timeout: 3000 });
    for (let i = 0; i < 4; i++) expect((await c.query("select 1 as x")).rows[0].x).toBe(1);
    await c.end();
  });

  it("refuses message types that are not frontend messages, like PostgreSQL", async () => {
    const raw = await RawClient.connect(pw);
    await raw.login("door", "pw", "doordb");
    raw.send(rawMessage("p", "secret\0"));
    expect(await raw.waitClosed(5000)).toBe(true);
    const [e] = raw.errors();
    expect(e?.C).toBe("08P01");
    expect(e?.M).toContain("invalid frontend message type");
  });
});

describe("largest message", () => {
  it("a header above max_message_size is refused before any of it reaches a server", async () => {
    const pw = await pooler({ max_message_size: 65536 });
    const raw = await RawClient.connect(pw);
    await raw.login("door", "pw", "doordb");
    // PostgreSQL's own limit would take this 1 GiB header and wait for the body; 64 KiB here.
    raw.send(rawMessage("Q", "select 1", 1 << 30));
    expect(await raw.waitClosed(5000)).toBe(true);
    const [e] = raw.errors();
    expect(e?.C).toBe("08P01");
    expect(e?.M).toContain("invalid message length");
    // a query of 60 KiB is still fine
    const c = await connect(pw, "door", "pw", "doordb");
    const big = `select '${"x".repeat(60_000)}' as v`;
    expect((await c.query(big)).rows[0].v).toHaveLength(60_000);
    await c.end();
  });

  it("the default is PostgreSQL's: a 1 GiB Query header is refused at once", async () => {
    const pw = await pooler();
    const raw = await RawClient.connect(pw);
    await raw.login("door", "pw", "doordb");
    raw.send(rawMessage("Q", "select 1", 0x4000_0000));
    expect(await raw.waitClosed(5000)).toBe(true);
    expect(raw.errors()[0]?.C).toBe("08P01");
    // messages that carry only names get PostgreSQL's small limit
    const raw2 = await RawClient.connect(pw);
    await raw2.login("door", "pw", "doordb");
    raw2.send(rawMessage("S", "", 20_000));
    expect(await raw2.waitClosed(5000)).toBe(true);
    expect(raw2.errors()[0]?.C).toBe("08P01");
  });
});

describe("connections that do not log in", () => {
  let pw: Pgwarden;
  beforeAll(async () => {
    // max_client_connections bounds each worker (docs/workers.md): one process here.
    pw = await pooler({ client_login_timeout: 700, max_client_connections: 6, workers: 1 });
  });

  it("a silent connection is closed after client_login_timeout, without a word", async () => {
    const raw = await RawClient.connect(pw);
    expect(await raw.waitClosed(400)).toBe(false);
    expect(await raw.waitClosed(5000)).toBe(true);
    expect(raw.bytes).toBe(0);
  });

  it("a startup packet trickled a byte at a time is cut off", async () => {
    const raw = await RawClient.connect(pw);
    const packet = Buffer.alloc(200, 0x61);
    packet.writeInt32BE(200, 0);
    packet.writeInt32BE(196608, 4);
    let i = 0;
    const timer = setInterval(() => {
      if (!raw.closed && i < packet.length) raw.send(packet.subarray(i, ++i));
    }, 50);
    try {
      expect(await raw.waitClosed(5000)).toBe(true);
    } finally {
      clearInterval(timer);
    }
    expect(i).toBeLessThan(packet.length);
  });

  it("a client stuck in the password exchange gets a FATAL at client_login_timeout", async () => {
    const raw = await RawClient.connect(pw);
    raw.send(startupMessage({ user: "door", database: "doordb" }));
    const [r] = await raw.until("R");
    expect(r!.body.readInt32BE(0)).toBe(10);
    expect(await raw.waitClosed(5000)).toBe(true);
    const [e] = raw.errors();
    expect(e?.C).toBe("08P01");
    expect(e?.M).toContain("client_login_timeout");
  });

  it("counts towards max_client_connections, and the slots come back", async () => {
    const raws = await Promise.all(Array.from({ length: 6 }, () => RawClient.connect(pw)));
    const err = await loginError(pw, "door", "pw", "doordb");
    expect(err.code).toBe("53300");
    for (const r of raws) r.close();
    await sleep(100);
    const c = await connect(pw, "door", "pw", "doordb");
    expect((await c.query("select 1 as x")).rows[0].x).toBe(1);
    await c.end();
  });
});

describe("out of file descriptors", () => {
  it("a flood past the open-file limit is refused with 53300, never a crash; logged-in clients untouched", async () => {
    const pw = await pooler(
      // The open-file limit is per process, the room it leaves too: one process here.
      { max_client_connections: 1000, client_login_timeout: 0, workers: 1 },
      // 256, not less: loading pgwarden's modules (the cloud SDKs) opens files in parallel
      { prefix: ["prlimit", "--nofile=256:256", "--"] },
    );
    await pw.waitForLog((l) => /open-file limit is below/.test(String(l.msg)), 5000);
    const clients = await Promise.all(
      Array.from({ length: 3 }, () => connect(pw, "door", "pw", "doordb")),
    );
    const flood: RawClient[] = [];
    for (let i = 0; i < 300; i++) flood.push(await RawClient.connect(pw));
    await sleep(300);
    // the first ones are held open (they have not logged in); the rest are told why they go
    const refused = flood.filter((r) => r.closed);
    expect(refused.length).toBeGreaterThan(50);
    for (const r of refused) expect(r.errors().map((e) => e.C)).toEqual(["53300"]);
    expect(flood.filter((r) => !r.closed).length).toBeGreaterThan(20);
    await pw.waitForLog((l) => /open-file limit leaves no room/.test(String(l.msg)), 5000);
    expect(alive(pw)).toBe(true);
    for (const c of clients) expect((await c.query("select 1 as x")).rows[0].x).toBe(1);
    for (const r of flood) r.close();
    await sleep(300);
    const fresh = await connect(pw, "door", "pw", "doordb");
    expect((await fresh.query("select 3 as x")).rows[0].x).toBe(3);
    await fresh.end();
    for (const c of clients) await c.end();
  });
});

describe("logins without a server connection", () => {
  it("a saturated pool admits new clients at once; the first login of an empty pool opens one", async () => {
    // One process: the two holders take both servers of a pool of 2, which with workers = 2
    // (PGWARDEN_TEST_WORKERS) is split 1 + 1 and both may land on the same worker.
    const pw = await pooler({ checkout_timeout: 1500, workers: 1 });
    expect(await cluster.backendPids("fresh")).toEqual([]);
    // first login ever: no server yet, so one is opened for it
    const first = await connect(pw, "fresh", "pw", "doordb");
    expect((await cluster.backendPids("fresh")).length).toBe(1);
    const holders = [first, await connect(pw, "fresh", "pw", "doordb")];
    for (const h of holders) await h.query("begin");
    // every server is in a transaction: these would time out if a login needed a server
    const late = await Promise.all([
      connect(pw, "fresh", "pw", "doordb"),
      connect(pw, "fresh", "pw", "doordb", { application_name: "late-app" }),
    ]);
    const raw = await RawClient.connect(pw);
    await raw.login("fresh", "pw", "doordb"); // no settings at all: the baseline's welcome
    expect(raw.received.filter((m) => m.type === "S").length).toBeGreaterThan(5);
    raw.close();
    for (const h of holders) await h.query("commit");
    expect((await late[1]!.query("show application_name")).rows[0].application_name).toBe(
      "late-app",
    );
    expect((await late[0]!.query("select 1 as x")).rows[0].x).toBe(1);
    for (const c of [...holders, ...late]) await c.end();
  });
});

describe("no enumeration of users and databases", () => {
  let pw: Pgwarden;
  beforeAll(async () => {
    pw = await pooler();
  });

  /** Runs a SCRAM exchange with a wrong password; returns the salt offered and the error. */
  async function probe(user: string, database: string) {
    const raw = await RawClient.connect(pw);
    raw.send(startupMessage({ user, database }));
    const [r] = await raw.until("R");
    expect(r!.body.readInt32BE(0)).toBe(10); // AuthenticationSASL
    const nonce = "rOprNGfwEbeRWgbNEkqO";
    const first = `n,,n=,r=${nonce}`;
    const body = Buffer.alloc(4);
    body.writeInt32BE(first.length);
    raw.send(
      rawMessage("p", Buffer.concat([Buffer.from("SCRAM-SHA-256\0"), body, Buffer.from(first)])),
    );
    const cont = (await raw.until("R")).at(-1)!;
    expect(cont.body.readInt32BE(0)).toBe(11); // AuthenticationSASLContinue
    const serverFirst = cont.body.toString("utf8", 4);
    const salt = /s=([^,]+)/.exec(serverFirst)![1];
    const r2 = /r=([^,]+)/.exec(serverFirst)![1];
    const proof = Buffer.alloc(32, 1).toString("base64");
    raw.send(rawMessage("p", `c=biws,r=${r2},p=${proof}`));
    expect(await raw.waitClosed(5000)).toBe(true);
    return { salt, errors: raw.errors() };
  }

  it("an unknown user runs a full SCRAM exchange and fails like a wrong password", async () => {
    const known = await probe("door", "doordb");
    const unknown = await probe("mallory", "doordb");
    const again = await probe("mallory", "doordb");
    const other = await probe("trudy", "doordb");
    expect(known.errors.map((e) => e.C)).toEqual(["28P01"]);
    expect(unknown.errors.map((e) => e.C)).toEqual(["28P01"]);
    expect(unknown.errors[0]!.M).toBe('password authentication failed for user "mallory"');
    // a stable salt per name, as a real user has
    expect(again.salt).toBe(unknown.salt);
    expect(other.salt).not.toBe(unknown.salt);
  });

  it("the admin console asked for by anyone but the admin: the same exchange and 28P01", async () => {
    const res = await probe("door", "admin");
    expect(res.errors.map((e) => e.C)).toEqual(["28P01"]);
  });

  it("an unknown database is told only after the password", async () => {
    const wrong = await probe("door", "nosuchdb");
    expect(wrong.errors.map((e) => e.C)).toEqual(["28P01"]);
    const right = await loginError(pw, "door", "pw", "nosuchdb");
    expect(right.code).toBe("3D000");
  });

  it("auth_failure_delay holds the answer to a failed login", async () => {
    const slow = await pooler({ auth_failure_delay: 600 });
    const t0 = performance.now();
    const err = await loginError(slow, "door", "nope", "doordb");
    expect(err.code).toBe("28P01");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(550);
    const c = await connect(slow, "door", "pw", "doordb");
    await c.end();
  });
});

describe("PostgreSQL's manners", () => {
  let pw: Pgwarden;
  beforeAll(async () => {
    pw = await pooler();
  });

  it("Terminate before the startup packet closes without a word", async () => {
    const raw = await RawClient.connect(pw);
    raw.send(rawMessage("X"));
    expect(await raw.waitClosed(3000)).toBe(true);
    expect(raw.bytes).toBe(0);
  });

  it("EOF before the startup packet closes without a word", async () => {
    const raw = await RawClient.connect(pw);
    raw.socket.end();
    expect(await raw.waitClosed(3000)).toBe(true);
    expect(raw.bytes).toBe(0);
  });

  it("an error response carries PostgreSQL's fields", async () => {
    const raw = await RawClient.connect(pw);
    await raw.login("door", "pw", "doordb");
    raw.send(queryMessage("select 1/0"));
    const msgs = await raw.until("Z");
    const e = msgs.find((m) => m.type === "E")!;
    expect(errorFields(e).C).toBe("22012");
    raw.close();
  });
});
