// The Prometheus registry. Model: nothing is recorded as it happens. Every collector is a
// prom-client Gauge or Counter whose `collect()` runs when the registry is scraped, reads the
// snapshots from the MetricsSource and rewrites its own series from them (reset, then set/inc).
// So lower layers push nothing into metrics (design §1), a pool or credential that went away
// simply stops having series, and an unscraped process pays nothing.
//
// Totals in the snapshots (transactions, queries, checkouts, fetches, …) are monotonic, so they
// are exposed as Prometheus counters: reset + inc(snapshotValue) each scrape makes the counter
// equal to the snapshot. When a pool is rebuilt (reload) its totals restart from 0, which
// Prometheus reads as an ordinary counter reset; rate() handles that.
//
// prom-client's registry calls every collector's collect() synchronously within one turn of the
// event loop (Promise.all over async functions that call collect() before their first await),
// so the snapshots are read once per scrape (`oncePerScrape`) and all metrics of one scrape
// describe the same instant.
//
// Secrets: labels are only pool user/database, client state, credential provider, and an
// `identity` built from an allow-list of description keys (IDENTITY_KEYS). The description is
// non-secret by contract (TokenProvider.description); the allow-list is defence in depth so a
// future provider that describes itself with something sensitive does not leak it here.
import { Counter, collectDefaultMetrics, Gauge, Registry } from "prom-client";
import type { CredentialSnapshot } from "../credentials/index.js";
import type { PoolSnapshot } from "../pool/index.js";
import type { MetricsSource, PreparedTotals } from "./types.js";

export interface MetricsOptions {
  /**
   * Wall clock, epoch ms (default Date.now). Wall clock, not monotonic, because
   * CredentialSnapshot.expiresAt is wall-clock; tests inject their own.
   */
  readonly now?: () => number;
  /** Register prom-client's process/runtime metrics with the pgwarden_ prefix (default true). */
  readonly defaultMetrics?: boolean;
}

export interface Metrics {
  readonly registry: Registry;
}

/** Description keys that may appear in the `identity` label, in the order they are written. */
export const IDENTITY_KEYS = [
  "host",
  "port",
  "user",
  "region",
  "role_arn",
  "tenant_id",
  "client_id",
  "resource_id",
  "assigned",
  "source",
  "command",
] as const;

/** "host=db.example port=5432 user=app region=eu-west-1": the allow-listed description keys. */
export function identityLabel(description: Readonly<Record<string, string | number>>): string {
  const parts: string[] = [];
  for (const k of IDENTITY_KEYS) {
    const v = description[k];
    if (v !== undefined) parts.push(`${k}=${v}`);
  }
  return parts.join(" ");
}

/** One (provider, identity) series set; several credential keys may share it (see below). */
interface CredentialRow {
  readonly provider: string;
  readonly identity: string;
  ok: number;
  error: number;
  consecutiveFailures: number;
  /** Seconds until the soonest expiry in the group, or null when no token is held. */
  expirySeconds: number | null;
  lastFetchSeconds: number | null;
  consumers: number;
}

const POOL_LABELS = ["user", "database"] as const;
type PoolLabel = (typeof POOL_LABELS)[number];

/** A count as prom-client's Counter.inc accepts it: it throws on negatives and non-finite. */
function count(v: number): number {
  return Number.isFinite(v) && v > 0 ? v : 0;
}

/** Memoizes `read` until the current synchronous turn ends, i.e. for one scrape. */
function oncePerScrape<T>(read: () => T): () => T {
  let held: { value: T } | null = null;
  return () => {
    if (held === null) {
      held = { value: read() };
      queueMicrotask(() => {
        held = null;
      });
    }
    return held.value;
  };
}

