// The remote engine against the real CredentialEngine through an in-memory transport (the
// cluster's IPC in production): N workers cost one provider fetch, a rejected token is refetched
// once for all, errors keep their kind, and a dead worker's references are given back.
import { describe, expect, it } from "vitest";
import { PgwardenError, silentLogger } from "../util/index.js";
import { CredentialEngine } from "./engine.js";
import { CredentialError } from "./entry.js";
import { CredentialHost, type CredentialRequest, RemoteCredentialEngine } from "./remote.js";
import type { FetchedToken, TokenProvider } from "./types.js";

class CountingProvider implements TokenProvider {
  readonly kind = "fake";
  readonly description = { host: "db", user: "u" };
  fetches = 0;
  fail = false;
  async fetch(): Promise<FetchedToken> {
    this.fetches++;
    await new Promise((r) => setTimeout(r, 20));
    if (this.fail) throw new Error("HTTP 500 from identity provider");
    return { secret: `token-${this.fetches}`, expiresAt: Date.now() + 600_000 };
  }
}

function instance(workers: number) {
  const engine = new CredentialEngine({
    refreshBuffer: 45_000,
    fetchTimeout: 5000,
    logger: silentLogger(),
    minBackoff: 1,
    maxBackoff: 2,
  });
  const host = new CredentialHost(engine);
  const provider = new CountingProvider();
  host.learn([{ key: "fake(k)", make: () => provider }]);
  // What crosses IPC: messages in order, errors as code + message + context.
  const remotes = Array.from(
    { length: workers },
    (_, w) =>
      new RemoteCredentialEngine({
        send: (msg: CredentialRequest) => void host.handle(w, msg),
        request: (msg: CredentialRequest) =>
          (host.handle(w, msg) as Promise<string>).catch((e: PgwardenError) =>
            Promise.reject(new PgwardenError(e.code, e.message, { ...e.context })),
          ),
      }),
  );
  return { engine, host, provider, remotes };
}

describe("RemoteCredentialEngine + CredentialHost", () => {
  it("four workers warming at once cost one fetch; the engine holds one entry", async () => {
    const { engine, host, provider, remotes } = instance(4);
    const handles = remotes.map((r) => r.acquire("fake(k)", () => provider));
    const secrets = await Promise.all(handles.map((h) => h.get()));
    expect(new Set(secrets)).toEqual(new Set(["token-1"]));
    expect(provider.fetches).toBe(1);
    expect(engine.size).toBe(1);
    // one pool per worker, the same pools everywhere: the instance has one consumer
    expect(host.snapshot()[0]?.consumers).toBe(1);
  });

  it("a token rejected on two workers is refetched once", async () => {
    const { provider, remotes } = instance(2);
    const [a, b] = remotes.map((r) => r.acquire("fake(k)", () => provider));
    const first = await a!.get();
    const [x, y] = await Promise.all([a!.invalidate(first), b!.invalidate(first)]);
    expect(x).toBe("token-2");
    expect(y).toBe("token-2");
    expect(provider.fetches).toBe(2);
  });

  it("a provider failure reaches the worker as a CredentialError", async () => {
    const { provider, remotes } = instance(1);
    provider.fail = true;
    const h = remotes[0]!.acquire("fake(k)", () => provider);
    const err = await h.get().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CredentialError);
  });

  it("release and a dead worker's forget stop the refresher once nobody holds it", async () => {
    const { engine, host, provider, remotes } = instance(2);
    const a = remotes[0]!.acquire("fake(k)", () => provider);
    remotes[1]!.acquire("fake(k)", () => provider);
    remotes[1]!.acquire("fake(k)", () => provider);
    remotes[0]!.release(a);
    expect(host.snapshot()[0]?.consumers).toBe(2);
    expect(engine.size).toBe(1);
    host.forget(1);
    expect(engine.size).toBe(0);
  });
});
