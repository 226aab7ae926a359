// docs/configuration.md checked against the config schema, so the reference cannot drift from
// what the loader accepts. The tables and keys are read from the zod schemas of the two files
// (configFileSchema, usersFileSchema), not from a list kept here: a key or table added to the
// schema fails this test until it is documented. The doc's contract: each table has a level-2
// heading that starts with its TOML name ("## [general]", "## [[users]]"), and each key a row
// "| `key` | type | default | reload | meaning |" in that section.

import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { ADMIN_DEFAULTS, DATABASE_DEFAULTS, GENERAL_DEFAULTS, USER_DEFAULTS } from "./defaults.js";
import { configFileSchema, usersFileSchema } from "./schema.js";

const DOC_PATH = new URL("../../docs/configuration.md", import.meta.url);

// ---- what the schema accepts ----------------------------------------------------------------

interface SchemaTable {
  /** The TOML name as a heading shows it: "[general]" or "[[databases]]". */
  readonly heading: string;
  readonly files: string[];
  /** Key → the schema of its value (optional wrappers removed). */
  readonly keys: Map<string, z.ZodTypeAny>;
}

function unwrap(s: z.ZodTypeAny): z.ZodTypeAny {
  for (;;) {
    if (s instanceof z.ZodOptional || s instanceof z.ZodNullable) s = s.unwrap() as z.ZodTypeAny;
    else if (s instanceof z.ZodDefault) s = s._def.innerType as z.ZodTypeAny;
    else return s;
  }
}

function objectShape(s: z.ZodTypeAny, what: string): Record<string, z.ZodTypeAny> {
  const u = unwrap(s);
  if (!(u instanceof z.ZodObject)) throw new Error(`${what} is not a zod object schema`);
  return u.shape as Record<string, z.ZodTypeAny>;
}

/** Every table of both files, keyed by heading; a table in both files ([admin]) is one entry. */
function schemaTables(): Map<string, SchemaTable> {
  const tables = new Map<string, SchemaTable>();
  const files: [string, z.ZodTypeAny][] = [
    ["pgwarden.toml", configFileSchema],
    ["users.toml", usersFileSchema],
  ];
  for (const [file, fileSchema] of files) {
    for (const [name, value] of Object.entries(objectShape(fileSchema, file))) {
      const v = unwrap(value);
      const isArray = v instanceof z.ZodArray;
      const heading = isArray ? `[[${name}]]` : `[${name}]`;
      const element = isArray ? (v.element as z.ZodTypeAny) : v;
      const keys = new Map(
        Object.entries(objectShape(element, `${file} ${heading}`)).map(([k, s]) => [k, unwrap(s)]),
      );
      const seen = tables.get(heading);
      if (seen === undefined) {
        tables.set(heading, { heading, files: [file], keys });
        continue;
      }
      // One section documents both; that only works while both files accept the same keys.
      const a = [...keys.keys()].sort().join(", ");
      const b = [...seen.keys.keys()].sort().join(", ");
      if (a !== b)
        throw new Error(
          `${heading} has different keys in ${file} (${a}) and ${seen.files[0]} (${b})`,
        );
      seen.files.push(file);
    }
  }
  return tables;
}

// ---- what the doc says ----------------------------------------------------------------------

interface DocRow {
  readonly key: string;
  readonly cells: string[];
  readonly line: number;
}

interface DocSection {
  readonly heading: string;
  readonly line: number;
  readonly rows: DocRow[];
}

const TABLE_HEADING = /^##\s+(\[\[?[A-Za-z0-9_]+\]\]?)(?=\s|$)/;
const KEY_ROW = /^\|\s*`([^`]+)`\s*\|/;

/** Splits a Markdown table row into its cells; `\|` inside a cell is not a separator. */
function cellsOf(row: string): string[] {
  return row
    .trim()
    .replace(/^\|/, "")
    .replace(/\|$/, "")
    .split(/(?<!\\)\|/)
    .map((c) => c.trim());
}

/** The sections whose level-2 heading names a table; a section ends at the next # or ## heading. */
function docSections(text: string): DocSection[] {
  const sections: DocSection[] = [];
  let current: DocSection | null = null;
  let inFence = false;
  text.split("\n").forEach((line, i) => {
    if (/^\s*```/.test(line)) inFence = !inFence;
    if (inFence) return;
    if (/^#{1,2}\s/.test(line)) {
      const m = TABLE_HEADING.exec(line);
      current = m ? { heading: m[1]!, line: i + 1, rows: [] } : null;
      if (current) sections.push(current);
      return;
    }
    const row = KEY_ROW.exec(line);
    if (row && current) current.rows.push({ key: row[1]!, cells: cellsOf(line), line: i + 1 });
  });
  return sections;
}

