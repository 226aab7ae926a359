// SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it: no channel binding, and the
// username inside the SCRAM messages is ignored because the startup packet already named the role.
// Pure computation only: callers move the strings in and out of SASL messages.

import { Buffer } from "node:buffer";
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from "node:crypto";
import { ProtocolError } from "./reader.js";

/** The SASL mechanism name offered in AuthenticationSASL and chosen in SASLInitialResponse. */
export const SCRAM_SHA_256 = "SCRAM-SHA-256";

const KEY_LEN = 32;
const DEFAULT_ITERATIONS = 4096;
// Same sizes as PostgreSQL (SCRAM_DEFAULT_SALT_LEN, SCRAM_RAW_NONCE_LEN), so our messages and
// verifiers are indistinguishable from a real server's.
const DEFAULT_SALT_LEN = 16;
const RAW_NONCE_LEN = 18;
// PostgreSQL parses the iteration count into a C int; anything larger is no real server's, and
// accepting it would let a hostile server make us spin in PBKDF2 for hours.
const MAX_ITERATIONS = 0x7fffffff;
// Server-supplied text ends up in our error messages; keep it short and printable.
const MAX_QUOTED = 64;

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
// RFC 5802 "printable": visible ASCII except ','.
const NONCE = /^[\x21-\x2b\x2d-\x7e]+$/;
const ITERATIONS = /^[1-9][0-9]*$/;
const ASCII = /^[\x00-\x7f]*$/;

/** The parts of a stored SCRAM-SHA-256 secret that the server side needs. */
export interface ScramVerifier {
  readonly iterations: number;
  readonly salt: Buffer;
  readonly storedKey: Buffer;
  readonly serverKey: Buffer;
}

export type ScramServerResult = { ok: true; serverFinal: string } | { ok: false };

// ---------------------------------------------------------------------------------------------
// SASLprep, the way PostgreSQL's src/common/saslprep.c applies it.

type Range = readonly [number, number];

// RFC 3454 C.1.2: mapped to U+0020.
const NON_ASCII_SPACE: readonly Range[] = [
  [0x00a0, 0x00a0],
  [0x1680, 0x1680],
  [0x2000, 0x200b],
  [0x202f, 0x202f],
  [0x205f, 0x205f],
  [0x3000, 0x3000],
];

// RFC 3454 B.1: mapped to nothing.
const MAPPED_TO_NOTHING: readonly Range[] = [
  [0x00ad, 0x00ad],
  [0x034f, 0x034f],
  [0x1806, 0x1806],
  [0x180b, 0x180d],
  [0x200b, 0x200d],
  [0x2060, 0x2060],
  [0xfe00, 0xfe0f],
  [0xfeff, 0xfeff],
];

// RFC 3454 C.1.2, C.2.1, C.2.2, C.3–C.9: the characters SASLprep prohibits in its output.
const PROHIBITED: readonly Range[] = [
  [0x0000, 0x001f],
  [0x007f, 0x009f],
  [0x00a0, 0x00a0],
  [0x0340, 0x0341],
  [0x06dd, 0x06dd],
  [0x070f, 0x070f],
  [0x1680, 0x1680],
  [0x180e, 0x180e],
  [0x2000, 0x200f],
  [0x2028, 0x202f],
  [0x205f, 0x2063],
  [0x206a, 0x206f],
  [0x2ff0, 0x2ffb],
  [0x3000, 0x3000],
  [0xd800, 0xf8ff],
  [0xfdd0, 0xfdef],
  [0xfeff, 0xfeff],
  [0xfff9, 0xffff],
  [0x1d173, 0x1d17a],
  [0x1fffe, 0x1ffff],
  [0x2fffe, 0x2ffff],
  [0x3fffe, 0x3ffff],
  [0x4fffe, 0x4ffff],
  [0x5fffe, 0x5ffff],
  [0x6fffe, 0x6ffff],
  [0x7fffe, 0x7ffff],
  [0x8fffe, 0x8ffff],
  [0x9fffe, 0x9ffff],
  [0xafffe, 0xaffff],
  [0xbfffe, 0xbffff],
  [0xcfffe, 0xcffff],
  [0xdfffe, 0xdffff],
  [0xe0001, 0xe0001],
  [0xe0020, 0xe007f],
  [0xefffe, 0xeffff],
  [0xf0000, 0x10ffff],
];

