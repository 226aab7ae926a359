export { PgError, PgwardenError, isAuthFailure, errorMessage } from "./errors.js";
export type { ErrorContext, Severity } from "./errors.js";
export { Queue } from "./queue.js";
export { createLogger, silentLogger } from "./logger.js";
export type { Logger, LogLevel } from "./logger.js";
