// CredentialEngine: one entry per credential key, shared by every pool whose key is equal, and
// reference-counted by those pools. The first acquire creates the entry and starts its
// refresher; the last release stops it and forgets it, so a config reload that removes the
// last pool of an identity leaves no timer and makes no further provider calls.

import type { Logger } from "../util/index.js";
import { type Clock, systemClock } from "./clock.js";
import { CredentialEntry } from "./entry.js";
import type { CredentialBroker, CredentialSnapshot, TokenProvider } from "./types.js";

export interface EngineOptions {
  readonly refreshBuffer: number;
  readonly fetchTimeout: number;
  readonly logger: Logger;
  readonly clock?: Clock;
  readonly minBackoff?: number;
  readonly maxBackoff?: number;
  /** false only to measure a cache-less baseline (see EntryOptions.cache). */
  readonly cache?: boolean;
}

/**
 * The key of an identity: the provider kind plus every setting that changes the secret. Two
 * pools with equal keys share one token.
 */
export function credentialKey(
  kind: string,
  settings: Readonly<Record<string, string | number | undefined>>,
): string {
  const parts = Object.keys(settings)
    .sort()
    .filter((k) => settings[k] !== undefined)
    .map((k) => `${k}=${String(settings[k])}`);
  return `${kind}(${parts.join(",")})`;
}

export class CredentialEngine implements CredentialBroker {
  private readonly entries = new Map<string, CredentialEntry>();
  private readonly opts: EngineOptions & { clock: Clock };

  constructor(opts: EngineOptions) {
    this.opts = { clock: systemClock, ...opts };
  }

  /** Takes a reference on the entry for `key`, creating and starting it if needed. */
  acquire(key: string, makeProvider: () => TokenProvider): CredentialEntry {
    let entry = this.entries.get(key);
    if (!entry) {
      const o = this.opts;
      entry = new CredentialEntry(key, makeProvider(), {
        refreshBuffer: o.refreshBuffer,
        fetchTimeout: o.fetchTimeout,
        clock: o.clock,
        logger: o.logger,
        ...(o.minBackoff !== undefined ? { minBackoff: o.minBackoff } : {}),
        ...(o.maxBackoff !== undefined ? { maxBackoff: o.maxBackoff } : {}),
        ...(o.cache !== undefined ? { cache: o.cache } : {}),
      });
      this.entries.set(key, entry);
      this.opts.logger.info(
        { credential: key, provider: entry.provider.kind },
        "credential refresher started",
      );
    }
    entry.consumers++;
    entry.start();
    return entry;
  }

  /** Drops a reference; the last one stops the refresher and forgets the entry. */
  release(entry: CredentialEntry): void {
    if (this.entries.get(entry.key) !== entry || entry.consumers <= 0) return;
    entry.consumers--;
    if (entry.consumers === 0) {
      entry.stop();
      this.entries.delete(entry.key);
      this.opts.logger.info(
        { credential: entry.key, provider: entry.provider.kind },
        "credential refresher stopped",
      );
    }
  }

  /** The entry of `key`, if some pool holds it. */
  entry(key: string): CredentialEntry | undefined {
    return this.entries.get(key);
  }

  get size(): number {
    return this.entries.size;
  }

  snapshot(): CredentialSnapshot[] {
    return [...this.entries.values()].map((e) => e.snapshot());
  }

  stopAll(): void {
    for (const e of this.entries.values()) e.stop();
    this.entries.clear();
  }
}
