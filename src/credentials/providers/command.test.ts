// The command provider with real child processes (sh scripts written to a temp dir): output
// forms, and every failure the issue lists, each with an error that names the user and never
// the command's stdout.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CommandProvider, MAX_OUTPUT, parseCommandOutput } from "./command.js";

const dir = mkdtempSync(join(tmpdir(), "pgwarden-cmd-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function script(body: string): string {
  const file = join(dir, `s${n++}.sh`);
  writeFileSync(file, `#!/bin/sh\n${body}\n`);
  chmodSync(file, 0o755);
  return file;
}

function provider(argv: string[], ttlMs: number | undefined = 60_000) {
  return new CommandProvider({
    argv,
    ttlMs,
    host: "db.example",
    port: 5432,
    user: "app_user",
    database: "app",
    env: { PATH: process.env.PATH },
  });
}

const run = (p: CommandProvider, ms = 5000) => p.fetch(AbortSignal.timeout(ms));

describe("parseCommandOutput", () => {
  const now = Date.UTC(2026, 0, 1);
  it("takes a bare secret with the ttl, and refuses it without one", () => {
    expect(parseCommandOutput("s3cret\n", 60_000, now)).toEqual({
      secret: "s3cret",
      expiresAt: now + 60_000,
    });
    expect(() => parseCommandOutput("s3cret\n", undefined, now)).toThrow(/server_auth_command_ttl/);
    expect(() => parseCommandOutput("a\nb\n", 1000, now)).toThrow(/several lines/);
  });
  it("reads JSON in the usual spellings", () => {
    const at = "2026-01-01T00:10:00Z";
    const exp = Date.parse(at);
    expect(
      parseCommandOutput(JSON.stringify({ password: "p", expires_at: at }), undefined, now),
    ).toEqual({ secret: "p", expiresAt: exp });
    expect(
      parseCommandOutput(JSON.stringify({ token: "t", expiration: at }), undefined, now),
    ).toEqual({ secret: "t", expiresAt: exp });
    expect(
      parseCommandOutput(
        JSON.stringify({ kind: "ExecCredential", status: { token: "k", expirationTimestamp: at } }),
        undefined,
        now,
      ),
    ).toEqual({ secret: "k", expiresAt: exp });
    expect(
      parseCommandOutput(JSON.stringify({ access_token: "a", expires_in: 30 }), undefined, now),
    ).toEqual({ secret: "a", expiresAt: now + 30_000 });
    expect(parseCommandOutput(JSON.stringify({ password: "p" }), 5000, now)).toEqual({
      secret: "p",
      expiresAt: now + 5000,
    });
  });
  it("refuses JSON without a secret, with a bad or past expiry, or broken — never quoting it", () => {
    expect(() => parseCommandOutput('{"pw": "hunter2"}', 1000, now)).toThrow(/no non-empty/);
    expect(() =>
      parseCommandOutput('{"password": "hunter2", "expires_at": "soon"}', 1000, now),
    ).toThrow(/not an RFC 3339 time/);
    expect(() =>
      parseCommandOutput(
        '{"password": "hunter2", "expires_at": "2025-01-01T00:00:00Z"}',
        1000,
        now,
      ),
    ).toThrow(/already expired/);
    expect(() => parseCommandOutput('{"password": "hunter2"', 1000, now)).toThrow(/not valid JSON/);
    expect(() => parseCommandOutput('{"password": "hunter2"}', undefined, now)).toThrow(
      /no "expires_at"/,
    );
    for (const bad of ['{"pw": "hunter2"}', '{"password": "hunter2", "expires_at": "soon"}']) {
      try {
        parseCommandOutput(bad, 1000, now);
      } catch (err) {
        expect((err as Error).message).not.toContain("hunter2");
      }
    }
  });
});

describe("CommandProvider", () => {
  it("runs the argv without a shell and passes the server's coordinates in the environment", async () => {
    const s = script(
      'printf "%s|%s|%s|%s|%s" "$1" "$PGWARDEN_SERVER_USER" "$PGWARDEN_SERVER_HOST" "$PGWARDEN_SERVER_PORT" "$PGWARDEN_SERVER_DATABASE"',
    );
    const t = await run(provider([s, "a b; echo no-shell"]));
    expect(t.secret).toBe("a b; echo no-shell|app_user|db.example|5432|app");
  });

  it("fails clearly on a non-zero exit, showing stderr sanitized and cut short", async () => {
    const s = script(
      `echo "the-secret-output"; echo "auth failed: password=hunter2 $(printf 'x%.0s' $(seq 1 600))" >&2; exit 3`,
    );
    const err = (await run(provider([s])).catch((e: Error) => e)) as Error;
    expect(err.message).toMatch(/for user "app_user" exited with status 3; stderr: auth failed/);
    expect(err.message).toContain("password=[redacted]");
    expect(err.message).not.toContain("hunter2");
    expect(err.message).not.toContain("the-secret-output");
    expect(err.message.length).toBeLessThan(600);
  });

  it("fails on empty output, oversized output, a missing program and a timeout", async () => {
    const empty = script("exit 0");
    await expect(run(provider([empty]))).rejects.toThrow(/app_user.*printed nothing/);
    const big = script(`head -c ${MAX_OUTPUT + 10} /dev/zero | tr '\\0' 'a'`);
    await expect(run(provider([big]))).rejects.toThrow(/printed more than 65536 bytes/);
    await expect(run(provider([join(dir, "absent")]))).rejects.toThrow(
      /could not be started \(ENOENT\)/,
    );
    const slow = script("sleep 30; echo late");
    const t0 = Date.now();
    await expect(run(provider([slow]), 300)).rejects.toThrow(/app_user.*token_fetch_timeout/);
    // killed, with what the script started: not waited for
    expect(Date.now() - t0).toBeLessThan(20_000);
  });

  it("takes JSON with its own expiry and a bare secret with the ttl", async () => {
    const at = new Date(Date.now() + 120_000).toISOString();
    const json = script(`echo '{"password": "pw-1", "expires_at": "${at}"}'`);
    const t = await run(provider([json], undefined));
    expect(t).toEqual({ secret: "pw-1", expiresAt: Date.parse(at) });
    const bare = script("echo pw-2");
    const b = await run(provider([bare], 30_000));
    expect(b.secret).toBe("pw-2");
    expect(b.expiresAt - Date.now()).toBeGreaterThan(25_000);
  });
});
