// The harness's readers of pgbench output (the bench and the load tests rely on them).
import { describe, expect, it } from "vitest";
import { parsePgbench, parsePgbenchProblems } from "./harness/clients.js";

describe("pgbench output", () => {
  it("reads the summary", () => {
    const stdout = [
      "number of transactions actually processed: 12345",
      "number of failed transactions: 3 (0.024%)",
      "latency average = 4.051 ms",
      "tps = 1234.567890 (without initial connection time)",
    ].join("\n");
    expect(parsePgbench(stdout)).toEqual({
      tps: 1234.56789,
      failed: 3,
      processed: 12345,
      latencyAvgMs: 4.051,
    });
  });

  it("counts aborted clients once each, and other errors apart", () => {
    const stderr = [
      'pgbench: error: ERROR:  prepared statement "P_0" already exists',
      "pgbench: error: client 4 script 0 aborted in command 4 query 0: FATAL:  the database system is shutting down",
      "pgbench: error: client 15 aborted in command 7 (SQL) of script 0; perhaps the backend died while processing",
      "progress: 5.0 s, 0.0 tps, lat 0.000 ms stddev 0.000, 0 failed",
      "pgbench: error: client 4 aborted in command 4 (SQL) of script 0; again",
      "pgbench: error: progress: 15.1 s, 670.8 tps, lat 24.898 ms stddev 15.496, 0 failed",
      "pgbench: error: Run was aborted; the above results are incomplete.",
    ].join("\n");
    const p = parsePgbenchProblems(stderr);
    expect(p.abortedClients).toBe(2);
    expect(p.aborts[0]).toBe(
      "client 4 script 0 aborted in command 4 query 0: FATAL:  the database system is shutting down",
    );
    expect(p.aborts).toHaveLength(3);
    expect(p.errors).toEqual(['ERROR:  prepared statement "P_0" already exists']);
  });

  it("counts each message once when threads' writes interleave", () => {
    const exists = 'ERROR:  prepared statement "P_0" already exists';
    const stderr = [
      `pgbench:pgbench: error: ${exists}`,
      ` error: ${exists}`,
      `pgbench: pgbench: error: ${exists}`,
      `error: pgbench: error: ${exists}`,
      exists,
      "pgbench: error: could not do something",
      "pgbench: error: ",
      "progress: 1.0 s, 10.0 tps, lat 1.000 ms stddev 0.100, 0 failed",
    ].join("\n");
    const p = parsePgbenchProblems(stderr);
    expect(p.abortedClients).toBe(0);
    expect(p.errors).toEqual([exists, exists, exists, exists, exists, "could not do something"]);
  });

  it("finds nothing in a clean run", () => {
    expect(parsePgbenchProblems("pgbench: warning: x\n")).toEqual({
      abortedClients: 0,
      aborts: [],
      errors: [],
    });
  });
});
