// Splitting and parsing of admin console queries. The grammar is PgBouncer's (src/admin.c:
// `CMD [ARG] [;]` and `SET key (=|TO) value`), where a word is an identifier or a double-quoted
// name, with two extensions: several statements in one query (what `psql -c "show pools; show
// clients"` sends, which PgBouncer refuses) and SQL comments. Unquoted words may also hold `-`,
// `.` and `$`, so `PAUSE my-db` works without quotes; they keep their case, as in PgBouncer,
// because database names in the config are compared as written.

/** A word of a statement: `quoted` tells a double-quoted name from a bare identifier. */
export interface Word {
  readonly text: string;
  readonly quoted: boolean;
}

export type Statement =
  | { readonly kind: "command"; readonly words: readonly Word[] }
  | { readonly kind: "set"; readonly key: string; readonly value: string }
  | { readonly kind: "invalid" };

/**
 * Cuts a simple query into statements at `;` outside quotes and comments, drops the comments and
 * the statements that are left empty. No statement at all means an empty query.
 */
export function splitStatements(sql: string): string[] {
  const out: string[] = [];
  let cur = "";
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const c = sql[i]!;
    const next = sql[i + 1];
    if (c === "'" || c === '"') {
      // Copy the quoted part whole; a doubled quote inside is an escaped one and is copied too.
      let j = i + 1;
      while (j < n && sql[j] !== c) j++;
      cur += sql.slice(i, Math.min(j + 1, n));
      i = j + 1;
    } else if (c === "-" && next === "-") {
      while (i < n && sql[i] !== "\n") i++;
      cur += " ";
    } else if (c === "/" && next === "*") {
      // PostgreSQL's block comments nest.
      let depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (sql[i] === "/" && sql[i + 1] === "*") {
          depth++;
          i += 2;
        } else if (sql[i] === "*" && sql[i + 1] === "/") {
          depth--;
          i += 2;
        } else i++;
      }
      cur += " ";
    } else if (c === ";") {
      push(out, cur);
      cur = "";
      i++;
    } else {
      cur += c;
      i++;
    }
  }
  push(out, cur);
  return out;
}

function push(out: string[], stmt: string): void {
  const t = stmt.trim();
  if (t !== "") out.push(t);
}

type Token =
  | { readonly t: "word"; readonly text: string; readonly quoted: boolean }
  | { readonly t: "string"; readonly text: string }
  | { readonly t: "eq" };

const BARE = /[A-Za-z0-9_$.-]/;
const SPACE = /\s/;

function tokenize(stmt: string): Token[] | null {
  const tokens: Token[] = [];
  let i = 0;
  const n = stmt.length;
  while (i < n) {
    const c = stmt[i]!;
    if (SPACE.test(c)) {
      i++;
    } else if (c === "=") {
      tokens.push({ t: "eq" });
      i++;
    } else if (c === '"' || c === "'") {
      let text = "";
      let j = i + 1;
      for (;;) {
        if (j >= n) return null; // unterminated
        if (stmt[j] === c) {
          if (stmt[j + 1] === c) {
            text += c;
            j += 2;
            continue;
          }
          break;
        }
        text += stmt[j];
        j++;
      }
      tokens.push(c === '"' ? { t: "word", text, quoted: true } : { t: "string", text });
      i = j + 1;
    } else if (BARE.test(c)) {
      let j = i;
      while (j < n && BARE.test(stmt[j]!)) j++;
      tokens.push({ t: "word", text: stmt.slice(i, j), quoted: false });
      i = j;
    } else {
      return null;
    }
  }
  return tokens;
}

/** Parses one statement (as returned by splitStatements). */
export function parseStatement(stmt: string): Statement {
  const tokens = tokenize(stmt);
  if (tokens === null || tokens.length === 0) return { kind: "invalid" };
  const [first, second, third, fourth] = tokens;
  if (first?.t === "word" && !first.quoted && first.text.toLowerCase() === "set") {
    // SET key = value | SET key TO value; the value a word or a 'string'.
    const isTo = third?.t === "word" && !third.quoted && third.text.toLowerCase() === "to";
    if (
      tokens.length === 4 &&
      second?.t === "word" &&
      (third?.t === "eq" || isTo) &&
      (fourth?.t === "word" || fourth?.t === "string")
    ) {
      return { kind: "set", key: second.text, value: fourth.text };
    }
    return { kind: "invalid" };
  }
  const words: Word[] = [];
  for (const tok of tokens) {
    if (tok.t !== "word") return { kind: "invalid" };
    words.push({ text: tok.text, quoted: tok.quoted });
  }
  return { kind: "command", words };
}
