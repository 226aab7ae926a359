// AWS RDS / Aurora IAM authentication tokens.
//
// A token is a SigV4-presigned `connect` URL for (endpoint, port, db user), signed offline by
// @aws-sdk/rds-signer with credentials from the default AWS chain (env, web identity / IRSA,
// EKS pod identity or ECS container endpoint, profiles, IMDS). The chain is memoized (it
// refreshes its credentials itself), resolved once per fetch, and its expiry bounds the token's:
// expiry = min(signing time + 15 min, expiration of the credentials that signed it).
//
// The memoized chain shares one refresh among callers; if that refresh hangs (a stuck container
// credentials endpoint), every later call waits on it forever. After a failed or timed-out
// fetch the chain is therefore replaced, so the engine's next attempt starts afresh.

import { fromNodeProviderChain } from "@aws-sdk/credential-providers";
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
}

export class RdsIamProvider implements TokenProvider {
  readonly kind = "rds_iam";
  readonly description: Readonly<Record<string, string | number>>;
  private credentials: AwsCredentialsProvider;
  private lastKeyId = "";

  constructor(
    private readonly settings: RdsIamSettings,
    private readonly makeChain: () => AwsCredentialsProvider = () => fromNodeProviderChain(),
  ) {
    this.credentials = makeChain();
    this.description = {
      host: settings.signingHost,
      port: settings.port,
      user: settings.user,
      region: settings.region,
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