function inRanges(cp: number, ranges: readonly Range[]): boolean {
  for (const [lo, hi] of ranges) {
    if (cp >= lo && cp <= hi) return true;
  }
  return false;
}

/**
 * Prepares a password for SCRAM the way libpq and the PostgreSQL server both do: ASCII is used
 * as-is; otherwise map (B.1, C.1.2), NFKC-normalise and, if the result is empty or contains a
 * prohibited character, fall back to the raw password rather than fail — PostgreSQL chose that
 * so any byte string stays usable as a password, and both ends must agree on it.
 *
 * Known gap: PostgreSQL also falls back to the raw password when the text contains a code point
 * unassigned in Unicode 3.2 (RFC 3454 A.1, e.g. emoji) or breaks the bidi rule (section 6). We
 * skip those two large tables, so a non-ASCII password that NFKC changes *and* that contains such
 * characters hashes differently here than in PostgreSQL. Pure ASCII, and text NFKC leaves alone,
 * always agree.
 */
export function saslprep(password: string): string {
  if (ASCII.test(password)) return password;
  let mapped = "";
  for (const ch of password) {
    const cp = ch.codePointAt(0)!;
    if (inRanges(cp, NON_ASCII_SPACE)) mapped += " ";
    else if (!inRanges(cp, MAPPED_TO_NOTHING)) mapped += ch;
  }
  if (mapped.length === 0) return password;
  const normalized = mapped.normalize("NFKC");
  for (const ch of normalized) {
    if (inRanges(ch.codePointAt(0)!, PROHIBITED)) return password;
  }
  return normalized;
}

// ---------------------------------------------------------------------------------------------
// Shared math.

function hmac(key: Buffer, data: string): Buffer {
  return createHmac("sha256", key).update(data, "utf8").digest();
}

function sha256(data: Buffer): Buffer {
  return createHash("sha256").update(data).digest();
}

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}

function saltedPassword(password: string, salt: Buffer, iterations: number): Buffer {
  return pbkdf2Sync(Buffer.from(saslprep(password), "utf8"), salt, iterations, KEY_LEN, "sha256");
}

function decodeBase64(s: string): Buffer | null {
  return BASE64.test(s) ? Buffer.from(s, "base64") : null;
}

function parseIterations(s: string): number | null {
  if (!ITERATIONS.test(s)) return null;
  const n = Number(s);
  return n <= MAX_ITERATIONS ? n : null;
}

function randomNonce(): string {
  return randomBytes(RAW_NONCE_LEN).toString("base64");
}

function checkOwnNonce(nonce: string): string {
  if (!NONCE.test(nonce)) {
    throw new RangeError("SCRAM nonce must be non-empty printable ASCII without ','");
  }
  return nonce;
}

function quote(s: string): string {
  const printable = s.replace(/[^\x20-\x7e]/g, "?");
  return JSON.stringify(
    printable.length > MAX_QUOTED ? printable.slice(0, MAX_QUOTED) + "…" : printable,
  );
}

interface Attribute {
  readonly name: string;
  readonly value: string;
}

// Values cannot contain ',' (RFC 5802 §5.1: usernames escape it as =2C, base64 never has it),
// so splitting on ',' is exact.
function parseAttributes(msg: string, what: string): Attribute[] {
  return msg.split(",").map((part) => {
    const m = /^([A-Za-z])=(.*)$/s.exec(part);
    if (m === null)
      throw new ProtocolError(`malformed SCRAM ${what}: bad attribute ${quote(part)}`);
    return { name: m[1]!, value: m[2]! };
  });
}

function expectAttribute(attrs: Attribute[], index: number, name: string, what: string): string {
  const attr = attrs[index];
  if (attr === undefined) {
    throw new ProtocolError(`malformed SCRAM ${what}: missing attribute "${name}"`);
  }
  if (attr.name !== name) {
    throw new ProtocolError(
      `malformed SCRAM ${what}: expected attribute "${name}", got "${attr.name}"`,
    );
  }
  return attr.value;
}

// RFC 5802 §5.1 saslname: ',' and '=' must be escaped.
function escapeUsername(user: string): string {
  return user.replace(/=/g, "=3D").replace(/,/g, "=2C");
}

