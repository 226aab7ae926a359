// `${VAR}` references in string values, resolved before validation so that an enum or a host can
// come from the environment. Only strings are touched: TOML numbers stay numbers. `$${` is a
// literal `${`, for a password that really contains one. Anything else starting with `${` that is
// not a well-formed reference is an error rather than left as is: `${PORT:-5432}` silently kept
// would be a confusing value to find in a host name.

import { type ConfigProblem, type Path, problemAt } from "./errors.js";

const REFERENCE = /\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{/g;

export type Env = Readonly<Record<string, string | undefined>>;

/** Substitutes one string; returns the result or the reason it cannot be substituted. */
export function substitute(value: string, env: Env): { value: string } | { error: string } {
  let error: string | undefined;
  const out = value.replace(REFERENCE, (match, name: string | undefined) => {
    if (match === "$${") return "${";
    if (name === undefined) {
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the message is about "${" itself
      error ??= 'malformed "${" reference (expected ${NAME}; write "$${" for a literal "${")';
      return match;
    }
    const v = Object.hasOwn(env, name) ? env[name] : undefined;
    if (v === undefined) {
      error ??= `undefined environment variable ${JSON.stringify(name)}`;
      return match;
    }
    return v;
  });
  return error === undefined ? { value: out } : { error };
}

/**
 * Replaces references in every string of a freshly parsed TOML tree, in place. Returns the
 * problems and the paths they were found at, so validation can skip those values.
 */
export function substituteTree(
  file: string,
  root: Record<string, unknown>,
  env: Env,
): { problems: ConfigProblem[]; failed: Set<string> } {
  const problems: ConfigProblem[] = [];
  const failed = new Set<string>();
  const walk = (node: unknown, path: (string | number)[]): void => {
    if (Array.isArray(node)) {
      for (let i = 0; i < node.length; i++)
        visit(node as unknown[] as Record<number, unknown>, i, [...path, i]);
    } else if (typeof node === "object" && node !== null && !(node instanceof Date)) {
      for (const k of Object.keys(node)) visit(node as Record<string, unknown>, k, [...path, k]);
    }
  };
  const visit = (
    parent: Record<string | number, unknown>,
    k: string | number,
    path: (string | number)[],
  ): void => {
    const v = parent[k];
    if (typeof v !== "string") {
      walk(v, path);
      return;
    }
    if (!v.includes("${")) return;
    const r = substitute(v, env);
    if ("value" in r) {
      parent[k] = r.value;
    } else {
      problems.push(problemAt(file, root, path, r.error));
      failed.add(pathKey(path));
    }
  };
  walk(root, []);
  return { problems, failed };
}

export function pathKey(path: Path): string {
  return JSON.stringify(path);
}
