import { PgError } from "../../util/index.js";
import type { AdminContext } from "../context.js";

/**
 * Checks the database argument of PAUSE/RESUME/RECONNECT. Known databases are those in the
 * config plus those that still have pools (a reload may leave a removed database's pools draining).
 * An unknown name is 3D000 (invalid_catalog_name), PostgreSQL's code for a missing database;
 * PgBouncer words it "no such database: %s".
 */
export function requireDatabase(ctx: AdminContext, name: string): void {
  if (ctx.config().databases.some((d) => d.name === name)) return;
  if (ctx.pools().some((p) => p.database === name)) return;
  throw new PgError("ERROR", "3D000", `no such database: ${name}`);
}
