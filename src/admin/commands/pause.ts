// PAUSE [db]: stop handing servers to clients (of one database, or all) and answer once no
// server is in use any more, as PgBouncer's PAUSE does; clients queue meanwhile. Idempotent:
// unlike PgBouncer we do not refuse a second PAUSE, since the pools' own state already says
// whether they are paused.

import { commandComplete } from "../../protocol/index.js";
import type { AdminContext } from "../context.js";
import { requireDatabase } from "./database-arg.js";

export async function pause(ctx: AdminContext, database: string | undefined): Promise<Buffer[]> {
  if (database !== undefined) requireDatabase(ctx, database);
  await ctx.pause(database);
  return [commandComplete("PAUSE")];
}