// ---------------------------------------------------------------------------------------------
// Stored secrets.

/**
 * Builds the secret PostgreSQL keeps in pg_authid.rolpassword:
 * `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (all base64). PBKDF2 runs here,
 * so call it once per password (at config load), not per login.
 */
export function scramVerifier(
  password: string,
  iterations = DEFAULT_ITERATIONS,
  salt: Buffer = randomBytes(DEFAULT_SALT_LEN),
): string {
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_ITERATIONS) {
    throw new RangeError(`SCRAM iteration count must be an integer in 1..${MAX_ITERATIONS}`);
  }
  if (salt.length === 0) throw new RangeError("SCRAM salt must not be empty");
  const salted = saltedPassword(password, salt, iterations);
  const storedKey = sha256(hmac(salted, "Client Key"));
  const serverKey = hmac(salted, "Server Key");
  return (
    `${SCRAM_SHA_256}$${iterations}:${salt.toString("base64")}` +
    `$${storedKey.toString("base64")}:${serverKey.toString("base64")}`
  );
}

/** Parses a stored SCRAM-SHA-256 secret; null when `s` is anything else (plaintext, md5, junk). */
export function parseScramVerifier(s: string): ScramVerifier | null {
  const m = /^SCRAM-SHA-256\$([^:$]+):([^:$]+)\$([^:$]+):([^:$]+)$/.exec(s);
  if (m === null) return null;
  const iterations = parseIterations(m[1]!);
  const salt = decodeBase64(m[2]!);
  const storedKey = decodeBase64(m[3]!);
  const serverKey = decodeBase64(m[4]!);
  if (iterations === null || salt === null || salt.length === 0) return null;
  if (storedKey?.length !== KEY_LEN || serverKey?.length !== KEY_LEN) return null;
  return { iterations, salt, storedKey, serverKey };
}

// ---------------------------------------------------------------------------------------------
// Client side: pgwarden logging in to a PostgreSQL server.

/**
 * One SCRAM-SHA-256 exchange as the client:
 * clientFirstMessage() → SASLInitialResponse, handleServerFirst(AuthenticationSASLContinue)
 * → SASLResponse, verifyServerFinal(AuthenticationSASLFinal). Single use.
 */
export class ScramClient {
  private readonly password: string;
  private readonly clientNonce: string;
  private readonly clientFirstBare: string;
  private state: "awaiting-server-first" | "awaiting-server-final" | "done" =
    "awaiting-server-first";
  private expectedServerSignature: Buffer | undefined;

  /**
   * `username` exists only to reproduce RFC test vectors: PostgreSQL ignores it (the role comes
   * from the startup packet) and libpq sends it empty, so leave it empty for real servers.
   */
  constructor(password: string, nonce?: string, username = "") {
    this.password = password;
    this.clientNonce = nonce === undefined ? randomNonce() : checkOwnNonce(nonce);
    this.clientFirstBare = `n=${escapeUsername(username)},r=${this.clientNonce}`;
  }

  /** The client-first-message, "n,,n=,r=<nonce>": no channel binding, no authzid. */
  clientFirstMessage(): string {
    return "n,," + this.clientFirstBare;
  }

