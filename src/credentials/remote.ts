// The credential engine across processes (workers > 1, design §6). The engine runs once per
// instance, in the primary process; workers hold a RemoteCredentialEngine, which has the
// engine's shape (CredentialBroker) so pools cannot tell a local engine from a remote one.
//
// Model: a worker's acquire/release are one-way messages, in order, that the primary's
// CredentialHost turns into real acquire/release calls on the one CredentialEngine, counting
// references per worker so that a worker that dies gives its references back (forget). get and
// invalidate are requests answered by the primary's entry: its cache, its single flight and its
// rate limit are the instance's, so N workers asking at once cost one provider call, and a token
// one worker saw rejected is refetched once for all. Nothing is cached in the worker: a login
// asks the primary (one IPC round trip, small next to a login), so no worker ever holds a token
// the primary has already replaced. A login (the secret with its user and deadline: Vault) is
// one request too; its deadline crosses as wall-clock time, since each process's monotonic clock
// has its own origin, and the worker knows the generation of the last login it saw (connections
// of an older one retire at their deadline at the latest). The transport (node:cluster IPC) is
// injected by the composition root; this file knows nothing of processes.

import { PgwardenError } from "../util/index.js";
import type { CredentialEngine } from "./engine.js";
import { type CredentialEntry, CredentialError } from "./entry.js";
import type {
  CredentialBroker,
  CredentialHandle,
  CredentialSnapshot,
  Login,
  TokenProvider,
} from "./types.js";

export type CredentialRequest =
  | { readonly op: "acquire"; readonly key: string }
  | { readonly op: "release"; readonly key: string }
  | { readonly op: "get"; readonly key: string }
  | { readonly op: "login"; readonly key: string }
  | { readonly op: "invalidate"; readonly key: string; readonly rejected: string };

export interface CredentialTransport {
  /** One-way, delivered in order with the requests. */
  send(msg: CredentialRequest): void;
  /** Resolves with the secret, or rejects with the primary's error (code and message kept). */
  request(msg: CredentialRequest): Promise<string>;
}

/** Rebuilds a credential failure that crossed the process boundary as the error pools expect. */
function asCredentialError(err: unknown): Error {
  if (
    err instanceof PgwardenError &&
    err.code === "CREDENTIAL" &&
    !(err instanceof CredentialError)
  )
    return new CredentialError(err.message, err.context.provider ?? "unknown");
  return err instanceof Error ? err : new Error(String(err));
}

/** Providers whose credential names the login user (Vault), by the kind a key starts with. */
const USER_ISSUING_KINDS: ReadonlySet<string> = new Set(["vault_dynamic", "vault_static"]);

/** A Login as it crosses processes: JSON, its deadline in wall-clock ms. */
function encodeLogin(l: Login): string {
  const retireAtWall = l.retireAt === null ? null : Date.now() + (l.retireAt - performance.now());
  return JSON.stringify({ s: l.secret, u: l.user ?? null, g: l.generation, r: retireAtWall });
}

function decodeLogin(text: string): Login {
  const o = JSON.parse(text) as { s: string; u: string | null; g: number; r: number | null };
  return {
    secret: o.s,
    user: o.u ?? undefined,
    generation: o.g,
    retireAt: o.r === null ? null : performance.now() + (o.r - Date.now()),
  };
}

/** A worker's view of the primary's engine. */
export class RemoteCredentialEngine implements CredentialBroker {
  private readonly refs = new Map<string, number>();

  constructor(private readonly transport: CredentialTransport) {}

  acquire(key: string, _makeProvider: () => TokenProvider): CredentialHandle {
    this.refs.set(key, (this.refs.get(key) ?? 0) + 1);
    this.transport.send({ op: "acquire", key });
    const t = this.transport;
    let generation = 0;
    return {
      key,
      issuesUser: USER_ISSUING_KINDS.has(key.slice(0, key.indexOf("("))),
      get currentGeneration() {
        return generation;
      },
      getLogin: () =>
        t.request({ op: "login", key }).then(
          (text) => {
            const login = decodeLogin(text);
            if (login.generation > generation) generation = login.generation;
            return login;
          },
          (e: unknown) => Promise.reject(asCredentialError(e)),
        ),
      get: () =>
        t.request({ op: "get", key }).catch((e: unknown) => Promise.reject(asCredentialError(e))),
      invalidate: (rejected) =>
        t
          .request({ op: "invalidate", key, rejected })
          .catch((e: unknown) => Promise.reject(asCredentialError(e))),
    };
  }

