import { describe, expect, it } from "vitest";
import { literal, markSynced, parseOptions, syncQuery, wantedSettings } from "./params.js";

describe("settings sync", () => {
  it("unpacks options and skips non-settings", () => {
    const w = wantedSettings(
      new Map([
        ["user", "u"],
        ["database", "d"],
        ["application_name", "app"],
        ["options", "-c search_path=a,b --statement-timeout=5s -cwork_mem=64kB"],
        ["_pq_.x", "1"],
      ]),
    );
    expect([...w]).toEqual([
      ["application_name", "app"],
      ["search_path", "a,b"],
      ["statement_timeout", "5s"],
      ["work_mem", "64kB"],
    ]);
  });

  it("honours backslash escapes in options", () => {
    expect(parseOptions("-c application_name=a\\ b")).toEqual([["application_name", "a b"]]);
    expect(() => parseOptions("-x")).toThrow(/unsupported option/);
  });

  it("quotes literals safely", () => {
    expect(literal("it's \\ ok")).toBe("E'it\\'s \\\\ ok'");
  });

  it("sets what differs, resets what a previous client left, then is in sync", () => {
    const server = {
      applied: new Map([["TimeZone", "UTC"]]),
      baseline: new Map([["DateStyle", "ISO, MDY"]]),
    };
    const wanted = new Map([
      ["DateStyle", "ISO, MDY"],
      ["application_name", "x"],
    ]);
    const q = syncQuery(server, wanted);
    expect(q).toBe(`SELECT set_config(E'application_name', E'x', false);RESET "TimeZone";`);
    markSynced(server, wanted);
    expect(syncQuery(server, wanted)).toBeNull();
    expect([...server.applied]).toEqual([["application_name", "x"]]);
  });
});
