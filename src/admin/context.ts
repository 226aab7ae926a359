// What the admin console may see and do. The composition root (cli) implements this over the pool
// registry, the credential engine, the frontend and the config; admin reads snapshots taken at the
// moment a SHOW runs and calls back for actions, so it needs no reference to any live object and
// never touches a socket (design §1).

import type { Config } from "../config/index.js";
import type { CredentialSnapshot } from "../credentials/index.js";
import type { PoolSnapshot, ServerSnapshot } from "../pool/index.js";

/** One client connection as SHOW CLIENTS lists it. Defined here: only admin needs this shape. */
export interface ClientSnapshot {
  readonly user: string;
  readonly database: string;
  readonly state: "active" | "idle" | "waiting" | "login";
  /** The client's address and port as the listener saw them. */
  readonly addr: string;
  readonly port: number;
  /** Epoch ms. */
  readonly connectTime: number;
  /** The pid pgwarden handed the client in BackendKeyData (not a server's pid). */
  readonly pid: number;
  /** Backend pid of the server the client holds right now; 0 if none. */
  readonly serverPid: number;
  readonly tls: boolean;
  readonly applicationName: string;
  /** The worker process serving the client (workers > 1); absent with one process. */
  readonly worker?: number;
}

/** One instance-wide named prepared statement, as SHOW PREPARED lists it. */
export interface PreparedSnapshot {
  /** Server-side name (pgw_<n>). */
  readonly name: string;
  readonly query: string;
  /** Parameter type OIDs the clients declared (0 = unspecified). */
  readonly paramTypes: readonly number[];
  /** Client statement names that refer to it. */
  readonly clients: number;
  /** Server connections that hold it (or are about to). */
  readonly servers: number;
}

export interface AdminContext {
  /** pgwarden's version, e.g. "0.1.0". */
  readonly version: string;
  pools(): readonly PoolSnapshot[];
  servers(): readonly ServerSnapshot[];
  clients(): readonly ClientSnapshot[];
  credentials(): readonly CredentialSnapshot[];
  /** Named prepared statements (transaction pooling); absent: none tracked. */
  prepared?(): {
    readonly statements: readonly PreparedSnapshot[];
    readonly clientParses: number;
    readonly serverParses: number;
    readonly evictions: number;
  };
  /** The running configuration (after the last successful reload). */
  config(): Config;
  /** Re-reads the config files and applies them; resolves to a summary of what changed. */
  reload(): Promise<string>;
  /** Resolves once the pools of `database` (or all) hold no server for a client any more. */
  pause(database?: string): Promise<void>;
  resume(database?: string): void;
  /** Closes servers of `database` (or all) as soon as they are released, so new ones log in. */
  reconnect(database?: string): void;
  /** Starts a graceful shutdown (stop accepting, drain clients); returns at once. */
  shutdown(): void;
}
