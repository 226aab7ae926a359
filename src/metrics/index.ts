export type { Metrics, MetricsOptions } from "./registry.js";
export { createMetrics, IDENTITY_KEYS, identityLabel } from "./registry.js";
export type { MetricsServer, MetricsServerOptions } from "./server.js";
export { startMetricsServer } from "./server.js";
export type { MetricsSource, PreparedTotals } from "./types.js";
