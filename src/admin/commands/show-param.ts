// SHOW <session parameter>: the fixed answers PgBouncer gives drivers that check a parameter
// before setting it (src/admin.c fake_show); one column named after the parameter.

import { type Column, resultSet, text } from "./result-set.js";
import { FAKE_PARAMS } from "./set.js";

/** The result set for a faked parameter, or undefined when `name` is not one. */
export function showParam(name: string): Buffer[] | undefined {
  const key = name.toLowerCase();
  const value = FAKE_PARAMS.get(key);
  if (value === undefined) return undefined;
  const columns: readonly Column<string>[] = [text(key, (v) => v)];
  return resultSet(columns, [value]);
}
