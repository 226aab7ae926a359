// Test certificates for TLS tests: a CA and a server certificate it signed (see fixtures/test-ca.ts),
// removed when the test process exits.
import { makeTestCa, type TestCa } from "./fixtures/test-ca.js";
import { removeOnExit } from "./harness/procs.js";

export type TestCerts = TestCa;

/** A CA and a server certificate for `san` (e.g. "DNS:localhost"). */
export function makeCerts(san: string): TestCerts {
  const certs = makeTestCa({ san, serverCn: "pgwarden test server" });
  removeOnExit(certs.dir);
  return certs;
}
