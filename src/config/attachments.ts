// Attachments: the files a configuration names and pgwarden reads with it, the client TLS
// certificate and key (`[general] tls_certificate`, `tls_private_key`) and the servers' CA
// (`tls_server_ca_certificate`).
//
// They are read when the configuration is (at start and at each reload, readConfig) and
// checked the way TLS will use them: a certificate and key that make a TLS context, a CA that
// parses. Then they are part of that Config (`Config.attachments`, carried by the copies made
// of it, e.g. a worker's share): whoever needs one takes these bytes (fileOf), never a later
// read of the file. So a reload whose file is missing or broken fails as a whole, with a message
// naming the key and the file, before anything changes. With workers, the primary reads them
// and sends them with the configuration's text (ConfigTexts.attachments, over the IPC channel
// to its own child processes): every worker, a replacement too, runs the very certificate the
// others run, whatever the file holds now, and no worker can fail a reload the primary accepted
// because of a file (docs/workers.md).
import { Buffer } from "node:buffer";
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import tls from "node:tls";
import { inspect } from "node:util";
import { ConfigError, type ConfigProblem, unreadable } from "./errors.js";
import type { Config } from "./types.js";

/** File contents by path, as read with a configuration. */
export type Attachments = NonNullable<Config["attachments"]>;

const KEYS = ["tls_certificate", "tls_private_key", "tls_server_ca_certificate"] as const;
type Key = (typeof KEYS)[number];

/**
 * Reads and checks the files `config` names. Throws a ConfigError naming each key whose file
 * cannot be read or used (never the file's content).
 */
export function readAttachments(config: Config): Attachments {
  const g = config.general;
  const out: Record<string, Uint8Array> = {};
  const problems: ConfigProblem[] = [];
  const problem = (key: Key, text: string) => {
    const file = config.files.config;
    problems.push({
      file,
      table: "[general]",
      key,
      message: `${file}: [general] key "${key}": ${text}`,
    });
  };
  for (const key of KEYS) {
    const path = g[key];
    if (path === undefined || out[path] !== undefined) continue;
    try {
      out[path] = readFileSync(path);
    } catch (err) {
      problem(key, `${unreadable(err)}: "${path}"`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  const { tls_certificate: cert, tls_private_key: key, tls_server_ca_certificate: ca } = g;
  if (cert !== undefined && key !== undefined) {
    try {
      tls.createSecureContext({ cert: bytes(out[cert]!), key: bytes(out[key]!) });
    } catch (err) {
      problem(
        "tls_certificate",
        `"${cert}" with tls_private_key "${key}" is not a certificate and key TLS can use (${firstLine(err)})`,
      );
    }
  }
  if (ca !== undefined) {
    try {
      new X509Certificate(bytes(out[ca]!));
    } catch (err) {
      problem("tls_server_ca_certificate", `"${ca}" holds no certificate (${firstLine(err)})`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return out;
}

/**
 * `config` with `files` as what it was read with. The record shows its paths only, never the
 * bytes (a private key among them), when serialized or inspected.
 */
export function attach(config: Config, files: Attachments): Config {
  const paths = () => Object.keys(files);
  const record = Object.defineProperties(
    { ...files },
    {
      toJSON: { value: paths, enumerable: false },
      [inspect.custom]: { value: paths, enumerable: false },
    },
  );
  return Object.freeze({ ...config, attachments: Object.freeze(record) });
}

/**
 * The bytes of a file `config` names, as read with it; for a Config made without attachments
 * (parseConfig, tests), the file as it is now.
 */
export function fileOf(config: Config, path: string): Buffer {
  const b = config.attachments?.[path];
  return b === undefined ? readFileSync(path) : bytes(b);
}

/** A Buffer over the same memory (IPC delivers a Uint8Array). */
function bytes(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split("\n")[0] ?? "";
}
