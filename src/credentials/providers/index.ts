// Which provider serves a user's server_auth, and the credential key of that identity.

import {
  type DatabaseConfig,
  inferRdsRegion,
  type UserConfig,
  type VaultConfig,
} from "../../config/index.js";
import { PgwardenError } from "../../util/index.js";
import { credentialKey } from "../engine.js";
import type { TokenProvider } from "../types.js";
import { AzureManagedIdentityProvider } from "./azure-managed-identity.js";
import { AzureWorkloadIdentityProvider } from "./azure-workload-identity.js";
import { CommandProvider } from "./command.js";
import { GcpCloudSqlIamProvider } from "./gcp-cloudsql-iam.js";
import { RdsIamProvider } from "./rds-iam.js";
import { DEFAULT_VAULT_REFRESH_PERCENT, VaultDatabaseProvider } from "./vault.js";
import { type VaultSettings, vaultSession } from "./vault-client.js";

export { AzureManagedIdentityProvider } from "./azure-managed-identity.js";
export { AZURE_POSTGRES_SCOPE, AzureWorkloadIdentityProvider } from "./azure-workload-identity.js";
export { CommandProvider, parseCommandOutput } from "./command.js";
export { CLOUD_SQL_LOGIN_SCOPE, GcpCloudSqlIamProvider } from "./gcp-cloudsql-iam.js";
export { RDS_TOKEN_LIFETIME_MS, RdsIamProvider } from "./rds-iam.js";
export {
  DEFAULT_VAULT_REFRESH_PERCENT,
  VaultDatabaseProvider,
  vaultSecretPath,
} from "./vault.js";
export { VaultHttpError, VaultSession, type VaultSettings, vaultSession } from "./vault-client.js";

export interface Identity {
  /** Equal for every pool whose secret is the same. */
  readonly key: string;
  readonly make: () => TokenProvider;
}

type Env = Readonly<Record<string, string | undefined>>;

/**
 * The identity of a token-authenticated user, or null for server_auth = "password". Throws a
 * clear error naming the user when a required setting is missing.
 */
