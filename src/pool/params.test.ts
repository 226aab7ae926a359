import { describe, expect, it } from "vitest";
import {
  literal,
  markSynced,
  parseOptions,
  settingsStamp,
  syncQuery,
  wantedSettings,
} from "./params.js";

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
      settingsStamp: 0,
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

  it("stamps: the same settings get the same stamp, different ones never share one", () => {
    const a = settingsStamp(new Map([["application_name", "a"]]));
    expect(settingsStamp(new Map([["application_name", "a"]]))).toBe(a);
    expect(settingsStamp(new Map([["application_name", "b"]]))).not.toBe(a);
    expect(settingsStamp(new Map([["application_nam", "ea"]]))).not.toBe(a);
    // past the table's size, old sets get new stamps, never another set's
    const seen = new Map<number, string>();
    for (let i = 0; i < 10_000; i++) {
      const v = `v${i % 5000}`;
      const st = settingsStamp(new Map([["search_path", v]]));
      const before = seen.get(st);
      if (before !== undefined) expect(before).toBe(v);
      seen.set(st, v);
    }
  });
});
