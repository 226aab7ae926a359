// The network guard refuses non-loopback targets at once, in this process and in children that
// load it through NODE_OPTIONS, and records each refusal. The refusals made on purpose here go to
// a log of this test's own, so the run's guard log (checked at teardown) stays empty.
import { spawn } from "node:child_process";
import dns from "node:dns";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { childEnv, guardEnv, netGuard } from "./harness/guard.js";

let dir: string;
let ownLog: string;
let runLog: string | undefined;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "pgwarden-guard-test-"));
  ownLog = join(dir, "guard.log");
  writeFileSync(ownLog, "");
  runLog = process.env.PGWARDEN_NET_GUARD_LOG;
  process.env.PGWARDEN_NET_GUARD_LOG = ownLog;
});

afterEach(() => {
  if (runLog === undefined) delete process.env.PGWARDEN_NET_GUARD_LOG;
  else process.env.PGWARDEN_NET_GUARD_LOG = runLog;
  rmSync(dir, { recursive: true, force: true });
});

function refusals(): Array<{ kind: string; target: string; pid: number }> {
  return readFileSync(ownLog, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { kind: string; target: string; pid: number });
}

function connectError(opts: net.NetConnectOpts): Promise<Error> {
  return new Promise((resolve, reject) => {
    const s = net.connect(opts, () => {
      s.destroy();
      reject(new Error("connected"));
    });
    s.on("error", resolve);
  });
}

describe("network guard", () => {
  it("refuses 10.0.0.1:80 at once, naming the target", async () => {
    const t0 = Date.now();
    const err = await connectError({ host: "10.0.0.1", port: 80 });
    expect(Date.now() - t0).toBeLessThan(1000); // refused, not timed out
    expect(err.message).toContain("10.0.0.1:80");
    expect((err as NodeJS.ErrnoException).code).toBe("ENETGUARD");
    expect(refusals()).toMatchObject([
      { kind: "connect", target: "10.0.0.1:80", pid: process.pid },
    ]);
  });

  it("refuses the metadata address through fetch and a non-loopback DNS name", async () => {
    await expect(fetch("http://169.254.169.254/latest/meta-data/")).rejects.toThrow();
    const lookupErr = await new Promise<Error | null>((resolve) =>
      dns.lookup("metadata.google.internal", (e) => resolve(e)),
    );
    expect(lookupErr?.message).toContain("metadata.google.internal");
    await expect(dns.promises.lookup("login.microsoftonline.com")).rejects.toThrow(
      /login\.microsoftonline\.com/,
    );
    const byName = await connectError({ host: "example.com", port: 443 });
    expect(byName.message).toContain("example.com:443");
    expect(refusals().map((r) => `${r.kind} ${r.target}`)).toEqual([
      "connect 169.254.169.254:80",
      "dns.lookup metadata.google.internal",
      "dns.promises.lookup login.microsoftonline.com",
      "connect example.com:443",
    ]);
  });

  it("allows loopback and unix sockets", async () => {
    const srv = net.createServer((s) => s.end("hi"));
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const port = (srv.address() as net.AddressInfo).port;
    const read = (opts: net.NetConnectOpts) =>
      new Promise<string>((resolve, reject) => {
        let data = "";
        const s = net.connect(opts);
        s.setEncoding("utf8").on("data", (d: string) => {
          data += d;
        });
        s.on("end", () => resolve(data));
        s.on("error", reject);
      });
    expect(await read({ host: "127.0.0.1", port })).toBe("hi");
    expect(await read({ host: "localhost", port, family: 4 })).toBe("hi");
    expect((await dns.promises.lookup("localhost", { family: 4 })).address).toBe("127.0.0.1");
    srv.close();
    const sock = join(dir, "s.sock");
    const usrv = net.createServer((s) => s.end("unix"));
    await new Promise<void>((r) => usrv.listen(sock, r));
    expect(await read({ path: sock })).toBe("unix");
    usrv.close();
    expect(refusals()).toEqual([]);
    for (const h of [
      "127.0.0.1",
      "127.9.8.7",
      "::1",
      "0:0:0:0:0:0:0:1",
      "[::1]",
      "localhost",
      "::ffff:127.0.0.1",
    ]) {
      expect(netGuard.isLoopbackHost(h), h).toBe(true);
    }
    for (const h of [
      "10.0.0.1",
      "169.254.169.254",
      "::",
      "::2",
      "0.0.0.0",
      "localhost.example.com",
      "fe80::1",
    ]) {
      expect(netGuard.isLoopbackHost(h), h).toBe(false);
    }
  });

  it("stays in NODE_OPTIONS when childEnv() is given NODE_OPTIONS of its own", () => {
    const env = childEnv({ NODE_OPTIONS: "--max-old-space-size=256" });
    expect(env.NODE_OPTIONS).toContain("--max-old-space-size=256");
    expect(env.NODE_OPTIONS).toContain("net-guard.cjs");
    expect(childEnv({ NODE_OPTIONS: undefined }).NODE_OPTIONS).toContain("net-guard.cjs");
  });

  it("is loaded by child processes through childEnv() and records their refusals", async () => {
    const env = childEnv({ PGWARDEN_NET_GUARD_LOG: ownLog });
    expect(env.NODE_OPTIONS).toContain("net-guard.cjs");
    expect(env.AWS_EC2_METADATA_DISABLED).toBe("true");
    expect(env.HTTPS_PROXY).toBeUndefined();
    expect(env.AWS_CONTAINER_CREDENTIALS_RELATIVE_URI).toBeUndefined();
    const code =
      "require('net').connect(80, '10.0.0.1').on('error', (e) => { console.log(e.message); process.exit(0) })";
    const out = await new Promise<string>((resolve, reject) => {
      const p = spawn(process.execPath, ["-e", code], {
        env,
        stdio: ["ignore", "pipe", "inherit"],
      });
      let s = "";
      p.stdout.setEncoding("utf8").on("data", (d: string) => {
        s += d;
      });
      p.on("error", reject);
      p.on("close", () => resolve(s));
    });
    expect(out).toContain("refused connect to 10.0.0.1:80");
    const rs = refusals();
    expect(rs).toHaveLength(1);
    expect(rs[0]?.pid).not.toBe(process.pid);
  });

  it("guardEnv() points cloud endpoints at loopback", () => {
    const env = guardEnv();
    expect(env).toMatchObject({
      AWS_EC2_METADATA_DISABLED: "true",
      AWS_REGION: expect.any(String),
      AWS_ACCESS_KEY_ID: expect.any(String),
      AWS_SECRET_ACCESS_KEY: expect.any(String),
      GOOGLE_CLOUD_PROJECT: expect.any(String),
    });
    for (const k of ["AZURE_AUTHORITY_HOST", "IDENTITY_ENDPOINT", "GCE_METADATA_HOST"]) {
      expect(env[k], k).toMatch(/127\.0\.0\.1:\d+/);
    }
    // the worker itself runs with them (setup file)
    expect(process.env.AWS_EC2_METADATA_DISABLED).toBe("true");
  });
});