  /** Takes the server-first-message and returns the client-final-message. */
  handleServerFirst(serverFirst: string): string {
    if (this.state !== "awaiting-server-first") {
      throw new ProtocolError("SCRAM server-first-message received out of order");
    }
    this.state = "done"; // stays done if anything below throws: a failed exchange is not retried
    const what = "server-first-message";
    const attrs = parseAttributes(serverFirst, what);
    if (attrs[0]?.name === "e") {
      throw new ProtocolError(
        `SCRAM authentication failed on the server: ${quote(attrs[0].value)}`,
      );
    }
    if (attrs[0]?.name === "m") {
      throw new ProtocolError("SCRAM server requires an unsupported mandatory extension");
    }
    const nonce = expectAttribute(attrs, 0, "r", what);
    const saltText = expectAttribute(attrs, 1, "s", what);
    const iterText = expectAttribute(attrs, 2, "i", what);
    // The server must extend our nonce; otherwise the exchange could be a replay.
    if (
      !NONCE.test(nonce) ||
      !nonce.startsWith(this.clientNonce) ||
      nonce.length === this.clientNonce.length
    ) {
      throw new ProtocolError("SCRAM server nonce does not extend the client nonce");
    }
    const salt = decodeBase64(saltText);
    if (salt === null || salt.length === 0) {
      throw new ProtocolError(`SCRAM server sent an invalid salt: ${quote(saltText)}`);
    }
    const iterations = parseIterations(iterText);
    if (iterations === null) {
      throw new ProtocolError(`SCRAM server sent an invalid iteration count: ${quote(iterText)}`);
    }

    const salted = saltedPassword(this.password, salt, iterations);
    const clientKey = hmac(salted, "Client Key");
    const storedKey = sha256(clientKey);
    // "biws" is base64("n,,"), the gs2 header we sent.
    const withoutProof = `c=biws,r=${nonce}`;
    const authMessage = `${this.clientFirstBare},${serverFirst},${withoutProof}`;
    const proof = xor(clientKey, hmac(storedKey, authMessage));
    this.expectedServerSignature = hmac(hmac(salted, "Server Key"), authMessage);
    this.state = "awaiting-server-final";
    return `${withoutProof},p=${proof.toString("base64")}`;
  }

