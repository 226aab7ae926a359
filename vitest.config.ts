import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    exclude: ["**/node_modules/**", "**/.*/**", "**/.*"],
    // child processes, not worker threads: NODE_EXTRA_CA_CERTS and the like are read only at
    // process start, and a fork is where the harness's exit handlers run
    pool: "forks",
    // a 2-core machine: two test files at a time (each may run PostgreSQL and pgwarden)
    fileParallelism: true,
    maxWorkers: 2,
    minWorkers: 1,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    teardownTimeout: 30_000,
    setupFiles: ["test/guard/setup.ts"],
    globalSetup: ["test/harness/global-setup.ts"],
  },
});
