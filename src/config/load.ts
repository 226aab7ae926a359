// Config loading as one pure pipeline per file: TOML parse → `${VAR}` substitution → zod schema
// (types, ranges, unknown keys) → cross-key and cross-file checks → defaults → deep freeze.
// Problems are collected rather than thrown at the first one, so a single run reports everything
// that is wrong; each stage runs only on input the earlier stages accepted, which keeps one
// mistake from echoing as several. Nothing here touches the process: env comes in as an argument.

import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parse as parseToml, TomlError } from "smol-toml";
import type { z } from "zod";
import { type Attachments, attach, readAttachments } from "./attachments.js";
import { ADMIN_DEFAULTS, DATABASE_DEFAULTS, GENERAL_DEFAULTS, USER_DEFAULTS } from "./defaults.js";
import { type Env, pathKey, substituteTree } from "./env.js";
import {
  ConfigError,
  type ConfigProblem,
  describeValue,
  fileProblem,
  isSecretKey,
  locate,
  missingKey,
  type Path,
  problemAt,
  quote,
  unknownKey,
  unreadable,
} from "./errors.js";
import { deepFreeze } from "./freeze.js";
import {
  inferRdsRegion,
  SUPPORTED_SERVER_AUTH,
  TOKEN_AUTH_MODES,
  VAULT_AUTH_MODES,
} from "./rules.js";
import {
  type ConfigFile,
  configFileSchema,
  knownKeys,
  type UsersFile,
  usersFileSchema,
} from "./schema.js";
import type {
  AdminConfig,
  Config,
  DatabaseConfig,
  GeneralConfig,
  UserConfig,
  VaultConfig,
} from "./types.js";

export interface ConfigFiles {
  readonly config: string;
  readonly users: string;
}

/**
 * Both files' text, read once: what an instance with workers runs is the text its primary read
 * and validated, handed to every worker (at its start, a replacement's included, and at each
 * reload), never a worker's own later read of files that may have changed since.
 */
export interface ConfigTexts {
  readonly config: string;
  readonly users: string;
  readonly files: ConfigFiles;
  /** The files the configuration names (TLS certificate, key, CA), read with it: attachments.ts. */
  readonly attachments?: Attachments;
}

/** Reads and validates both files. Paths are resolved against the working directory. */
export function loadConfig(configPath: string, usersPath: string, env: Env = process.env): Config {
  return readConfig(configPath, usersPath, env).config;
}

/**
 * Reads and validates both files, and reads the files they name (attachments.ts): the text as
 * read, with those files (what a primary sends its workers), and the Config made from it. A
 * ConfigError names the file (and key) that cannot be read or used, or what is invalid.
 */
export function readConfig(
  configPath: string,
  usersPath: string,
  env: Env = process.env,
): { texts: ConfigTexts; config: Config } {
  const files = { config: resolve(configPath), users: resolve(usersPath) };
  const configText = readText(files.config);
  const usersText = readText(files.users);
  const parsed = parseConfig(configText, usersText, files, env);
  const attachments = readAttachments(parsed);
  return {
    texts: { config: configText, users: usersText, files, attachments },
    config: attach(parsed, attachments),
  };
}

/**
 * Validates the text readConfig read (in another process: a worker); the Config keeps its
 * attachments (read now when there are none).
 */
export function parseConfigTexts(texts: ConfigTexts, env: Env = process.env): Config {
  const config = parseConfig(texts.config, texts.users, texts.files, env);
  return attach(config, texts.attachments ?? readAttachments(config));
}

/** Same as `loadConfig`, from the files' text; `files` only names them in messages and in `Config.files`. */
export function parseConfig(
  configText: string,
  usersText: string,
  files: ConfigFiles,
  env: Env,
): Config {
  const problems: ConfigProblem[] = [];
  const configFile = parseFile(files.config, configText, configFileSchema, env, problems);
  const usersFile = parseFile(files.users, usersText, usersFileSchema, env, problems);
  if (configFile === undefined || usersFile === undefined) {
    // Cross-file checks would only repeat what is already wrong.
    throw new ConfigError(problems);
  }
  const config = build(configFile, usersFile, files, problems);
  if (problems.length > 0) throw new ConfigError(problems);
  return deepFreeze(config);
}

function readText(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigError([fileProblem(file, unreadable(err))], err);
  }
}

interface Parsed<T> {
  readonly file: string;
  /** The substituted TOML tree, for locating problems found after validation. */
  readonly root: Record<string, unknown>;
  readonly data: T;
}

