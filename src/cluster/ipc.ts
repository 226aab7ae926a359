// Request/response and one-way messages over a node:cluster IPC channel (the worker's `process`
// or the primary's `cluster.Worker`). Our messages carry `pgw: 1` so that anything else on the
// channel (prom-client's own cluster messages, Node's internal ones) is left alone. Requests
// have an id; the answer carries it back with either a value or an error (message, code and
// context of a PgwardenError survive, so a credential failure is still one on the other side).
// A channel that closes rejects every request still waiting, so nothing waits forever on a
// process that died.

import { PgwardenError } from "../util/index.js";

export interface Endpoint {
  send(message: unknown, callback?: (error: Error | null) => void): boolean;
  on(event: "message", listener: (message: unknown) => void): unknown;
  on(event: "disconnect" | "exit", listener: () => void): unknown;
}

interface Envelope {
  readonly pgw: 1;
  readonly kind: "req" | "res" | "msg";
  readonly id?: number;
  readonly type?: string;
  readonly body?: unknown;
  readonly ok?: boolean;
  readonly error?: { message: string; code: string; context: Record<string, unknown> };
}

export type Handler = (type: string, body: unknown) => unknown;

export class Channel {
  private nextId = 1;
  private readonly pending = new Map<
    number,
    { resolve: (v: unknown) => void; reject: (e: Error) => void }
  >();
  private closed = false;

  /** `onRequest` answers requests (may return a Promise); `onMessage` takes one-way messages. */
  constructor(
    private readonly endpoint: Endpoint,
    private readonly onRequest: Handler,
    private readonly onMessage: (type: string, body: unknown) => void,
  ) {
    endpoint.on("message", (m) => this.receive(m));
    endpoint.on("disconnect", () => this.close());
  }

  request<T>(type: string, body: unknown = null, timeoutMs = 0): Promise<T> {
    if (this.closed)
      return Promise.reject(new PgwardenError("IPC", "the other process is gone", {}));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new PgwardenError("IPC", `no answer to "${type}" within ${timeoutMs} ms`, {}));
        }, timeoutMs);
        timer.unref();
      }
      this.pending.set(id, {
        resolve: (v) => {
          if (timer) clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          if (timer) clearTimeout(timer);
          reject(e);
        },
      });
      this.post({ pgw: 1, kind: "req", id, type, body });
    });
  }

  send(type: string, body: unknown = null): void {
    if (!this.closed) this.post({ pgw: 1, kind: "msg", type, body });
  }

  /** The other side is gone: every waiting request fails. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const err = new PgwardenError("IPC", "the other process is gone", {});
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  private post(e: Envelope): void {
    try {
      this.endpoint.send(e, (err) => {
        if (err && e.kind === "req" && e.id !== undefined) this.fail(e.id, err);
      });
    } catch (err) {
      // ERR_IPC_CHANNEL_CLOSED: the process is going away; its exit handler cleans up.
      if (e.kind === "req" && e.id !== undefined) this.fail(e.id, err as Error);
    }
  }

  private fail(id: number, err: Error): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    p.reject(new PgwardenError("IPC", err.message, {}, err));
  }

  private receive(m: unknown): void {
    if (typeof m !== "object" || m === null || (m as Envelope).pgw !== 1) return;
    const e = m as Envelope;
    if (e.kind === "msg") {
      this.onMessage(e.type ?? "", e.body);
      return;
    }
    if (e.kind === "res") {
      const p = e.id === undefined ? undefined : this.pending.get(e.id);
      if (!p || e.id === undefined) return;
      this.pending.delete(e.id);
      if (e.ok) p.resolve(e.body);
      else {
        const er = e.error ?? { message: "request failed", code: "IPC", context: {} };
        p.reject(new PgwardenError(er.code, er.message, er.context));
      }
      return;
    }
    const id = e.id ?? 0;
    void Promise.resolve()
      .then(() => this.onRequest(e.type ?? "", e.body))
      .then(
        (body) => this.post({ pgw: 1, kind: "res", id, ok: true, body: body ?? null }),
        (err: unknown) =>
          this.post({
            pgw: 1,
            kind: "res",
            id,
            ok: false,
            error: {
              message: err instanceof Error ? err.message : String(err),
              code: err instanceof PgwardenError ? err.code : "INTERNAL",
              context: err instanceof PgwardenError ? { ...err.context } : {},
            },
          }),
      );
  }
}