  /**
   * Checks the server-final-message. Throws if the server reported an error (e=) or if its
   * signature is wrong — the latter means the server does not know the password, i.e. it is not
   * the server it claims to be, so the connection must not be used.
   */
  verifyServerFinal(serverFinal: string): void {
    if (this.state !== "awaiting-server-final" || this.expectedServerSignature === undefined) {
      throw new ProtocolError("SCRAM server-final-message received out of order");
    }
    this.state = "done";
    const what = "server-final-message";
    const attrs = parseAttributes(serverFinal, what);
    if (attrs[0]?.name === "e") {
      throw new ProtocolError(
        `SCRAM authentication failed on the server: ${quote(attrs[0].value)}`,
      );
    }
    const signatureText = expectAttribute(attrs, 0, "v", what);
    const signature = decodeBase64(signatureText);
    if (signature === null || signature.length !== KEY_LEN) {
      throw new ProtocolError(`malformed SCRAM ${what}: invalid server signature`);
    }
    if (!timingSafeEqual(signature, this.expectedServerSignature)) {
      throw new ProtocolError(
        "SCRAM server signature mismatch: the server could not prove it knows the password",
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Server side: pgwarden authenticating its own clients.

/**
 * One SCRAM-SHA-256 exchange as the server. handleClientFirst/handleClientFinal throw
 * ProtocolError for malformed or inconsistent messages (PostgreSQL answers those with a protocol
 * violation); a well-formed exchange with a wrong password yields `{ ok: false }` (answer with
 * "password authentication failed"). Single use.
 */
export class ScramServer {
  private readonly verifier: ScramVerifier;
  private readonly serverNonce: string;
  private doomed = false;
  private state: "awaiting-client-first" | "awaiting-client-final" | "done" =
    "awaiting-client-first";
  private gs2Header = "";
  private clientFirstBare = "";
  private serverFirst = "";
  private nonce = "";

  constructor(verifier: ScramVerifier, nonce?: string) {
    if (verifier.storedKey.length !== KEY_LEN || verifier.serverKey.length !== KEY_LEN) {
      throw new RangeError(`SCRAM StoredKey and ServerKey must be ${KEY_LEN} bytes`);
    }
    if (
      !Number.isInteger(verifier.iterations) ||
      verifier.iterations < 1 ||
      verifier.salt.length === 0
    ) {
      throw new RangeError("SCRAM verifier needs a positive iteration count and a salt");
    }
    this.verifier = verifier;
    this.serverNonce = nonce === undefined ? randomNonce() : checkOwnNonce(nonce);
  }

  /**
   * An exchange that runs to the end and always fails, for a role that does not exist or has no
   * SCRAM secret — so a client cannot probe for role names. As in PostgreSQL, the salt is derived
   * from the username and a per-process secret, so it is stable per name like a real one.
   */
  static mock(
    username: string,
    mockSecret: Buffer,
    iterations = DEFAULT_ITERATIONS,
    nonce?: string,
  ): ScramServer {
    const salt = createHash("sha256")
      .update(username, "utf8")
      .update(mockSecret)
      .digest()
      .subarray(0, DEFAULT_SALT_LEN);
    const server = new ScramServer(
      { iterations, salt, storedKey: Buffer.alloc(KEY_LEN), serverKey: Buffer.alloc(KEY_LEN) },
      nonce,
    );
    server.doomed = true;
    return server;
  }

  /** Takes the client-first-message (SASLInitialResponse data) and returns server-first. */
  handleClientFirst(msg: string): string {
    if (this.state !== "awaiting-client-first") {
      throw new ProtocolError("SCRAM client-first-message received out of order");
    }
    this.state = "done";
    const what = "client-first-message";
    // gs2-header = gs2-cbind-flag "," [authzid] ","
    if (msg.startsWith("p=")) {
      throw new ProtocolError(
        "client requires SCRAM channel binding, which is not supported on this connection",
      );
    }
    // "y" means the client could bind but thinks we cannot; that is true (we never offer
    // SCRAM-SHA-256-PLUS), so it is accepted like "n".
    if ((msg[0] !== "n" && msg[0] !== "y") || msg[1] !== ",") {
      throw new ProtocolError(`malformed SCRAM ${what}: invalid channel-binding flag`);
    }
    if (msg.startsWith("a=", 2)) {
      throw new ProtocolError("SCRAM authorization identity (a=) is not supported");
    }
    if (msg[2] !== ",") throw new ProtocolError(`malformed SCRAM ${what}: invalid gs2 header`);
    const gs2Header = msg.slice(0, 3);
    const bare = msg.slice(3);
    const attrs = parseAttributes(bare, what);
    if (attrs[0]?.name === "m") {
      throw new ProtocolError("SCRAM client requires an unsupported mandatory extension");
    }
    // The username is ignored on purpose: the role was fixed by the startup packet.
    expectAttribute(attrs, 0, "n", what);
    const clientNonce = expectAttribute(attrs, 1, "r", what);
    if (!NONCE.test(clientNonce)) {
      throw new ProtocolError(`malformed SCRAM ${what}: invalid client nonce`);
    }
    this.gs2Header = gs2Header;
    this.clientFirstBare = bare;
    this.nonce = clientNonce + this.serverNonce;
    this.serverFirst =
      `r=${this.nonce},s=${this.verifier.salt.toString("base64")},` +
      `i=${this.verifier.iterations}`;
    this.state = "awaiting-client-final";
    return this.serverFirst;
  }

  /** Takes the client-final-message (SASLResponse data) and decides. */
  handleClientFinal(msg: string): ScramServerResult {
    if (this.state !== "awaiting-client-final") {
      throw new ProtocolError("SCRAM client-final-message received out of order");
    }
    this.state = "done";
    const what = "client-final-message";
    // The proof is always the last attribute and is excluded from AuthMessage.
    const proofAt = msg.lastIndexOf(",p=");
    if (proofAt < 0) throw new ProtocolError(`malformed SCRAM ${what}: missing proof`);
    const withoutProof = msg.slice(0, proofAt);
    const proof = decodeBase64(msg.slice(proofAt + 3));
    if (proof === null || proof.length !== KEY_LEN) {
      throw new ProtocolError(`malformed SCRAM ${what}: invalid proof`);
    }
    const attrs = parseAttributes(withoutProof, what);
    const binding = expectAttribute(attrs, 0, "c", what);
    // Base64 of a 3-byte header has exactly one spelling, so comparing text is exact.
    if (binding !== Buffer.from(this.gs2Header, "utf8").toString("base64")) {
      throw new ProtocolError("SCRAM channel binding check failed");
    }
    const nonce = expectAttribute(attrs, 1, "r", what);
    if (nonce !== this.nonce) throw new ProtocolError("SCRAM nonce mismatch");

    const authMessage = `${this.clientFirstBare},${this.serverFirst},${withoutProof}`;
    const clientKey = xor(proof, hmac(this.verifier.storedKey, authMessage));
    // Evaluate the comparison even for a mock exchange so both paths cost the same.
    const matches = timingSafeEqual(sha256(clientKey), this.verifier.storedKey);
    if (!matches || this.doomed) return { ok: false };
    const signature = hmac(this.verifier.serverKey, authMessage);
    return { ok: true, serverFinal: `v=${signature.toString("base64")}` };
  }
}