function parseFile<T>(
  file: string,
  text: string,
  schema: z.ZodType<T>,
  env: Env,
  problems: ConfigProblem[],
): Parsed<T> | undefined {
  let root: Record<string, unknown>;
  try {
    root = parseToml(text, { unsafeKeyBehaviour: "throw" }) as Record<string, unknown>;
  } catch (err) {
    if (!(err instanceof TomlError)) throw err;
    // Only the first line of smol-toml's message: the rest quotes source lines, which may hold a
    // password. For the same reason the TomlError is not kept as `cause`.
    const reason = (err.message.split("\n")[0] ?? "").replace(/^Invalid TOML document: /, "");
    problems.push({
      file,
      table: undefined,
      key: undefined,
      message: `${file}:${err.line}:${err.column}: TOML syntax error: ${reason}`,
    });
    return undefined;
  }
  const substituted = substituteTree(file, root, env);
  problems.push(...substituted.problems);
  const result = schema.safeParse(root);
  if (result.success) {
    return substituted.problems.length === 0 ? { file, root, data: result.data } : undefined;
  }
  for (const issue of result.error.issues) {
    if (substituted.failed.has(pathKey(issue.path))) continue;
    problems.push(...fromIssue(file, root, schema, issue));
  }
  return undefined;
}

function fromIssue(
  file: string,
  root: unknown,
  schema: z.ZodTypeAny,
  issue: z.ZodIssue,
): ConfigProblem[] {
  const path = issue.path;
  if (issue.code === "unrecognized_keys") {
    const known = knownKeys(schema, path);
    return issue.keys.map((k) => unknownKey(file, root, path, k, known));
  }
  if (issue.code === "invalid_type" && issue.received === "undefined") {
    return [missingKey(file, root, path)];
  }
  const { key } = locate(root, path);
  const text = isSecretKey(key)
    ? `invalid value (${issue.message})`
    : `${issue.message}, ${describeValue(valueAt(root, path))}`;
  return [problemAt(file, root, path, text)];
}

function valueAt(root: unknown, path: Path): unknown {
  let v = root;
  for (const seg of path) {
    if (typeof v !== "object" || v === null || !Object.hasOwn(v, seg)) return undefined;
    v = (v as Record<string | number, unknown>)[seg];
  }
  return v;
}

function build(
  cfg: Parsed<ConfigFile>,
  usr: Parsed<UsersFile>,
  files: ConfigFiles,
  problems: ConfigProblem[],
): Config {
  const general = buildGeneral(cfg, problems);
  const admin = buildAdmin(usr.data.admin ?? cfg.data.admin);
  const databases = buildDatabases(cfg, admin, problems);
  const vault = buildVault(cfg, problems);
  const users = buildUsers(usr, general, databases, vault !== undefined, problems);
  return {
    general,
    databases,
    users,
    admin,
    vault,
    files: { config: files.config, users: files.users },
  };
}

/** The service account token of a Kubernetes pod. */
export const KUBERNETES_JWT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token";

