import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { isMd5Hash, md5PasswordHash, md5Response, verifyMd5Response } from "./md5.js";

const md5hex = (s: string | Buffer) => createHash("md5").update(s).digest("hex");
const SALT = Buffer.from([0x01, 0x02, 0xfe, 0xff]);

describe("md5PasswordHash", () => {
  it("is md5 + md5hex(password + user)", () => {
    expect(md5PasswordHash("postgres", "secret")).toBe("md5" + md5hex("secretpostgres"));
    // Independent value (coreutils md5sum of "secretpostgres").
    expect(md5PasswordHash("postgres", "secret")).toBe("md553f48b7c4b76a86ce72276c5755f217d");
  });

  it("matches what PostgreSQL 15 stored in pg_authid", () => {
    // CREATE ROLE md5user PASSWORD 'secret' with password_encryption = md5
    expect(md5PasswordHash("md5user", "secret")).toBe("md52aea419619857e8a27f0f7aa641db0c6");
  });

  it("hashes non-ASCII text as UTF-8", () => {
    expect(md5PasswordHash("jürgen", "pässword")).toBe(
      "md5" + md5hex(Buffer.from("pässwordjürgen", "utf8")),
    );
  });
});

describe("md5Response", () => {
  it("is md5 + md5hex(md5hex(password + user) + salt)", () => {
    const inner = md5hex("secretpostgres");
    const expected = "md5" + md5hex(Buffer.concat([Buffer.from(inner), SALT]));
    expect(md5Response("postgres", "secret", SALT)).toBe(expected);
    // Independent value: python3 hashlib over the same bytes.
    expect(md5Response("postgres", "secret", SALT)).toBe("md56c143a9fdb92d561bbca5c93456233c7");
  });

  it("accepts the stored md5 hash in place of the password", () => {
    const stored = md5PasswordHash("postgres", "secret");
    expect(md5Response("postgres", stored, SALT)).toBe(md5Response("postgres", "secret", SALT));
    // The user no longer matters once the inner hash is given.
    expect(md5Response("someone-else", stored, SALT)).toBe(md5Response("postgres", "secret", SALT));
  });

  it("treats near-miss hash shapes as plaintext, like PostgreSQL", () => {
    const upper = "MD5" + md5hex("x").toUpperCase();
    expect(md5Response("u", upper, SALT)).toBe(
      "md5" + md5hex(Buffer.concat([Buffer.from(md5hex(upper + "u")), SALT])),
    );
    expect(isMd5Hash("md5" + md5hex("x").toUpperCase())).toBe(false);
    expect(isMd5Hash("md5" + md5hex("x").slice(1))).toBe(false);
    expect(isMd5Hash(md5PasswordHash("u", "p"))).toBe(true);
  });

  it("rejects a salt that is not 4 bytes", () => {
    expect(() => md5Response("u", "p", Buffer.alloc(3))).toThrow(RangeError);
    expect(() => md5Response("u", "p", Buffer.alloc(5))).toThrow(RangeError);
  });
});

describe("verifyMd5Response", () => {
  const stored = md5PasswordHash("alice", "hunter2");

  it("accepts the right answer", () => {
    expect(verifyMd5Response(stored, SALT, md5Response("alice", "hunter2", SALT))).toBe(true);
  });

  it("rejects a wrong password, a wrong user, another salt, and junk", () => {
    expect(verifyMd5Response(stored, SALT, md5Response("alice", "hunter3", SALT))).toBe(false);
    expect(verifyMd5Response(stored, SALT, md5Response("bob", "hunter2", SALT))).toBe(false);
    const other = Buffer.from([9, 9, 9, 9]);
    expect(verifyMd5Response(stored, SALT, md5Response("alice", "hunter2", other))).toBe(false);
    expect(verifyMd5Response(stored, SALT, "")).toBe(false);
    expect(verifyMd5Response(stored, SALT, "md5")).toBe(false);
    expect(verifyMd5Response(stored, SALT, "hunter2")).toBe(false);
    expect(verifyMd5Response(stored, SALT, stored)).toBe(false);
  });

  it("is exact about case, as PostgreSQL's strcmp is", () => {
    const answer = md5Response("alice", "hunter2", SALT);
    expect(verifyMd5Response(stored, SALT, answer.toUpperCase())).toBe(false);
  });

  it("returns false when the stored value is not an md5 hash", () => {
    expect(verifyMd5Response("hunter2", SALT, md5Response("alice", "hunter2", SALT))).toBe(false);
    expect(verifyMd5Response("SCRAM-SHA-256$4096:abc", SALT, "md5" + "0".repeat(32))).toBe(false);
  });

  it("rejects a salt that is not 4 bytes", () => {
    expect(() => verifyMd5Response(stored, Buffer.alloc(0), "md5")).toThrow(RangeError);
  });
});
