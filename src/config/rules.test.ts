import { describe, expect, it } from "vitest";
import { inferRdsRegion } from "./rules.js";

describe("inferRdsRegion", () => {
  it.each([
    ["mydb.abc123xyz.eu-west-1.rds.amazonaws.com", "eu-west-1"],
    ["cluster-x.cluster-abc.us-east-2.rds.amazonaws.com", "us-east-2"],
    ["proxy.proxy-abc.ap-southeast-2.rds.amazonaws.com.", "ap-southeast-2"],
    ["mydb.abc.cn-north-1.rds.amazonaws.com.cn", "cn-north-1"],
    ["rds.cn-northwest-1.amazonaws.com.cn", "cn-northwest-1"],
    ["mydb.abc.us-gov-west-1.rds.amazonaws.com", "us-gov-west-1"],
  ])("%s → %s", (host, region) => {
    expect(inferRdsRegion(host)).toBe(region);
  });

  it.each([
    "10.0.0.5",
    "db.internal.example.com",
    "rds.amazonaws.com",
    "mydb.eu-west-1.example.com",
  ])("%s → none", (host) => {
    expect(inferRdsRegion(host)).toBeUndefined();
  });
});
