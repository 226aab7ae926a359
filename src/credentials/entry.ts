// CredentialEntry: the cache, single-flight fetch and background refresher of one identity.
//
// Model: an entry holds at most one token and at most one fetch in flight. `get()` returns the
// held token while it is valid; otherwise every caller joins the one fetch in flight, or starts
// it. The fetch runs under its own token_fetch_timeout (an AbortSignal the provider receives,
// and a race so that a provider that ignores it still ends); a caller that stops waiting never
// cancels it, and its result still fills the cache. While the entry is started (some pool uses
// it) one timer refreshes the token at min(provider hint, expiry − buffer) minus jitter, where
// the buffer shrinks to a quarter of the lifetime for short-lived tokens. A failed fetch keeps
// the held token and schedules a retry with capped exponential backoff and jitter; while a
// retry is pending and no valid token is held, `get()` fails at once with the last cause
// instead of starting fetches of its own, so an outage never turns into a stampede. A token the
// server rejected is dropped and replaced by one fetch (single-flight; at most one forced
// refetch per `invalidateInterval`). Stopping clears the timer; a fetch still in flight then
// completes into the cache but schedules nothing.
//
// Each accepted credential gets the next `generation`. A credential may name the user to log in
// as and carry a connection deadline (a Vault dynamic lease: the role is dropped at its end);
// then `retireAt` (the deadline minus a margin) tells pools when connections opened with it must
// be gone, and such a credential is not handed out for new logins past its retireAt.

import { errorMessage, type Logger, PgwardenError } from "../util/index.js";
import type { Clock } from "./clock.js";
import type {
  CredentialSnapshot,
  CredentialState,
  FetchedToken,
  Login,
  TokenProvider,
} from "./types.js";

export interface EntryOptions {
  /** token_refresh_buffer: refresh this long before expiry (ms). */
  readonly refreshBuffer: number;
  /** token_fetch_timeout (ms). */
  readonly fetchTimeout: number;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly minBackoff?: number;
  readonly maxBackoff?: number;
  /** Minimum time between two refetches forced by a server rejection (ms). */
  readonly invalidateInterval?: number;
  /** Don't hand out a token with less than this left (ms): it could expire on the wire. */
  readonly minRemaining?: number;
  /**
   * false: no cache, no sharing, no refresher: every login fetches its own token, as a naive
   * pooler does. Only for measuring what the engine saves (bench:credentials).
   */
  readonly cache?: boolean;
}

/** Connections of a deadline credential close this long before it (capped at 10% of its life). */
export const RETIRE_MARGIN_MS = 5000;

interface HeldToken {
  readonly secret: string;
  readonly user: string | undefined;
  readonly generation: number;
  /** Monotonic ms, or null: when connections opened with it must be closed. */
  readonly retireAt: number | null;
  readonly wallRetireAt: number | null;
  /** Monotonic ms. */
  readonly expiresAt: number;
  readonly wallExpiresAt: number;
  readonly fetchedAt: number;
}

export class CredentialError extends PgwardenError {
  constructor(message: string, provider: string, cause?: unknown) {
    super("CREDENTIAL", message, { provider }, cause);
    this.name = "CredentialError";
  }
}

export class CredentialEntry {
  readonly key: string;
  readonly provider: TokenProvider;
  consumers = 0;
  private token: HeldToken | null = null;
  private inflight: Promise<HeldToken> | null = null;
  private timer: unknown = null;
  private timerAt: number | null = null;
  private retryPending = false;
  private started = false;
  private stopped = false;
  private fetches = 0;
  private failures = 0;
  private consecutiveFailures = 0;
  private lastError: string | null = null;
  private lastFetchMs: number | null = null;
  private lastForcedAt = Number.NEGATIVE_INFINITY;
  private generation = 0;
  private readonly opts: Required<EntryOptions>;

  constructor(key: string, provider: TokenProvider, opts: EntryOptions) {
    this.key = key;
    this.provider = provider;
    this.opts = {
      minBackoff: 1000,
      maxBackoff: 30_000,
      invalidateInterval: 5000,
      minRemaining: 1000,
      cache: true,
      ...opts,
    };
  }

