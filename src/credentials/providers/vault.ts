// Database credentials from Vault's database secrets engine (server_auth = "vault_dynamic" and
// "vault_static").
//
// Dynamic: each read of `database/creds/<role>` makes Vault create a new role in PostgreSQL and
// answer its user name and password with a lease; at the lease's end Vault drops that role and
// ends its sessions. So the credential carries the user (pools log in as it) and a connection
// deadline (the lease end): the engine re-reads at `vault_refresh_percent` of the lease, and
// pools retire the connections of the old lease before it ends (design §7). Re-reading rather
// than renewing keeps one rule for every lease, bounded by the role's max TTL or not.
//
// Static: `database/static-creds/<role>` answers the password Vault keeps for an existing role
// and `ttl`, the seconds until Vault rotates it. The password is good for logins until then;
// connections opened with it stay (PostgreSQL checks a password only at login). A read close
// to the rotation (ttl of a few seconds) waits for the rotation and reads the new password, so
// the engine does not keep re-reading a password that is about to change.

import type { FetchedToken, TokenProvider } from "../types.js";
import { VaultHttpError, type VaultSession } from "./vault-client.js";

/** vault_refresh_percent when not set: two thirds of the lease, as Vault Agent renews. */
export const DEFAULT_VAULT_REFRESH_PERCENT = 67;
/**
 * A static password that rotates within this many seconds is waited for, not handed out. Small:
 * the wait (up to STATIC_WAIT_S + 1 s) and the read after it must fit in token_fetch_timeout.
 */
const STATIC_WAIT_S = 3;

export interface VaultDatabaseSettings {
  readonly mode: "dynamic" | "static";
  /** server_vault_path: a role name, or a full path (with a "/") under /v1/. */
  readonly path: string;
  readonly refreshPercent: number;
  /** For SHOW CREDENTIALS and errors. */
  readonly host: string;
  readonly port: number;
  readonly user: string;
}

/** The API path for server_vault_path: a bare role name goes to the default `database` mount. */
export function vaultSecretPath(mode: "dynamic" | "static", path: string): string {
  const p = path.replace(/^\/+|\/+$/g, "").replace(/^v1\//, "");
  if (p.includes("/")) return p;
  return mode === "dynamic" ? `database/creds/${p}` : `database/static-creds/${p}`;
}

export class VaultDatabaseProvider implements TokenProvider {
  readonly kind: string;
  readonly issuesUser = true;
  readonly description: Readonly<Record<string, string | number>>;
  private readonly path: string;

  constructor(
    private readonly settings: VaultDatabaseSettings,
    private readonly session: VaultSession,
  ) {
    this.kind = settings.mode === "dynamic" ? "vault_dynamic" : "vault_static";
    this.path = vaultSecretPath(settings.mode, settings.path);
    this.description = {
      host: settings.host,
      port: settings.port,
      user: settings.user,
      vault: session.settings.url,
      path: this.path,
      ...(session.settings.namespace ? { namespace: session.settings.namespace } : {}),
      auth: session.settings.authMethod,
    };
  }

  async fetch(signal: AbortSignal): Promise<FetchedToken> {
    if (this.settings.mode === "dynamic") return this.dynamic(signal);
    let r = await this.read(signal);
    if (r.ttl <= STATIC_WAIT_S) {
      await sleep((r.ttl + 1) * 1000, signal);
      r = await this.read(signal);
    }
    const now = Date.now();
    return { secret: r.password, user: r.username, expiresAt: now + Math.max(1, r.ttl) * 1000 };
  }

  private async dynamic(signal: AbortSignal): Promise<FetchedToken> {
    const startedAt = Date.now();
    const r = await this.readJson(signal);
    const data = (r.data ?? {}) as Record<string, unknown>;
    const lease = Number(r.lease_duration);
    if (typeof data.username !== "string" || typeof data.password !== "string")
      throw new Error(`Vault ${this.path}: no username/password in the answer`);
    if (!Number.isFinite(lease) || lease <= 0)
      throw new Error(`Vault ${this.path}: no lease_duration in the answer`);
    // The lease started when Vault answered; counting from our request start errs early.
    const end = startedAt + lease * 1000;
    return {
      secret: data.password,
      user: data.username,
      expiresAt: end,
      refreshAt: startedAt + (lease * 1000 * this.settings.refreshPercent) / 100,
      connectionDeadline: end,
    };
  }

  private async read(
    signal: AbortSignal,
  ): Promise<{ username: string; password: string; ttl: number }> {
    const r = await this.readJson(signal);
    const data = (r.data ?? {}) as Record<string, unknown>;
    const ttl = Number(data.ttl);
    if (typeof data.username !== "string" || typeof data.password !== "string")
      throw new Error(`Vault ${this.path}: no username/password in the answer`);
    if (!Number.isFinite(ttl)) throw new Error(`Vault ${this.path}: no ttl in the answer`);
    return { username: data.username, password: data.password, ttl };
  }

  /** One read; a 403 (token revoked or expired early) logs in again once. */
  private async readJson(signal: AbortSignal): Promise<Record<string, unknown>> {
    const token = await this.session.token(signal);
    try {
      return await this.session.request("GET", this.path, token, undefined, signal);
    } catch (err) {
      if (!(err instanceof VaultHttpError) || err.status !== 403) throw err;
      this.session.invalidate(token);
      const fresh = await this.session.token(signal);
      return this.session.request("GET", this.path, fresh, undefined, signal);
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    // Not unref'd: at startup this wait may be all that keeps the process alive (the fetch's own
    // timeout bounds it).
    const t = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
