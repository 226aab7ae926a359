// One error family for all of pgwarden. `PgwardenError` carries a stable `code` and context
// fields that are safe to log (pool, host, user: never a secret); `cause` is kept.
// `PgError` is the only kind ever written to a client: it maps 1:1 onto an ErrorResponse.

export interface ErrorContext {
  readonly pool?: string;
  readonly host?: string;
  readonly port?: number;
  readonly user?: string;
  readonly database?: string;
  readonly provider?: string;
}

export class PgwardenError extends Error {
  readonly code: string;
  readonly context: ErrorContext;
  constructor(code: string, message: string, context: ErrorContext = {}, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "PgwardenError";
    this.code = code;
    this.context = context;
  }
}

export type Severity = "ERROR" | "FATAL" | "PANIC" | "WARNING" | "NOTICE";

/** An error as PostgreSQL words it: severity, SQLSTATE, message (+ optional detail/hint). */
export class PgError extends PgwardenError {
  readonly severity: Severity;
  readonly sqlstate: string;
  readonly detail: string | undefined;
  readonly hint: string | undefined;
  constructor(
    severity: Severity,
    sqlstate: string,
    message: string,
    opts: { detail?: string; hint?: string; context?: ErrorContext; cause?: unknown } = {},
  ) {
    super("PG", message, opts.context ?? {}, opts.cause);
    this.name = "PgError";
    this.severity = severity;
    this.sqlstate = sqlstate;
    this.detail = opts.detail;
    this.hint = opts.hint;
  }
}

/** True for the SQLSTATEs a server uses to refuse a login credential (password or token). */
export function isAuthFailure(err: unknown): boolean {
  return err instanceof PgError && (err.sqlstate === "28P01" || err.sqlstate === "28000");
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
