// What a reload has to do, worked out from two validated configs and nothing else. A pool is
// identified by (user name, database name). Its pool must be rebuilt ("changed") when anything it
// connects or authenticates with differs: its own resolved settings or its database's address.
// Only a different pool_size/min_pool_size ("resized") can be applied to the running pool.
// General keys are reported by name; which of them matter to which layer is the reader's call.

import type { AdminConfig, Config, DatabaseConfig, GeneralConfig, UserConfig } from "./types.js";

export interface UserKey {
  readonly name: string;
  readonly database: string;
}

export interface ConfigDiff {
  /** Names of [general] keys whose values differ. */
  readonly general: readonly (keyof GeneralConfig)[];
  readonly databases: {
    readonly added: readonly string[];
    readonly removed: readonly string[];
    /** host, port or database_name differs. */
    readonly changed: readonly string[];
  };
  readonly users: {
    readonly added: readonly UserKey[];
    readonly removed: readonly UserKey[];
    /** Needs a new pool. */
    readonly changed: readonly UserKey[];
    /** Only pool_size and/or min_pool_size differ. */
    readonly resized: readonly UserKey[];
  };
  /** Names of [admin] keys whose values differ. */
  readonly admin: readonly (keyof AdminConfig)[];
}

const SIZE_KEYS: ReadonlySet<string> = new Set(["pool_size", "min_pool_size"]);

export function diffConfig(old: Config, next: Config): ConfigDiff {
  const oldDbs = byName(old.databases);
  const nextDbs = byName(next.databases);
  const movedDbs = new Set<string>();
  for (const [name, d] of nextDbs) {
    const o = oldDbs.get(name);
    if (o !== undefined && changedKeys(o, d).length > 0) movedDbs.add(name);
  }

  const oldUsers = byUserKey(old.users);
  const nextUsers = byUserKey(next.users);
  const users = {
    added: [] as UserKey[],
    removed: [] as UserKey[],
    changed: [] as UserKey[],
    resized: [] as UserKey[],
  };
  for (const [id, u] of nextUsers) {
    const o = oldUsers.get(id);
    const key = { name: u.name, database: u.database };
    if (o === undefined) {
      users.added.push(key);
      continue;
    }
    const keys = changedKeys(o, u);
    if (movedDbs.has(u.database) || keys.some((k) => !SIZE_KEYS.has(k))) users.changed.push(key);
    else if (keys.length > 0) users.resized.push(key);
  }
  for (const [id, u] of oldUsers) {
    if (!nextUsers.has(id)) users.removed.push({ name: u.name, database: u.database });
  }

  return {
    general: changedKeys(old.general, next.general),
    databases: {
      added: [...nextDbs.keys()].filter((n) => !oldDbs.has(n)),
      removed: [...oldDbs.keys()].filter((n) => !nextDbs.has(n)),
      changed: [...movedDbs],
    },
    users,
    admin: changedKeys(old.admin, next.admin),
  };
}

/** True when nothing at all differs (reload is a no-op). */
export function isEmptyDiff(d: ConfigDiff): boolean {
  return (
    d.general.length === 0 &&
    d.admin.length === 0 &&
    d.databases.added.length + d.databases.removed.length + d.databases.changed.length === 0 &&
    d.users.added.length +
      d.users.removed.length +
      d.users.changed.length +
      d.users.resized.length ===
      0
  );
}

// Config leaves are primitives (or undefined), except server_auth_command, an array of strings:
// compared by value so that a reload of an unchanged file does not rebuild that pool.
function changedKeys<T extends GeneralConfig | AdminConfig | DatabaseConfig | UserConfig>(
  a: T,
  b: T,
): (keyof T)[] {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)] as (keyof T)[]);
  return [...keys].filter(
    (k) =>
      a[k] !== b[k] &&
      !(
        Array.isArray(a[k]) &&
        Array.isArray(b[k]) &&
        JSON.stringify(a[k]) === JSON.stringify(b[k])
      ),
  );
}

function byName(dbs: readonly DatabaseConfig[]): Map<string, DatabaseConfig> {
  return new Map(dbs.map((d) => [d.name, d]));
}

function byUserKey(users: readonly UserConfig[]): Map<string, UserConfig> {
  return new Map(users.map((u) => [JSON.stringify([u.name, u.database]), u]));
}
