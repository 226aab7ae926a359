// OAuth 2.0 access tokens for Cloud SQL for PostgreSQL IAM database authentication.
//
// google-auth-library's Application Default Credentials find the identity: the file named by
// GOOGLE_APPLICATION_CREDENTIALS (a service-account key, or an external_account file for
// workload identity federation, with or without service-account impersonation), gcloud's
// application-default file, else the metadata server (GCE, GKE workload identity, Cloud Run).
// The token is asked for with scope https://www.googleapis.com/auth/sqlservice.login and sent as
// the password of the Cloud SQL IAM user; its expiry is the token's (expiry_date).
//
// The library caches a token until 5 minutes before it expires; the engine refreshes later
// than that for tokens of an hour, so each engine fetch is a real request. After a failure, a
// timed-out fetch or a rejection the client is replaced (the library takes no AbortSignal and
// would otherwise hand back a cached token), so the next attempt starts afresh.

import { GoogleAuth } from "google-auth-library";
import type { FetchedToken, TokenProvider } from "../types.js";

export const CLOUD_SQL_LOGIN_SCOPE = "https://www.googleapis.com/auth/sqlservice.login";

export interface GcpCloudSqlIamSettings {
  /** The Cloud SQL IAM user (for the description; the token does not depend on it). */
  readonly user: string;
  /** GOOGLE_APPLICATION_CREDENTIALS, or undefined for the rest of ADC (metadata server, …). */
  readonly credentialsFile: string | undefined;
}

/** The part of an ADC client this provider uses (every client type of the library has it). */
interface TokenClient {
  getAccessToken(): Promise<{ token?: string | null }>;
  credentials: { expiry_date?: number | null };
}

export class GcpCloudSqlIamProvider implements TokenProvider {
  readonly kind = "gcp_cloudsql_iam";
  readonly description: Readonly<Record<string, string | number>>;
  private client: Promise<TokenClient> | null = null;

  constructor(private readonly settings: GcpCloudSqlIamSettings) {
    this.description = {
      user: settings.user,
      source: settings.credentialsFile ? `file ${settings.credentialsFile}` : "adc",
    };
  }

  private getClient(): Promise<TokenClient> {
    this.client ??= new GoogleAuth({
      scopes: [CLOUD_SQL_LOGIN_SCOPE],
      ...(this.settings.credentialsFile ? { keyFilename: this.settings.credentialsFile } : {}),
    }).getClient() as unknown as Promise<TokenClient>;
    return this.client;
  }

  async fetch(signal: AbortSignal): Promise<FetchedToken> {
    const pending = this.getClient();
    signal.addEventListener("abort", () => this.replace(pending), { once: true });
    try {
      const client = await pending;
      const { token } = await client.getAccessToken();
      const expiry = client.credentials.expiry_date;
      if (!token) throw new Error("Google returned no access token");
      if (typeof expiry !== "number") throw new Error("Google returned a token without an expiry");
      return { secret: token, expiresAt: expiry };
    } catch (err) {
      this.replace(pending);
      throw err;
    }
  }

  invalidate(): void {
    this.client = null;
  }

  private replace(failed: Promise<TokenClient>): void {
    if (this.client === failed) this.client = null;
  }
}
