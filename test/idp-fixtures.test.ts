// The emulators of test/identity-providers.test.ts check what they must: a token-checking
// PostgreSQL is only as strict as these verifiers, so forged, expired, revoked and misdirected
// tokens are refused here, and the STS emulator refuses a caller whose SigV4 is wrong.
import { createHash, createHmac } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { startStsEmulator } from "./fixtures/aws-sts.js";
import { makeCommandSecrets } from "./fixtures/command-secrets.js";
import { makeTokenBook } from "./fixtures/token-book.js";

describe("token book", () => {
  it("accepts its own unexpired tokens for the right subject and scope, nothing else", () => {
    const book = makeTokenBook("google");
    const { token } = book.issue("sa@p.iam.gserviceaccount.com", "a b", 60);
    expect(book.verify(token, { sub: "sa@p.iam.gserviceaccount.com", scope: "b" }).ok).toBe(true);
    expect(book.verify(token, { sub: "other@p" })).toMatchObject({ ok: false });
    expect(book.verify(token, { scope: "c" })).toMatchObject({ ok: false });
    expect(book.verify(token, { nowMs: Date.now() + 61_000 })).toEqual({
      ok: false,
      reason: "token expired",
    });
    const other = makeTokenBook("google").issue("sa@p.iam.gserviceaccount.com", "a b", 60).token;
    expect(book.verify(other, {})).toEqual({ ok: false, reason: "bad signature" });
    const tampered = token.replace(/\.[^.]+\./, (m) => `${m.slice(0, -2)}A.`);
    expect(book.verify(tampered, {}).ok).toBe(false);
    book.revoke(token);
    expect(book.verify(token, {})).toEqual({ ok: false, reason: "token revoked" });
  });
});

describe("command secrets", () => {
  it("accepts only secrets signed with the state key, for that user, unexpired", () => {
    const c = makeCommandSecrets();
    const data = (user: string, exp: number) =>
      `cmdtok.${Buffer.from(user).toString("base64url")}.${exp}.n0nce`;
    expect(c.verify(`${data("u", 9_999_999_999)}.AAAA`, "u")).toMatchObject({ ok: false });
    expect(c.verify("plain-password", "u")).toMatchObject({ ok: false });
  });
});

describe("STS emulator", () => {
  let close: (() => Promise<void>) | undefined;
  afterAll(async () => close?.());

  it("issues role credentials to a correctly signed caller only", async () => {
    const secret = "caller-secret";
    const sts = await startStsEmulator({
      lifetimeMs: 10_000,
      callerSecret: (id) => (id === "AKIDCALLER" ? secret : undefined),
    });
    close = () => sts.close();
    sts.addRole("arn:aws:iam::111122223333:role/r", "ext");
    const body = new URLSearchParams({
      Action: "AssumeRole",
      Version: "2011-06-15",
      RoleArn: "arn:aws:iam::111122223333:role/r",
      RoleSessionName: "pgw",
      ExternalId: "ext",
    }).toString();
    const url = new URL(sts.url);
    const sign = (key: string, sec: string) => {
      const amzDate = new Date().toISOString().replace(/[-:]|\.\d{3}/g, "");
      const date = amzDate.slice(0, 8);
      const host = url.host;
      const sha = (s: string) => createHash("sha256").update(s).digest("hex");
      const canonical = [
        "POST",
        "/",
        "",
        `content-type:application/x-www-form-urlencoded\nhost:${host}\nx-amz-date:${amzDate}\n`,
        "content-type;host;x-amz-date",
        sha(body),
      ].join("\n");
      const scope = `${date}/us-east-1/sts/aws4_request`;
      const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha(canonical)].join("\n");
      let k: Buffer = createHmac("sha256", `AWS4${sec}`).update(date).digest();
      for (const p of ["us-east-1", "sts", "aws4_request"])
        k = createHmac("sha256", k).update(p).digest();
      const sig = createHmac("sha256", k).update(toSign).digest("hex");
      return {
        "content-type": "application/x-www-form-urlencoded",
        "x-amz-date": amzDate,
        authorization: `AWS4-HMAC-SHA256 Credential=${key}/${scope}, SignedHeaders=content-type;host;x-amz-date, Signature=${sig}`,
      };
    };
    const good = await fetch(sts.url, {
      method: "POST",
      body,
      headers: sign("AKIDCALLER", secret),
    });
    expect(good.status).toBe(200);
    expect(await good.text()).toMatch(/<AccessKeyId>ASIA/);
    const forged = await fetch(sts.url, { method: "POST", body, headers: sign("AKIDCALLER", "x") });
    expect(forged.status).toBe(403);
    const unknown = await fetch(sts.url, {
      method: "POST",
      body,
      headers: sign("AKIDOTHER", secret),
    });
    expect(unknown.status).toBe(403);
    expect(sts.issued.size).toBe(1);
    expect(sts.refused.join("\n")).toMatch(/signature does not match[\s\S]*unknown access key/);
  });
});
