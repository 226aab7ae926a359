import { type Logger, pino } from "pino";
import pretty from "pino-pretty";

export type { Logger };

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal";

/**
 * Structured JSON logs on stdout, one object per line. Keys that could carry a secret are
 * redacted as a last line of defence; the code itself never passes secrets to the logger.
 */
export function createLogger(
  level: LogLevel = "info",
  human = process.stdout.isTTY === true,
): Logger {
  const options = {
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
  };
  // A person at a terminal gets readable lines; anything else (files, collectors) gets JSON.
  if (human)
    return pino(
      options,
      pretty({ colorize: true, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname,name" }),
    );
  return pino(options);
}

/** A logger that drops everything (unit tests, library use). */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
