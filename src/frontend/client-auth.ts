// Client authentication: the exchange pgwarden runs as a server towards its own clients.
//
// A configured client password may be stored as PostgreSQL stores them: plain text, an "md5…"
// hash, or a SCRAM-SHA-256 verifier. Like PostgreSQL, md5 auth with a SCRAM-stored secret runs
// SCRAM instead; SCRAM with an md5-stored secret cannot work and fails as a wrong password
// would (the reason goes to the log only). SCRAM verifiers derived from plain passwords are
// cached per password, so PBKDF2 runs once per user, not per login.
//
// A user that does not exist (or has no password) gets the very same exchange as a real one,
// ending in the same failure: a mock SCRAM exchange whose salt is derived from the name and a
// per-process secret, as PostgreSQL does, so a client cannot probe for user names.

import { Buffer } from "node:buffer";
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { ClientAuthType } from "../config/index.js";
import {
  authenticationCleartextPassword,
  authenticationMD5Password,
  authenticationSASL,
  authenticationSASLContinue,
  authenticationSASLFinal,
  isMd5Hash,
  md5PasswordHash,
  parsePasswordMessage,
  parseSaslInitialResponse,
  parseScramVerifier,
  ScramServer,
  type ScramVerifier,
  scramVerifier,
  verifyMd5Response,
} from "../protocol/index.js";

type Verifier = ScramVerifier;

const verifierCache = new Map<string, Verifier>();

/**
 * Per-instance secret behind the mock SCRAM salts of unknown users. With workers the primary
 * draws it and every worker takes the same one (setMockSecret), so an unknown user's salt does
 * not change with the worker a connection lands on (which would tell it from a real user).
 */
let MOCK_SECRET = randomBytes(32);

export function setMockSecret(secret: Buffer): void {
  if (secret.length >= 16) MOCK_SECRET = Buffer.from(secret);
}

function verifierFor(stored: string): Verifier | null {
  if (stored.startsWith("SCRAM-SHA-256$")) return parseScramVerifier(stored);
  if (isMd5Hash(stored)) return null;
  const cached = verifierCache.get(stored);
  if (cached) return cached;
  const v = parseScramVerifier(scramVerifier(stored));
  if (v) verifierCache.set(stored, v);
  return v;
}

const UNKNOWN = "no such user, or no password configured for it";

export type AuthStep =
  | { kind: "send"; data: Buffer }
  | { kind: "ok"; data?: Buffer }
  | { kind: "fail"; reason: string };

/** One client's authentication, fed the bodies of its password ('p') messages. */
export class ClientAuth {
  private scram: ScramServer | null = null;
  private mockReason: string | null = null;
  private salt: Buffer | null = null;
  private method: "plain" | "md5" | "scram" | "trust";

  constructor(
    private readonly user: string,
    private readonly stored: string | undefined,
    authType: ClientAuthType,
  ) {
    this.method = authType;
    if (authType === "md5" && stored?.startsWith("SCRAM-SHA-256$")) this.method = "scram";
  }

  start(): AuthStep {
    if (this.method === "trust") return { kind: "ok" };
    switch (this.method) {
      case "plain":
        return { kind: "send", data: authenticationCleartextPassword };
      case "md5":
        this.salt = randomBytes(4);
        return { kind: "send", data: authenticationMD5Password(this.salt) };
      case "scram":
        return { kind: "send", data: authenticationSASL(["SCRAM-SHA-256"]) };
    }
  }

  /** Handles one password-message body. */
  step(body: Buffer): AuthStep {
    const stored = this.stored;
    switch (this.method) {
      case "trust":
        return { kind: "fail", reason: "unexpected password message" };
      case "plain": {
        if (stored === undefined) return { kind: "fail", reason: UNKNOWN };
        const given = parsePasswordMessage(body);
        return this.checkCleartext(stored, given)
          ? { kind: "ok" }
          : { kind: "fail", reason: "password does not match" };
      }
      case "md5": {
        if (stored === undefined) return { kind: "fail", reason: UNKNOWN };
        const given = parsePasswordMessage(body);
        const hash = isMd5Hash(stored) ? stored : md5PasswordHash(this.user, stored);
        return verifyMd5Response(hash, this.salt!, given)
          ? { kind: "ok" }
          : { kind: "fail", reason: "password does not match" };
      }
      case "scram":
        return this.scramStep(stored, body);
    }
  }

  private scramStep(stored: string | undefined, body: Buffer): AuthStep {
    if (this.scram === null) {
      const { mechanism, data } = parseSaslInitialResponse(body);
      if (mechanism !== "SCRAM-SHA-256")
        return { kind: "fail", reason: `unsupported SASL mechanism ${mechanism}` };
      const verifier = stored === undefined ? null : verifierFor(stored);
      if (verifier === null) {
        // Unknown user, or an md5-stored password: the exchange runs to its end all the same.
        this.mockReason =
          stored === undefined ? UNKNOWN : "stored password is an md5 hash; SCRAM is not possible";
        this.scram = ScramServer.mock(this.user, MOCK_SECRET);
      } else {
        this.scram = new ScramServer(verifier);
      }
      // A malformed exchange throws ProtocolError: answered as 08P01, as PostgreSQL does.
      return { kind: "send", data: authenticationSASLContinue(this.scram.handleClientFirst(data)) };
    }
    const result = this.scram.handleClientFinal(body.toString("utf8"));
    if (!result.ok) return { kind: "fail", reason: this.mockReason ?? "password does not match" };
    return { kind: "ok", data: authenticationSASLFinal(result.serverFinal) };
  }

  private checkCleartext(stored: string, given: string): boolean {
    if (isMd5Hash(stored))
      return timingSafeEqual(sha256(md5PasswordHash(this.user, given)), sha256(stored));
    if (stored.startsWith("SCRAM-SHA-256$")) {
      const v = parseScramVerifier(stored);
      if (!v) return false;
      const derived = parseScramVerifier(scramVerifier(given, v.iterations, v.salt));
      return derived?.storedKey.equals(v.storedKey) === true;
    }
    // Compare digests so the comparison takes the same time whatever the lengths.
    return timingSafeEqual(sha256(stored), sha256(given));
  }
}

function sha256(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}