function buildVault(cfg: Parsed<ConfigFile>, problems: ConfigProblem[]): VaultConfig | undefined {
  const v = cfg.data.vault;
  if (v === undefined) return undefined;
  const at = (key: string, text: string) =>
    problems.push(problemAt(cfg.file, cfg.root, ["vault", key], text));
  const needs: Record<VaultConfig["auth_method"], ReadonlyArray<keyof typeof v>> = {
    kubernetes: ["kubernetes_role"],
    approle: ["approle_role_id", "approle_secret_id_file"],
    token: ["token_file"],
  };
  for (const key of needs[v.auth_method]) {
    if (v[key] === undefined)
      at("auth_method", `auth_method = ${quote(v.auth_method)} needs ${quote(key)}`);
  }
  if (!/^https?:\/\//i.test(v.url)) at("url", `expected an http(s) URL, got ${quote(v.url)}`);
  return vaultConfig(v);
}

/** [vault] keys as written (config file, library options) → VaultConfig: defaults resolved. */
export function vaultConfig(v: {
  readonly url: string;
  readonly namespace?: string | undefined;
  readonly auth_method: VaultConfig["auth_method"];
  readonly auth_mount?: string | undefined;
  readonly kubernetes_role?: string | undefined;
  readonly kubernetes_jwt_path?: string | undefined;
  readonly approle_role_id?: string | undefined;
  readonly approle_secret_id_file?: string | undefined;
  readonly token_file?: string | undefined;
  readonly client_token_ttl?: number | undefined;
}): VaultConfig {
  return {
    url: v.url.replace(/\/+$/, ""),
    namespace: v.namespace,
    auth_method: v.auth_method,
    auth_mount: (v.auth_mount ?? v.auth_method).replace(/^\/+|\/+$/g, ""),
    kubernetes_role: v.kubernetes_role,
    kubernetes_jwt_path: v.kubernetes_jwt_path ?? KUBERNETES_JWT_PATH,
    approle_role_id: v.approle_role_id,
    approle_secret_id_file: v.approle_secret_id_file,
    token_file: v.token_file,
    client_token_ttl: v.client_token_ttl,
  };
}

function buildGeneral(cfg: Parsed<ConfigFile>, problems: ConfigProblem[]): GeneralConfig {
  const g = cfg.data.general ?? {};
  const at = (key: string, text: string) =>
    problems.push(problemAt(cfg.file, cfg.root, ["general", key], text));
  const prepared = preparedStatementSettings(g, at);
  const general: GeneralConfig = {
    host: g.host ?? GENERAL_DEFAULTS.host,
    port: g.port ?? GENERAL_DEFAULTS.port,
    pooler_mode: g.pooler_mode ?? GENERAL_DEFAULTS.pooler_mode,
    default_pool_size: g.default_pool_size ?? GENERAL_DEFAULTS.default_pool_size,
    min_pool_size: g.min_pool_size ?? GENERAL_DEFAULTS.min_pool_size,
    idle_timeout: g.idle_timeout ?? GENERAL_DEFAULTS.idle_timeout,
    server_lifetime: g.server_lifetime ?? GENERAL_DEFAULTS.server_lifetime,
    checkout_timeout: g.checkout_timeout ?? GENERAL_DEFAULTS.checkout_timeout,
    connect_timeout: g.connect_timeout ?? GENERAL_DEFAULTS.connect_timeout,
    auth_type: g.auth_type ?? GENERAL_DEFAULTS.auth_type,
    tls_certificate: g.tls_certificate,
    tls_private_key: g.tls_private_key,
    tls_verify: g.tls_verify ?? GENERAL_DEFAULTS.tls_verify,
    tls_server_ca_certificate: g.tls_server_ca_certificate,
    openmetrics_port: g.openmetrics_port,
    shutdown_timeout: g.shutdown_timeout ?? GENERAL_DEFAULTS.shutdown_timeout,
    max_client_connections: g.max_client_connections ?? GENERAL_DEFAULTS.max_client_connections,
    client_login_timeout: g.client_login_timeout ?? GENERAL_DEFAULTS.client_login_timeout,
    max_message_size: g.max_message_size ?? GENERAL_DEFAULTS.max_message_size,
    auth_failure_delay: g.auth_failure_delay ?? GENERAL_DEFAULTS.auth_failure_delay,
    token_refresh_buffer: g.token_refresh_buffer ?? GENERAL_DEFAULTS.token_refresh_buffer,
    token_fetch_timeout: g.token_fetch_timeout ?? GENERAL_DEFAULTS.token_fetch_timeout,
    log_level: g.log_level ?? GENERAL_DEFAULTS.log_level,
    prepared_statements: prepared.mode,
    prepared_statements_limit: prepared.limit,
    workers: g.workers ?? GENERAL_DEFAULTS.workers,
  };
  if (general.tls_certificate !== undefined && general.tls_private_key === undefined) {
    at("tls_private_key", 'required when "tls_certificate" is set (client TLS needs both)');
  } else if (general.tls_private_key !== undefined && general.tls_certificate === undefined) {
    at("tls_certificate", 'required when "tls_private_key" is set (client TLS needs both)');
  }
  if (general.min_pool_size > general.default_pool_size) {
    at(
      "min_pool_size",
      `must not exceed "default_pool_size" (${general.default_pool_size}), got ${general.min_pool_size}`,
    );
  }
  if (general.openmetrics_port !== undefined && general.openmetrics_port === general.port) {
    at("openmetrics_port", `must differ from "port" (${general.port})`);
  }
  return general;
}

/**
 * `prepared_statements` and `prepared_statements_limit` (pgdog's keys), or PgBouncer's
 * `max_prepared_statements` for people bringing its value along: a positive number is the
 * limit, 0 turns tracking off, as in PgBouncer. Saying the same thing twice is an error.
 */
function preparedStatementSettings(
  g: NonNullable<ConfigFile["general"]>,
  at: (key: string, text: string) => void,
): { mode: GeneralConfig["prepared_statements"]; limit: number } {
  const alias = g.max_prepared_statements;
  let mode = g.prepared_statements ?? GENERAL_DEFAULTS.prepared_statements;
  let limit = g.prepared_statements_limit ?? GENERAL_DEFAULTS.prepared_statements_limit;
  if (alias === undefined) return { mode, limit };
  if (alias === 0) {
    if (g.prepared_statements === "extended") {
      at(
        "max_prepared_statements",
        'is 0, which turns prepared statement tracking off (PgBouncer\'s meaning), but "prepared_statements" is "extended"; keep one of them',
      );
    }
    mode = "disabled";
  } else if (g.prepared_statements_limit !== undefined) {
    at(
      "max_prepared_statements",
      'is PgBouncer\'s name for "prepared_statements_limit", which is set too; keep one of them',
    );
  } else {
    limit = alias;
  }
  return { mode, limit };
}

function buildAdmin(a: ConfigFile["admin"]): AdminConfig {
  return {
    name: a?.name ?? ADMIN_DEFAULTS.name,
    user: a?.user ?? ADMIN_DEFAULTS.user,
    password: a?.password,
  };
}

function buildDatabases(
  cfg: Parsed<ConfigFile>,
  admin: AdminConfig,
  problems: ConfigProblem[],
): DatabaseConfig[] {
  const seen = new Map<string, number>();
  return (cfg.data.databases ?? []).map((d, i) => {
    const at = (text: string) =>
      problems.push(problemAt(cfg.file, cfg.root, ["databases", i, "name"], text));
    const first = seen.get(d.name);
    if (first !== undefined) {
      at(`duplicate database name ${quote(d.name)} (first defined in [[databases]][${first}])`);
    } else {
      seen.set(d.name, i);
    }
    if (d.name === admin.name) {
      at(`${quote(d.name)} is the admin console's database name ([admin] name); pick another name`);
    }
    return {
      name: d.name,
      host: d.host,
      port: d.port ?? DATABASE_DEFAULTS.port,
      database_name: d.database_name ?? d.name,
    };
  });
}

type UserEntry = NonNullable<UsersFile["users"]>[number];

/** Keys that belong to one server_auth mode, and what each mode needs. */
function checkProviderKeys(
  u: UserEntry,
  serverAuth: string,
  at: (key: string, text: string) => void,
): void {
  const onlyFor: ReadonlyArray<readonly [keyof UserEntry, string]> = [
    ["server_iam_role_arn", "rds_iam"],
    ["server_iam_external_id", "rds_iam"],
    ["server_iam_session_name", "rds_iam"],
    ["azure_resource_id", "azure_managed_identity"],
    ["server_auth_command", "command"],
    ["server_auth_command_ttl", "command"],
  ];
  for (const [key, mode] of onlyFor) {
    if (u[key] !== undefined && serverAuth !== mode) {
      at(
        key,
        `is only used with server_auth = ${quote(mode)} (this user has ${quote(serverAuth)})`,
      );
    }
  }
  if (serverAuth === "rds_iam" && u.server_iam_role_arn === undefined) {
    for (const key of ["server_iam_external_id", "server_iam_session_name"] as const) {
      if (u[key] !== undefined) at(key, 'needs "server_iam_role_arn" (the role to assume)');
    }
  }
  if (
    serverAuth === "azure_managed_identity" &&
    u.azure_resource_id !== undefined &&
    u.azure_client_id !== undefined
  ) {
    at(
      "azure_resource_id",
      'name a user-assigned identity by "azure_client_id" or by "azure_resource_id", not both',
    );
  }
  if (serverAuth === "gcp_cloudsql_iam") {
    const serverUser = u.server_user ?? u.name;
    if (/\.gserviceaccount\.com$/i.test(serverUser)) {
      at(
        u.server_user !== undefined ? "server_user" : "name",
        `Cloud SQL names a service account's database user by its email without ".gserviceaccount.com": use ${quote(serverUser.replace(/\.gserviceaccount\.com$/i, ""))}`,
      );
    }
  }
  if (serverAuth === "command") {
    const cmd = u.server_auth_command;
    if (cmd === undefined) {
      at("server_auth", 'server_auth = "command" needs "server_auth_command" (an argv array)');
    } else if (typeof cmd === "string" && /\s/.test(cmd)) {
      at(
        "server_auth_command",
        'a string is one program path, run without a shell; give arguments as an argv array: ["/path/to/tool", "--flag"]',
      );
    }
  }
}

function buildUsers(
  usr: Parsed<UsersFile>,
  general: GeneralConfig,
  databases: readonly DatabaseConfig[],
  hasVault: boolean,
  problems: ConfigProblem[],
): UserConfig[] {
  const dbNames = new Set(databases.map((d) => d.name));
  const seen = new Map<string, number>();
  return (usr.data.users ?? []).map((u, i) => {
    const at = (key: string, text: string) =>
      problems.push(problemAt(usr.file, usr.root, ["users", i, key], text));
    if (!dbNames.has(u.database)) {
      const known = databases.length === 0 ? "none defined" : [...dbNames].map(quote).join(", ");
      at("database", `no [[databases]] entry named ${quote(u.database)} (known: ${known})`);
    }
    const id = JSON.stringify([u.name, u.database]);
    const first = seen.get(id);
    if (first !== undefined) {
      at(
        "name",
        `duplicate user ${quote(u.name)} for database ${quote(u.database)} (first defined in [[users]][${first}])`,
      );
    } else {
      seen.set(id, i);
    }
    const serverAuth = u.server_auth ?? USER_DEFAULTS.server_auth;
    if (!SUPPORTED_SERVER_AUTH.has(serverAuth)) {
      at(
        "server_auth",
        `${quote(serverAuth)} is not supported yet (supported: ${[...SUPPORTED_SERVER_AUTH].map(quote).join(", ")})`,
      );
    }
    if (TOKEN_AUTH_MODES.has(serverAuth) && general.tls_verify === "disabled") {
      at(
        "server_auth",
        `${quote(serverAuth)} sends a bearer token as the password, which needs TLS to the server; [general] tls_verify is "disabled"`,
      );
    }
    if (serverAuth === "rds_iam" && u.server_iam_region === undefined) {
      const db = databases.find((d) => d.name === u.database);
      const signingHost = u.server_iam_host ?? db?.host;
      if (signingHost !== undefined && inferRdsRegion(signingHost) === undefined) {
        at(
          "server_iam_region",
          `required: the region cannot be inferred from host ${quote(signingHost)}`,
        );
      }
    }
    checkProviderKeys(u, serverAuth, at);
    if (VAULT_AUTH_MODES.has(serverAuth)) {
      if (!hasVault)
        at("server_auth", `${quote(serverAuth)} needs a [vault] table in the config file`);
      if (u.server_vault_path === undefined)
        at("server_auth", `${quote(serverAuth)} needs "server_vault_path" (a role name or path)`);
    } else {
      for (const key of ["server_vault_path", "vault_refresh_percent"] as const) {
        if (u[key] !== undefined)
          at(
            key,
            `is only used with the vault_* modes of server_auth (this user has ${quote(serverAuth)})`,
          );
      }
    }
    if (serverAuth === "vault_static" && u.vault_refresh_percent !== undefined)
      at("vault_refresh_percent", 'is only used with server_auth = "vault_dynamic"');
    const command =
      u.server_auth_command === undefined
        ? undefined
        : typeof u.server_auth_command === "string"
          ? [u.server_auth_command]
          : u.server_auth_command;
    const poolSize = u.pool_size ?? general.default_pool_size;
    let minPoolSize = u.min_pool_size ?? general.min_pool_size;
    if (u.min_pool_size !== undefined && u.min_pool_size > poolSize) {
      const from = u.pool_size === undefined ? '[general] "default_pool_size"' : '"pool_size"';
      at("min_pool_size", `must not exceed ${from} (${poolSize}), got ${u.min_pool_size}`);
    } else if (minPoolSize > poolSize) {
      // Only the inherited general minimum exceeds this user's own, smaller pool: a default
      // should not make an explicit pool_size invalid, so the minimum follows the pool size.
      minPoolSize = poolSize;
    }
    return {
      name: u.name,
      database: u.database,
      password: u.password,
      server_user: u.server_user ?? u.name,
      server_password: u.server_password ?? u.password,
      pool_size: poolSize,
      min_pool_size: minPoolSize,
      pooler_mode: u.pooler_mode ?? general.pooler_mode,
      server_auth: serverAuth,
      server_iam_region: u.server_iam_region,
      server_iam_host: u.server_iam_host,
      azure_client_id: u.azure_client_id,
      azure_tenant_id: u.azure_tenant_id,
      azure_resource_id: u.azure_resource_id,
      server_iam_role_arn: u.server_iam_role_arn,
      server_iam_external_id: u.server_iam_external_id,
      server_iam_session_name: u.server_iam_session_name,
      server_vault_path: u.server_vault_path,
      vault_refresh_percent: u.vault_refresh_percent,
      server_auth_command: command,
      server_auth_command_ttl: u.server_auth_command_ttl,
    };
  });
}
