// The shape of pgwarden.toml and users.toml as written: every key optional unless a file would
// be meaningless without it, defaults applied later (resolve.ts). Each leaf carries one message
// for every way it can fail ("expected a positive integer"), so a problem line reads the same
// whether the value had the wrong type or the wrong range.

import { z } from "zod";
import { MAX_DURATION_MS, MAX_MESSAGE_SIZE, MIN_MESSAGE_SIZE } from "./defaults.js";

const expected = (what: string) => ({ errorMap: () => ({ message: `expected ${what}` }) });

function int(min: number, max: number, what: string) {
  return z.number(expected(what)).int().min(min).max(max);
}

const nonEmpty = z.string(expected("a non-empty string")).min(1);
const port = int(1, 65535, "a port number (1-65535)");
const positive = int(1, Number.MAX_SAFE_INTEGER, "a positive integer");
const nonNegative = int(0, Number.MAX_SAFE_INTEGER, "a non-negative integer");
const duration = int(0, MAX_DURATION_MS, `a duration in milliseconds (0-${MAX_DURATION_MS})`);
const positiveDuration = int(
  1,
  MAX_DURATION_MS,
  `a duration in milliseconds (1-${MAX_DURATION_MS})`,
);

function oneOf<const T extends readonly [string, ...string[]]>(values: T) {
  return z.enum(values, expected(`one of ${values.map((v) => JSON.stringify(v)).join(", ")}`));
}

const table = expected("a table");
const arrayOfTables = (name: string) => expected(`an array of tables ([[${name}]])`);

export const poolerMode = oneOf(["transaction", "session"]);
export const clientAuthType = oneOf(["scram", "md5", "plain", "trust"]);
export const tlsVerify = oneOf(["disabled", "prefer", "verify_ca", "verify_full"]);
export const logLevel = oneOf(["trace", "debug", "info", "warn", "error", "fatal"]);
export const preparedStatements = oneOf(["extended", "disabled"]);
export const serverAuth = oneOf([
  "password",
  "rds_iam",
  "azure_workload_identity",
  "azure_managed_identity",
  "gcp_cloudsql_iam",
  "vault_dynamic",
  "vault_static",
  "command",
]);

export const generalSchema = z
  .object(
    {
      host: nonEmpty,
      // 0 asks the OS for a free port (tests).
      port: int(0, 65535, "a port number (0-65535, 0 = any free port)"),
      pooler_mode: poolerMode,
      default_pool_size: positive,
      min_pool_size: nonNegative,
      idle_timeout: duration,
      server_lifetime: duration,
      checkout_timeout: positiveDuration,
      connect_timeout: positiveDuration,
      auth_type: clientAuthType,
      tls_certificate: nonEmpty,
      tls_private_key: nonEmpty,
      tls_verify: tlsVerify,
      tls_server_ca_certificate: nonEmpty,
      openmetrics_port: port,
      shutdown_timeout: duration,
      max_client_connections: positive,
      client_login_timeout: duration,
      max_message_size: int(
        MIN_MESSAGE_SIZE,
        MAX_MESSAGE_SIZE,
        `a size in bytes (${MIN_MESSAGE_SIZE}-${MAX_MESSAGE_SIZE})`,
      ),
      auth_failure_delay: duration,
      token_refresh_buffer: duration,
      token_fetch_timeout: positiveDuration,
      log_level: logLevel,
      prepared_statements: preparedStatements,
      prepared_statements_limit: positive,
      // PgBouncer's name for prepared_statements_limit, where 0 turns tracking off.
      max_prepared_statements: nonNegative,
      // pgdog's key: worker processes; 0 = one per core.
      workers: int(0, 128, "an integer 0-128"),
    },
    table,
  )
  .partial()
  .strict();

export const databaseSchema = z
  .object(
    {
      name: nonEmpty,
      host: nonEmpty,
      port: port.optional(),
      database_name: nonEmpty.optional(),
    },
    table,
  )
  .strict();

export const adminSchema = z
  .object({ name: nonEmpty, user: nonEmpty, password: nonEmpty }, table)
  .partial()
  .strict();

