// The whole instance as the admin console shows it: the snapshots of every worker put together.
// Pools are summed per (user, database), so SHOW POOLS and SHOW STATS keep one row per pool
// whatever the number of workers (pool_size there is the sum of the shares, i.e. the configured
// size); clients and servers are listed, each with its worker; credentials come from the
// primary's engine, the only one.

import type { ClientSnapshot, PreparedSnapshot } from "../admin/index.js";
import type { CredentialSnapshot } from "../credentials/index.js";
import type { PoolSnapshot, ServerSnapshot } from "../pool/index.js";

export interface PreparedView {
  readonly statements: readonly PreparedSnapshot[];
  readonly clientParses: number;
  readonly serverParses: number;
  readonly evictions: number;
}

/** What one worker reports. */
export interface WorkerSnapshot {
  readonly worker: number;
  readonly pools: readonly PoolSnapshot[];
  readonly servers: readonly ServerSnapshot[];
  readonly clients: readonly ClientSnapshot[];
  readonly prepared: PreparedView;
}

export interface InstanceSnapshot {
  readonly pools: readonly PoolSnapshot[];
  readonly servers: readonly ServerSnapshot[];
  readonly clients: readonly ClientSnapshot[];
  readonly prepared: PreparedView;
  readonly credentials: readonly CredentialSnapshot[];
}

type Summed = { -readonly [K in keyof PoolSnapshot]: PoolSnapshot[K] };

const SUMMED = [
  "poolSize",
  "minPoolSize",
  "clActive",
  "clWaiting",
  "svActive",
  "svIdle",
  "svConnecting",
  "totalXact",
  "totalQuery",
  "totalWaitMs",
  "checkouts",
  "connectFailures",
] as const;

export function mergePools(parts: readonly (readonly PoolSnapshot[])[]): PoolSnapshot[] {
  const byKey = new Map<string, Summed>();
  for (const pools of parts) {
    for (const p of pools) {
      const key = `${p.user}\0${p.database}`;
      const acc = byKey.get(key);
      if (acc === undefined) {
        byKey.set(key, { ...p });
        continue;
      }
      for (const k of SUMMED) acc[k] += p[k];
      acc.maxWaitMs = Math.max(acc.maxWaitMs, p.maxWaitMs);
      acc.paused = acc.paused || p.paused;
    }
  }
  return [...byKey.values()];
}

export function mergeSnapshots(
  parts: readonly WorkerSnapshot[],
  credentials: readonly CredentialSnapshot[],
): InstanceSnapshot {
  const sorted = [...parts].sort((a, b) => a.worker - b.worker);
  const statements = new Map<string, PreparedSnapshot>();
  let clientParses = 0;
  let serverParses = 0;
  let evictions = 0;
  for (const w of sorted) {
    clientParses += w.prepared.clientParses;
    serverParses += w.prepared.serverParses;
    evictions += w.prepared.evictions;
    // Each worker names its statements itself: the same name in two workers is two statements.
    for (const s of w.prepared.statements) statements.set(`${w.worker}\0${s.name}`, s);
  }
  return {
    pools: mergePools(sorted.map((w) => w.pools)),
    servers: sorted.flatMap((w) => w.servers.map((s) => ({ ...s, worker: w.worker }))),
    clients: sorted.flatMap((w) => w.clients.map((c) => ({ ...c, worker: w.worker }))),
    prepared: { statements: [...statements.values()], clientParses, serverParses, evictions },
    credentials,
  };
}