export function identityFor(
  user: UserConfig,
  db: DatabaseConfig,
  env: Env,
  vault?: VaultConfig,
): Identity | null {
  const label = `users.toml: user "${user.name}" (database "${user.database}")`;
  switch (user.server_auth) {
    case "password":
      return null;
    case "rds_iam": {
      const signingHost = user.server_iam_host ?? db.host;
      const region = user.server_iam_region ?? inferRdsRegion(signingHost);
      if (!region) {
        throw new PgwardenError(
          "CONFIG",
          `${label}: server_auth "rds_iam" needs "server_iam_region": it cannot be inferred from host "${signingHost}"`,
        );
      }
      const settings = {
        signingHost,
        port: db.port,
        user: user.server_user,
        region,
        roleArn: user.server_iam_role_arn,
        externalId: user.server_iam_external_id,
        sessionName: user.server_iam_session_name,
      };
      return {
        key: credentialKey("rds_iam", {
          host: signingHost,
          port: db.port,
          user: user.server_user,
          region,
          role: user.server_iam_role_arn,
          external_id: user.server_iam_external_id,
          session: user.server_iam_session_name,
          // The chain (and so the role's caller) may come from a file or an endpoint.
          sts_endpoint: user.server_iam_role_arn ? env.AWS_ENDPOINT_URL_STS : undefined,
        }),
        make: () => new RdsIamProvider(settings),
      };
    }
    case "azure_workload_identity": {
      const tenantId = user.azure_tenant_id ?? env.AZURE_TENANT_ID;
      const clientId = user.azure_client_id ?? env.AZURE_CLIENT_ID;
      const tokenFile = env.AZURE_FEDERATED_TOKEN_FILE;
      const missing = [
        tenantId ? null : "azure_tenant_id (or AZURE_TENANT_ID)",
        clientId ? null : "azure_client_id (or AZURE_CLIENT_ID)",
        tokenFile ? null : "AZURE_FEDERATED_TOKEN_FILE",
      ].filter((m) => m !== null);
      if (missing.length > 0 || !tenantId || !clientId || !tokenFile) {
        throw new PgwardenError(
          "CONFIG",
          `${label}: server_auth "azure_workload_identity" needs ${missing.join(", ")}`,
        );
      }
      const authorityHost = env.AZURE_AUTHORITY_HOST;
      return {
        key: credentialKey("azure_workload_identity", {
          tenant: tenantId,
          client: clientId,
          authority: authorityHost,
          file: tokenFile,
        }),
        make: () =>
          new AzureWorkloadIdentityProvider({ tenantId, clientId, tokenFile, authorityHost }),
      };
    }
    case "azure_managed_identity": {
      const clientId = user.azure_client_id;
      const resourceId = user.azure_resource_id;
      return {
        key: credentialKey("azure_managed_identity", {
          client: clientId,
          resource_id: resourceId,
          // Where the SDK asks (App Service / Functions / Arc / IMDS variants).
          endpoint:
            env.IDENTITY_ENDPOINT ?? env.MSI_ENDPOINT ?? env.AZURE_POD_IDENTITY_AUTHORITY_HOST,
        }),
        make: () => new AzureManagedIdentityProvider({ clientId, resourceId }),
      };
    }
    case "gcp_cloudsql_iam": {
      const credentialsFile = env.GOOGLE_APPLICATION_CREDENTIALS || undefined;
      // The token is the identity's, whatever the database user: pools of different Cloud SQL
      // users of one service account could share it, but the user is in the key so that SHOW
      // CREDENTIALS names it and a mismatch shows on its row.
      return {
        key: credentialKey("gcp_cloudsql_iam", {
          user: user.server_user,
          file: credentialsFile,
          metadata: credentialsFile ? undefined : (env.GCE_METADATA_HOST ?? env.GCE_METADATA_IP),
        }),
        make: () => new GcpCloudSqlIamProvider({ user: user.server_user, credentialsFile }),
      };
    }
    case "command": {
      const argv = user.server_auth_command;
      if (argv === undefined || argv.length === 0) {
        throw new PgwardenError(
          "CONFIG",
          `${label}: server_auth "command" needs "server_auth_command"`,
        );
      }
      const ttlMs = user.server_auth_command_ttl;
      return {
        key: credentialKey("command", {
          argv: JSON.stringify(argv),
          ttl: ttlMs,
          host: db.host,
          port: db.port,
          user: user.server_user,
          database: db.database_name,
        }),
        make: () =>
          new CommandProvider({
            argv,
            ttlMs,
            host: db.host,
            port: db.port,
            user: user.server_user,
            database: db.database_name,
            env,
          }),
      };
    }
    case "vault_dynamic":
    case "vault_static": {
      const path = user.server_vault_path;
      if (vault === undefined || path === undefined) {
        throw new PgwardenError(
          "CONFIG",
          `${label}: server_auth "${user.server_auth}" needs a [vault] table and "server_vault_path"`,
        );
      }
      const mode = user.server_auth === "vault_dynamic" ? "dynamic" : "static";
      const settings: VaultSettings = {
        url: vault.url,
        namespace: vault.namespace,
        authMethod: vault.auth_method,
        authMount: vault.auth_mount,
        kubernetesRole: vault.kubernetes_role,
        kubernetesJwtPath: vault.kubernetes_jwt_path,
        approleRoleId: vault.approle_role_id,
        approleSecretIdFile: vault.approle_secret_id_file,
        tokenFile: vault.token_file,
        caFile: env.VAULT_CACERT || undefined,
      };
      const refreshPercent = user.vault_refresh_percent ?? DEFAULT_VAULT_REFRESH_PERCENT;
      return {
        key: credentialKey(user.server_auth, {
          host: db.host,
          port: db.port,
          path,
          refresh: mode === "dynamic" ? refreshPercent : undefined,
          vault: [
            settings.url,
            settings.namespace ?? "",
            settings.authMethod,
            settings.authMount,
            settings.kubernetesRole ?? settings.approleRoleId ?? settings.tokenFile ?? "",
          ].join("|"),
        }),
        make: () =>
          new VaultDatabaseProvider(
            { mode, path, refreshPercent, host: db.host, port: db.port, user: user.server_user },
            vaultSession(settings),
          ),
      };
    }
    default:
      throw new PgwardenError(
        "CONFIG",
        `${label}: server_auth "${user.server_auth}" is not supported yet`,
      );
  }
}
