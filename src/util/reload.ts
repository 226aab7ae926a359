// One configuration reload at a time, for the single process and for the primary of workers:
// a reload asked for (SIGHUP, RELOAD, the file watcher) while one runs joins it rather than
// starting a second, and a failure is logged once and rethrown, the running configuration kept.

import { errorMessage } from "./errors.js";
import type { Logger } from "./logger.js";

export function singleFlightReload<T>(
  logger: Logger,
  run: (trigger: string) => Promise<T>,
): (trigger: string) => Promise<T> {
  let running: Promise<T> | null = null;
  return (trigger) => {
    // (an async wrapper: a `run` that throws before its first await still ends in the catch)
    running ??= (async () => run(trigger))()
      .catch((err: unknown) => {
        logger.error(
          { trigger, err: errorMessage(err) },
          "configuration reload failed; keeping the running configuration",
        );
        throw err;
      })
      .finally(() => {
        running = null;
      });
    return running;
  };
}
