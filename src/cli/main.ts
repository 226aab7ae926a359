#!/usr/bin/env node
// The composition root: argv and env, config, wiring, signals.

import cluster from "node:cluster";
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { type AdminContext, executeAdmin } from "../admin/index.js";
import { runPrimary, WorkerLink, workerConfig, workerIdentity } from "../cluster/index.js";
import {
  type Config,
  ConfigError,
  type ConfigTexts,
  diffConfig,
  loadConfig,
  parseConfigTexts,
  RESTART_KEYS,
  readConfig,
} from "../config/index.js";
import {
  type CredentialBroker,
  CredentialEngine,
  RemoteCredentialEngine,
} from "../credentials/index.js";
import { Frontend, type StatementRegistry, setMockSecret } from "../frontend/index.js";
import { createMetrics, type MetricsServer, startMetricsServer } from "../metrics/index.js";
import { PoolRegistry } from "../pool/index.js";
import { createLogger, errorMessage, type Logger, singleFlightReload } from "../util/index.js";

const USAGE = `usage: pgwarden [--config pgwarden.toml] [--users users.toml]

  -c, --config FILE   pgwarden.toml (default: $PGWARDEN_CONFIG or ./pgwarden.toml)
  -u, --users FILE    users.toml (default: $PGWARDEN_USERS or ./users.toml)
  -h, --help          this text
  -V, --version       print the version
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

async function main(): Promise<void> {
  let args: ReturnType<typeof parse>;
  try {
    args = parse();
  } catch (err) {
    process.stderr.write(`pgwarden: ${errorMessage(err)}\n${USAGE}`);
    process.exit(2);
  }
  if (args.help) {
    process.stdout.write(USAGE);
    return;
  }
  if (args.version) {
    process.stdout.write(`pgwarden ${version()}\n`);
    return;
  }
  const configPath = resolve(args.config ?? process.env.PGWARDEN_CONFIG ?? "pgwarden.toml");
  const usersPath = resolve(args.users ?? process.env.PGWARDEN_USERS ?? "users.toml");

  const identity = workerIdentity();
  // A worker runs the text its primary read and validated, never its own read of the files.
  const link = identity
    ? new WorkerLink(
        identity.index,
        identity.count,
        createLogger("info").child({ worker: identity.index }),
      )
    : null;
  let texts: ConfigTexts;
  let config: Config;
  try {
    if (link) {
      texts = await link.configTexts();
      config = parseConfigTexts(texts, process.env);
    } else {
      ({ texts, config } = readConfig(configPath, usersPath, process.env));
    }
  } catch (err) {
    if (
      link !== null ||
      err instanceof ConfigError ||
      (err as NodeJS.ErrnoException).code === "ENOENT"
    ) {
      process.stderr.write(`pgwarden: ${errorMessage(err)}\n`);
      process.exit(2);
    }
    throw err;
  }

  const base = createLogger(config.general.log_level);
  const logger = identity ? base.child({ worker: identity.index }) : base;
  link?.useLogger(logger);
  const workers = config.general.workers === 0 ? availableParallelism() : config.general.workers;
  if (identity === null && cluster.isPrimary && workers > 1) {
    // Several processes, one instance (design §6): this one supervises, the workers serve.
    await runPrimary({
      texts,
      config,
      workers,
      read: () => readConfig(configPath, usersPath, process.env),
      logger,
      engine: makeEngine(config, logger),
      env: process.env,
    });
    return;
  }
  if (identity?.mockSecret) {
    setMockSecret(identity.mockSecret);
    // Not for anything this process starts (a `command` provider runs in the primary anyway).
    delete process.env.PGWARDEN_MOCK_SECRET;
  }
  await runInstance(config, logger, link, identity?.reusePort ?? false, () =>
    loadConfig(configPath, usersPath, process.env),
  );
}

function makeEngine(config: Config, logger: Logger): CredentialEngine {
  const engine = new CredentialEngine({
    refreshBuffer: config.general.token_refresh_buffer,
    fetchTimeout: config.general.token_fetch_timeout,
    logger,
    // Benchmark baseline only: a token fetch per server login, as a pooler without the engine.
    cache: process.env.PGWARDEN_TOKEN_CACHE !== "off",
  });
  if (process.env.PGWARDEN_TOKEN_CACHE === "off")
    logger.warn(
      "PGWARDEN_TOKEN_CACHE=off: every server login fetches its own token (benchmark baseline)",
    );
  return engine;
}

/**
 * One serving process: the whole instance (workers = 1, no cluster at all), or one worker of
 * several (`link` set), which serves its share of every pool and leaves credentials, signals and
 * the metrics endpoint to the primary.
 */
async function runInstance(
  loaded: Config,
  logger: Logger,
  link: WorkerLink | null,
  reusePort: boolean,
  load: () => Config,
): Promise<void> {
  let config = loaded;
  /** What this process runs: the config, with pool sizes cut to this worker's share. */
  const share = (c: Config) => (link ? workerConfig(c, link.index, link.count) : c);
  const local = link ? null : makeEngine(config, logger);
  const engine: CredentialBroker =
    local ?? new RemoteCredentialEngine((link as WorkerLink).credentials);
  let registry: PoolRegistry;
  try {
    registry = new PoolRegistry(share(config), logger, engine, process.env);
  } catch (err) {
    process.stderr.write(`pgwarden: ${errorMessage(err)}\n`);
    process.exit(2);
  }
  const frontend = new Frontend(share(config), registry, logger);
  if (link) {
    frontend.cancelRouting = link.cancelRouting();
    frontend.reusePort = reusePort;
  }

  const stopHooks: Array<() => Promise<void>> = [];
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, timeout_ms: config.general.shutdown_timeout }, "shutting down");
    frontend.stopAccepting();
    await frontend.drainClients(config.general.shutdown_timeout);
    registry.closeAll("pgwarden shutting down");
    local?.stopAll();
    for (const hook of stopHooks) await hook().catch(() => {});
    logger.info("shutdown complete");
    logger.flush?.();
    setTimeout(() => process.exit(0), 50).unref();
  };
  if (!link) {
    process.on("SIGTERM", () => void shutdown("SIGTERM"));
    process.on("SIGINT", () => void shutdown("SIGINT"));
  }
  /**
   * Applies a validated configuration as a diff, or changes nothing: read from the files here
   * (single process), or the text the primary read (a worker).
   */
  const apply = async (trigger: string, next: Config) => {
    // Everything that can fail is read before anything is applied.
    const tlsContext = Frontend.tlsContextFor(next);
    const result = await registry.reload(share(next));
    frontend.applyConfig(share(next), tlsContext);
    const changedGeneral = diffConfig(config, next).general;
    const needsRestart = changedGeneral.filter((k) => RESTART_KEYS.has(k));
    config = next;
    const fields: Record<string, unknown> = {
      ...result,
      general: changedGeneral,
      needs_restart: needsRestart,
    };
    // With workers, the primary logs "configuration reloaded" once every worker has.
    logger.info(
      { trigger, ...fields },
      link ? "worker configuration reloaded" : "configuration reloaded",
    );
    const text = `reloaded: ${result.added.length} added, ${result.removed.length} removed, ${result.replaced.length} replaced, ${result.resized.length} resized, ${result.kept.length} unchanged`;
    return { text, fields };
  };
  /** Reads and validates both files, then applies them (single process). */
  const reloadHere = singleFlightReload(logger, async (trigger: string) => apply(trigger, load()));
  const reload = (trigger: string): Promise<string> => reloadHere(trigger).then((r) => r.text);
  if (!link) process.on("SIGHUP", () => void reload("SIGHUP").catch(() => {}));

  const pause = async (database?: string) => {
    await Promise.all(registry.select(database).map((p) => p.pause()));
  };
  const resume = (database?: string) => {
    for (const p of registry.select(database)) p.resume();
  };
  const reconnect = (database?: string) => {
    for (const p of registry.select(database)) p.reconnect();
  };
  const metricsSource = {
    pools: () => registry.snapshots(),
    credentials: () => local?.snapshot() ?? [],
    clients: () => frontend.clientCounts(),
    prepared: () => ({ statements: frontend.statements.size, ...frontend.statements.stats }),
  };
  let applying: Promise<unknown> = Promise.resolve();
  if (link) {
    // Scraped by the primary, which serves /metrics for the whole instance.
    const { registry: metricsRegistry } = createMetrics(metricsSource);
    link.serve({
      snapshot: () => ({
        pools: registry.snapshots(),
        servers: registry.servers(),
        clients: frontend.clientSnapshots(),
        prepared: preparedSnapshot(frontend.statements),
      }),
      // The text the primary read: applied in the order the primary sent them, one at a time.
      reload: (trigger, given) => {
        const run = applying.then(() => apply(trigger, parseConfigTexts(given, process.env)));
        applying = run.catch(() => {});
        return run;
      },
      pause,
      resume,
      reconnect,
      metrics: () => metricsRegistry.getMetricsAsJSON(),
      cancel: (pid, secret) => frontend.cancel(pid, secret),
      shutdown: (reason) => void shutdown(reason),
    });
  }

  await registry.start();
  let metricsServer: MetricsServer | null = null;
  if (!link && config.general.openmetrics_port !== undefined) {
    const { registry: metricsRegistry } = createMetrics(metricsSource);
    const host = config.general.host === "*" ? "0.0.0.0" : config.general.host;
    metricsServer = await startMetricsServer({
      host,
      port: config.general.openmetrics_port,
      registry: metricsRegistry,
      logger,
    });
  }
  stopHooks.push(async () => {
    await metricsServer?.close();
  });
  const adminContext: AdminContext = {
    version: `pgwarden ${version()}`,
    pools: () => registry.snapshots(),
    servers: () => registry.servers(),
    clients: () => frontend.clientSnapshots(),
    credentials: () => local?.snapshot() ?? [],
    prepared: () => preparedSnapshot(frontend.statements),
    config: () => config,
    reload: () => reload("RELOAD"),
    pause,
    resume,
    reconnect,
    shutdown: () => void shutdown("SHUTDOWN"),
  };
  frontend.adminExecutor = link
    ? link.adminExecutor(`pgwarden ${version()}`, () => config)
    : (sql) => executeAdmin(adminContext, sql);
  const address = await frontend.listen();
  if (link) {
    link.ready(address);
    logger.info({ host: address.host, port: address.port }, "worker listening");
    return;
  }
  logger.info(
    { host: address.host, port: address.port, pools: [...registry.all()].map((p) => p.name) },
    "listening",
  );
}

/** SHOW PREPARED's view of the statement registry. */
function preparedSnapshot(statements: StatementRegistry) {
  const rows = [];
  for (const e of statements.entries()) {
    // key: query text, NUL, int16 count, int32 OIDs (latin1 code units = the Parse's bytes)
    const key = Buffer.from(e.key, "latin1");
    const nul = key.indexOf(0);
    const paramTypes: number[] = [];
    if (nul >= 0 && nul + 3 <= key.length) {
      const n = key.readInt16BE(nul + 1);
      for (let i = 0, off = nul + 3; i < n && off + 4 <= key.length; i++, off += 4)
        paramTypes.push(key.readUInt32BE(off));
    }
    rows.push({
      name: e.name,
      query: key.toString("utf8", 0, nul >= 0 ? nul : key.length),
      paramTypes,
      // A settled client name holds two references (its confirmed and its planned definition).
      clients: Math.ceil(e.clientRefs / 2),
      servers: e.serverRefs,
    });
  }
  const { clientParses, serverParses, evictions } = statements.stats;
  return { statements: rows, clientParses, serverParses, evictions };
}

function parse() {
  const { values } = parseArgs({
    options: {
      config: { type: "string", short: "c" },
      users: { type: "string", short: "u" },
      help: { type: "boolean", short: "h" },
      version: { type: "boolean", short: "V" },
    },
    strict: true,
    allowPositionals: false,
  });
  return values;
}

main().catch((err: unknown) => {
  process.stderr.write(`pgwarden: fatal: ${errorMessage(err)}\n`);
  process.exit(1);
});
