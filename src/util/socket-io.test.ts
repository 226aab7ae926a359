// SocketIO on real loopback sockets. The first test is the tripwire for Node upgrades: it fails
// when this Node version no longer offers the stream internals the direct path is built on.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import net from "node:net";
import tls from "node:tls";
import { afterEach, describe, expect, it } from "vitest";
import { makeTestCa } from "../../test/fixtures/test-ca.js";
import { SocketIO } from "./socket-io.js";

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

/** A connected pair: `accepted` is the server side, wrapped in SocketIO once its first byte came. */
async function pair(): Promise<{ client: net.Socket; accepted: net.Socket }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  const acceptedP = new Promise<net.Socket>((r) => server.once("connection", r));
  const client = net.connect(port, "127.0.0.1");
  await new Promise<void>((r) => client.once("connect", () => r()));
  const accepted = await acceptedP;
  cleanup.push(() => {
    client.destroy();
    accepted.destroy();
    server.close();
  });
  return { client, accepted };
}

/** Wraps a socket the way pgwarden does: a 'data' listener first, then SocketIO takes over. */
function takeOver(socket: net.Socket, onChunk: (c: Buffer) => void): SocketIO {
  const first = (c: Buffer) => onChunk(c);
  socket.on("data", first);
  socket.removeListener("data", first);
  return new SocketIO(socket, onChunk);
}