  release(handle: CredentialHandle): void {
    const n = this.refs.get(handle.key) ?? 0;
    if (n <= 0) return;
    if (n === 1) this.refs.delete(handle.key);
    else this.refs.set(handle.key, n - 1);
    this.transport.send({ op: "release", key: handle.key });
  }
}

/**
 * The primary's side: serves every worker's requests from the one engine. `makers` maps a
 * credential key to its provider factory, from the primary's own reading of the config (the
 * workers read the same files); an unknown key is an error for that request only. The engine's
 * entry is held once for all workers (taken with the first worker reference, let go with the
 * last), and `consumers` in the snapshot is the most pools any one worker has on the identity:
 * every worker runs the same pools, so that is the instance's pool count, as with one process.
 */
export class CredentialHost {
  /** worker id → key → references it holds. */
  private readonly held = new Map<number, Map<string, number>>();
  private readonly makers = new Map<string, () => TokenProvider>();
  /** The engine entry held on behalf of the workers, per key. */
  private readonly entries = new Map<string, CredentialEntry>();

  constructor(private readonly engine: CredentialEngine) {}

  /** Adds the identities of a (re)loaded config; keys of earlier configs stay known. */
  learn(identities: Iterable<{ readonly key: string; readonly make: () => TokenProvider }>): void {
    for (const i of identities) this.makers.set(i.key, i.make);
  }

  handle(worker: number, msg: CredentialRequest): Promise<string> | undefined {
    switch (msg.op) {
      case "acquire": {
        const make = this.makers.get(msg.key);
        if (make === undefined) return undefined; // get() will say so
        if (!this.entries.has(msg.key))
          this.entries.set(msg.key, this.engine.acquire(msg.key, make));
        let mine = this.held.get(worker);
        if (mine === undefined) {
          mine = new Map();
          this.held.set(worker, mine);
        }
        mine.set(msg.key, (mine.get(msg.key) ?? 0) + 1);
        return undefined;
      }
      case "release":
        this.drop(worker, msg.key, 1);
        return undefined;
      case "get":
      case "login":
      case "invalidate": {
        const entry = this.engine.entry(msg.key);
        if (entry === undefined)
          return Promise.reject(
            new CredentialError(
              "no credential entry for this identity in the primary (configuration files changed under a reload?)",
              msg.key.slice(0, msg.key.indexOf("(")),
            ),
          );
        if (msg.op === "login") return entry.getLogin().then(encodeLogin);
        return msg.op === "get" ? entry.get() : entry.invalidate(msg.rejected);
      }
    }
  }

  /** A worker is gone: give back every reference it held. */
  forget(worker: number): void {
    const mine = this.held.get(worker);
    if (mine === undefined) return;
    for (const [key, n] of [...mine]) this.drop(worker, key, n);
    this.held.delete(worker);
  }

  /** The engine's snapshot, `consumers` counted as the instance's pools (see above). */
  snapshot(): CredentialSnapshot[] {
    return this.engine.snapshot().map((s) => {
      let most = 0;
      for (const mine of this.held.values()) most = Math.max(most, mine.get(s.key) ?? 0);
      return { ...s, consumers: most };
    });
  }

  private drop(worker: number, key: string, n: number): void {
    const mine = this.held.get(worker);
    const have = mine?.get(key) ?? 0;
    const take = Math.min(n, have);
    if (take <= 0 || mine === undefined) return;
    if (have === take) mine.delete(key);
    else mine.set(key, have - take);
    for (const m of this.held.values()) if ((m.get(key) ?? 0) > 0) return;
    const entry = this.entries.get(key);
    if (entry !== undefined) {
      this.entries.delete(key);
      this.engine.release(entry);
    }
  }
}
