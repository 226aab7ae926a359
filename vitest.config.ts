import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    exclude: ["**/node_modules/**", "**/.*/**", "**/.*"],
    // child processes, not worker threads: NODE_EXTRA_CA_CERTS and the like are read only at
    // process start, and a fork is where the harness's exit handlers run
    pool: "forks",
    // three test files at a time on a 2-core machine (each may run PostgreSQL and pgwarden):
    // the longest files spend most of their time waiting out token lifetimes, not on CPU
    // (two at a time: 382 s for the suite; three: 273 s, the CPU-bound files unchanged)
    fileParallelism: true,
    maxWorkers: 3,
    minWorkers: 1,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    teardownTimeout: 30_000,
    setupFiles: ["test/guard/setup.ts"],
    globalSetup: ["test/harness/global-setup.ts"],
  },
});
