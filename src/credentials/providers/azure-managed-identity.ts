// Microsoft Entra ID tokens for Azure Database for PostgreSQL, by managed identity (VMs, App
// Service, Functions, Container Apps, Arc, …): @azure/identity's ManagedIdentityCredential,
// system-assigned, or user-assigned by client id or by ARM resource id. The scope is the one
// of workload identity (https://ossrdbms-aad.database.windows.net/.default); the expiry comes
// from the token (expiresOnTimestamp), and refreshAfterTimestamp is honoured (the SDK sets it to
// half the lifetime for tokens of 2 h or more).
//
// As for workload identity, the SDK's own retries are turned off (it would retry 5 times over
// tens of seconds before the engine's backoff got a say), and after a failure or a timed-out
// fetch the credential object is replaced, so the next attempt starts afresh. MSAL's
// managed-identity token cache is process-wide and keyed by the identity, so replacing the
// object does not drop a cached token, and getToken() has no way to skip that cache: after the
// server rejected a token that still has more than 5 minutes to live, MSAL would hand the same
// token back. So the fetch after a rejection asks the credential's MSAL application directly
// with forceRefresh (an internal of @azure/identity 4.13.1, which package.json pins; the
// rejection test in test/identity-providers.test.ts fails if an upgrade moves it).
//
// When AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID and AZURE_TENANT_ID are all set (an AKS pod
// with workload identity), the SDK silently uses workload identity instead of the managed
// identity endpoint: use server_auth = "azure_workload_identity" there.

import { ManagedIdentityCredential } from "@azure/identity";
import type { FetchedToken, TokenProvider } from "../types.js";
import { AZURE_POSTGRES_SCOPE } from "./azure-workload-identity.js";

export interface AzureManagedIdentitySettings {
  /** User-assigned identity by client id; neither this nor resourceId = system-assigned. */
  readonly clientId: string | undefined;
  /** User-assigned identity by ARM resource id. */
  readonly resourceId: string | undefined;
}

export class AzureManagedIdentityProvider implements TokenProvider {
  readonly kind = "azure_managed_identity";
  readonly description: Readonly<Record<string, string | number>>;
  private credential: ManagedIdentityCredential;
  /** The server rejected the last token: the next fetch must not come from MSAL's cache. */
  private forceNext = false;

  constructor(private readonly settings: AzureManagedIdentitySettings) {
    this.description = settings.clientId
      ? { assigned: "user", client_id: settings.clientId }
      : settings.resourceId
        ? { assigned: "user", resource_id: settings.resourceId }
        : { assigned: "system" };
    this.credential = this.makeCredential();
  }

  private makeCredential(): ManagedIdentityCredential {
    const { clientId, resourceId } = this.settings;
    const retryOptions = { maxRetries: 0 };
    if (clientId) return new ManagedIdentityCredential({ clientId, retryOptions });
    if (resourceId) return new ManagedIdentityCredential({ resourceId, retryOptions });
    return new ManagedIdentityCredential({ retryOptions });
  }

  async fetch(signal: AbortSignal): Promise<FetchedToken> {
    const credential = this.credential;
    signal.addEventListener("abort", () => this.replace(credential), { once: true });
    try {
      const app = this.forceNext ? msalApp(credential) : undefined;
      if (app) {
        const r = await app.acquireToken({
          resource: AZURE_POSTGRES_SCOPE.replace(/\/\.default$/, ""),
          forceRefresh: true,
        });
        this.forceNext = false;
        return {
          secret: r.accessToken,
          expiresAt: r.expiresOn.getTime(),
          refreshAt: r.refreshOn?.getTime(),
        };
      }
      const t = await credential.getToken(AZURE_POSTGRES_SCOPE, { abortSignal: signal });
      if (!t) throw new Error("the managed identity endpoint returned no token");
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

  invalidate(): void {
    this.forceNext = true;
    this.replace(this.credential);
  }

  private replace(failed: ManagedIdentityCredential): void {
    if (this.credential === failed) this.credential = this.makeCredential();
  }
}

/** The MSAL ManagedIdentityApplication inside a ManagedIdentityCredential (4.13.1), if there. */
interface MsalManagedIdentityApp {
  acquireToken(request: { resource: string; forceRefresh: boolean }): Promise<{
    accessToken: string;
    expiresOn: Date;
    refreshOn?: Date;
  }>;
}

function msalApp(credential: ManagedIdentityCredential): MsalManagedIdentityApp | undefined {
  const app = (credential as unknown as { managedIdentityApp?: MsalManagedIdentityApp })
    .managedIdentityApp;
  return app && typeof app.acquireToken === "function" ? app : undefined;
}
