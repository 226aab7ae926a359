// Typed access to the network guard (test/guard/net-guard.cjs) and the environment given to
// child processes. Requiring the guard here also installs it in this process.
import { createRequire } from "node:module";
import { join } from "node:path";
import { repoRoot } from "./procs.js";

interface NetGuardModule {
  guardEnv(): Record<string, string>;
  applyGuardEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv;
  isLoopbackHost(host: string): boolean;
  UNSET_VARS: readonly string[];
  CLOSED_LOOPBACK: string;
  guardFile: string;
}

/** Absolute path of the guard, for `NODE_OPTIONS=--require <path>`. */
export const NET_GUARD_FILE = join(repoRoot(), "test", "guard", "net-guard.cjs");

export const netGuard = createRequire(import.meta.url)(NET_GUARD_FILE) as NetGuardModule;

/**
 * The guard variables of design §4 "Network guards": AWS_EC2_METADATA_DISABLED, dummy AWS keys
 * and region, absent AWS config files, Azure/GCP endpoints at a closed loopback port,
 * GOOGLE_CLOUD_PROJECT, and PGWARDEN_NET_GUARD_LOG when set. Variables to remove (proxies,
 * AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, ambient cloud identities) are in `netGuard.UNSET_VARS`;
 * `childEnv` applies both.
 */
export function guardEnv(): Record<string, string> {
  return netGuard.guardEnv();
}

/** NODE_OPTIONS with `--require <guard>` added once. */
export function nodeOptionsWithGuard(existing: string | undefined): string {
  const req = /\s/.test(NET_GUARD_FILE)
    ? `--require ${JSON.stringify(NET_GUARD_FILE)}`
    : `--require ${NET_GUARD_FILE}`;
  const rest = (existing ?? "").includes(NET_GUARD_FILE)
    ? (existing ?? "")
    : `${existing ?? ""} ${req}`;
  return rest.trim();
}

/**
 * Environment for a Node child process under test: a copy of process.env, the guard variables
 * applied (unset list removed, guard values set), then `extra` (a value of `undefined` removes
 * that variable), and last NODE_OPTIONS requiring the guard: a NODE_OPTIONS in `extra` (the
 * bench's BENCH_B_ENV, say) gets the guard added, never loses it.
 */
export function childEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  netGuard.applyGuardEnv(env);
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  env.NODE_OPTIONS = nodeOptionsWithGuard(env.NODE_OPTIONS);
  return env;
}
