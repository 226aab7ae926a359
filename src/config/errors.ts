import { PgwardenError } from "../util/index.js";

/** One thing wrong with a config file; `message` is the full line, already naming file/table/key. */
export interface ConfigProblem {
  readonly file: string;
  /** e.g. `[general]`, `[[users]][2] (name "alice")`; undefined for file-level problems (syntax, I/O). */
  readonly table: string | undefined;
  readonly key: string | undefined;
  readonly message: string;
}

/**
 * Every problem found while loading, one per line. `file`/`table`/`key` describe the first one,
 * for callers that want a single location. Messages never carry the value of a secret key.
 */
export class ConfigError extends PgwardenError {
  readonly file: string;
  readonly table: string | undefined;
  readonly key: string | undefined;
  readonly problems: readonly ConfigProblem[];
  constructor(problems: readonly ConfigProblem[], cause?: unknown) {
    const first = problems[0];
    if (first === undefined) throw new TypeError("ConfigError needs at least one problem");
    super("CONFIG", problems.map((p) => p.message).join("\n"), {}, cause);
    this.name = "ConfigError";
    this.file = first.file;
    this.table = first.table;
    this.key = first.key;
    this.problems = Object.freeze([...problems]);
  }
}

/** Keys whose values are secrets: a message may name them but never show what they hold. */
export const SECRET_KEYS: ReadonlySet<string> = new Set(["password", "server_password"]);

export type Path = readonly (string | number)[];

const ARRAY_TABLES = new Set(["databases", "users"]);

/**
 * Splits a path into the TOML table it lives in and the key inside it:
 * ["users", 2, "pool_size"] → `[[users]][2] (name "alice")`, "pool_size".
 */
export function locate(root: unknown, path: Path): { table: string; key: string | undefined } {
  const [head, index, ...rest] = path;
  if (typeof head === "string" && ARRAY_TABLES.has(head) && typeof index === "number") {
    const entry = child(child(root, head), index);
    const name = child(entry, "name");
    const label = typeof name === "string" ? ` (name ${quote(name)})` : "";
    return { table: `[[${head}]][${index}]${label}`, key: joinKey(rest) };
  }
  if (typeof head === "string" && path.length > 1) {
    return { table: `[${head}]`, key: joinKey(path.slice(1)) };
  }
  return { table: "(top level)", key: joinKey(path) };
}

export function problemAt(file: string, root: unknown, path: Path, text: string): ConfigProblem {
  const { table, key } = locate(root, path);
  const where = key === undefined ? `${table}:` : `${table} key ${quote(key)}:`;
  return { file, table, key, message: `${file}: ${where} ${text}` };
}

export function unknownKey(
  file: string,
  root: unknown,
  path: Path,
  key: string,
  known: readonly string[],
): ConfigProblem {
  const { table } = locate(root, [...path, key]);
  const hint = closest(key, known);
  const suffix = hint === undefined ? "" : ` (did you mean ${quote(hint)}?)`;
  return { file, table, key, message: `${file}: ${table} unknown key ${quote(key)}${suffix}` };
}

export function missingKey(file: string, root: unknown, path: Path): ConfigProblem {
  const { table, key } = locate(root, path);
  return {
    file,
    table,
    key,
    message: `${file}: ${table} missing required key ${quote(key ?? "")}`,
  };
}

/** Why a file could not be read, for a message ("file not found", "cannot read file (EACCES)"). */
export function unreadable(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  return code === "ENOENT" ? "file not found" : `cannot read file (${code ?? String(err)})`;
}

export function fileProblem(file: string, text: string): ConfigProblem {
  return { file, table: undefined, key: undefined, message: `${file}: ${text}` };
}

export function isSecretKey(key: string | undefined): boolean {
  return key !== undefined && SECRET_KEYS.has(lastSegment(key));
}

/** How a rejected, non-secret value is shown: long strings cut, tables and arrays by kind. */
export function describeValue(value: unknown): string {
  if (typeof value === "string") {
    const hint =
      value.trim() !== "" && Number.isFinite(Number(value))
        ? " (a string: write numbers without quotes)"
        : "";
    return `got ${quote(value.length > 60 ? `${value.slice(0, 60)}…` : value)}${hint}`;
  }
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint")
    return `got ${String(value)}`;
  if (value instanceof Date) return "got a date";
  if (Array.isArray(value)) return "got an array";
  if (value === null || value === undefined) return "got nothing";
  return "got a table";
}

export function quote(s: string): string {
  return JSON.stringify(s);
}

function lastSegment(key: string): string {
  const dot = key.lastIndexOf(".");
  return dot < 0 ? key : key.slice(dot + 1);
}

function joinKey(path: Path): string | undefined {
  return path.length === 0 ? undefined : path.map(String).join(".");
}

function child(v: unknown, k: string | number): unknown {
  if (typeof v !== "object" || v === null) return undefined;
  return Object.hasOwn(v, k) ? (v as Record<string | number, unknown>)[k] : undefined;
}

/** A known key within edit distance 2, so a typo points at what was meant. */
function closest(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const k of known) {
    const d = editDistance(key, k);
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best;
}

// Optimal string alignment distance: a swap of two neighbours ("prot" → "port") counts as one.
function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[] = new Array<number>(rows * cols).fill(0);
  const at = (i: number, j: number): number => d[i * cols + j] ?? 0;
  for (let i = 0; i < rows; i++) d[i * cols] = i;
  for (let j = 0; j < cols; j++) d[j] = j;
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        v = Math.min(v, at(i - 2, j - 2) + 1);
      d[i * cols + j] = v;
    }
  }
  return at(rows - 1, cols - 1);
}