// ---- the checks -----------------------------------------------------------------------------

const doc = readFileSync(DOC_PATH, "utf8");
const tables = schemaTables();
const sections = docSections(doc);
const sectionOf = (heading: string) => sections.find((s) => s.heading === heading);

const DEFAULTS: Readonly<Record<string, Readonly<Record<string, unknown>>>> = {
  "[general]": GENERAL_DEFAULTS,
  "[[databases]]": DATABASE_DEFAULTS,
  "[admin]": ADMIN_DEFAULTS,
  "[[users]]": USER_DEFAULTS,
};

/** The reload column says one of these (docs/configuration.md "Reload" explains them). */
const RELOAD_WORDS = /\b(in place|new pool|restart|no effect)\b/i;

describe("docs/configuration.md", () => {
  it("has one section per table of pgwarden.toml and users.toml, and none for other tables", () => {
    const documented = sections.map((s) => s.heading);
    expect(documented.slice().sort(), "table headings (## [table]) in the doc").toEqual(
      [...tables.keys()].sort(),
    );
    expect(new Set(documented).size, "a table heading appears twice").toBe(documented.length);
  });

  describe.each([...tables.values()].map((t) => [t.heading, t] as const))(
    "%s",
    (heading, table) => {
      const section = () => {
        const s = sectionOf(heading);
        if (!s) throw new Error(`no "## ${heading}" heading in docs/configuration.md`);
        return s;
      };

      it("documents every key the schema accepts, and no other", () => {
        const documented = section().rows.map((r) => r.key);
        const accepted = [...table.keys.keys()];
        const missing = accepted.filter((k) => !documented.includes(k));
        const unknown = documented.filter((k) => !table.keys.has(k));
        expect(missing, `keys of ${heading} (${table.files.join(", ")}) with no row`).toEqual([]);
        expect(unknown, `rows under ## ${heading} for keys the schema does not accept`).toEqual([]);
        const dups = documented.filter((k, i) => documented.indexOf(k) !== i);
        expect(dups, `keys documented twice under ## ${heading}`).toEqual([]);
      });

      it("gives each key a type, a default, a reload behaviour and a meaning", () => {
        for (const row of section().rows) {
          const where = `${heading} \`${row.key}\` (docs/configuration.md:${row.line})`;
          expect(
            row.cells,
            `${where}: expected | key | type | default | reload | meaning |`,
          ).toHaveLength(5);
          const [, type, , reload, meaning] = row.cells;
          expect(type, `${where}: empty type`).not.toBe("");
          expect(
            reload,
            `${where}: reload must say in place / new pool / restart / no effect`,
          ).toMatch(RELOAD_WORDS);
          expect(meaning, `${where}: empty meaning`).not.toBe("");
        }
      });

      it("shows the defaults the loader applies", () => {
        const defaults = DEFAULTS[heading] ?? {};
        for (const [key, value] of Object.entries(defaults)) {
          const row = section().rows.find((r) => r.key === key);
          if (!row) continue; // reported by the key test
          expect(
            row.cells[2],
            `${heading} \`${key}\`: default cell should show \`${String(value)}\``,
          ).toContain(`\`${String(value)}\``);
        }
      });

      it("lists every value of each enumerated key", () => {
        for (const [key, schema] of table.keys) {
          if (!(schema instanceof z.ZodEnum)) continue;
          const row = section().rows.find((r) => r.key === key);
          if (!row) continue; // reported by the key test
          for (const option of schema.options as string[]) {
            expect(
              row.cells[1],
              `${heading} \`${key}\`: type cell should list \`${option}\``,
            ).toContain(`\`${option}\``);
          }
        }
      });
    },
  );
});
