// Secrets printed by a command (server_auth = "command"): a helper the operator provides (a
// vault CLI, a cloud CLI, a script) is run as an argv, without a shell, each time the engine
// needs a new secret. Its stdout is either the secret itself (one line; its lifetime is
// server_auth_command_ttl) or JSON: {"password": "...", "expires_at": "<RFC 3339>"}, also with
// the spellings of common credential plugins ("token"/"access_token", "expiration"/"expiry"/
// "expirationTimestamp"/"expires_on", "expires_in" seconds, and a Kubernetes ExecCredential's
// "status" object). The command gets PGWARDEN_SERVER_HOST/PORT/USER/DATABASE in its environment.
//
// The command is killed when the fetch ends (token_fetch_timeout or the engine giving up). A
// non-zero exit, a signal, empty output or more than MAX_OUTPUT bytes is an error naming the
// user and the program, with the start of stderr, sanitized; stdout is never part of an error
// or a log line, because it may hold the secret.

import { spawn } from "node:child_process";
import { sanitize } from "../entry.js";
import type { FetchedToken, TokenProvider } from "../types.js";

/** Larger than any token PostgreSQL accepts as a password (~64 KB). */
export const MAX_OUTPUT = 64 * 1024;
/** How much of stderr an error shows. */
const STDERR_SHOWN = 300;
/** How much of stderr is kept while the command runs. */
const STDERR_KEPT = 4096;

export interface CommandSettings {
  readonly argv: readonly string[];
  /** Lifetime of a bare secret (ms); undefined = the command must print JSON with an expiry. */
  readonly ttlMs: number | undefined;
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly database: string;
  /** The environment the command inherits (PGWARDEN_SERVER_* are added). */
  readonly env: Readonly<Record<string, string | undefined>>;
}

/**
 * Process groups of commands still running. Each runs in its own group (so that a kill reaches
 * what it started), which also keeps it alive if pgwarden exits: kill them on the way out.
 */
const running = new Set<number>();
let exitHook = false;

function killGroup(pid: number): void {
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // already gone
  }
}

function track(pid: number | undefined): void {
  if (pid === undefined) return;
  running.add(pid);
  if (!exitHook) {
    exitHook = true;
    process.once("exit", () => {
      for (const p of running) killGroup(p);
    });
  }
}

interface RunResult {
  readonly stdout: Buffer;
  readonly stderr: string;
}

export class CommandProvider implements TokenProvider {
  readonly kind = "command";
  readonly description: Readonly<Record<string, string | number>>;

  constructor(private readonly settings: CommandSettings) {
    this.description = {
      host: settings.host,
      port: settings.port,
      user: settings.user,
      command: settings.argv[0] ?? "",
    };
  }

  async fetch(signal: AbortSignal): Promise<FetchedToken> {
    const { stdout } = await this.run(signal);
    return parseCommandOutput(stdout.toString("utf8"), this.settings.ttlMs, Date.now());
  }

  private run(signal: AbortSignal): Promise<RunResult> {
    const s = this.settings;
    const [program, ...args] = s.argv;
    const label = `command ${JSON.stringify(program ?? "")} for user "${s.user}"`;
    return new Promise<RunResult>((resolve, reject) => {
      if (program === undefined) {
        reject(new Error("server_auth_command is empty"));
        return;
      }
      if (signal.aborted) {
        reject(new Error(`${label}: not started, the fetch was already over`));
        return;
      }
      const child = spawn(program, args, {
        shell: false,
        // Its own process group, so that a kill also reaches what a wrapper script started
        // (which would otherwise keep stdout open after the script itself is gone).
        detached: true,
        stdio: ["ignore", "pipe", "pipe"],
        env: {
          ...s.env,
          PGWARDEN_SERVER_HOST: s.host,
          PGWARDEN_SERVER_PORT: String(s.port),
          PGWARDEN_SERVER_USER: s.user,
          PGWARDEN_SERVER_DATABASE: s.database,
        },
      });
      track(child.pid);
      const out: Buffer[] = [];
      let outBytes = 0;
      let err = "";
      let failure: string | null = null;
      const kill = (why: string) => {
        failure ??= why;
        try {
          if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
        } catch {
          child.kill("SIGKILL");
        }
      };
      const onAbort = () => kill("was stopped: the fetch timed out (token_fetch_timeout)");
      signal.addEventListener("abort", onAbort, { once: true });
      child.stdout.on("data", (b: Buffer) => {
        outBytes += b.length;
        if (outBytes > MAX_OUTPUT) kill(`printed more than ${MAX_OUTPUT} bytes on stdout`);
        else out.push(b);
      });
      child.stderr.setEncoding("utf8");
      child.stderr.on("data", (t: string) => {
        if (err.length < STDERR_KEPT) err = (err + t).slice(0, STDERR_KEPT);
      });
      child.on("error", (e: NodeJS.ErrnoException) => {
        failure ??= `could not be started (${e.code ?? e.message})`;
      });
      child.on("close", (code, sig) => {
        if (child.pid !== undefined) running.delete(child.pid);
        signal.removeEventListener("abort", onAbort);
        const stderr = shortStderr(err);
        const tail = stderr ? `; stderr: ${stderr}` : "";
        if (failure !== null) reject(new Error(`${label} ${failure}${tail}`));
        else if (sig !== null) reject(new Error(`${label} was killed by ${sig}${tail}`));
        else if (code !== 0) reject(new Error(`${label} exited with status ${code}${tail}`));
        else if (Buffer.concat(out).toString("utf8").trim() === "")
          reject(new Error(`${label} printed nothing on stdout${tail}`));
        else resolve({ stdout: Buffer.concat(out), stderr: err });
      });
    });
  }
}

