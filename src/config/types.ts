// The validated, frozen configuration that the rest of pgwarden reads.
// Keys follow pgdog's pgwarden.toml / users.toml (design §3); times are milliseconds.

export type PoolerMode = "transaction" | "session";
export type ClientAuthType = "scram" | "md5" | "plain" | "trust";
export type TlsVerify = "disabled" | "prefer" | "verify_ca" | "verify_full";
/** pgdog's values that pgwarden implements ("extended_anonymous" and "full" are not). */
export type PreparedStatementsMode = "extended" | "disabled";
export type ServerAuth =
  | "password"
  | "rds_iam"
  | "azure_workload_identity"
  | "azure_managed_identity"
  | "gcp_cloudsql_iam"
  | "vault_dynamic"
  | "vault_static"
  | "command";

export interface GeneralConfig {
  readonly host: string;
  readonly port: number;
  readonly pooler_mode: PoolerMode;
  readonly default_pool_size: number;
  readonly min_pool_size: number;
  readonly idle_timeout: number;
  readonly server_lifetime: number;
  readonly checkout_timeout: number;
  readonly connect_timeout: number;
  readonly auth_type: ClientAuthType;
  readonly tls_certificate: string | undefined;
  readonly tls_private_key: string | undefined;
  readonly tls_verify: TlsVerify;
  readonly tls_server_ca_certificate: string | undefined;
  readonly openmetrics_port: number | undefined;
  readonly shutdown_timeout: number;
  readonly max_client_connections: number;
  readonly client_login_timeout: number;
  readonly max_message_size: number;
  readonly auth_failure_delay: number;
  readonly token_refresh_buffer: number;
  readonly token_fetch_timeout: number;
  readonly log_level: "trace" | "debug" | "info" | "warn" | "error" | "fatal";
  /** Named prepared statements in transaction pooling: tracked and renamed, or passed through. */
  readonly prepared_statements: PreparedStatementsMode;
  /** Most statements kept prepared on one server connection (LRU). */
  readonly prepared_statements_limit: number;
  /** Worker processes accepting on the port (1 = no cluster; 0 in the file = one per core). */
  readonly workers: number;
}

export interface DatabaseConfig {
  /** What clients ask for. */
  readonly name: string;
  readonly host: string;
  readonly port: number;
  /** The database on the server; defaults to `name`. */
  readonly database_name: string;
}

export interface UserConfig {
  readonly name: string;
  readonly database: string;
  /** Client password (plain text, or a SCRAM-SHA-256 verifier / md5 hash as PostgreSQL stores them). */
  readonly password: string | undefined;
  /** Server user; defaults to `name`. */
  readonly server_user: string;
  /** Server password; defaults to `password`. */
  readonly server_password: string | undefined;
  /** Resolved: the user's pool_size, else general.default_pool_size. */
  readonly pool_size: number;
  /** Resolved: the user's min_pool_size, else general.min_pool_size. */
  readonly min_pool_size: number;
  /** Resolved: the user's pooler_mode, else general.pooler_mode. */
  readonly pooler_mode: PoolerMode;
  readonly server_auth: ServerAuth;
  readonly server_iam_region: string | undefined;
  readonly server_iam_host: string | undefined;
  readonly azure_client_id: string | undefined;
  readonly azure_tenant_id: string | undefined;
  /** A user-assigned managed identity by its ARM resource id (instead of azure_client_id). */
  readonly azure_resource_id: string | undefined;
  /** rds_iam: sign with the credentials of this role (STS AssumeRole on the default chain). */
  readonly server_iam_role_arn: string | undefined;
  readonly server_iam_external_id: string | undefined;
  readonly server_iam_session_name: string | undefined;
  readonly server_vault_path: string | undefined;
  readonly vault_refresh_percent: number | undefined;
  /** command: the argv (no shell); a string in the file is a program without arguments. */
  readonly server_auth_command: readonly string[] | undefined;
  /** command: lifetime of a bare secret (ms); JSON output carries its own expiry. */
  readonly server_auth_command_ttl: number | undefined;
}

export interface AdminConfig {
  readonly name: string;
  readonly user: string;
  readonly password: string | undefined;
}

/** [vault]: how pgwarden logs in to Vault for the vault_dynamic / vault_static users. */
export interface VaultConfig {
  readonly url: string;
  readonly namespace: string | undefined;
  readonly auth_method: "kubernetes" | "approle" | "token";
  /** Resolved: the method's name ("kubernetes", "approle") unless set. */
  readonly auth_mount: string;
  readonly kubernetes_role: string | undefined;
  /** Resolved: the service account token path of a pod unless set. */
  readonly kubernetes_jwt_path: string;
  readonly approle_role_id: string | undefined;
  readonly approle_secret_id_file: string | undefined;
  readonly token_file: string | undefined;
  /** Seconds asked for at login (AppRole/Kubernetes roles cap it); undefined = the role's default. */
  readonly client_token_ttl: number | undefined;
}

export interface Config {
  readonly general: GeneralConfig;
  readonly databases: readonly DatabaseConfig[];
  readonly users: readonly UserConfig[];
  readonly admin: AdminConfig;
  /** [vault], when the file has one. */
  readonly vault: VaultConfig | undefined;
  /** Absolute paths the config was read from (for messages and reload). */
  readonly files: { readonly config: string; readonly users: string };
  /**
   * The files it names (TLS certificate, key, CA), read with it: config/attachments.ts. Absent
   * from a Config made from text alone (parseConfig).
   */
  readonly attachments?: Readonly<Record<string, Uint8Array>>;
}
