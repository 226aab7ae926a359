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
}
