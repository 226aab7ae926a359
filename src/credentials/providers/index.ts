// Which provider serves a user's server_auth, and the credential key of that identity.

import { type DatabaseConfig, inferRdsRegion, type UserConfig } from "../../config/index.js";
import { PgwardenError } from "../../util/index.js";
import { credentialKey } from "../engine.js";
import type { TokenProvider } from "../types.js";
import { AzureWorkloadIdentityProvider } from "./azure-workload-identity.js";
import { RdsIamProvider } from "./rds-iam.js";

export { AZURE_POSTGRES_SCOPE, AzureWorkloadIdentityProvider } from "./azure-workload-identity.js";
export { RDS_TOKEN_LIFETIME_MS, RdsIamProvider } from "./rds-iam.js";

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
export function identityFor(user: UserConfig, db: DatabaseConfig, env: Env): Identity | null {
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
      const settings = { signingHost, port: db.port, user: user.server_user, region };
      return {
        key: credentialKey("rds_iam", {
          host: signingHost,
          port: db.port,
          user: user.server_user,
          region,
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
    default:
      throw new PgwardenError(
        "CONFIG",
        `${label}: server_auth "${user.server_auth}" is not supported yet`,
      );
  }
}
