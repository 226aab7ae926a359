// The primary process of an instance with workers > 1 (design §6). It serves no client itself:
// it forks the workers, keeps them alive, and owns what must exist once per instance.
//
// Model: worker i (0 ≤ i < N) is forked with PGWARDEN_WORKER_INDEX=i; the index is the worker's
// identity for its whole life and its replacement's: it picks the worker's share of every pool
// (split.ts) and is written into the cancel keys the worker hands out, so a CancelRequest that
// lands on worker j is sent here and on to worker i. The sockets: on Node 20 node:cluster's
// round-robin (the primary accepts and hands each connection over before reading a byte of
// it); where the runtime has `reusePort` (Node 22.12+/23.1+) each worker binds its own
// SO_REUSEPORT socket and the kernel spreads connections. The credential engine lives here
// (CredentialHost): one fetch and one refresher per identity, whatever N is. The admin console
// runs in whichever worker the admin client reached; for a SHOW it asks here for a snapshot of
// every worker, for RELOAD/PAUSE/RESUME/RECONNECT/SHUTDOWN it asks here to do it everywhere.
// /metrics is served here: the workers' registries, as JSON over IPC, are summed with this
// process's own (credentials, process metrics) by prom-client's AggregatorRegistry.
//
// Lifecycle: the instance logs "listening" once every worker listens. A worker that exits
// before the instance ever listened ends the instance with its exit code (a config or bind
// error is not retried in a loop). Later, a worker that dies is replaced under the same index
// (its clients' sockets died with it: they see a closed connection, not a hang), at most once
// a second per index. What every worker runs is the configuration text this process read and
// validated (ConfigTexts): a worker asks for it at its start, a replacement's included, and
// gets it with each reload; no worker reads the files itself, so none can run files that were
// edited but not reloaded (or a half-written file) while its siblings run what was loaded.
// SIGHUP and RELOAD read and validate the files here (and learn their credential identities),
// then hand the same text to every worker (one that cannot apply it fails the reload, and the
// others go back to the running text); SIGTERM, SIGINT and SHUTDOWN tell every worker to shut
// down gracefully, wait for them (shutdown_timeout plus a margin, then SIGKILL), and exit. Workers
// ignore those signals themselves and exit when the primary's channel closes, so no worker
// outlives its primary.

import cluster, { type Worker } from "node:cluster";
import { randomBytes } from "node:crypto";
import { AggregatorRegistry } from "prom-client";
import type { Config, ConfigTexts } from "../config/index.js";
import {
  type CredentialEngine,
  CredentialHost,
  type CredentialRequest,
  identityFor,
} from "../credentials/index.js";
import { createMetrics, type MetricsServer, startMetricsServer } from "../metrics/index.js";
import { errorMessage, type Logger, singleFlightReload } from "../util/index.js";
import { Channel } from "./ipc.js";
import { mergeSnapshots, type WorkerSnapshot } from "./snapshots.js";

export const WORKER_INDEX_ENV = "PGWARDEN_WORKER_INDEX";
export const WORKER_COUNT_ENV = "PGWARDEN_WORKERS";
export const MOCK_SECRET_ENV = "PGWARDEN_MOCK_SECRET";

/** Whether this runtime's net.Server.listen takes `reusePort` (Node 22.12+, 23.1+). */
export function hasReusePort(version = process.versions.node): boolean {
  const [major = 0, minor = 0] = version.split(".").map(Number);
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
}

export interface PrimaryOptions {
  /** What the instance starts with: the files' text as read, and that text validated. */
  readonly texts: ConfigTexts;
  readonly config: Config;
  readonly workers: number;
  /** Re-reads and validates both config files: their text and its Config (throws on an error). */
  readonly read: () => { texts: ConfigTexts; config: Config };
  readonly logger: Logger;
  readonly engine: CredentialEngine;
  readonly env: Readonly<Record<string, string | undefined>>;
}

interface Slot {
  worker: Worker | null;
  channel: Channel | null;
  ready: boolean;
  startedAt: number;
  pid: number;
  /** The reload count of the configuration text the worker took at its start. */
  version: number;
}

