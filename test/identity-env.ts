// One environment for the credential-engine tests: a TLS PostgreSQL whose IAM roles log in
// with tokens checked by the LDAP checker (SigV4 for RDS tokens, signature + exp + revocation
// for Entra ID tokens), the Entra ID emulator, and an AWS container-credentials endpoint.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type AwsCredentialsEndpoint,
  startAwsCredentialsEndpoint,
} from "./fixtures/aws-credentials.js";
import { type EntraEmulator, startEntraEmulator } from "./fixtures/entra.js";
import { IAM_GROUP, ldapHbaLine } from "./fixtures/iam-postgres.js";
import { type LdapChecker, startLdapChecker } from "./fixtures/ldap-checker.js";
import { verifyRdsToken } from "./fixtures/rds-token.js";
import { type PgCluster, startPostgres } from "./harness/postgres.js";
import { removeOnExit } from "./harness/procs.js";
import { makeCerts } from "./tls-certs.js";

/** The RDS endpoint name pgwarden signs for (server_iam_host); its region is inferred. */
export const RDS_HOST = "mydb.c0ffee.eu-west-1.rds.amazonaws.com";
export const TENANT = "11111111-2222-3333-4444-555555555555";

export interface IdentityEnv {
  cluster: PgCluster;
  ldap: LdapChecker;
  entra: EntraEmulator;
  aws: AwsCredentialsEndpoint;
  tokenFile: string;
  /** Every token the checker saw (to prove none reached a log). */
  seenTokens: Set<string>;
  /** The last token each role logged in with. */
  lastToken: Map<string, string>;
  /** Which Entra client id each Azure role must present. */
  azureRoles: Map<string, string>;
  /** Environment for a pgwarden child process that reaches the emulators. */
  childEnv(clientId?: string): Record<string, string | undefined>;
  createIamRole(name: string): Promise<void>;
  stop(): Promise<void>;
}

export async function startIdentityEnv(opts: {
  entraLifetimeSec: number;
  entraLatencyMs: number;
  awsLifetimeMs: number;
}): Promise<IdentityEnv> {
  const entra = await startEntraEmulator({
    tokenLifetimeSec: opts.entraLifetimeSec,
    latencyMs: opts.entraLatencyMs,
  });
  const aws = await startAwsCredentialsEndpoint({ lifetimeMs: opts.awsLifetimeMs });
  const seenTokens = new Set<string>();
  const lastToken = new Map<string, string>();
  const azureRoles = new Map<string, string>();
  let clusterPort = 0;
  const ldap = await startLdapChecker(async (user, password) => {
    seenTokens.add(password);
    lastToken.set(user, password);
    const clientId = azureRoles.get(user);
    if (clientId !== undefined) return entra.verifyToken(password, { clientId });
    return verifyRdsToken(password, {
      host: RDS_HOST,
      port: clusterPort,
      user,
      region: "eu-west-1",
      secretFor: (id) => aws.secretFor(id),
      keyInfo: (id) => aws.keyInfo(id),
    });
  });
  const certs = makeCerts("DNS:localhost,IP:127.0.0.1");
  const cluster = await startPostgres({
    ssl: { certFile: certs.certFile, keyFile: certs.keyFile },
    hba: [ldapHbaLine(ldap.port)],
  });
  clusterPort = cluster.port;
  await cluster.query(`create role ${IAM_GROUP} nologin`);
  const dir = mkdtempSync(join(tmpdir(), "pgwarden-wi-"));
  removeOnExit(dir);
  const tokenFile = join(dir, "azure-identity-token");
  writeFileSync(
    tokenFile,
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YXBwIn0.first-assertion",
  );
  return {
    cluster,
    ldap,
    entra,
    aws,
    tokenFile,
    seenTokens,
    lastToken,
    azureRoles,
    childEnv: (clientId = "client-a") => ({
      NODE_EXTRA_CA_CERTS: entra.caFile,
      AZURE_AUTHORITY_HOST: entra.authorityHost,
      AZURE_TENANT_ID: TENANT,
      AZURE_CLIENT_ID: clientId,
      AZURE_FEDERATED_TOKEN_FILE: tokenFile,
      AWS_CONTAINER_CREDENTIALS_FULL_URI: aws.url,
      AWS_ACCESS_KEY_ID: undefined,
      AWS_SECRET_ACCESS_KEY: undefined,
      AWS_SESSION_TOKEN: undefined,
      AWS_PROFILE: undefined,
      AWS_REGION: "eu-west-1",
    }),
    createIamRole: async (name) => {
      await cluster.query(`create role "${name}" login in role ${IAM_GROUP}`);
    },
    stop: async () => {
      await cluster.stop();
      await ldap.close();
      await entra.close();
      await aws.close();
    },
  };
}
