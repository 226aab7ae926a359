// SET key = value. As PgBouncer does (src/admin.c fake_set), SET of the few session parameters
// that drivers send on connect (client_encoding, datestyle, …) is ignored with a NOTICE "SET
// ignored" and CommandComplete "SET", so those drivers can use the console. PgBouncer's other SET
// changes a pooler setting at run time; pgwarden's settings come only from the config files, so
// that is an error (0A000, feature_not_supported) pointing at RELOAD.

import { commandComplete, noticeResponse } from "../../protocol/index.js";
import { PgError } from "../../util/index.js";

/** PgBouncer's fake_param_list: what SHOW answers for them, and the ones SET ignores. */
export const FAKE_PARAMS: ReadonlyMap<string, string> = new Map([
  ["client_encoding", "UTF-8"],
  ["default_transaction_isolation", "read committed"],
  ["standard_conforming_strings", "on"],
  ["datestyle", "ISO"],
  ["timezone", "GMT"],
]);

export function set(key: string): Buffer[] {
  if (FAKE_PARAMS.has(key.toLowerCase())) {
    return [
      noticeResponse({ severity: "NOTICE", code: "00000", message: "SET ignored" }),
      commandComplete("SET"),
    ];
  }
  throw new PgError("ERROR", "0A000", `SET ${key} is not supported by the admin console`, {
    hint: "pgwarden's settings come from its config files: edit them and run RELOAD.",
  });
}