  /** The secret to log in with now. */
  get(): Promise<string> {
    if (!this.opts.cache) return this.fetchUncached().then(secretOf);
    return this.current().then(secretOf);
  }

  /** The secret, and the user and deadline that come with it (see Login). */
  getLogin(): Promise<Login> {
    if (!this.opts.cache) return this.fetchUncached().then(loginOf);
    return this.current().then(loginOf);
  }

  /** The provider names the login user (Vault). */
  get issuesUser(): boolean {
    return this.provider.issuesUser === true;
  }

  /** The generation of the credential held now (0 = none yet). */
  get currentGeneration(): number {
    return this.token?.generation ?? 0;
  }

  private current(): Promise<HeldToken> {
    const t = this.token;
    if (t !== null && this.isUsable(t)) return Promise.resolve(t);
    if (this.inflight !== null) return this.inflight;
    if (this.retryPending && this.consecutiveFailures > 0) {
      return Promise.reject(this.failFastError());
    }
    return this.fetch();
  }

  /**
   * The server rejected `secret`: drop it (if it is still the held one) and fetch a new one,
   * single-flight and rate-limited. Resolves when the replacement (or the newer token) is there.
   */
  invalidate(secret: string): Promise<string> {
    if (this.token !== null && this.token.secret === secret) {
      this.opts.logger.warn(
        { credential: this.describe(), provider: this.provider.kind },
        "server rejected the token; fetching a new one",
      );
      this.token = null;
      this.provider.invalidate?.();
    }
    if (this.inflight !== null) return this.inflight.then(secretOf);
    if (this.token !== null && this.isUsable(this.token)) return Promise.resolve(this.token.secret);
    const now = this.opts.clock.now();
    if (now - this.lastForcedAt < this.opts.invalidateInterval) {
      return Promise.reject(
        new CredentialError(
          `${this.provider.kind}: the server rejected the token again within ${this.opts.invalidateInterval} ms; not refetching yet`,
          this.provider.kind,
        ),
      );
    }
    this.lastForcedAt = now;
    return this.fetch().then(secretOf);
  }

  /** Starts the background refresher (when the first pool using this identity starts). */
  start(): void {
    if (this.started || this.stopped || !this.opts.cache) return;
    this.started = true;
    if (this.token !== null) this.scheduleRefresh(this.token);
  }

