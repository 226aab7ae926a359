// Vault's HTTP API, the small part pgwarden needs: log in (Kubernetes, AppRole, or a token
// file), keep the client token alive (renew-self at two thirds of its TTL, a new login when it
// cannot be renewed or has ended), and read a secret path. No SDK: node:https with the CA of
// VAULT_CACERT when set (else the system's, plus NODE_EXTRA_CA_CERTS).
//
// Model: one VaultSession per [vault] setting in the process, shared by every identity that
// reads through it, so N Vault users cost one login. The session holds at most one client token
// and at most one login or renewal in flight (single-flight); it has no timer of its own: the
// credential engine's refreshers call `token()` when they fetch, and that is when the token is
// renewed or replaced. A 403 on a read drops the token (`invalidate`), so the next fetch logs in
// again. Secrets (client token, secret id, JWT, passwords) never go into an error or a log: an
// error names the method, the path and Vault's own `errors` text, sanitized.

import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { sanitize } from "../entry.js";

export interface VaultSettings {
  readonly url: string;
  readonly namespace?: string | undefined;
  readonly authMethod: "kubernetes" | "approle" | "token";
  readonly authMount: string;
  readonly kubernetesRole?: string | undefined;
  readonly kubernetesJwtPath?: string | undefined;
  readonly approleRoleId?: string | undefined;
  readonly approleSecretIdFile?: string | undefined;
  readonly tokenFile?: string | undefined;
  /** PEM file of a CA to trust (VAULT_CACERT). */
  readonly caFile?: string | undefined;
}

/** An HTTP error from Vault: the status and Vault's `errors` text, never a request body. */
export class VaultHttpError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
    this.name = "VaultHttpError";
  }
}

interface HeldVaultToken {
  readonly value: string;
  /** Monotonic ms. */
  readonly obtainedAt: number;
  /** ms; 0 = does not expire (a root token in dev). */
  readonly ttlMs: number;
  readonly renewable: boolean;
}

/** Requests longer than this are cut even when the caller's signal has no deadline. */
const REQUEST_TIMEOUT_MS = 30_000;
const MAX_BODY = 1024 * 1024;

export class VaultSession {
  private held: HeldVaultToken | null = null;
  private pending: Promise<HeldVaultToken> | null = null;
  private ca: Buffer | undefined | null = null;
  /** Counters, for tests and logs. */
  logins = 0;
  renewals = 0;

  constructor(readonly settings: VaultSettings) {}

  /** A client token good for now: the held one, renewed or replaced when 2/3 of its TTL passed. */
  async token(signal: AbortSignal): Promise<string> {
    const t = this.held;
    const now = performance.now();
    if (t !== null && (t.ttlMs === 0 || now < t.obtainedAt + (t.ttlMs * 2) / 3)) return t.value;
    this.pending ??= this.refresh(t, signal).finally(() => {
      this.pending = null;
    });
    return (await this.pending).value;
  }

  /** The token was refused (403): forget it, so the next call logs in again. */
  invalidate(token: string): void {
    if (this.held?.value === token) this.held = null;
  }

  /** One API call. `path` is after /v1/. */
  async request(
    method: "GET" | "POST" | "PUT",
    path: string,
    token: string | null,
    body: unknown,
    signal: AbortSignal,
  ): Promise<Record<string, unknown>> {
    const url = new URL(`${this.settings.url}/v1/${path.replace(/^\/+/, "")}`);
    const headers: Record<string, string> = { "X-Vault-Request": "true" };
    if (token !== null) headers["X-Vault-Token"] = token;
    if (this.settings.namespace) headers["X-Vault-Namespace"] = this.settings.namespace;
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    if (payload) {
      headers["Content-Type"] = "application/json";
      headers["Content-Length"] = String(payload.length);
    }
    const what = `Vault ${method} ${url.pathname}`;
    const lib = url.protocol === "https:" ? https : http;
    const ca = url.protocol === "https:" ? this.caCert() : undefined;
    const { status, text } = await new Promise<{ status: number; text: string }>(
      (resolve, reject) => {
        if (signal.aborted) {
          reject(new Error(`${what}: not sent, the fetch was already over`));
          return;
        }
        const req = lib.request(
          url,
          { method, headers, signal, timeout: REQUEST_TIMEOUT_MS, ...(ca ? { ca } : {}) },
          (res) => {
            const chunks: Buffer[] = [];
            let size = 0;
            res.on("data", (c: Buffer) => {
              size += c.length;
              if (size > MAX_BODY) req.destroy(new Error("response too large"));
              else chunks.push(c);
            });
            res.on("end", () =>
              resolve({
                status: res.statusCode ?? 0,
                text: Buffer.concat(chunks).toString("utf8"),
              }),
            );
            res.on("error", reject);
          },
        );
        req.on("timeout", () => req.destroy(new Error(`timed out after ${REQUEST_TIMEOUT_MS} ms`)));
        req.on("error", (err) =>
          reject(new Error(`${what}: ${sanitize(err.message)}`, { cause: err })),
        );
        req.end(payload);
      },
    );
    let json: Record<string, unknown> = {};
    if (text.trim() !== "") {
      try {
        json = JSON.parse(text) as Record<string, unknown>;
      } catch {
        if (status < 400) throw new VaultHttpError(`${what}: HTTP ${status}: not JSON`, status);
      }
    }
    if (status >= 400) {
      const errors = Array.isArray(json.errors) ? json.errors.map(String).join("; ") : "";
      throw new VaultHttpError(
        `${what}: HTTP ${status}${errors ? `: ${sanitize(errors).slice(0, 200)}` : ""}`,
        status,
      );
    }
    return json;
  }