export async function runPrimary(opts: PrimaryOptions): Promise<void> {
  const { logger, engine, workers: n } = opts;
  let config = opts.config;
  /** The text `config` was made from: what every worker runs; `version` counts reloads. */
  let texts = opts.texts;
  let version = 0;
  const host = new CredentialHost(engine);
  const identities = (c: Config) =>
    c.users.flatMap((u) => {
      const db = c.databases.find((d) => d.name === u.database);
      const id = db ? identityFor(u, db, opts.env, c.vault) : null;
      return id ? [id] : [];
    });
  host.learn(identities(config));

  const slots: Slot[] = Array.from({ length: n }, () => ({
    worker: null,
    channel: null,
    ready: false,
    startedAt: 0,
    pid: 0,
    version: 0,
  }));
  let everListening = false;
  let stopping = false;
  let listenAddress: { host: string; port: number } | null = null;
  const reusePort = hasReusePort();
  let releaseWarm = () => {};
  // One mock-SCRAM secret for the instance (frontend/client-auth.ts), handed to each worker.
  const mockSecret = randomBytes(32).toString("hex");

  cluster.setupPrimary({ serialization: "advanced" });

  const live = () => slots.filter((s) => s.channel !== null && s.ready);
  /** Asks every live worker; rejects with the first failure. */
  const everyWorker = <T>(type: string, body: unknown = null, timeoutMs = 0): Promise<T[]> =>
    Promise.all(live().map((s) => (s.channel as Channel).request<T>(type, body, timeoutMs)));

  const snapshot = async () => {
    const parts = await Promise.all(
      live().map((s) =>
        (s.channel as Channel).request<WorkerSnapshot>("snapshot", null, 10_000).catch(() => null),
      ),
    );
    return mergeSnapshots(
      parts.filter((p) => p !== null),
      host.snapshot(),
    );
  };

  type ReloadResult = { text: string; fields: Record<string, unknown> };
  /** Has a worker that missed a reload (it was starting) take the text the instance runs. */
  const catchUp = (slot: Slot, index: number) => {
    slot.version = version;
    slot.channel
      ?.request("reload", { trigger: "worker start", texts })
      .catch((err: unknown) =>
        logger.error(
          { worker: index, err: errorMessage(err) },
          "worker could not take the reloaded configuration",
        ),
      );
  };
  const reload = singleFlightReload(logger, async (trigger: string): Promise<string> => {
    const { texts: nextTexts, config: next } = opts.read();
    host.learn(identities(next));
    const targets = live();
    const settled = await Promise.allSettled(
      targets.map((s) =>
        (s.channel as Channel).request<ReloadResult>("reload", { trigger, texts: nextTexts }),
      ),
    );
    const failed = settled.find((r) => r.status === "rejected");
    if (failed !== undefined) {
      // Every worker runs the same configuration: those that took the new text go back to the
      // running one (the instance keeps it, as a single process does).
      await Promise.allSettled(
        targets
          .filter((_, i) => settled[i]!.status === "fulfilled")
          .map((s) => (s.channel as Channel).request("reload", { trigger: "rollback", texts })),
      );
      throw failed.reason;
    }
    config = next;
    texts = nextTexts;
    version++;
    for (const s of targets) s.version = version;
    // A worker that became ready while this ran took the old text: it catches up.
    for (const [i, s] of slots.entries()) if (s.ready && s.version !== version) catchUp(s, i);
    const first = (settled[0] as PromiseFulfilledResult<ReloadResult> | undefined)?.value;
    logger.info(
      { trigger, workers: targets.length, ...(first?.fields ?? {}) },
      "configuration reloaded",
    );
    return first?.text ?? "reloaded";
  });

  let metricsServer: MetricsServer | null = null;
  const shutdown = async (signal: string, code = 0) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, timeout_ms: config.general.shutdown_timeout }, "shutting down");
    for (const s of slots) s.channel?.send("shutdown", signal);
    const deadline = Date.now() + config.general.shutdown_timeout + 5000;
    while (slots.some((s) => s.worker !== null) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    for (const s of slots) s.worker?.process.kill("SIGKILL");
    engine.stopAll();
    await metricsServer?.close().catch(() => {});
    logger.info("shutdown complete");
    logger.flush?.();
    setTimeout(() => process.exit(code), 50).unref();
  };

  const onRequest = (index: number) => async (type: string, body: unknown) => {
    switch (type) {
      case "credential":
        return host.handle(index, body as CredentialRequest);
      case "config": {
        const slot = slots[index];
        if (slot) slot.version = version;
        return texts;
      }
      case "snapshot":
        return snapshot();
      case "reload":
        return reload("RELOAD");
      case "pause":
        await everyWorker("pause", body);
        return null;
      case "resume":
      case "reconnect":
        await everyWorker(type, body);
        return null;
      case "shutdown":
        void shutdown("SHUTDOWN");
        return null;
      default:
        throw new Error(`unknown request "${type}"`);
    }
  };

  const onMessage = (index: number) => (type: string, body: unknown) => {
    const slot = slots[index];
    if (!slot) return;
    if (type === "credential") {
      void host.handle(index, body as CredentialRequest);
    } else if (type === "cancel") {
      const { to, pid, secret } = body as { to: number; pid: number; secret: number };
      slots[to]?.channel?.send("cancel", { pid, secret });
    } else if (type === "ready") {
      slot.ready = true;
      listenAddress ??= body as { host: string; port: number };
      logger.info({ worker: index, pid: slot.pid }, "worker ready");
      // A reload finished while this worker started (it took the text before): catch up.
      if (slot.version !== version) catchUp(slot, index);
      if (!everListening && slots.every((s) => s.ready)) {
        everListening = true;
        releaseWarm();
        logger.info(
          {
            ...listenAddress,
            workers: n,
            worker_pids: slots.map((s) => s.pid),
            accept: reusePort ? "reusePort" : "cluster round-robin",
            pools: config.users.map((u) => `${u.name}/${u.database}`),
          },
          "listening",
        );
      }
    }
  };

  const fork = (index: number) => {
    const slot = slots[index] as Slot;
    const worker = cluster.fork({
      [WORKER_INDEX_ENV]: String(index),
      [WORKER_COUNT_ENV]: String(n),
      PGWARDEN_REUSE_PORT: reusePort ? "1" : "0",
      [MOCK_SECRET_ENV]: mockSecret,
    });
    slot.worker = worker;
    slot.ready = false;
    slot.startedAt = Date.now();
    slot.pid = worker.process.pid ?? 0;
    slot.channel = new Channel(worker, onRequest(index), onMessage(index));
    worker.on("exit", (code, signal) => {
      if (slot.worker !== worker) return;
      slot.channel?.close();
      slot.worker = null;
      slot.channel = null;
      slot.ready = false;
      host.forget(index);
      if (stopping) return;
      if (!everListening) {
        logger.error({ worker: index, code, signal }, "worker exited during startup");
        void shutdown("worker startup failed", code || 1);
        return;
      }
      const wait = Math.max(0, slot.startedAt + 1000 - Date.now());
      logger.error(
        { worker: index, pid: slot.pid, code, signal, restart_in_ms: wait },
        "worker died; its client connections are closed; starting a replacement",
      );
      setTimeout(() => {
        if (!stopping) fork(index);
      }, wait);
    });
  };

  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
  process.on("SIGHUP", () => void reload("SIGHUP").catch(() => {}));

  // Warm the credentials before any worker starts: one fetch per identity, here.
  const warm = identities(config).map((id) => engine.acquire(id.key, id.make));
  await Promise.allSettled(warm.map((e) => e.get()));

  if (config.general.openmetrics_port !== undefined) {
    const { registry: own } = createMetrics({
      pools: () => [],
      credentials: () => host.snapshot(),
      clients: () => ({ total: 0, byState: {} }),
    });
    const aggregate = {
      contentType: own.contentType,
      async metrics(): Promise<string> {
        const parts = await Promise.all(
          live().map((s) =>
            (s.channel as Channel).request<unknown[]>("metrics", null, 10_000).catch(() => []),
          ),
        );
        const merged = AggregatorRegistry.aggregate([
          await own.getMetricsAsJSON(),
          ...parts,
        ] as Parameters<typeof AggregatorRegistry.aggregate>[0]);
        return merged.metrics();
      },
    };
    const h = config.general.host === "*" ? "0.0.0.0" : config.general.host;
    metricsServer = await startMetricsServer({
      host: h,
      port: config.general.openmetrics_port,
      registry: aggregate,
      logger,
    });
  }

  releaseWarm = () => {
    // Every worker took its own references by now; the warm-up ones go.
    for (const e of warm) engine.release(e);
    warm.length = 0;
  };
  for (let i = 0; i < n; i++) fork(i);
}
