// Test certificates made with the openssl CLI: a CA and a server certificate it signed.
import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { removeOnExit } from "./harness/procs.js";

export interface TestCerts {
  dir: string;
  caFile: string;
  certFile: string;
  keyFile: string;
}

/** A CA and a server certificate for `san` (e.g. "DNS:localhost"). */
export function makeCerts(san: string): TestCerts {
  const dir = mkdtempSync(join(tmpdir(), "pgwarden-certs-"));
  removeOnExit(dir);
  const run = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  run(
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "2",
    "-subj",
    "/CN=pgwarden test CA",
    "-keyout",
    "ca.key",
    "-out",
    "ca.crt",
  );
  run(
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-subj",
    "/CN=pgwarden test server",
    "-keyout",
    "server.key",
    "-out",
    "server.csr",
  );
  writeFileSync(join(dir, "ext.cnf"), `subjectAltName=${san}\n`);
  run(
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    "ext.cnf",
    "-out",
    "server.crt",
  );
  chmodSync(join(dir, "server.key"), 0o600);
  return {
    dir,
    caFile: join(dir, "ca.crt"),
    certFile: join(dir, "server.crt"),
    keyFile: join(dir, "server.key"),
  };
}
