// PostgreSQL's legacy MD5 password scheme, both sides. It is weak (the stored hash is itself a
// usable credential), but real servers and old clients still speak it, so a pooler must too.

import { Buffer } from "node:buffer";
import { createHash, timingSafeEqual } from "node:crypto";

const MD5_SALT_LEN = 4;
// PostgreSQL only recognises lowercase hex as a stored MD5 hash (MD5_PASSWD_CHARSET), so an
// uppercase variant is treated as a plaintext password, exactly as the server would.
const MD5_HASH = /^md5[0-9a-f]{32}$/;

function md5hex(data: string | Buffer): string {
  return createHash("md5").update(data).digest("hex");
}

function checkSalt(salt: Buffer): void {
  if (salt.length !== MD5_SALT_LEN) {
    throw new RangeError(`MD5 salt must be ${MD5_SALT_LEN} bytes, got ${salt.length}`);
  }
}

/** True when `s` has the shape PostgreSQL stores for an MD5 password: "md5" + 32 lowercase hex. */
export function isMd5Hash(s: string): boolean {
  return MD5_HASH.test(s);
}

/** The value pg_authid.rolpassword holds for an MD5 role: "md5" + md5hex(password + user). */
export function md5PasswordHash(user: string, password: string): string {
  return "md5" + md5hex(password + user);
}

/**
 * The client's answer to AuthenticationMD5Password: "md5" + md5hex(md5hex(password + user) + salt).
 * `password` may also be the stored "md5…" hash, because the protocol only ever needs the inner
 * hash; this lets a pooler log in with a hash copied from pg_authid. The price is that a
 * plaintext password that happens to look like such a hash cannot be used, as in PostgreSQL.
 */
export function md5Response(user: string, password: string, salt: Buffer): string {
  checkSalt(salt);
  const inner = isMd5Hash(password) ? password.slice(3) : md5hex(password + user);
  return "md5" + md5hex(Buffer.concat([Buffer.from(inner, "ascii"), salt]));
}

/**
 * Checks a client's PasswordMessage (without its NUL terminator) against a stored "md5…" hash.
 * Returns false for a stored value that is not an MD5 hash, since no response can match it.
 */
export function verifyMd5Response(storedHash: string, salt: Buffer, response: string): boolean {
  checkSalt(salt);
  if (!isMd5Hash(storedHash)) return false;
  const expected = Buffer.from(md5Response("", storedHash, salt), "ascii");
  const actual = Buffer.from(response, "utf8");
  // The length is public (always 35 for a well-formed answer), so checking it first leaks nothing.
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}
