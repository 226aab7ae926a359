/** A secret as a provider hands it over. Times are wall-clock epoch milliseconds. */
export interface FetchedToken {
  readonly secret: string;
  readonly expiresAt: number;
  /** The provider's own "refresh after" hint (Azure's refreshAfterTimestamp), if any. */
  readonly refreshAt?: number | undefined;
}

/**
 * One identity's source of secrets: AWS RDS IAM, Entra ID, a command, …  Implementations hold
 * their SDK client (created once per identity) and never log the secret.
 */
export interface TokenProvider {
  /** The server_auth mode, e.g. "rds_iam". */
  readonly kind: string;
  /** What identifies this identity, safe to show (host, port, user, region, client id, …). */
  readonly description: Readonly<Record<string, string | number>>;
  /** Fetches a fresh secret; should honour `signal` (token_fetch_timeout). */
  fetch(signal: AbortSignal): Promise<FetchedToken>;
  /** The server rejected the last secret: drop any SDK-side cache so the next fetch is new. */
  invalidate?(): void;
}

export type CredentialState =
  | "cold"
  | "fetching"
  | "valid"
  | "refreshing"
  | "retrying"
  | "expired"
  | "stopped";

/** One row of SHOW CREDENTIALS / the metrics: never the secret. */
export interface CredentialSnapshot {
  readonly key: string;
  readonly provider: string;
  readonly description: Readonly<Record<string, string | number>>;
  readonly state: CredentialState;
  /** Wall-clock epoch ms, or null when no token is held. */
  readonly expiresAt: number | null;
  readonly refreshAt: number | null;
  /** Seconds since the held token was fetched, or null. */
  readonly ageSeconds: number | null;
  readonly fetches: number;
  readonly failures: number;
  readonly consecutiveFailures: number;
  readonly lastError: string | null;
  readonly lastFetchMs: number | null;
  readonly consumers: number;
}

/** What a pool holds on an identity: the secret to log in with, and "that one was rejected". */
export interface CredentialHandle {
  readonly key: string;
  get(): Promise<string>;
  invalidate(rejected: string): Promise<string>;
}

/** What the pool registry needs of a credential engine, local (CredentialEngine) or remote. */
export interface CredentialBroker {
  acquire(key: string, makeProvider: () => TokenProvider): CredentialHandle;
  release(handle: CredentialHandle): void;
}
