// LoginParams: what a pool's servers report to a client at login, remembered so that a client can
// be logged in without a server connection.
//
// Model: a client's welcome (the ParameterStatus messages after AuthenticationOk) is what the
// server reports once the client's startup settings are applied. That depends only on the
// server's own baseline (what a fresh connection reports) and on the client's settings, so the
// first login of each shape of settings takes a server as before, and its welcome is kept under
// a key made of those settings (application_name aside: it is reported as given, so the frontend
// fills it in per client). Later logins of the same shape are welcomed at once, however busy
// the pool is, as PgBouncer does from the server parameters it caches. A server that logs in
// reporting a different baseline than the last one (a restart into a new version, ALTER SYSTEM)
// drops everything remembered. Clients that ask for nothing the baseline does not already say
// need no first login at all. The number of shapes is capped, since clients choose them.

/** Distinct client setting shapes remembered per pool; past this the memory starts over. */
const MAX_SHAPES = 64;

export class LoginParams {
  private baselineKey: string | null = null;
  private readonly byShape = new Map<string, ReadonlyMap<string, string>>();

  /** What the last server to log in reported right after its login, or null before any. */
  baseline: ReadonlyMap<string, string> | null = null;

  /** A server finished logging in; a changed baseline forgets every remembered welcome. */
  noteServer(baseline: ReadonlyMap<string, string>): void {
    const key = shapeKey(baseline, false);
    if (key === this.baselineKey) return;
    this.baselineKey = key;
    this.baseline = baseline;
    this.byShape.clear();
  }

  /**
   * The welcome for a client with these settings (`shape` = shapeKey(wanted)): one seen before
   * for the same shape, or the baseline itself when every setting asked for already has the
   * baseline's value (no settings at all, say). application_name is the caller's to add.
   */
  get(shape: string, wanted: ReadonlyMap<string, string>): ReadonlyMap<string, string> | undefined {
    const seen = this.byShape.get(shape);
    if (seen !== undefined || this.baseline === null) return seen;
    for (const [k, v] of wanted) {
      if (k !== "application_name" && this.baseline.get(k) !== v) return undefined;
    }
    return this.baseline;
  }

  /** Remembers the welcome a server gave for this shape of settings. */
  set(shape: string, reported: ReadonlyMap<string, string>): void {
    if (this.baselineKey === null) return;
    if (this.byShape.size >= MAX_SHAPES && !this.byShape.has(shape)) this.byShape.clear();
    const copy = new Map(reported);
    copy.delete("application_name");
    this.byShape.set(shape, copy);
  }
}

/** A stable key for a set of settings (order-independent), application_name left out if asked. */
export function shapeKey(settings: ReadonlyMap<string, string>, dropAppName = true): string {
  const entries = [...settings].filter(([k]) => !(dropAppName && k === "application_name"));
  entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return JSON.stringify(entries);
}

/**
 * True when PostgreSQL reports this application_name exactly as given: printable ASCII, short.
 * (Other bytes are escaped, differently across versions; such clients take the server path.)
 */
export function reportedAsGiven(applicationName: string): boolean {
  return applicationName.length < 64 && /^[\x20-\x7e]*$/.test(applicationName);
}
