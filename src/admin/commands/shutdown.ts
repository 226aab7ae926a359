// SHUTDOWN: start the same graceful shutdown as SIGTERM (stop accepting, let clients finish up
// to shutdown_timeout). ctx.shutdown() only starts it, so the CommandComplete still reaches this
// client; PgBouncer's immediate SHUTDOWN sends nothing, which leaves psql guessing. PgBouncer's
// WAIT_FOR_CLIENTS / WAIT_FOR_SERVERS modes are not offered: our shutdown already waits.

import { commandComplete } from "../../protocol/index.js";
import type { AdminContext } from "../context.js";

export function shutdown(ctx: AdminContext): Buffer[] {
  ctx.shutdown();
  return [commandComplete("SHUTDOWN")];
}
