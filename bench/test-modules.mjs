// Loads the test support code (test/**/*.ts, not the tests themselves) for the benchmarks.
// Node 20 cannot run TypeScript, so the files are transpiled (type stripping only, with the
// `typescript` devDependency) into a temp folder under .tmp/, keeping their layout so that
// their relative imports work, and imported from there.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import ts from "typescript";

export const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));

function* tsFiles(dir) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* tsFiles(p);
    else if (e.name.endsWith(".ts") && !e.name.endsWith(".test.ts")) yield p;
  }
}

/** Returns { out, load(name) } where name is a path under test/ without extension. */
export function transpileTestSupport() {
  const src = join(ROOT, "test");
  mkdirSync(join(ROOT, ".tmp"), { recursive: true });
  const out = mkdtempSync(join(ROOT, ".tmp", "bench-test-"));
  for (const file of tsFiles(src)) {
    const { outputText } = ts.transpileModule(readFileSync(file, "utf8"), {
      fileName: file,
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    });
    const dest = join(out, relative(src, file)).replace(/\.ts$/, ".js");
    mkdirSync(dirname(dest), { recursive: true });
    writeFileSync(dest, outputText);
  }
  // The guard is CommonJS and is loaded by path from the repo; nothing to copy.
  return { out, load: (name) => import(pathToFileURL(join(out, `${name}.js`)).href) };
}
