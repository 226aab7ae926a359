// The files a configuration names are read with it, checked, and kept with the Config: a file
// edited afterwards changes nothing until the next read, and a missing or broken one is a
// ConfigError naming the key and the file.
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { deserialize, serialize } from "node:v8";
import { afterAll, describe, expect, it } from "vitest";
import { makeTestCa } from "../../test/fixtures/test-ca.js";
import { fileOf } from "./attachments.js";
import { ConfigError } from "./errors.js";
import { parseConfig, parseConfigTexts, readConfig } from "./load.js";

const USERS = `
[[users]]
name = "alice"
database = "app"
password = "alice-pw"
`;

describe("attachments", () => {
  const dir = mkdtempSync(join(tmpdir(), "pgwarden-attach-"));
  const a = makeTestCa({ san: "DNS:localhost", serverCn: "server a" });
  const b = makeTestCa({ san: "DNS:localhost", serverCn: "server b" });
  afterAll(() => {
    for (const d of [dir, a.dir, b.dir]) rmSync(d, { recursive: true, force: true });
  });

  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  const ca = join(dir, "ca.pem");
  const configFile = join(dir, "pgwarden.toml");
  const usersFile = join(dir, "users.toml");
  writeFileSync(usersFile, USERS);
  const useCerts = (c: typeof a) => {
    copyFileSync(c.certFile, cert);
    copyFileSync(c.keyFile, key);
    copyFileSync(c.caFile, ca);
  };
  const writeConfig = (general: string) =>
    writeFileSync(
      configFile,
      `[general]\n${general}\n[[databases]]\nname = "app"\nhost = "127.0.0.1"\n`,
    );
  const tlsKeys = `tls_certificate = "${cert}"\ntls_private_key = "${key}"\ntls_server_ca_certificate = "${ca}"`;

  const errorOf = (f: () => unknown): ConfigError => {
    try {
      f();
    } catch (e) {
      if (e instanceof ConfigError) return e;
      throw e;
    }
    throw new Error("no ConfigError");
  };

  it("a Config keeps the bytes read with it, not what the file holds later", () => {
    useCerts(a);
    writeConfig(tlsKeys);
    const texts = readConfig(configFile, usersFile, {}).texts;
    const config = parseConfigTexts(texts, {});
    useCerts(b);
    expect(fileOf(config, cert)).toEqual(readFileSync(a.certFile));
    expect(fileOf(config, key)).toEqual(readFileSync(a.keyFile));
    expect(fileOf(config, ca)).toEqual(readFileSync(a.caFile));
    expect(fileOf(config, cert)).not.toEqual(readFileSync(cert));
    // Sent to a worker (IPC's advanced serialization): the same bytes, whatever the disk holds.
    const inWorker = parseConfigTexts(deserialize(serialize(texts)), {});
    expect(Buffer.from(fileOf(inWorker, cert))).toEqual(readFileSync(a.certFile));
    // Serialized or inspected (a log line, say), the record shows paths, never the key's bytes.
    expect(JSON.parse(JSON.stringify(config)).attachments).toEqual([cert, key, ca]);
    expect(inspect(config, { depth: 5 })).not.toMatch(/Uint8Array|Buffer|\b45, 45, 45\b/);
    // A new read takes the file as it is now.
    expect(fileOf(parseConfigTexts(readConfig(configFile, usersFile, {}).texts, {}), cert)).toEqual(
      readFileSync(b.certFile),
    );
  });

  it("a Config made without them reads the file when asked", () => {
    useCerts(a);
    const config = parseConfig(
      `[general]\n${tlsKeys}\n[[databases]]\nname = "app"\nhost = "h"\n`,
      USERS,
      { config: configFile, users: usersFile },
      {},
    );
    useCerts(b);
    expect(fileOf(config, cert)).toEqual(readFileSync(b.certFile));
  });

  it("no TLS keys: nothing attached, nothing read", () => {
    writeConfig("");
    expect(readConfig(configFile, usersFile, {}).texts.attachments).toEqual({});
  });

  it("a missing file is a ConfigError naming the key and the file", () => {
    writeConfig(
      `tls_certificate = "${join(dir, "none.pem")}"\ntls_private_key = "${key}"\ntls_server_ca_certificate = "${join(dir, "none-ca.pem")}"`,
    );
    const err = errorOf(() => readConfig(configFile, usersFile, {}).texts);
    expect(err.problems.map((p) => p.message)).toEqual([
      `${configFile}: [general] key "tls_certificate": file not found: "${join(dir, "none.pem")}"`,
      `${configFile}: [general] key "tls_server_ca_certificate": file not found: "${join(dir, "none-ca.pem")}"`,
    ]);
    expect(err.key).toBe("tls_certificate");
  });

  it("a certificate and key TLS cannot use, or a CA with no certificate, is a ConfigError", () => {
    useCerts(a);
    copyFileSync(b.keyFile, key); // another certificate's key
    writeFileSync(ca, "not a certificate\n");
    writeConfig(tlsKeys);
    const err = errorOf(() => readConfig(configFile, usersFile, {}).texts);
    expect(err.problems.map((p) => p.key)).toEqual([
      "tls_certificate",
      "tls_server_ca_certificate",
    ]);
    expect(err.problems[0]?.message).toContain(
      `"${cert}" with tls_private_key "${key}" is not a certificate and key TLS can use (`,
    );
    expect(err.problems[1]?.message).toContain(`"${ca}" holds no certificate (`);
    // never the key's content
    expect(err.message).not.toContain("PRIVATE KEY");
  });
});