export function createMetrics(source: MetricsSource, opts: MetricsOptions = {}): Metrics {
  const now = opts.now ?? Date.now;
  const registry = new Registry();
  const registers = [registry];

  if (opts.defaultMetrics ?? true) {
    collectDefaultMetrics({ register: registry, prefix: "pgwarden_" });
  }

  const pools = oncePerScrape(() => source.pools());
  const okSeen = new Map<string, { fetches: number; ok: number }>();
  const credentials = oncePerScrape(() => credentialRows(source.credentials(), now(), okSeen));

  // ---- clients ------------------------------------------------------------------------------

  new Gauge({
    name: "pgwarden_clients",
    help: "Client connections by session state.",
    labelNames: ["state"],
    registers,
    collect() {
      this.reset();
      const { total, byState } = source.clients();
      let sum = 0;
      for (const [state, n] of Object.entries(byState)) {
        this.set({ state }, n);
        sum += n;
      }
      // keeps sum(pgwarden_clients) equal to the total should a client be counted in no state
      if (total > sum) this.inc({ state: "other" }, total - sum);
    },
  });

  // ---- pools --------------------------------------------------------------------------------

  const poolLabels = (p: PoolSnapshot): Record<PoolLabel, string> => ({
    user: p.user,
    database: p.database,
  });
  const poolGauge = (name: string, help: string, value: (p: PoolSnapshot) => number) =>
    new Gauge({
      name,
      help,
      labelNames: POOL_LABELS,
      registers,
      collect() {
        this.reset();
        for (const p of pools()) this.set(poolLabels(p), value(p));
      },
    });
  const poolCounter = (name: string, help: string, value: (p: PoolSnapshot) => number) =>
    new Counter({
      name,
      help,
      labelNames: POOL_LABELS,
      registers,
      collect() {
        this.reset();
        for (const p of pools()) this.inc(poolLabels(p), count(value(p)));
      },
    });

  poolGauge(
    "pgwarden_pool_clients_active",
    "Clients holding a server connection (cl_active).",
    (p) => p.clActive,
  );
  poolGauge(
    "pgwarden_pool_clients_waiting",
    "Clients waiting for a server connection (cl_waiting).",
    (p) => p.clWaiting,
  );
  new Gauge({
    name: "pgwarden_pool_servers",
    help: "Server connections by state.",
    labelNames: [...POOL_LABELS, "state"],
    registers,
    collect() {
      this.reset();
      for (const p of pools()) {
        const l = poolLabels(p);
        this.set({ ...l, state: "active" }, p.svActive);
        this.set({ ...l, state: "idle" }, p.svIdle);
        this.set({ ...l, state: "connecting" }, p.svConnecting);
      }
    },
  });
  poolGauge("pgwarden_pool_size", "Configured maximum server connections.", (p) => p.poolSize);
  poolGauge(
    "pgwarden_pool_max_wait_seconds",
    "Longest current wait of a client for a server connection.",
    (p) => p.maxWaitMs / 1000,
  );
  poolCounter("pgwarden_transactions_total", "Transactions completed.", (p) => p.totalXact);
  poolCounter("pgwarden_queries_total", "Queries completed.", (p) => p.totalQuery);
  poolCounter(
    "pgwarden_checkouts_total",
    "Server connections handed to clients.",
    (p) => p.checkouts,
  );
  poolCounter(
    "pgwarden_checkout_wait_seconds_total",
    "Time clients spent waiting for a server connection.",
    (p) => p.totalWaitMs / 1000,
  );
  poolCounter(
    "pgwarden_server_connect_failures_total",
    "Failed attempts to open a server connection.",
    (p) => p.connectFailures,
  );

  // ---- credentials --------------------------------------------------------------------------

  const CRED_LABELS = ["provider", "identity"] as const;
  const credGauge = (name: string, help: string, value: (r: CredentialRow) => number | null) =>
    new Gauge({
      name,
      help,
      labelNames: CRED_LABELS,
      registers,
      collect() {
        this.reset();
        for (const r of credentials()) {
          const v = value(r);
          if (v !== null) this.set({ provider: r.provider, identity: r.identity }, v);
        }
      },
    });

  new Counter({
    name: "pgwarden_credential_fetch_total",
    help: "Credential fetches from the identity provider, by result.",
    labelNames: [...CRED_LABELS, "result"],
    registers,
    collect() {
      this.reset();
      for (const r of credentials()) {
        const l = { provider: r.provider, identity: r.identity };
        this.inc({ ...l, result: "ok" }, count(r.ok));
        this.inc({ ...l, result: "error" }, count(r.error));
      }
    },
  });
  // The snapshot has one failure count; every fetch after the first is a refresh, and a failed
  // first fetch is retried by the refresher, so this equals fetch_total{result="error"}. It is
  // kept as its own name because the design and dashboards alert on it.
  new Counter({
    name: "pgwarden_credential_refresh_failures_total",
    help: "Failed credential fetches (the cached token, if still valid, stays in use).",
    labelNames: CRED_LABELS,
    registers,
    collect() {
      this.reset();
      for (const r of credentials()) {
        this.inc({ provider: r.provider, identity: r.identity }, count(r.error));
      }
    },
  });
  credGauge(
    "pgwarden_credential_consecutive_failures",
    "Failed fetches since the last success (0 when healthy).",
    (r) => r.consecutiveFailures,
  );
  // Negative once the held token has expired: "expired 30 s ago" is worth more to an alert than
  // a clamped 0. Absent while no token is held (cold, or never fetched successfully).
  credGauge(
    "pgwarden_credential_expiry_seconds",
    "Seconds until the held token expires (negative: expired).",
    (r) => r.expirySeconds,
  );
  // A gauge of the last fetch's duration, not the histogram design §3 names: a histogram needs
  // one observation per fetch, and snapshots carry only the last duration (lower layers push
  // nothing into metrics). A histogram needs the credential entry to keep bucket counts in its
  // snapshot.
  credGauge(
    "pgwarden_credential_fetch_seconds",
    "Duration of the last credential fetch, successful or not.",
    (r) => r.lastFetchSeconds,
  );
  credGauge("pgwarden_credential_consumers", "Pools sharing this credential.", (r) => r.consumers);

  // ---- prepared statements ------------------------------------------------------------------

  const readPrepared = source.prepared?.bind(source);
  if (readPrepared !== undefined) {
    const prepared = oncePerScrape(readPrepared);
    const preparedCounter = (name: string, help: string, value: (t: PreparedTotals) => number) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(count(value(prepared())));
        },
      });
    new Gauge({
      name: "pgwarden_prepared_statements",
      help: "Distinct named prepared statements known (query text + parameter types).",
      registers,
      collect() {
        this.set(prepared().statements);
      },
    });
    preparedCounter(
      "pgwarden_prepared_client_parses_total",
      "Named Parse messages from clients (transaction pooling).",
      (t) => t.clientParses,
    );
    preparedCounter(
      "pgwarden_prepared_server_parses_total",
      "Parse messages sent to servers: a statement the server did not hold yet (a miss).",
      (t) => t.serverParses,
    );
    preparedCounter(
      "pgwarden_prepared_evictions_total",
      "Statements closed on a server to stay within prepared_statements_limit.",
      (t) => t.evictions,
    );
  }

  return { registry };
}

