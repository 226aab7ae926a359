// SHOW CONFIG: key, value, default, changeable (PgBouncer's columns, src/admin.c
// admin_show_config). Every [general] key, then the [admin] keys as `admin.<key>`. Values print
// as the config holds them (times in ms); an unset optional key prints as an empty string, as
// PgBouncer prints an unset parameter. Keys are read from the config object itself so a new key
// shows up without touching this file, which is why secrets are filtered by name rather than
// listed: the admin password (or any future *password*/*secret* key) never appears.

import { ADMIN_DEFAULTS, GENERAL_DEFAULTS, RESTART_KEYS } from "../../config/index.js";
import type { AdminContext } from "../context.js";
import { type Column, resultSet, text } from "./result-set.js";

interface ConfigRow {
  readonly key: string;
  readonly value: string;
  readonly default: string;
  readonly changeable: boolean;
}

const SECRET_KEY = /password|secret/i;

const columns: readonly Column<ConfigRow>[] = [
  text("key", (r) => r.key),
  text("value", (r) => r.value),
  text("default", (r) => r.default),
  text("changeable", (r) => (r.changeable ? "yes" : "no")),
];

function show(v: unknown): string {
  return v === undefined || v === null ? "" : String(v);
}

function rowsOf(
  prefix: string,
  table: object,
  defaults: Readonly<Record<string, unknown>>,
  restartKeys: ReadonlySet<string>,
): ConfigRow[] {
  return Object.keys(table)
    .filter((k) => !SECRET_KEY.test(k))
    .sort()
    .map((k) => ({
      key: prefix + k,
      value: show((table as Record<string, unknown>)[k]),
      default: show(defaults[k]),
      changeable: !restartKeys.has(k),
    }));
}

export function showConfig(ctx: AdminContext): Buffer[] {
  const config = ctx.config();
  return resultSet(columns, [
    ...rowsOf("", config.general, GENERAL_DEFAULTS, RESTART_KEYS),
    ...rowsOf("admin.", config.admin, ADMIN_DEFAULTS, new Set()),
  ]);
}
