// A worker process's link to its primary (design §6): the transport of the remote credential
// engine, cancel forwarding, the admin console's instance-wide view and actions, and the
// primary's requests to this worker (its snapshot, reload, pause, metrics, shutdown).
//
// The admin console runs in the worker the admin client reached, unchanged: before each query
// the link asks the primary for a snapshot of the whole instance, and the AdminContext it hands
// to executeAdmin reads that snapshot and turns actions into requests to the primary, which
// does them in every worker. A worker does not act on SIGTERM, SIGINT or SIGHUP: the primary
// does, for the whole instance. When the primary's channel closes (the primary died), the
// worker closes everything and exits, so no worker outlives its instance.

import process from "node:process";
import { type AdminContext, executeAdmin } from "../admin/index.js";
import type { Config, ConfigTexts } from "../config/index.js";
import type { CredentialRequest, CredentialTransport } from "../credentials/index.js";
import type { CancelRouting } from "../frontend/index.js";
import type { Logger } from "../util/index.js";
import { Channel, type Endpoint } from "./ipc.js";
import { MOCK_SECRET_ENV, WORKER_COUNT_ENV, WORKER_INDEX_ENV } from "./primary.js";
import type { InstanceSnapshot, WorkerSnapshot } from "./snapshots.js";

/** What the primary may ask of this worker; the composition root implements it. */
export interface WorkerHandlers {
  snapshot(): Omit<WorkerSnapshot, "worker">;
  /** Applies the configuration text the primary read and validated (design §6). */
  reload(
    trigger: string,
    texts: ConfigTexts,
  ): Promise<{ text: string; fields: Record<string, unknown> }>;
  pause(database: string | undefined): Promise<void>;
  resume(database: string | undefined): void;
  reconnect(database: string | undefined): void;
  metrics(): Promise<unknown[]>;
  cancel(pid: number, secret: number): void;
  /** Graceful shutdown of this worker; the process exits when it is done. */
  shutdown(reason: string): void;
}

/** This process's worker index and the instance's worker count, or null in a single process. */
export function workerIdentity(
  env: Readonly<Record<string, string | undefined>> = process.env,
): { index: number; count: number; reusePort: boolean; mockSecret: Buffer | null } | null {
  const index = env[WORKER_INDEX_ENV];
  const count = env[WORKER_COUNT_ENV];
  if (index === undefined || count === undefined || process.send === undefined) return null;
  const secret = env[MOCK_SECRET_ENV];
  return {
    index: Number(index),
    count: Number(count),
    reusePort: env.PGWARDEN_REUSE_PORT === "1",
    mockSecret: secret ? Buffer.from(secret, "hex") : null,
  };
}

export class WorkerLink {
  private handlers: WorkerHandlers | null = null;
  private readonly channel: Channel;

  constructor(
    readonly index: number,
    readonly count: number,
    private logger: Logger,
  ) {
    this.channel = new Channel(
      process as unknown as Endpoint,
      (type, body) => this.onRequest(type, body),
      (type, body) => this.onMessage(type, body),
    );
    for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.on(sig, () => {});
    process.on("disconnect", () => {
      this.logger.error("the primary process is gone; this worker exits");
      this.logger.flush?.();
      setTimeout(() => process.exit(1), 20).unref();
    });
  }

  /**
   * The configuration text the instance runs, from the primary: a worker never reads the files
   * itself (they may have been edited, not reloaded, since the primary read them).
   */
  configTexts(): Promise<ConfigTexts> {
    return this.channel.request<ConfigTexts>("config", null, 15_000);
  }

  /** The logger made from the configuration (the link starts before there is one). */
  useLogger(logger: Logger): void {
    this.logger = logger;
  }

  serve(handlers: WorkerHandlers): void {
    this.handlers = handlers;
  }

  readonly credentials: CredentialTransport = {
    send: (msg: CredentialRequest) => this.channel.send("credential", msg),
    request: (msg: CredentialRequest) => this.channel.request<string>("credential", msg),
  };

  cancelRouting(): CancelRouting {
    return {
      worker: this.index,
      forward: (to, pid, secret) => {
        if (to < this.count) this.channel.send("cancel", { to, pid, secret });
        else this.logger.info({ pid }, "cancel request with unknown key ignored");
      },
    };
  }

  ready(address: { host: string; port: number }): void {
    this.channel.send("ready", address);
  }

  /** The admin console's executor: instance-wide SHOWs, actions done by the primary. */
  adminExecutor(version: string, config: () => Config): (sql: string) => Promise<Buffer[]> {
    return async (sql) => {
      const snap = await this.channel.request<InstanceSnapshot>("snapshot", null, 15_000);
      const ctx: AdminContext = {
        version,
        pools: () => snap.pools,
        servers: () => snap.servers,
        clients: () => snap.clients,
        credentials: () => snap.credentials,
        prepared: () => snap.prepared,
        config,
        reload: () => this.channel.request<string>("reload"),
        pause: (database) => this.channel.request<void>("pause", database ?? null),
        resume: (database) => void this.channel.request("resume", database ?? null).catch(() => {}),
        reconnect: (database) =>
          void this.channel.request("reconnect", database ?? null).catch(() => {}),
        shutdown: () => void this.channel.request("shutdown").catch(() => {}),
      };
      return executeAdmin(ctx, sql);
    };
  }

  private onRequest(type: string, body: unknown): unknown {
    const h = this.handlers;
    if (h === null) throw new Error("worker not started yet");
    const db = (body ?? undefined) as string | undefined;
    switch (type) {
      case "snapshot":
        return { worker: this.index, ...h.snapshot() };
      case "reload": {
        const { trigger, texts } = body as { trigger: string; texts: ConfigTexts };
        return h.reload(trigger, texts);
      }
      case "pause":
        return h.pause(db);
      case "resume":
        return h.resume(db);
      case "reconnect":
        return h.reconnect(db);
      case "metrics":
        return h.metrics();
      default:
        throw new Error(`unknown request "${type}"`);
    }
  }

  private onMessage(type: string, body: unknown): void {
    if (type === "cancel") {
      const { pid, secret } = body as { pid: number; secret: number };
      this.handlers?.cancel(pid, secret);
    } else if (type === "shutdown") {
      // Not serving yet (still starting): nothing to drain.
      if (this.handlers === null) process.exit(0);
      this.handlers.shutdown(String(body));
    }
  }
}
