import { describe, expect, it } from "vitest";
import type { ServerConnection, ServerOwner } from "../backend/index.js";
import { PgError, PgwardenError } from "../util/index.js";
import { Lease, type LeaseHolder } from "./lease.js";
import { isTransientConnectFailure } from "./pool.js";

/** Just what Lease uses of a ServerConnection. */
class FakeServer {
  txStatus = 0x49; // 'I'
  owner: ServerOwner | null = null;
  written: Buffer[] = [];
  replayScratch: Buffer | null = null;
  attach(_sink: unknown, owner: ServerOwner): void {
    this.owner = owner;
  }
  write(data: Buffer): boolean {
    this.written.push(data);
    return true;
  }
}

interface Lost {
  err: Error;
  replay: Buffer[] | null;
  fatalForwarded: boolean;
}

function setup(txStatus = 0x49) {
  const server = new FakeServer();
  server.txStatus = txStatus;
  const lost: Lost[] = [];
  const released: boolean[] = [];
  const holder: LeaseHolder = {
    poolTicket: 0,
    leaseGranted: () => {},
    leaseFailed: () => {},
    serverData: () => true,
    serverReady: () => {},
    serverParameter: () => {},
    serverLost: (err, replay, fatalForwarded) => lost.push({ err, replay, fatalForwarded }),
  };
  const pool = {
    name: "u/db",
    stats: { totalXact: 0, totalQuery: 0 },
    release: (_l: Lease, clean: boolean) => released.push(clean),
  };
  const lease = new Lease(pool, server as unknown as ServerConnection, holder);
  return { server, lease, lost, released };
}

const shutdown = () =>
  new PgError("FATAL", "57P01", "terminating connection due to administrator command");
const socketLoss = () => new PgwardenError("SERVER_CLOSED", "server closed the connection");

describe("Lease replay", () => {
  it("hands back the bytes written before the server answered, as a copy", () => {
    const { server, lease, lost } = setup();
    const a = Buffer.from("a");
    const b = Buffer.alloc(3000, "b"); // past the first scratch size: it grows
    lease.write(a);
    lease.write(b);
    expect(server.written).toEqual([a, b]);
    // the chunks were views of a read buffer that the client's next read overwrites
    a.fill("x");
    b.fill("y");
    server.owner!.serverLost(shutdown(), false);
    expect(lost).toHaveLength(1);
    expect(lost[0]!.replay).toEqual([Buffer.concat([Buffer.from("a"), Buffer.alloc(3000, "b")])]);
    expect(lease.isReleased).toBe(true);
  });

  it("keeps bytes the session owns (writeOwned) by reference when they come first", () => {
    const { server, lease, lost } = setup();
    const owned = Buffer.from("select 1"); // a chunk that waited for the lease: the session's copy
    lease.writeOwned(owned);
    server.owner!.serverLost(shutdown(), false);
    expect(lost[0]!.replay).toHaveLength(1);
    expect(lost[0]!.replay![0]).toBe(owned);
  });

  it("copies once more is written after owned bytes, in order, whatever comes first", () => {
    for (const order of ["owned first", "view first"]) {
      const { server, lease, lost } = setup();
      const owned = Buffer.from("owned;");
      const view = Buffer.alloc(3000, "v"); // past the first scratch size: it grows
      if (order === "owned first") {
        lease.writeOwned(owned);
        lease.write(view);
      } else {
        lease.write(view);
        lease.writeOwned(owned);
      }
      view.fill("x"); // the view's read buffer is reused
      server.owner!.serverLost(shutdown(), false);
      const parts =
        order === "owned first" ? ["owned;", "v".repeat(3000)] : ["v".repeat(3000), "owned;"];
      expect(lost[0]!.replay!.map((b) => b.toString())).toEqual([parts.join("")]);
    }
  });

  it("drops them at the server's first byte: the client's work was cut", () => {
    const { server, lease, lost } = setup();
    lease.write(Buffer.from("q"));
    server.owner!.serverAnswered();
    lease.write(Buffer.from("more"));
    server.owner!.serverLost(socketLoss(), true);
    expect(lost[0]).toMatchObject({ replay: null, fatalForwarded: true });
  });

  it("never replays a lease that began inside a transaction", () => {
    const { server, lease, lost } = setup(0x54); // 'T'
    lease.write(Buffer.from("q"));
    server.owner!.serverLost(shutdown(), false);
    expect(lost[0]!.replay).toBeNull();
  });

  it("never replays bytes after a bare socket loss; three times after shutdown FATALs", () => {
    const chunk = Buffer.from("select 1");
    const attempt = (err: Error) => {
      const { server, lease, lost } = setup();
      lease.write(chunk);
      server.owner!.serverLost(err, false);
      return lost[0]!.replay;
    };
    // the server may have run them (a commit whose reply was lost with the socket)
    expect(attempt(socketLoss())).toBeNull();
    // each replay is written first on the next lease, as the session does (it waited for the
    // lease, so it is written as the session's own bytes)
    let next: Buffer = Buffer.from("select 2");
    const attempt2 = (err: Error) => {
      const { server, lease, lost } = setup();
      lease.writeOwned(next);
      server.owner!.serverLost(err, false);
      const r = lost[0]!.replay;
      if (r !== null) next = r[0]!;
      return r;
    };
    expect([1, 2, 3, 4].map(() => attempt2(shutdown()) !== null)).toEqual([
      true,
      true,
      true,
      false,
    ]);
  });

  it("gives up on replay past 1 MiB written without an answer", () => {
    const { server, lease, lost } = setup();
    lease.write(Buffer.alloc(1 << 20));
    lease.write(Buffer.alloc(1));
    server.owner!.serverLost(shutdown(), false);
    expect(lost[0]!.replay).toBeNull();
  });

  it("an empty replay when the client had written nothing", () => {
    const { server, lost } = setup();
    server.owner!.serverLost(shutdown(), false);
    expect(lost[0]!.replay).toEqual([]);
  });
});

describe("isTransientConnectFailure", () => {
  const connectErr = (code: string) =>
    new PgwardenError(
      "SERVER_CONNECT",
      "could not connect",
      {},
      Object.assign(new Error(code), { code }),
    );
  it("retries a server that is down, restarting or full", () => {
    expect(isTransientConnectFailure(connectErr("ECONNREFUSED"))).toBe(true);
    expect(isTransientConnectFailure(connectErr("ECONNRESET"))).toBe(true);
    expect(isTransientConnectFailure(new PgwardenError("SERVER_CONNECT_TIMEOUT", "t"))).toBe(true);
    for (const code of ["57P01", "57P02", "57P03", "53300"])
      expect(isTransientConnectFailure(new PgError("FATAL", code, "x"))).toBe(true);
  });
  it("fails fast on what retrying cannot fix", () => {
    for (const code of ["28P01", "28000", "3D000"])
      expect(isTransientConnectFailure(new PgError("FATAL", code, "x"))).toBe(false);
    expect(isTransientConnectFailure(connectErr("ENOTFOUND"))).toBe(false);
    expect(isTransientConnectFailure(new PgwardenError("CREDENTIAL", "no token"))).toBe(false);
    expect(isTransientConnectFailure(new PgwardenError("SERVER_TLS", "bad certificate"))).toBe(
      false,
    );
    expect(isTransientConnectFailure(new Error("boom"))).toBe(false);
  });
});
