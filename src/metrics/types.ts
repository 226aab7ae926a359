import type { CredentialSnapshot } from "../credentials/index.js";
import type { PoolSnapshot } from "../pool/index.js";

/**
 * What the metrics read at scrape time. The composition root (cli) implements it over the pool
 * registry, the credential engine and the frontend; metrics pulls from it, so the hot path never
 * pushes anything here (design §1) and an unscraped pgwarden pays nothing for its metrics.
 */
export interface MetricsSource {
  pools(): readonly PoolSnapshot[];
  credentials(): readonly CredentialSnapshot[];
  /** Client connections; `byState` keys are session states (idle, active, waiting, login, …). */
  clients(): { total: number; byState: Record<string, number> };
  /** Named prepared statements (transaction pooling), instance-wide; absent: not reported. */
  prepared?(): PreparedTotals;
}

/** Instance-wide prepared statement counters (PgBouncer's ps_* counts, pgdog's prepared_*). */
export interface PreparedTotals {
  /** Distinct statements known (query text + parameter types). */
  readonly statements: number;
  /** Named Parse messages from clients. */
  readonly clientParses: number;
  /** Parse messages sent to servers: a statement a server did not hold yet. */
  readonly serverParses: number;
  /** Statements closed on a server to stay within prepared_statements_limit. */
  readonly evictions: number;
}