// pgdog's [vault] keys, plus `token` auth (token_file) for development.
export const vaultSchema = z
  .object(
    {
      url: nonEmpty,
      namespace: nonEmpty.optional(),
      auth_method: oneOf(["kubernetes", "approle", "token"]),
      auth_mount: nonEmpty.optional(),
      kubernetes_role: nonEmpty.optional(),
      kubernetes_jwt_path: nonEmpty.optional(),
      approle_role_id: nonEmpty.optional(),
      approle_secret_id_file: nonEmpty.optional(),
      token_file: nonEmpty.optional(),
      client_token_ttl: nonNegative.optional(),
    },
    table,
  )
  .strict();

export const userSchema = z
  .object(
    {
      name: nonEmpty,
      database: nonEmpty,
      password: nonEmpty.optional(),
      server_user: nonEmpty.optional(),
      server_password: nonEmpty.optional(),
      pool_size: positive.optional(),
      min_pool_size: nonNegative.optional(),
      pooler_mode: poolerMode.optional(),
      server_auth: serverAuth.optional(),
      server_iam_region: nonEmpty.optional(),
      server_iam_host: nonEmpty.optional(),
      azure_client_id: nonEmpty.optional(),
      azure_tenant_id: nonEmpty.optional(),
      azure_resource_id: nonEmpty.optional(),
      server_iam_role_arn: z
        .string(expected("an IAM role ARN (arn:aws:iam::<account>:role/<name>)"))
        .regex(
          /^arn:aws[\w-]*:iam::\d{12}:role\/[\w+=,.@/-]+$/,
          "expected an IAM role ARN (arn:aws:iam::<account>:role/<name>)",
        )
        .optional(),
      server_iam_external_id: z
        .string(expected("an external id (2-1224 characters of [A-Za-z0-9+=,.@:/-])"))
        .regex(
          /^[\w+=,.@:/-]{2,1224}$/,
          "expected an external id (2-1224 characters of [A-Za-z0-9+=,.@:/-])",
        )
        .optional(),
      server_iam_session_name: z
        .string(expected("a role session name (2-64 characters of [A-Za-z0-9+=,.@-])"))
        .regex(
          /^[\w+=,.@-]{2,64}$/,
          "expected a role session name (2-64 characters of [A-Za-z0-9+=,.@-])",
        )
        .optional(),
      server_vault_path: nonEmpty.optional(),
      vault_refresh_percent: int(1, 99, "a percentage (1-99)").optional(),
      // An argv, run without a shell; a string is a program without arguments.
      server_auth_command: z
        .union(
          [nonEmpty, z.array(nonEmpty).min(1)],
          expected("a program path or an argv array of non-empty strings"),
        )
        .optional(),
      server_auth_command_ttl: positiveDuration.optional(),
    },
    table,
  )
  .strict();

export const configFileSchema = z
  .object(
    {
      general: generalSchema.optional(),
      databases: z.array(databaseSchema, arrayOfTables("databases")).optional(),
      admin: adminSchema.optional(),
      vault: vaultSchema.optional(),
    },
    table,
  )
  .strict();

// pgdog also reads [admin] from users.toml and lets it replace pgdog.toml's, which keeps the
// admin password next to the other secrets.
export const usersFileSchema = z
  .object(
    {
      users: z.array(userSchema, arrayOfTables("users")).optional(),
      admin: adminSchema.optional(),
    },
    table,
  )
  .strict();

export type ConfigFile = z.infer<typeof configFileSchema>;
export type UsersFile = z.infer<typeof usersFileSchema>;

/** Known keys of the table at a path, for "did you mean" hints. */
export function knownKeys(
  schema: z.ZodTypeAny,
  path: readonly (string | number)[],
): readonly string[] {
  let s: z.ZodTypeAny = schema;
  for (const seg of path) {
    s = unwrap(s);
    if (s instanceof z.ZodObject && typeof seg === "string") {
      const next = (s.shape as Record<string, z.ZodTypeAny>)[seg];
      if (next === undefined) return [];
      s = next;
    } else if (s instanceof z.ZodArray && typeof seg === "number") {
      s = s.element as z.ZodTypeAny;
    } else {
      return [];
    }
  }
  s = unwrap(s);
  return s instanceof z.ZodObject ? Object.keys(s.shape as object) : [];
}

function unwrap(s: z.ZodTypeAny): z.ZodTypeAny {
  while (s instanceof z.ZodOptional) s = s.unwrap() as z.ZodTypeAny;
  return s;
}
