// Property tests of the admin console's parser and executor (fast-check): any query string a
// client can send splits and parses without an exception (bad input is a statement of kind
// "invalid"), and executeAdmin always resolves with well-formed messages whose errors are
// ERRORs: an admin client can never take its session, let alone the process, down.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../config/index.js";
import type { AdminContext } from "./context.js";
import { executeAdmin } from "./execute.js";
import { parseStatement, splitStatements } from "./parse.js";

const RUNS = 1000;

/** Strings from the console's own alphabet, so random ones reach every branch of the lexer. */
const sqlish = fc
  .array(
    fc.oneof(
      fc.constantFrom(
        "show",
        "SHOW",
        "pools",
        "clients",
        "set",
        "to",
        "=",
        ";",
        "'",
        "''",
        '"',
        '""',
        "--",
        "/*",
        "*/",
        "\n",
        " ",
        "\t",
        "-",
        ".",
        "$",
        "\0",
        "é",
        "\uFFFD",
        "\uD800",
        "version",
        "app",
        "pause",
        "resume",
        "reload",
        "reconnect",
        "shutdown",
        "client_encoding",
        "credentials",
      ),
      fc.string({ maxLength: 8 }),
    ),
    { maxLength: 25 },
  )
  .map((parts) => parts.join(""));
const anySql = fc.oneof(sqlish, fc.string({ maxLength: 300 }), fc.string({ unit: "binary" }));

describe("admin parse properties", () => {
  it("splitStatements and parseStatement never throw; statements are trimmed and non-empty", () => {
    fc.assert(
      fc.property(anySql, (sql) => {
        const stmts = splitStatements(sql);
        for (const s of stmts) {
          expect(s).toBe(s.trim());
          expect(s).not.toBe("");
          const p = parseStatement(s);
          expect(["command", "set", "invalid"]).toContain(p.kind);
          if (p.kind === "command") expect(p.words.length).toBeGreaterThan(0);
        }
        // parseStatement takes raw text too, not only what splitStatements returns.
        expect(["command", "set", "invalid"]).toContain(parseStatement(sql).kind);
      }),
      { numRuns: RUNS },
    );
  });

  it("bare words joined by spaces and ';' parse back to the same words", () => {
    // Unquoted words may hold '-', but "--" starts a comment.
    const word = fc
      .stringMatching(/^[A-Za-z0-9_$.]([A-Za-z0-9_$.-]{0,10})$/)
      .filter((w) => !w.includes("--"));
    fc.assert(
      fc.property(
        fc.array(fc.array(word, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 4 }),
        (stmts) => {
          const sql = stmts.map((ws) => ws.join(" ")).join(" ; ");
          const parsed = splitStatements(sql).map(parseStatement);
          expect(parsed).toHaveLength(stmts.length);
          parsed.forEach((p, i) => {
            const ws = stmts[i]!;
            if (ws.length === 4 && ws[0]!.toLowerCase() === "set" && ws[2]!.toLowerCase() === "to")
              expect(p).toEqual({ kind: "set", key: ws[1], value: ws[3] });
            else if (ws[0]!.toLowerCase() === "set") expect(p.kind).toBe("invalid");
            else
              expect(p).toEqual({
                kind: "command",
                words: ws.map((text) => ({ text, quoted: false })),
              });
          });
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("executeAdmin properties", () => {
  const config = parseConfig(
    '[general]\nport = 6543\n[[databases]]\nname = "app"\nhost = "127.0.0.1"\n[admin]\nuser = "ops"\npassword = "pw"\n',
    '[[users]]\nname = "alice"\ndatabase = "app"\npassword = "a"\nserver_password = "b"\n',
    { config: "/x/pgwarden.toml", users: "/x/users.toml" },
    {},
  );
  const calls: string[] = [];
  const ctx: AdminContext = {
    version: "0.1.0",
    pools: () => [],
    servers: () => [],
    clients: () => [],
    credentials: () => [],
    config: () => config,
    reload: async () => {
      calls.push("reload");
      return "reloaded";
    },
    pause: async () => {
      calls.push("pause");
    },
    resume: () => {
      calls.push("resume");
    },
    reconnect: () => {
      calls.push("reconnect");
    },
    shutdown: () => {
      calls.push("shutdown");
    },
  };

  it("resolves for any query with well-formed messages; errors are ERROR, never XX000", async () => {
    await fc.assert(
      fc.asyncProperty(anySql, async (sql) => {
        const out = await executeAdmin(ctx, sql);
        expect(out.length).toBeGreaterThan(0);
        for (const m of out) {
          expect(m.readInt32BE(1)).toBe(m.length - 1);
          const type = String.fromCharCode(m[0]!);
          expect("TDCENI").toContain(type);
          if (type === "E") {
            const text = m.toString("latin1");
            expect(text).toContain("SERROR\0");
            expect(text).not.toContain("CXX000\0");
          }
        }
      }),
      { numRuns: 500 },
    );
  });
});