  // ---- internals ----------------------------------------------------------------------------

  private caCert(): Buffer | undefined {
    if (this.ca === null)
      this.ca = this.settings.caFile ? readFileSync(this.settings.caFile) : undefined;
    return this.ca;
  }

  private async refresh(old: HeldVaultToken | null, signal: AbortSignal): Promise<HeldVaultToken> {
    const now = performance.now();
    if (old?.renewable && now < old.obtainedAt + old.ttlMs - 1000) {
      try {
        const r = await this.request("POST", "auth/token/renew-self", old.value, {}, signal);
        this.renewals++;
        return this.keep(r, old.value);
      } catch {
        // fall through to a new login (the token may have reached its max TTL)
      }
    }
    return this.login(signal);
  }

  private async login(signal: AbortSignal): Promise<HeldVaultToken> {
    const s = this.settings;
    this.logins++;
    if (s.authMethod === "token") {
      const value = readSecretFile(s.tokenFile, "token_file");
      const r = await this.request("GET", "auth/token/lookup-self", value, undefined, signal);
      const data = (r.data ?? {}) as Record<string, unknown>;
      return this.store({
        value,
        obtainedAt: performance.now(),
        ttlMs: Number(data.ttl ?? 0) * 1000,
        renewable: data.renewable === true,
      });
    }
    const body =
      s.authMethod === "kubernetes"
        ? {
            role: s.kubernetesRole,
            jwt: readSecretFile(s.kubernetesJwtPath, "kubernetes_jwt_path"),
          }
        : {
            role_id: s.approleRoleId,
            secret_id: readSecretFile(s.approleSecretIdFile, "approle_secret_id_file"),
          };
    const r = await this.request("POST", `auth/${s.authMount}/login`, null, body, signal);
    return this.keep(r, undefined);
  }

  /** Stores the token of a login or renew-self answer ({auth: {client_token, lease_duration, renewable}}). */
  private keep(r: Record<string, unknown>, current: string | undefined): HeldVaultToken {
    const auth = (r.auth ?? {}) as Record<string, unknown>;
    const value = typeof auth.client_token === "string" ? auth.client_token : current;
    if (!value) throw new Error("Vault login answered without auth.client_token");
    return this.store({
      value,
      obtainedAt: performance.now(),
      ttlMs: Number(auth.lease_duration ?? 0) * 1000,
      renewable: auth.renewable === true,
    });
  }

  private store(t: HeldVaultToken): HeldVaultToken {
    this.held = t;
    return t;
  }
}

function readSecretFile(path: string | undefined, key: string): string {
  if (!path) throw new Error(`[vault] ${key} is not set`);
  try {
    return readFileSync(path, "utf8").trim();
  } catch (err) {
    throw new Error(
      `[vault] ${key}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? "error"}`,
    );
  }
}

const sessions = new Map<string, VaultSession>();

/** The process's session for these settings (one login shared by every identity using it). */
export function vaultSession(settings: VaultSettings): VaultSession {
  const key = JSON.stringify(settings);
  let s = sessions.get(key);
  if (s === undefined) {
    s = new VaultSession(settings);
    sessions.set(key, s);
  }
  return s;
}
