import { type Logger, pino } from "pino";

export type { Logger };

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal";

/**
 * Structured JSON logs on stdout, one object per line. Keys that could carry a secret are
 * redacted as a last line of defence; the code itself never passes secrets to the logger.
 */
export function createLogger(level: LogLevel = "info"): Logger {
  return pino({
    level,
    base: { name: "pgwarden" },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: [
        "password",
        "*.password",
        "token",
        "*.token",
        "secret",
        "*.secret",
        "server_password",
        "*.server_password",
      ],
      censor: "[redacted]",
    },
  });
}

/** A logger that drops everything (unit tests, library use). */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
