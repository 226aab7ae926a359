// RELOAD: re-read the config files and apply them. What changed comes back as a NOTICE (psql
// prints it), then CommandComplete "RELOAD". A failed reload keeps the running configuration and
// answers F0000 (config_file_error), the code PgBouncer uses for "RELOAD failed"; the reason goes
// into the detail, where config errors name file, table and key but never a secret value.

import { sanitize } from "../../credentials/index.js";
import { commandComplete, noticeResponse } from "../../protocol/index.js";
import { errorMessage, PgError } from "../../util/index.js";
import type { AdminContext } from "../context.js";

export async function reload(ctx: AdminContext): Promise<Buffer[]> {
  let summary: string;
  try {
    summary = await ctx.reload();
  } catch (err) {
    if (err instanceof PgError) throw err;
    throw new PgError("ERROR", "F0000", "RELOAD failed; the running configuration is kept", {
      detail: sanitize(errorMessage(err)),
      cause: err,
    });
  }
  const out: Buffer[] = [];
  if (summary !== "")
    out.push(noticeResponse({ severity: "NOTICE", code: "00000", message: summary }));
  out.push(commandComplete("RELOAD"));
  return out;
}
