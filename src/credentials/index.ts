export { type Clock, ManualClock, systemClock } from "./clock.js";
export type { EngineOptions } from "./engine.js";
export { CredentialEngine, credentialKey } from "./engine.js";
export { CredentialEntry, CredentialError, RETIRE_MARGIN_MS, sanitize } from "./entry.js";
export type { Identity } from "./providers/index.js";
export { identityFor } from "./providers/index.js";
export type { CredentialRequest, CredentialTransport } from "./remote.js";
export { CredentialHost, RemoteCredentialEngine } from "./remote.js";
export type {
  CredentialBroker,
  CredentialHandle,
  CredentialSnapshot,
  CredentialState,
  FetchedToken,
  Login,
  TokenProvider,
} from "./types.js";
