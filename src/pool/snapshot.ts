// Read-only views of the pools for the admin console and the metrics, taken on demand (at
// SHOW time or scrape time): nothing on the hot path is pushed anywhere.

export interface PoolSnapshot {
  readonly user: string;
  readonly database: string;
  readonly mode: "transaction" | "session";
  readonly poolSize: number;
  readonly minPoolSize: number;
  readonly host: string;
  readonly port: number;
  readonly serverDatabase: string;
  readonly serverUser: string;
  /** Clients holding a server (cl_active) and waiting for one (cl_waiting). */
  readonly clActive: number;
  readonly clWaiting: number;
  readonly svActive: number;
  readonly svIdle: number;
  readonly svConnecting: number;
  /** Longest current wait, ms. */
  readonly maxWaitMs: number;
  readonly paused: boolean;
  readonly totalXact: number;
  readonly totalQuery: number;
  readonly totalWaitMs: number;
  readonly checkouts: number;
  readonly connectFailures: number;
}

export interface ServerSnapshot {
  readonly user: string;
  readonly database: string;
  readonly state: "active" | "idle";
  readonly host: string;
  readonly port: number;
  readonly backendPid: number;
  /** Epoch ms. */
  readonly connectTime: number;
  readonly tls: boolean;
  /** The role it logged in as (a Vault dynamic user differs from the configured one). */
  readonly serverUser: string;
  /** Which credential of its pool's source it used (0 = a static password); never the secret. */
  readonly credentialGeneration: number;
  /** Epoch ms by which it will be closed (its credential's deadline), or null. */
  readonly retireAt: number | null;
  /** The worker process holding the connection (workers > 1); absent with one process. */
  readonly worker?: number;
}
