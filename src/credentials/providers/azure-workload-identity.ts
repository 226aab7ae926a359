// Microsoft Entra ID tokens for Azure Database for PostgreSQL, by AKS workload identity.
//
// The pod's federated service-account token (AZURE_FEDERATED_TOKEN_FILE, rewritten by
// Kubernetes before it expires) is exchanged for an Entra ID access token with scope
// https://ossrdbms-aad.database.windows.net/.default. ClientAssertionCredential with a callback
// that reads the file on every exchange is used rather than WorkloadIdentityCredential, which
// keeps the file's contents for 5 minutes and so can send an assertion Kubernetes has already
// replaced. One credential object per identity, reused; MSAL's retries are kept low because the
// engine's own backoff decides when to try again.
//
// Two SDK behaviours, seen against the test emulator, shape the error path: a hung token
// endpoint makes getToken() never return (the abortSignal is not honoured for this flow, so the
// engine's own timeout race is what ends the wait), and after one 5xx MSAL answers the identical
// request from a local lockout for 60 s without sending anything. So after any failure the
// credential object is replaced: the next attempt, on the engine's backoff schedule, really
// reaches Entra ID.

import { readFile } from "node:fs/promises";
import { ClientAssertionCredential } from "@azure/identity";
import type { FetchedToken, TokenProvider } from "../types.js";

export const AZURE_POSTGRES_SCOPE = "https://ossrdbms-aad.database.windows.net/.default";

export interface AzureWorkloadIdentitySettings {
  readonly tenantId: string;
  readonly clientId: string;
  readonly tokenFile: string;
  /** AZURE_AUTHORITY_HOST, e.g. https://login.microsoftonline.com/ (the SDK's default). */
  readonly authorityHost: string | undefined;
}

export class AzureWorkloadIdentityProvider implements TokenProvider {
  readonly kind = "azure_workload_identity";
  readonly description: Readonly<Record<string, string | number>>;
  private credential: ClientAssertionCredential;

  constructor(private readonly settings: AzureWorkloadIdentitySettings) {
    this.description = { tenant_id: settings.tenantId, client_id: settings.clientId };
    this.credential = this.makeCredential();
  }

  private makeCredential(): ClientAssertionCredential {
    const settings = this.settings;
    const file = settings.tokenFile;
    return new ClientAssertionCredential(
      settings.tenantId,
      settings.clientId,
      async () => (await readFile(file, "utf8")).trim(),
      {
        ...(settings.authorityHost ? { authorityHost: settings.authorityHost } : {}),
        // The authority is given; without this MSAL asks login.microsoftonline.com to validate it.
        disableInstanceDiscovery: true,
        retryOptions: { maxRetries: 0 },
      },
    );
  }

  async fetch(signal: AbortSignal): Promise<FetchedToken> {
    const credential = this.credential;
    signal.addEventListener("abort", () => this.replace(credential), { once: true });
    try {
      const t = await credential.getToken(AZURE_POSTGRES_SCOPE, { abortSignal: signal });
      if (!t) throw new Error("Entra ID returned no token");
      return {
        secret: t.token,
        expiresAt: t.expiresOnTimestamp,
        refreshAt: t.refreshAfterTimestamp,
      };
    } catch (err) {
      this.replace(credential);
      throw err;
    }
  }

  /** MSAL would hand back its cached copy of the rejected token: start from a new client. */
  invalidate(): void {
    this.replace(this.credential);
  }

  private replace(failed: ClientAssertionCredential): void {
    if (this.credential === failed) this.credential = this.makeCredential();
  }
}
