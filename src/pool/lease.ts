// Lease: one client's hold on one server connection. The frontend sees servers only through
// leases (design §1): it writes client bytes, receives server events through its LeaseHolder,
// asks for settings to be synced, cancels, and releases. Release is idempotent.

import type { ServerConnection } from "../backend/index.js";
import { markSynced, syncQuery } from "./params.js";

/** What the client side implements to receive its server's output. */
export interface LeaseHolder {
  serverData(data: Buffer): boolean;
  serverReady(status: number): void;
  serverParameter(name: string, value: string): void;
  serverLost(err: Error): void;
}

/** The pool side of a lease (kept as an interface so lease.ts does not import pool.ts). */
export interface LeaseOwner {
  readonly name: string;
  readonly stats: { totalXact: number; totalQuery: number };
  release(lease: Lease, clean: boolean, reset: boolean): void;
}

export class Lease {
  private released = false;

  constructor(
    private readonly pool: LeaseOwner,
    readonly server: ServerConnection,
    holder: LeaseHolder,
  ) {
    server.attach(holder);
  }

  get poolName(): string {
    return this.pool.name;
  }

  /** The server's backend PID (for logs and admin output). */
  get backendPid(): number {
    return this.server.pid;
  }

  get serverId(): number {
    return this.server.id;
  }

  /** Everything the server reported (ParameterStatus), for the client's welcome. */
  get reported(): ReadonlyMap<string, string> {
    return this.server.reported;
  }

  /** Transaction status from the server's last ReadyForQuery. */
  get txStatus(): number {
    return this.server.txStatus;
  }

  get isReleased(): boolean {
    return this.released;
  }

  write(data: Buffer): boolean {
    return this.server.write(data);
  }

  /** Calls `cb` once the server socket's write buffer has drained. */
  onceServerDrain(cb: () => void): void {
    this.server.onceDrain(cb);
  }

  pauseServer(): void {
    this.server.pause();
  }

  resumeServer(): void {
    this.server.resume();
  }

  /**
   * Makes the server's settings match the client's. Returns null when nothing needs doing (no
   * round trip), else a promise that rejects with the server's error.
   */
  sync(wanted: ReadonlyMap<string, string>): Promise<void> | null {
    const sql = syncQuery(this.server, wanted);
    if (sql === null) return null;
    return this.server.query(sql).then(() => markSynced(this.server, wanted));
  }

  /** Records a setting the client changed on this server (from its ParameterStatus). */
  noteApplied(name: string, value: string): void {
    this.server.applied.set(name, value);
  }

  cancel(): void {
    this.server.cancel();
  }

  countTransaction(queries: number): void {
    this.pool.stats.totalXact++;
    this.pool.stats.totalQuery += queries;
  }

  /** `clean`: the server is idle and reusable; `reset`: DISCARD ALL before reuse. */
  release(clean: boolean, reset = false): void {
    if (this.released) return;
    this.released = true;
    this.pool.release(this, clean, reset);
  }
}
