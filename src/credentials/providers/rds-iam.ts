// AWS RDS / Aurora IAM authentication tokens.
//
// A token is a SigV4-presigned `connect` URL for (endpoint, port, db user), signed offline by
// @aws-sdk/rds-signer with credentials from the default AWS chain (env, web identity / IRSA,
// EKS pod identity or ECS container endpoint, profiles, IMDS). The chain is memoized (it
// refreshes its credentials itself), resolved once per fetch, and its expiry bounds the token's:
// expiry = min(signing time + 15 min, expiration of the credentials that signed it).
//
// With server_iam_role_arn the token is signed with the credentials of that role instead: STS
// AssumeRole (fromTemporaryCredentials, regional STS endpoint of the database's region; the
// endpoint can be set with AWS_ENDPOINT_URL_STS) called with the default chain's credentials,
// once per fetch, so every token is signed with fresh role credentials and its expiry is also
// capped by theirs. The external id and session name, when set, go into AssumeRole.
//
// The memoized chain shares one refresh among callers; if that refresh hangs (a stuck container
// credentials endpoint), every later call waits on it forever. After a failed or timed-out
// fetch the chain is therefore replaced, so the engine's next attempt starts afresh.

import { fromNodeProviderChain, fromTemporaryCredentials } from "@aws-sdk/credential-providers";
import { Signer } from "@aws-sdk/rds-signer";
import type { FetchedToken, TokenProvider } from "../types.js";

/** RDS IAM tokens are valid for 15 minutes after signing. */
export const RDS_TOKEN_LIFETIME_MS = 15 * 60 * 1000;

/** What the AWS SDK's credential providers return (the type lives in a transitive package). */
export interface AwsCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
  readonly expiration?: Date;
}
export type AwsCredentialsProvider = (options?: {
  forceRefresh?: boolean;
}) => Promise<AwsCredentials>;

/** The SDK's own "about to expire" window: inside it, the chain hands out old credentials while it refreshes. */
const AWS_REFRESH_WINDOW_MS = 5 * 60 * 1000;

export interface RdsIamSettings {
  /** The endpoint the token is signed for (server_iam_host, else the database host). */
  readonly signingHost: string;
  readonly port: number;
  readonly user: string;
  readonly region: string;
  /** Sign with the credentials of this role (STS AssumeRole), not the default chain's. */
  readonly roleArn?: string | undefined;
  readonly externalId?: string | undefined;
  readonly sessionName?: string | undefined;
}

/** RoleSessionName when server_iam_session_name is not set (shows in CloudTrail). */
export const DEFAULT_ROLE_SESSION_NAME = "pgwarden";

/** The credentials to sign with: the default chain, or a role assumed with its credentials. */
export function defaultCredentials(settings: RdsIamSettings): AwsCredentialsProvider {
  if (!settings.roleArn) return fromNodeProviderChain();
  // Not memoized: each call is one AssumeRole, so `forceRefresh` has nothing to add.
  const assume = fromTemporaryCredentials({
    params: {
      RoleArn: settings.roleArn,
      RoleSessionName: settings.sessionName ?? DEFAULT_ROLE_SESSION_NAME,
      ...(settings.externalId ? { ExternalId: settings.externalId } : {}),
    },
    masterCredentials: fromNodeProviderChain(),
    clientConfig: { region: settings.region, maxAttempts: 1 },
  });
  return () => assume();
}

export class RdsIamProvider implements TokenProvider {
  readonly kind = "rds_iam";
  readonly description: Readonly<Record<string, string | number>>;
  private credentials: AwsCredentialsProvider;
  private lastKeyId = "";

  constructor(
    private readonly settings: RdsIamSettings,
    private readonly makeChain: () => AwsCredentialsProvider = () => defaultCredentials(settings),
  ) {
    this.credentials = makeChain();
    this.description = {
      host: settings.signingHost,
      port: settings.port,
      user: settings.user,
      region: settings.region,
      ...(settings.roleArn ? { role_arn: settings.roleArn } : {}),
    };
  }

  async fetch(signal: AbortSignal): Promise<FetchedToken> {
    const chain = this.credentials;
    const replace = () => {
      if (this.credentials === chain) this.credentials = this.makeChain();
    };
    signal.addEventListener("abort", replace, { once: true });
    let creds: AwsCredentials;
    try {
      creds = await chain();
      // Inside the window the memoized chain returns the old credentials and refreshes in the
      // background; a token signed with them would die with them. Ask for new ones instead.
      // (Credentials we have not signed with before are fresh from the source: keep them.)
      const expiring =
        creds.expiration && creds.expiration.getTime() - Date.now() < AWS_REFRESH_WINDOW_MS;
      if (expiring && creds.accessKeyId === this.lastKeyId)
        creds = await chain({ forceRefresh: true });
      this.lastKeyId = creds.accessKeyId;
    } catch (err) {
      replace();
      throw err;
    }
    const signedAt = Date.now();
    const signer = new Signer({
      hostname: this.settings.signingHost,
      port: this.settings.port,
      username: this.settings.user,
      region: this.settings.region,
      credentials: creds,
    });
    const secret = await signer.getAuthToken();
    let expiresAt = signedAt + RDS_TOKEN_LIFETIME_MS;
    if (creds.expiration) expiresAt = Math.min(expiresAt, creds.expiration.getTime());
    return { secret, expiresAt };
  }
}