/** stderr as an error may show it: sanitized, one line, cut short. */
function shortStderr(text: string): string {
  const oneLine = text
    .replace(/[\u0000-\u001f\u007f]+/g, " ")
    .replace(/\s+/g, " ")
    .trim();
  const clean = sanitize(oneLine);
  return clean.length > STDERR_SHOWN ? `${clean.slice(0, STDERR_SHOWN)}…` : clean;
}

const SECRET_KEYS = ["password", "token", "access_token", "accessToken"] as const;
const EXPIRY_KEYS = [
  "expires_at",
  "expiresAt",
  "expiration",
  "Expiration",
  "expirationTimestamp",
  "expiry",
  "expires_on",
  "expiresOn",
] as const;

/**
 * The secret and its expiry from what the command printed. Errors never quote the output.
 * `now` is the wall clock (ms) when the command finished.
 */
export function parseCommandOutput(
  text: string,
  ttlMs: number | undefined,
  now: number,
): FetchedToken {
  const trimmed = text.trim();
  if (trimmed.startsWith("{")) return parseJson(trimmed, ttlMs, now);
  if (/[\r\n]/.test(trimmed)) {
    throw new Error(
      "the command printed several lines; print the secret alone on one line, or JSON",
    );
  }
  if (ttlMs === undefined) {
    throw new Error(
      'the command printed a bare secret, whose lifetime pgwarden cannot know: set "server_auth_command_ttl", or print JSON with "expires_at"',
    );
  }
  return { secret: trimmed, expiresAt: now + ttlMs };
}

function parseJson(text: string, ttlMs: number | undefined, now: number): FetchedToken {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new Error("the command's output starts with '{' but is not valid JSON");
  }
  let obj = doc as Record<string, unknown>;
  // Kubernetes ExecCredential: {"kind": "ExecCredential", "status": {"token", "expirationTimestamp"}}
  if (typeof obj.status === "object" && obj.status !== null && !hasAny(obj, SECRET_KEYS)) {
    obj = obj.status as Record<string, unknown>;
  }
  const secretKey = SECRET_KEYS.find((k) => typeof obj[k] === "string" && obj[k] !== "");
  if (secretKey === undefined) {
    throw new Error(
      `the command's JSON has no non-empty string field ${SECRET_KEYS.map((k) => `"${k}"`).join(" / ")}`,
    );
  }
  const secret = obj[secretKey] as string;
  const expiryKey = EXPIRY_KEYS.find((k) => obj[k] !== undefined && obj[k] !== null);
  let expiresAt: number;
  if (expiryKey !== undefined) {
    expiresAt = parseTime(obj[expiryKey], expiryKey);
  } else if (obj.expires_in !== undefined) {
    const sec = Number(obj.expires_in);
    if (!Number.isFinite(sec) || sec <= 0)
      throw new Error('the command\'s JSON has an "expires_in" that is not a positive number');
    expiresAt = now + sec * 1000;
  } else if (ttlMs !== undefined) {
    expiresAt = now + ttlMs;
  } else {
    throw new Error(
      'the command\'s JSON has no "expires_at" (RFC 3339) and "server_auth_command_ttl" is not set',
    );
  }
  if (expiresAt <= now) {
    throw new Error(`the command printed a secret that has already expired (${expiryKey})`);
  }
  return { secret, expiresAt };
}

function hasAny(obj: Record<string, unknown>, keys: readonly string[]): boolean {
  return keys.some((k) => obj[k] !== undefined);
}

/** RFC 3339 text, or epoch seconds (Azure CLI's expires_on); anything else is an error. */
function parseTime(v: unknown, key: string): number {
  if (typeof v === "number" && Number.isFinite(v)) return v < 1e11 ? v * 1000 : v;
  if (typeof v === "string") {
    if (/^\d+$/.test(v)) return parseTime(Number(v), key);
    if (/^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})$/.test(v)) {
      const t = Date.parse(v);
      if (Number.isFinite(t)) return t;
    }
  }
  throw new Error(`the command's JSON "${key}" is not an RFC 3339 time`);
}
