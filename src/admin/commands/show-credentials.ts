// SHOW CREDENTIALS (ours, design §3): one row per credential key, i.e. per identity the engine
// fetches secrets for. `host`, `port` and `user` come from the provider's description, the other
// description fields go into `identity` as k=v; times are ISO 8601 text (UTC). Never a secret:
// snapshots carry none, and as a second guard description fields whose names look secret are
// dropped and last_error goes through the engine's sanitize() again.

import { type CredentialSnapshot, sanitize } from "../../credentials/index.js";
import type { AdminContext } from "../context.js";
import { type Column, int4, int8, isoTime, resultSet, text } from "./result-set.js";

const SHOWN_APART: ReadonlySet<string> = new Set(["host", "port", "user"]);
const SECRET_FIELD = /password|secret|token|assertion|signature/i;

function field(c: CredentialSnapshot, key: string): string | number | undefined {
  return SECRET_FIELD.test(key) ? undefined : c.description[key];
}

/** NULL for identities that have no port (an Entra ID token is not tied to one server). */
function port(c: CredentialSnapshot): number | null {
  const raw = field(c, "port");
  const p = Number(raw);
  return raw !== undefined && Number.isInteger(p) ? p : null;
}

function identity(c: CredentialSnapshot): string {
  return Object.keys(c.description)
    .filter((k) => !SHOWN_APART.has(k) && !SECRET_FIELD.test(k))
    .sort()
    .map((k) => `${k}=${String(c.description[k])}`)
    .join(" ");
}

const columns: readonly Column<CredentialSnapshot>[] = [
  text("provider", (c) => c.provider),
  text("host", (c) => String(field(c, "host") ?? "")),
  int4("port", port),
  text("user", (c) => String(field(c, "user") ?? "")),
  text("identity", identity),
  text("state", (c) => c.state),
  text("expires_at", (c) => isoTime(c.expiresAt)),
  text("refresh_at", (c) => isoTime(c.refreshAt)),
  int8("age", (c) => (c.ageSeconds === null ? null : Math.floor(c.ageSeconds))),
  int8("fetches", (c) => c.fetches),
  int8("failures", (c) => c.failures),
  text("last_error", (c) => (c.lastError === null ? null : sanitize(c.lastError))),
  int4("consumers", (c) => c.consumers),
  // Beyond design §3: how far into a backoff the refresher is, and how long the last fetch took.
  int4("consecutive_failures", (c) => c.consecutiveFailures),
  int8("last_fetch_ms", (c) => (c.lastFetchMs === null ? null : Math.round(c.lastFetchMs))),
  // Which credential is current (SHOW SERVERS' `credential` column), the user it names (Vault
  // issues one per lease; not a secret) and when connections opened with it are closed.
  int8("generation", (c) => c.generation),
  text("credential_user", (c) => c.user),
  text("retire_at", (c) => isoTime(c.retireAt)),
];

export function showCredentials(ctx: AdminContext): Buffer[] {
  return resultSet(columns, ctx.credentials());
}