function collect(socket: net.Socket): { bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  return { bytes: () => Buffer.concat(chunks) };
}

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("SocketIO", () => {
  it(`this Node version (${process.version}) offers the internals of the direct path`, () => {
    // If this fails after a Node upgrade: process.binding('stream_wrap') (WriteWrap,
    // streamBaseState, kReadBytesOrError, kArrayBufferOffset, kLastWriteWasAsync) or the TCP
    // handle's onread/readStart/readStop/writeBuffer changed. Adapt src/util/socket-io.ts.
    expect(SocketIO.native).toBe(true);
    // Buffer[Symbol.species] is Node's own Buffer class (FastBuffer), which reads use to make
    // their views; if not, reads fall back to subarray (slower on Node 20).
    expect(SocketIO.fastViews).toBe(true);
  });

  it("hands on reads as Buffers (views of its read buffer), valid during the callback", async () => {
    const { client, accepted } = await pair();
    const seen: Array<{ isBuffer: boolean; proto: boolean; bytes: string }> = [];
    takeOver(accepted, (c) =>
      seen.push({
        isBuffer: Buffer.isBuffer(c),
        proto: Object.getPrototypeOf(c) === Buffer.prototype,
        bytes: c.toString("latin1"),
      }),
    );
    client.write("abc");
    await until(() => seen.length === 1);
    client.write("de");
    await until(() => seen.length === 2);
    expect(seen).toEqual([
      { isBuffer: true, proto: true, bytes: "abc" },
      { isBuffer: true, proto: true, bytes: "de" },
    ]);
  });

  it("a plain TCP socket goes direct: reads in order, writes without Writable", async () => {
    const { client, accepted } = await pair();
    const got: Buffer[] = [];
    const io = takeOver(accepted, (c) => got.push(Buffer.from(c)));
    expect(io.direct).toBe(true);
    const sent = randomBytes(200_000);
    for (let i = 0; i < sent.length; i += 777) client.write(sent.subarray(i, i + 777));
    await until(() => Buffer.concat(got).length === sent.length);
    expect(Buffer.concat(got).equals(sent)).toBe(true);

    const echo = collect(client);
    expect(io.write(Buffer.from("hello "))).toBe(true);
    expect(accepted.writableLength).toBe(0); // nothing went through Writable
    io.write(Buffer.from("world"));
    await until(() => echo.bytes().length === 11);
    expect(echo.bytes().toString()).toBe("hello world");
  });

  it("a write the kernel cannot take at once returns false, keeps order with stream writes, and drains", async () => {
    const { client, accepted } = await pair();
    const io = takeOver(accepted, () => {});
    client.pause(); // the peer does not read: the kernel buffers fill up
    const parts: Buffer[] = [];
    let ok = true;
    let n = 0;
    while (ok && n < 2000) {
      const b = Buffer.alloc(64 * 1024, n % 251);
      parts.push(b);
      ok = io.write(b);
      n++;
    }
    expect(ok).toBe(false);
    // mixed in: a Writable write and a direct one after it, then end() with a last piece
    const mid = Buffer.from("through-writable");
    accepted.write(mid);
    parts.push(mid);
    const after = Buffer.from("direct-after");
    io.write(after);
    parts.push(after);
    let drained = false;
    io.onceDrain(() => {
      drained = true;
    });
    const last = Buffer.from("the-end");
    parts.push(last);
    accepted.end(last);
    const got = collect(client);
    client.resume();
    const want = Buffer.concat(parts);
    await until(() => got.bytes().length === want.length);
    expect(got.bytes().equals(want)).toBe(true);
    expect(drained).toBe(true);
  });

  it("reads reuse one buffer; keep() gives a copy that outlives the callback", async () => {
    const { client, accepted } = await pair();
    const seen: Buffer[] = [];
    let keep = false;
    let io: SocketIO | null = null;
    io = takeOver(accepted, (c) => {
      // a view: valid only during this call, unless kept
      seen.push(keep ? io!.keep(c) : c);
      if (!keep) expect(io!.keep(c)).not.toBe(c);
    });
    const send = async (s: string) => {
      const before = seen.length;
      client.write(s);
      await until(() => seen.length > before);
    };
    await send("one");
    await send("two");
    // no allocation per read: the same memory, the first view now shows the second read
    expect(seen[1]!.buffer).toBe(seen[0]!.buffer);
    expect(seen[0]!.toString()).toBe("two");
    keep = true;
    await send("kept");
    keep = false;
    await send("next");
    expect(seen[2]!.toString()).toBe("kept"); // not overwritten by the read after it
    expect(seen[3]!.toString()).toBe("next");
    expect(seen[3]!.buffer).toBe(seen[0]!.buffer); // still the one read buffer
  });

  it("a read of a length seen before comes as the same view object, over the new bytes", async () => {
    const { client, accepted } = await pair();
    const seen: Array<{ view: Buffer; text: string }> = [];
    takeOver(accepted, (c) => seen.push({ view: c, text: c.toString() }));
    for (const s of ["aaaa", "bb", "cccc"]) {
      const before = seen.length;
      client.write(s);
      await until(() => seen.length > before);
    }
    expect(seen.map((r) => r.text)).toEqual(["aaaa", "bb", "cccc"]);
    // (no new object per read: a young one per read costs a write barrier per store of it)
    expect(seen[2]!.view).toBe(seen[0]!.view);
    expect(seen[1]!.view).not.toBe(seen[0]!.view);
    expect(seen[0]!.view.toString()).toBe("cccc");
  });

  it("writeCopy: the range is copied (the caller may reuse it at once), held writes keep their bytes", async () => {
    const { client, accepted } = await pair();
    const io = takeOver(accepted, () => {});
    expect(io.direct).toBe(true);
    const got = collect(client);
    const src = Buffer.from("xxhello worldxx");
    expect(io.writeCopy(src, 2, 13)).toBe(true);
    src.fill(0x2d); // reused by the caller right after
    await until(() => got.bytes().length === 11);
    expect(got.bytes().toString()).toBe("hello world");

    // The kernel stops taking bytes: writes are held by libuv, and later ranges of the same
    // length must not overwrite the scratch buffer a held write points into.
    client.pause();
    const sent: Buffer[] = [];
    let heldAt = -1;
    const range = Buffer.alloc(1000);
    // (on until 50 more writes have queued behind the first one libuv held)
    for (let i = 0; i < 100_000 && (heldAt < 0 || i < heldAt + 50); i++) {
      range.fill(i & 0xff);
      range.writeUInt32BE(i, 0);
      sent.push(Buffer.from(range));
      if (!io.writeCopy(range, 0, range.length) && heldAt < 0) heldAt = i;
    }
    expect(heldAt).toBeGreaterThanOrEqual(0);
    const before = got.bytes().length;
    client.resume();
    const total = 11 + sent.length * 1000;
    await until(() => got.bytes().length >= total, 30_000);
    expect(before).toBeLessThan(total);
    expect(got.bytes().subarray(11).equals(Buffer.concat(sent))).toBe(true);
  });

  it("writeCopy held during a read: the reading socket keeps its buffer (only the scratch is held)", async () => {
    const from = await pair();
    const to = await pair();
    to.client.pause(); // the receiver reads nothing: writes are soon held by libuv
    const out = takeOver(to.accepted, () => {});
    const got = collect(to.client);
    const sent: Buffer[] = [];
    const buffers: ArrayBufferLike[] = [];
    let held = false;
    takeOver(from.accepted, (c) => {
      buffers.push(c.buffer);
      const range = Buffer.alloc(1000);
      for (let i = 0; i < 100_000 && !held; i++) {
        range.fill(i & 0xff);
        sent.push(Buffer.from(range));
        held = !out.writeCopy(range, 0, range.length);
      }
    });
    for (const s of ["first", "second"]) {
      const before = buffers.length;
      from.client.write(s);
      await until(() => buffers.length > before);
    }
    expect(held).toBe(true);
    expect(buffers[1]).toBe(buffers[0]);
    to.client.resume();
    const total = sent.length * 1000;
    await until(() => got.bytes().length >= total, 30_000);
    expect(got.bytes().equals(Buffer.concat(sent))).toBe(true);
  });

  it("a proxy of views: what a write could not finish at once is not overwritten by later reads", async () => {
    const from = await pair();
    const to = await pair();
    const out = takeOver(to.accepted, () => {});
    takeOver(from.accepted, (c) => {
      out.write(c); // a view of from's read buffer; libuv holds it when `to` is full
    });
    to.client.pause();
    const sent = randomBytes(8 * 1024 * 1024);
    for (let i = 0; i < sent.length; i += 1000) from.client.write(sent.subarray(i, i + 1000));
    await new Promise((r) => setTimeout(r, 200));
    const got = collect(to.client);
    to.client.resume();
    await until(() => got.bytes().length >= sent.length, 30_000);
    expect(got.bytes().equals(sent)).toBe(true);
  });

  it("pause stops reading at the handle; resume delivers what waited", async () => {
    const { client, accepted } = await pair();
    const got: Buffer[] = [];
    const io = takeOver(accepted, (c) => got.push(Buffer.from(c)));
    io.pause();
    expect(io.isPaused).toBe(true);
    client.write("abc");
    await new Promise((r) => setTimeout(r, 100));
    expect(got.length).toBe(0);
    io.resume();
    await until(() => got.length > 0);
    expect(Buffer.concat(got).toString()).toBe("abc");
  });

  it("end of file and resets reach the socket's own events", async () => {
    const { client, accepted } = await pair();
    const io = takeOver(accepted, () => {});
    expect(io.direct).toBe(true);
    const events: string[] = [];
    accepted.on("end", () => events.push("end"));
    accepted.on("close", () => events.push("close"));
    client.end();
    await until(() => events.includes("close"));
    expect(events).toEqual(["end", "close"]);

    const p2 = await pair();
    const io2 = takeOver(p2.accepted, () => {});
    const errors: string[] = [];
    p2.accepted.on("error", (e: NodeJS.ErrnoException) => errors.push(String(e.code)));
    let closed = false;
    p2.accepted.on("close", () => {
      closed = true;
    });
    p2.client.resetAndDestroy();
    await new Promise((r) => setTimeout(r, 50));
    // writing to a reset peer: an error event and a close, never a throw
    for (let i = 0; i < 20 && !p2.accepted.destroyed; i++) io2.write(Buffer.alloc(1024));
    await until(() => closed);
    expect(errors.length).toBeGreaterThan(0);
  });

  it("a TLS socket takes the stream path with the same API", async () => {
    const ca = makeTestCa();
    cleanup.push(() => ca.remove());
    const server = tls.createServer({
      key: readFileSync(ca.keyFile),
      cert: readFileSync(ca.certFile),
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as net.AddressInfo).port;
    const acceptedP = new Promise<tls.TLSSocket>((r) => server.once("secureConnection", r));
    const client = tls.connect({ port, host: "127.0.0.1", ca: readFileSync(ca.caFile) });
    cleanup.push(() => {
      client.destroy();
      server.close();
    });
    const accepted = await acceptedP;
    const got: Buffer[] = [];
    const io = takeOver(accepted, (c) => got.push(c));
    expect(io.direct).toBe(false);
    client.write("over tls");
    await until(() => Buffer.concat(got).toString() === "over tls");
    const echo = collect(client);
    io.write(Buffer.from("back"));
    await until(() => echo.bytes().toString() === "back");
  });

  it("PGWARDEN_SOCKET_IO=stream forces the stream path", () => {
    const out = execFileSync(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        // the build (npm test builds first)
        `import("${new URL("../../dist/util/socket-io.js", import.meta.url).href}").then((m) => console.log(m.SocketIO.native))`,
      ],
      { env: { ...process.env, PGWARDEN_SOCKET_IO: "stream" } },
    ).toString();
    expect(out.trim()).toBe("false");
  });
});
