// vitest setup file: installs the network guard in the worker and applies the guard variables
// to its environment (design §4 "Network guards"), so that SDK code run in-process is as
// fenced in as the pgwarden children (which get the same guard through NODE_OPTIONS).
import { createRequire } from "node:module";

const guard = createRequire(import.meta.url)("./net-guard.cjs") as {
  applyGuardEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv;
};
guard.applyGuardEnv(process.env);
