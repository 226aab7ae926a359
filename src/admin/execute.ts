// The admin console as a pure command executor: the frontend owns the socket and the login, hands
// over each simple-query string and writes back what comes out, then its own ReadyForQuery.
// Statements run in order; as in PostgreSQL, the first error ends the query and the statements
// after it are not run. Every failure becomes an ErrorResponse (severity ERROR): this never
// rejects, so a bad command can never take the frontend's session down.

import { sanitize } from "../credentials/index.js";
import { emptyQueryResponse, errorResponse } from "../protocol/index.js";
import { errorMessage, PgError } from "../util/index.js";
import { pause } from "./commands/pause.js";
import { reconnect } from "./commands/reconnect.js";
import { reload } from "./commands/reload.js";
import { resume } from "./commands/resume.js";
import { set } from "./commands/set.js";
import { showClients } from "./commands/show-clients.js";
import { showConfig } from "./commands/show-config.js";
import { showCredentials } from "./commands/show-credentials.js";
import { showDatabases } from "./commands/show-databases.js";
import { showParam } from "./commands/show-param.js";
import { showPools } from "./commands/show-pools.js";
import { showPrepared, showPreparedStats } from "./commands/show-prepared.js";
import { showServers } from "./commands/show-servers.js";
import { showStats } from "./commands/show-stats.js";
import { showUsers } from "./commands/show-users.js";
import { showVersion } from "./commands/show-version.js";
import { shutdown } from "./commands/shutdown.js";
import type { AdminContext } from "./context.js";
import { parseStatement, splitStatements } from "./parse.js";

type Show = (ctx: AdminContext) => Buffer[];

// Maps, not object literals: `SHOW constructor` must not find Object.prototype's.
const SHOW: ReadonlyMap<string, Show> = new Map([
  ["pools", showPools],
  ["clients", showClients],
  ["servers", showServers],
  ["stats", showStats],
  ["databases", showDatabases],
  ["users", showUsers],
  ["config", showConfig],
  ["version", showVersion],
  ["credentials", showCredentials],
  ["prepared", showPrepared],
  ["prepared_stats", showPreparedStats],
]);

type Command = (ctx: AdminContext, arg: string | undefined) => Buffer[] | Promise<Buffer[]>;

interface CommandSpec {
  readonly run: Command;
  /** Whether the command takes an optional database name. */
  readonly takesDatabase: boolean;
}

const COMMANDS: ReadonlyMap<string, CommandSpec> = new Map([
  ["reload", { run: reload, takesDatabase: false }],
  ["pause", { run: pause, takesDatabase: true }],
  ["resume", { run: resume, takesDatabase: true }],
  ["reconnect", { run: reconnect, takesDatabase: true }],
  ["shutdown", { run: shutdown, takesDatabase: false }],
]);

const VALID_COMMANDS =
  `SHOW ${[...SHOW.keys()].map((k) => k.toUpperCase()).join("|")}, ` +
  "RELOAD, PAUSE [db], RESUME [db], RECONNECT [db], SHUTDOWN";

/** How much of a rejected statement an error message quotes back. */
const QUOTE_MAX = 100;

function syntaxError(stmt: string): PgError {
  const shown = stmt.length > QUOTE_MAX ? `${stmt.slice(0, QUOTE_MAX)}…` : stmt;
  return new PgError(
    "ERROR",
    "42601",
    `invalid command "${shown}"; valid commands: ${VALID_COMMANDS}`,
  );
}

/**
 * Runs the statements of one simple query and returns the messages to send for them, without
 * ReadyForQuery. An empty query gives EmptyQueryResponse, as PostgreSQL does.
 */
export async function executeAdmin(ctx: AdminContext, sql: string): Promise<Buffer[]> {
  const statements = splitStatements(sql);
  if (statements.length === 0) return [emptyQueryResponse];
  const out: Buffer[] = [];
  for (const stmt of statements) {
    try {
      for (const msg of await runStatement(ctx, stmt)) out.push(msg);
    } catch (err) {
      out.push(toErrorResponse(err));
      break;
    }
  }
  return out;
}

async function runStatement(ctx: AdminContext, stmt: string): Promise<Buffer[]> {
  const parsed = parseStatement(stmt);
  if (parsed.kind === "set") return set(parsed.key);
  if (parsed.kind === "invalid") throw syntaxError(stmt);
  const [verb, arg, extra] = parsed.words;
  if (verb === undefined || extra !== undefined) throw syntaxError(stmt);
  // Command words match whatever their case or quoting, as PgBouncer's strcasecmp does.
  const name = verb.text.toLowerCase();
  if (name === "show") {
    if (arg === undefined) throw syntaxError(stmt);
    const subject = arg.text.toLowerCase();
    const show = SHOW.get(subject);
    if (show !== undefined) return show(ctx);
    const param = showParam(subject);
    if (param !== undefined) return param;
    throw syntaxError(stmt);
  }
  const spec = COMMANDS.get(name);
  if (spec === undefined || (arg !== undefined && !spec.takesDatabase)) throw syntaxError(stmt);
  // A database name keeps its case: config names are compared as written.
  return spec.run(ctx, arg?.text);
}

function toErrorResponse(err: unknown): Buffer {
  if (err instanceof PgError) {
    // Always ERROR: the session stays open, so a FATAL from a lower layer would be a lie.
    return errorResponse({
      severity: "ERROR",
      code: err.sqlstate,
      message: err.message,
      detail: err.detail,
      hint: err.hint,
    });
  }
  // Not one of ours: a bug or a failure in the context. Say so without echoing anything that
  // might carry a secret unfiltered.
  return errorResponse({
    severity: "ERROR",
    code: "XX000",
    message: "admin command failed",
    detail: sanitize(errorMessage(err)),
  });
}