  /** Stops the refresher for good (the last pool using this identity is gone). */
  stop(): void {
    this.stopped = true;
    this.clearTimer();
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  snapshot(): CredentialSnapshot {
    const t = this.token;
    const clock = this.opts.clock;
    const now = clock.now();
    const toWall = (mono: number) => clock.wallNow() + (mono - now);
    return {
      key: this.key,
      provider: this.provider.kind,
      description: this.provider.description,
      state: this.state(),
      expiresAt: t ? t.wallExpiresAt : null,
      refreshAt: this.timerAt !== null ? toWall(this.timerAt) : null,
      ageSeconds: t ? (now - t.fetchedAt) / 1000 : null,
      fetches: this.fetches,
      failures: this.failures,
      consecutiveFailures: this.consecutiveFailures,
      lastError: this.lastError,
      lastFetchMs: this.lastFetchMs,
      consumers: this.consumers,
      generation: t ? t.generation : 0,
      user: t?.user ?? null,
      retireAt: t ? t.wallRetireAt : null,
    };
  }

  // ---- internals ----------------------------------------------------------------------------

  private state(): CredentialState {
    if (this.stopped) return "stopped";
    const t = this.token;
    const valid = t !== null && this.opts.clock.now() < t.expiresAt;
    if (this.inflight !== null) return valid ? "refreshing" : "fetching";
    if (this.retryPending) return valid ? "retrying" : "expired";
    if (valid) return "valid";
    return t === null && this.fetches === 0 ? "cold" : "expired";
  }

  private isUsable(t: HeldToken): boolean {
    return this.opts.clock.now() + this.opts.minRemaining < (t.retireAt ?? t.expiresAt);
  }

  private describe(): string {
    return Object.entries(this.provider.description)
      .map(([k, v]) => `${k}=${v}`)
      .join(" ");
  }

  private failFastError(): CredentialError {
    return new CredentialError(
      `${this.provider.kind}: no valid token (${this.describe()}): ${this.lastError ?? "unknown error"}`,
      this.provider.kind,
    );
  }

  private fetchUncached(): Promise<HeldToken> {
    this.fetches++;
    const startedAt = this.opts.clock.now();
    return this.timedFetch().then(
      (f) => this.held(f, startedAt),
      (err: unknown) => {
        this.failures++;
        throw new CredentialError(
          `${this.provider.kind}: could not get a token: ${sanitize(errorMessage(err))}`,
          this.provider.kind,
          err,
        );
      },
    );
  }

  /**
   * One provider call under token_fetch_timeout. The provider gets the AbortSignal; the race
   * ends the wait even for an SDK that ignores it. The signal is aborted after a failure too,
   * so a provider can tell that its attempt is over.
   */
  private timedFetch(): Promise<FetchedToken> {
    const { clock, fetchTimeout } = this.opts;
    const ac = new AbortController();
    const timeout = clock.setTimeout(
      () => ac.abort(new Error(`timed out after ${fetchTimeout} ms`)),
      fetchTimeout,
    );
    const aborted = new Promise<never>((_, reject) => {
      ac.signal.addEventListener("abort", () => reject(ac.signal.reason), { once: true });
    });
    return Promise.race([
      Promise.resolve().then(() => this.provider.fetch(ac.signal)),
      aborted,
    ]).then(
      (f) => {
        clock.clearTimeout(timeout);
        return f;
      },
      (err: unknown) => {
        clock.clearTimeout(timeout);
        if (!ac.signal.aborted) ac.abort();
        throw err;
      },
    );
  }

  private fetch(): Promise<HeldToken> {
    const { clock, logger } = this.opts;
    const provider = this.provider;
    const startedAt = clock.now();
    this.fetches++;
    this.clearTimer(); // a refresh in progress replaces whatever was scheduled
    const run = this.timedFetch().then(
      (fetched) => {
        const held = this.accept(fetched, startedAt);
        this.inflight = null;
        this.consecutiveFailures = 0;
        this.lastError = null;
        this.retryPending = false;
        this.lastFetchMs = clock.now() - startedAt;
        logger.info(
          {
            credential: this.describe(),
            provider: provider.kind,
            duration_ms: Math.round(this.lastFetchMs),
            expires_at: new Date(held.wallExpiresAt).toISOString(),
            result: "ok",
          },
          "credential fetched",
        );
        if (this.started && !this.stopped) this.scheduleRefresh(held);
        return held;
      },
      (err: unknown) => {
        this.inflight = null;
        this.failures++;
        this.consecutiveFailures++;
        this.lastError = sanitize(errorMessage(err));
        this.lastFetchMs = clock.now() - startedAt;
        const t = this.token;
        const validLeft = t !== null && clock.now() < t.expiresAt;
        logger.warn(
          {
            credential: this.describe(),
            provider: provider.kind,
            duration_ms: Math.round(this.lastFetchMs),
            result: "error",
            err: this.lastError,
            consecutive_failures: this.consecutiveFailures,
            token_still_valid: validLeft,
          },
          "credential fetch failed",
        );
        if (this.started && !this.stopped) this.scheduleRetry();
        throw new CredentialError(
          `${provider.kind}: could not get a token (${this.describe()}): ${this.lastError}`,
          provider.kind,
          err,
        );
      },
    );
    this.inflight = run;
    return run;
  }

  private held(fetched: FetchedToken, startedAt: number): HeldToken {
    const { clock } = this.opts;
    if (typeof fetched.secret !== "string" || fetched.secret.length === 0) {
      throw new Error("provider returned an empty token");
    }
    const now = clock.now();
    const wallNow = clock.wallNow();
    if (!Number.isFinite(fetched.expiresAt) || fetched.expiresAt <= wallNow) {
      throw new Error("provider returned a token that has already expired");
    }
    let retireAt: number | null = null;
    let wallRetireAt: number | null = null;
    const deadline = fetched.connectionDeadline;
    if (deadline !== undefined && Number.isFinite(deadline)) {
      const life = Math.max(0, deadline - wallNow);
      wallRetireAt = deadline - Math.min(RETIRE_MARGIN_MS, life * 0.1);
      retireAt = now + (wallRetireAt - wallNow);
    }
    return {
      secret: fetched.secret,
      user: fetched.user,
      generation: ++this.generation,
      retireAt,
      wallRetireAt,
      expiresAt: now + (fetched.expiresAt - wallNow),
      wallExpiresAt: fetched.expiresAt,
      fetchedAt: startedAt,
    };
  }

  private accept(fetched: FetchedToken, startedAt: number): HeldToken {
    const { clock } = this.opts;
    const now = clock.now();
    const wallNow = clock.wallNow();
    const held = this.held(fetched, startedAt);
    this.token = held;
    this.hint = fetched.refreshAt === undefined ? null : now + (fetched.refreshAt - wallNow);
    return held;
  }

  private hint: number | null = null;

  private scheduleRefresh(t: HeldToken): void {
    const { clock, refreshBuffer } = this.opts;
    const now = clock.now();
    const lifetime = Math.max(0, t.expiresAt - now);
    const buffer = Math.min(refreshBuffer, lifetime / 4);
    let at = t.expiresAt - buffer;
    if (this.hint !== null && this.hint < at) at = this.hint;
    // Jitter spreads the refreshes of identities that were fetched together.
    at -= clock.random() * Math.min(lifetime * 0.05, 10_000);
    this.arm(Math.max(now, at), () => {
      void this.fetch().catch(() => {});
    });
  }

  private scheduleRetry(): void {
    const { clock, minBackoff, maxBackoff } = this.opts;
    const exp = Math.min(maxBackoff, minBackoff * 2 ** Math.min(this.consecutiveFailures - 1, 20));
    // "Equal jitter": at least half the backoff, so gaps grow; the rest is random.
    let delay = exp / 2 + clock.random() * (exp / 2);
    // While the held token is still valid, don't sleep past half of what is left of it (but
    // never less than minBackoff): an outage that ends before expiry is noticed before expiry.
    const t = this.token;
    if (t !== null) {
      const left = t.expiresAt - clock.now();
      if (left > 0) delay = Math.min(delay, Math.max(minBackoff, left / 2));
    }
    this.retryPending = true;
    this.arm(clock.now() + delay, () => {
      void this.fetch().catch(() => {});
    });
  }

  private arm(at: number, fn: () => void): void {
    this.clearTimer();
    const { clock } = this.opts;
    this.timerAt = at;
    this.timer = clock.setTimeout(() => {
      this.timer = null;
      this.timerAt = null;
      if (!this.stopped) fn();
    }, at - clock.now());
  }

  private clearTimer(): void {
    if (this.timer !== null) this.opts.clock.clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = null;
  }
}

function secretOf(t: HeldToken): string {
  return t.secret;
}

function loginOf(t: HeldToken): Login {
  return { secret: t.secret, user: t.user, generation: t.generation, retireAt: t.retireAt };
}

/** Error texts from SDKs can echo request bodies; keep them short and strip anything token-like. */
export function sanitize(message: string): string {
  return message
    .replace(/eyJ[\w-]+\.[\w-]+\.[\w-]*/g, "[jwt]")
    .replace(/X-Amz-Signature=[0-9a-f]+/gi, "X-Amz-Signature=[redacted]")
    .replace(
      /(access_token|client_assertion|password|secret|token)(["':= ]+)[^\s"',&]+/gi,
      "$1$2[redacted]",
    )
    .slice(0, 500);
}
