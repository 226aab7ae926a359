export type { LeaseHolder } from "./lease.js";
export { Lease } from "./lease.js";
export { LoginParams, reportedAsGiven, shapeKey } from "./login-params.js";
export { settingsStamp, TRACKED_REPORTED, wantedSettings } from "./params.js";
export type { CredentialSource, PoolSettings } from "./pool.js";
export { Pool } from "./pool.js";
export { PoolRegistry, poolKey } from "./registry.js";
export type { PoolSnapshot, ServerSnapshot } from "./snapshot.js";
