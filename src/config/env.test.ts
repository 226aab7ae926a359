// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these tests are about ${VAR} references
import { describe, expect, it } from "vitest";
import { substitute } from "./env.js";

describe("substitute", () => {
  const env = { A: "alpha", B_2: "", _x: "under" };

  it.each([
    ["plain", "plain"],
    ["${A}", "alpha"],
    ["x${A}y${A}z", "xalphayalphaz"],
    ["${B_2}", ""],
    ["${_x}", "under"],
    ["$${A}", "${A}"],
    ["$$${A}", "$${A}"],
    ["a$b", "a$b"],
    ["pa$$word", "pa$$word"],
    ["{A}", "{A}"],
  ])("%s → %s", (input, output) => {
    expect(substitute(input, env)).toEqual({ value: output });
  });

  it("reports the first undefined variable by name", () => {
    expect(substitute("${NOPE}-${ALSO}", env)).toEqual({
      error: 'undefined environment variable "NOPE"',
    });
  });

  it("ignores inherited properties of the env object", () => {
    expect(substitute("${toString}", env)).toEqual({
      error: 'undefined environment variable "toString"',
    });
  });

  it.each(["${", "${A", "${1A}", "${A-b}", "${}"])("%s is malformed", (input) => {
    const r = substitute(input, env);
    expect("error" in r && r.error).toMatch(/^malformed "\$\{" reference/);
  });
});
