export { fileOf } from "./attachments.js";
export { ADMIN_DEFAULTS, DATABASE_DEFAULTS, GENERAL_DEFAULTS, USER_DEFAULTS } from "./defaults.js";
export { type ConfigDiff, diffConfig, isEmptyDiff, type UserKey } from "./diff.js";
export type { Env } from "./env.js";
export { ConfigError, type ConfigProblem } from "./errors.js";
export {
  type ConfigFiles,
  type ConfigTexts,
  KUBERNETES_JWT_PATH,
  loadConfig,
  parseConfig,
  parseConfigTexts,
  readConfig,
  vaultConfig,
} from "./load.js";
export {
  inferRdsRegion,
  RESTART_KEYS,
  SUPPORTED_SERVER_AUTH,
  TOKEN_AUTH_MODES,
  VAULT_AUTH_MODES,
} from "./rules.js";
export type {
  AdminConfig,
  ClientAuthType,
  Config,
  DatabaseConfig,
  GeneralConfig,
  PoolerMode,
  ServerAuth,
  TlsVerify,
  UserConfig,
  VaultConfig,
} from "./types.js";
