// Session settings that follow a client from server to server in transaction pooling.
//
// A client's startup parameters (application_name, DateStyle, TimeZone, search_path, `-c` options)
// and the reported settings it later changes with SET are its "wanted" settings. Each server
// remembers which values pgwarden applied on it (`applied`) and what it reported (`reported`). At
// checkout the difference is turned into one simple query: set_config() for what differs (it
// parses values exactly as a startup packet does, lists included), RESET for what a previous
// client applied and this one did not ask for. `baseline` is what the server reported right after
// its own login: RESET and DISCARD ALL return a setting to that value.

/** Startup keys that are not settings. */
const NOT_SETTINGS = new Set(["user", "database", "replication", "options"]);

/** Reported settings a client may change with SET that must follow it to its next server. */
export const TRACKED_REPORTED = new Set([
  "application_name",
  "client_encoding",
  "DateStyle",
  "IntervalStyle",
  "TimeZone",
  "standard_conforming_strings",
  "search_path",
]);

/** The settings a client asks for in its StartupMessage, `options` (-c k=v / --k=v) unpacked. */
export function wantedSettings(startup: ReadonlyMap<string, string>): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of startup) {
    if (NOT_SETTINGS.has(k) || k.startsWith("_pq_.")) continue;
    out.set(k, v);
  }
  const options = startup.get("options");
  if (options) for (const [k, v] of parseOptions(options)) out.set(k, v);
  return out;
}

/** Parses libpq's `options` string: whitespace-separated, backslash escapes, `-c k=v` or `--k=v`. */
export function parseOptions(options: string): Array<[string, string]> {
  const words: string[] = [];
  let cur = "";
  let inWord = false;
  for (let i = 0; i < options.length; i++) {
    const ch = options[i]!;
    if (ch === "\\" && i + 1 < options.length) {
      cur += options[++i];
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) words.push(cur);
      cur = "";
      inWord = false;
    } else {
      cur += ch;
      inWord = true;
    }
  }
  if (inWord) words.push(cur);
  const out: Array<[string, string]> = [];
  for (let i = 0; i < words.length; i++) {
    let w = words[i]!;
    if (w === "-c") w = `--${words[++i] ?? ""}`;
    else if (w.startsWith("-c")) w = `--${w.slice(2)}`;
    if (!w.startsWith("--")) throw new Error(`unsupported option "${words[i]}" in startup options`);
    const eq = w.indexOf("=");
    if (eq < 0) throw new Error(`option "${w}" has no value`);
    out.push([w.slice(2, eq).replace(/-/g, "_"), w.slice(eq + 1)]);
  }
  return out;
}

/** An E'' literal: safe whatever standard_conforming_strings is. */
export function literal(v: string): string {
  return `E'${v.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
}

export function identifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export interface SettingsState {
  readonly applied: Map<string, string>;
  readonly baseline: ReadonlyMap<string, string>;
  /** The stamp of the settings last synced onto this server; 0 = unknown (compare the maps). */
  settingsStamp: number;
}

// Stamps: a number per distinct set of wanted settings, so that the check at checkout is one
// comparison when nothing changed. Equal stamps always mean equal settings (a stamp is never
// given to two different sets); equal settings usually share a stamp, through a bounded table
// (cleared when full: later stamps are new numbers, never old ones reused).
const STAMP_TABLE_MAX = 4096;
const stamps = new Map<string, number>();
let nextStamp = 1;

/** The stamp of these wanted settings. */
export function settingsStamp(wanted: ReadonlyMap<string, string>): number {
  let key = "";
  for (const [k, v] of wanted) key += `${k}\0${v}\0`;
  let stamp = stamps.get(key);
  if (stamp === undefined) {
    if (stamps.size >= STAMP_TABLE_MAX) stamps.clear();
    stamp = nextStamp++;
    stamps.set(key, stamp);
  }
  return stamp;
}

/**
 * The query that makes `server` match `wanted`, or null when it already does. On success the
 * caller records the result with `markSynced`.
 */
export function syncQuery(
  server: SettingsState,
  wanted: ReadonlyMap<string, string>,
): string | null {
  let sets = "";
  let resets = "";
  for (const [k, v] of wanted) {
    const current = server.applied.get(k) ?? server.baseline.get(k);
    if (current !== v)
      sets += `${sets ? ", " : "SELECT "}set_config(${literal(k)}, ${literal(v)}, false)`;
  }
  for (const k of server.applied.keys()) {
    if (!wanted.has(k)) resets += `RESET ${identifier(k)};`;
  }
  if (!sets && !resets) return null;
  return (sets ? `${sets};` : "") + resets;
}

export function markSynced(server: SettingsState, wanted: ReadonlyMap<string, string>): void {
  server.applied.clear();
  for (const [k, v] of wanted) if (server.baseline.get(k) !== v) server.applied.set(k, v);
}