/**
 * Folds credential snapshots into one row per (provider, identity label). Two credential keys can
 * share an identity label when they differ only in settings outside IDENTITY_KEYS (e.g. the Azure
 * token file); Prometheus forbids duplicate series, so their counts are summed, the soonest expiry
 * and the slowest fetch are kept.
 *
 * Successful fetches are derived: the snapshot counts `fetches` when a fetch starts and
 * `failures` when one fails, so fetches − failures also counts a fetch still in flight, which
 * could later fail and make the "ok" counter go down. The in-flight fetch is subtracted when the
 * state shows one, and `okSeen` (per credential key) keeps the value from ever decreasing
 * otherwise (fetches without cache can have several in flight). A drop in `fetches` means the
 * entry was dropped and recreated: a real reset, accepted as such.
 */
function credentialRows(
  snaps: readonly CredentialSnapshot[],
  nowMs: number,
  okSeen: Map<string, { fetches: number; ok: number }>,
): CredentialRow[] {
  const rows = new Map<string, CredentialRow>();
  const present = new Set<string>();
  for (const c of snaps) {
    present.add(c.key);
    const inflight = c.state === "fetching" || c.state === "refreshing" ? 1 : 0;
    let ok = Math.max(0, c.fetches - c.failures - inflight);
    const prev = okSeen.get(c.key);
    if (prev !== undefined && c.fetches >= prev.fetches) ok = Math.max(ok, prev.ok);
    okSeen.set(c.key, { fetches: c.fetches, ok });

    const identity = identityLabel(c.description);
    const id = `${c.provider}\u0000${identity}`;
    const expirySeconds = c.expiresAt === null ? null : (c.expiresAt - nowMs) / 1000;
    const lastFetchSeconds = c.lastFetchMs === null ? null : c.lastFetchMs / 1000;
    const row = rows.get(id);
    if (row === undefined) {
      rows.set(id, {
        provider: c.provider,
        identity,
        ok,
        error: c.failures,
        consecutiveFailures: c.consecutiveFailures,
        expirySeconds,
        lastFetchSeconds,
        consumers: c.consumers,
      });
      continue;
    }
    row.ok += ok;
    row.error += c.failures;
    row.consecutiveFailures = Math.max(row.consecutiveFailures, c.consecutiveFailures);
    row.expirySeconds = minOrNull(row.expirySeconds, expirySeconds);
    row.lastFetchSeconds = maxOrNull(row.lastFetchSeconds, lastFetchSeconds);
    row.consumers += c.consumers;
  }
  for (const key of okSeen.keys()) if (!present.has(key)) okSeen.delete(key);
  return [...rows.values()];
}

function minOrNull(a: number | null, b: number | null): number | null {
  return a === null ? b : b === null ? a : Math.min(a, b);
}

function maxOrNull(a: number | null, b: number | null): number | null {
  return a === null ? b : b === null ? a : Math.max(a, b);
}
