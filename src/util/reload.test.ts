import { describe, expect, it } from "vitest";
import { silentLogger } from "./logger.js";
import { singleFlightReload } from "./reload.js";

/** A silent logger that keeps what was logged at error level. */
function capturingLogger() {
  const errors: unknown[] = [];
  const logger = silentLogger();
  logger.error = ((obj: unknown) => {
    errors.push(obj);
  }) as typeof logger.error;
  return { logger, errors };
}

describe("singleFlightReload", () => {
  it("joins a reload asked for while one runs, and starts a new one after", async () => {
    let runs = 0;
    let release: () => void = () => {};
    const reload = singleFlightReload(silentLogger(), async (trigger) => {
      runs++;
      await new Promise<void>((r) => {
        release = r;
      });
      return `${trigger} ${runs}`;
    });
    const a = reload("SIGHUP");
    const b = reload("RELOAD");
    expect(b).toBe(a);
    release();
    expect(await a).toBe("SIGHUP 1");
    const c = reload("RELOAD");
    release();
    expect(await c).toBe("RELOAD 2");
    expect(runs).toBe(2);
  });

  it("logs a failure once, rethrows it, and lets the next reload run", async () => {
    const { logger, errors } = capturingLogger();
    let fail = true;
    const reload = singleFlightReload(logger, async () => {
      if (fail) throw new Error("bad key");
      return "ok";
    });
    await expect(Promise.all([reload("SIGHUP"), reload("RELOAD")])).rejects.toThrow("bad key");
    expect(errors).toEqual([{ trigger: "SIGHUP", err: "bad key" }]);
    fail = false;
    expect(await reload("RELOAD")).toBe("ok");
  });

  it("turns a run that throws before returning a promise into a rejection, not a throw", async () => {
    const { logger, errors } = capturingLogger();
    // what a reload that reads its files synchronously does with a bad file (a SIGHUP handler
    // calls reload(...).catch(...): a synchronous throw there would end the process)
    const reload = singleFlightReload<string>(logger, () => {
      throw new Error("users.toml: bad pool_size");
    });
    let p: Promise<string> | undefined;
    expect(() => {
      p = reload("SIGHUP");
    }).not.toThrow();
    await expect(p).rejects.toThrow("bad pool_size");
    expect(errors).toEqual([{ trigger: "SIGHUP", err: "users.toml: bad pool_size" }]);
  });
});
