// RESUME [db]: undo PAUSE. Idempotent: PgBouncer refuses to resume what is not paused, but
// an operator script that resumes "just in case" should not fail here.

import { commandComplete } from "../../protocol/index.js";
import type { AdminContext } from "../context.js";
import { requireDatabase } from "./database-arg.js";

export function resume(ctx: AdminContext, database: string | undefined): Buffer[] {
  if (database !== undefined) requireDatabase(ctx, database);
  ctx.resume(database);
  return [commandComplete("RESUME")];
}
