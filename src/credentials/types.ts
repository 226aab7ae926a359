/** A secret as a provider hands it over. Times are wall-clock epoch milliseconds. */
export interface FetchedToken {
  readonly secret: string;
  readonly expiresAt: number;
  /** The provider's own "refresh after" hint (Azure's refreshAfterTimestamp), if any. */
  readonly refreshAt?: number | undefined;
  /**
   * The user name to log in as, when the provider issues it with the secret (Vault). Not a
   * secret: it shows in SHOW CREDENTIALS.
   */
  readonly user?: string | undefined;
  /**
   * Wall-clock ms after which server connections opened with this secret must not live (the
   * role itself is revoked: a Vault dynamic lease). Absent for tokens that only gate logins.
   */
  readonly connectionDeadline?: number | undefined;
}

/** What a login needs, and what the pool keeps about the credential a connection used. */
export interface Login {
  readonly secret: string;
  /** Log in as this user instead of the configured server_user. */
  readonly user: string | undefined;
  /** Which credential of this entry (1, 2, …): shown in SHOW SERVERS, never the secret. */
  readonly generation: number;
  /** Monotonic ms (performance.now()) by which connections opened with it must be closed; null = never. */
  readonly retireAt: number | null;
}

/**
 * One identity's source of secrets: AWS RDS IAM, Entra ID, a command, …  Implementations hold
 * their SDK client (created once per identity) and never log the secret.
 */
export interface TokenProvider {
  /** The server_auth mode, e.g. "rds_iam". */
  readonly kind: string;
  /**
   * true when each secret comes with the user name to log in as (Vault): pools fetch the
   * credential before connecting, since the user goes into the StartupMessage.
   */
  readonly issuesUser?: boolean;
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
  /** How many credentials this entry has held (the current one's generation), 0 = none yet. */
  readonly generation: number;
  /** The user name issued with the current credential (Vault), else null. */
  readonly user: string | null;
  /** Wall-clock ms by which connections opened with the current credential close, or null. */
  readonly retireAt: number | null;
}

/** What a pool holds on an identity: the secret to log in with, and "that one was rejected". */
export interface CredentialHandle {
  readonly key: string;
  get(): Promise<string>;
  invalidate(rejected: string): Promise<string>;
  /** The secret with the user and deadline that come with it. */
  getLogin(): Promise<Login>;
  /** The provider names the login user (Vault): pools fetch before they connect. */
  readonly issuesUser: boolean;
  /** The generation of the credential held now (0 = none yet; remote: the latest seen). */
  readonly currentGeneration: number;
}

/** What the pool registry needs of a credential engine, local (CredentialEngine) or remote. */
export interface CredentialBroker {
  acquire(key: string, makeProvider: () => TokenProvider): CredentialHandle;
  release(handle: CredentialHandle): void;
}
