// RECONNECT [db]: close the servers of one database (or all) as soon as clients release them,
// so that the next ones connect afresh (new address, new credentials), as in PgBouncer.

import { commandComplete } from "../../protocol/index.js";
import type { AdminContext } from "../context.js";
import { requireDatabase } from "./database-arg.js";

export function reconnect(ctx: AdminContext, database: string | undefined): Buffer[] {
  if (database !== undefined) requireDatabase(ctx, database);
  ctx.reconnect(database);
  return [commandComplete("RECONNECT")];
}
