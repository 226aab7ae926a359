export { arenaView, ByteArena, copyBytes, sharedArena } from "./byte-arena.js";
export type { ErrorContext, Severity } from "./errors.js";
export { errorMessage, isAuthFailure, PgError, PgwardenError } from "./errors.js";
export type { Logger, LogLevel } from "./logger.js";
export { createLogger, silentLogger } from "./logger.js";
export { Queue } from "./queue.js";
export { singleFlightReload } from "./reload.js";
export { SocketIO } from "./socket-io.js";
