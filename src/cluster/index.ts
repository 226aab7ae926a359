export { hasReusePort, type PrimaryOptions, runPrimary } from "./primary.js";
export type { InstanceSnapshot, PreparedView, WorkerSnapshot } from "./snapshots.js";
export { mergePools, mergeSnapshots } from "./snapshots.js";
export { share, workerConfig } from "./split.js";
export { type WorkerHandlers, WorkerLink, workerIdentity } from "./worker.js";
