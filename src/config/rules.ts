// Rules that span keys or files: RDS region inference, which server_auth modes are tokens and
// which are implemented, which [general] keys need a restart.
/**
 * The region in an RDS endpoint: `*.<region>.rds.amazonaws.com`, `*.<region>.rds.amazonaws.com.cn`,
 * or `rds.<region>.amazonaws.com.cn`. Undefined for anything else (an IP, a CNAME).
 */
export function inferRdsRegion(host: string): string | undefined {
  const h = host.toLowerCase().replace(/\.$/, "");
  const m =
    /\.([a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d)\.rds\.amazonaws\.com(?:\.cn)?$/.exec(h) ??
    /(?:^|\.)rds\.([a-z]{2}-[a-z]+-\d)\.amazonaws\.com\.cn$/.exec(h);
  return m?.[1];
}

/** server_auth modes whose secret is a short-lived token sent as a cleartext password. */
export const TOKEN_AUTH_MODES: ReadonlySet<string> = new Set([
  "rds_iam",
  "azure_workload_identity",
  "azure_managed_identity",
  "gcp_cloudsql_iam",
]);

/** server_auth modes pgwarden implements today. */
export const SUPPORTED_SERVER_AUTH: ReadonlySet<string> = new Set([
  "password",
  "rds_iam",
  "azure_workload_identity",
  "azure_managed_identity",
  "gcp_cloudsql_iam",
  "vault_dynamic",
  "vault_static",
  "command",
]);

/** server_auth modes whose secret comes from Vault (and need [vault]). */
export const VAULT_AUTH_MODES: ReadonlySet<string> = new Set(["vault_dynamic", "vault_static"]);

/** [general] keys a reload cannot apply to a running process (listeners are bound, the logger made). */
export const RESTART_KEYS: ReadonlySet<string> = new Set([
  "host",
  "port",
  "openmetrics_port",
  "log_level",
  // Read when the credential engine is built, at start.
  "token_refresh_buffer",
  "token_fetch_timeout",
  // Worker processes are forked at start.
  "workers",
]);
