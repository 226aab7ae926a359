// SHOW VERSION: one column `version`, like PgBouncer's "PgBouncer 1.x.y".

import type { AdminContext } from "../context.js";
import { type Column, resultSet, text } from "./result-set.js";

const columns: readonly Column<string>[] = [text("version", (v) => v)];

export function showVersion(ctx: AdminContext): Buffer[] {
  const v = /^pgwarden\b/i.test(ctx.version) ? ctx.version : `pgwarden ${ctx.version}`;
  return resultSet(columns, [v]);
}
