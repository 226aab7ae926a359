// Property tests of the SCRAM parsers (fast-check). Server side (what a client can send us):
// handleClientFirst/handleClientFinal take any string and answer with a server message, a clean
// { ok: false }, or a ProtocolError; nothing else. A real client with the right password always
// gets { ok: true }, with a wrong one { ok: false }. Client side (what a server can send us):
// handleServerFirst/verifyServerFinal raise only ProtocolError on junk.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ProtocolError } from "./reader.js";
import { parseScramVerifier, ScramClient, ScramServer, scramVerifier } from "./scram.js";

const RUNS = 1000;
// A low iteration count: PBKDF2 runs for every client exchange below.
const PASSWORD = "s3cret-pw";
const VERIFIER = parseScramVerifier(scramVerifier(PASSWORD, 16))!;

function protocolErrorOr<T>(fn: () => T): T | ProtocolError {
  try {
    return fn();
  } catch (err) {
    if (err instanceof ProtocolError) return err;
    throw new Error(`threw ${(err as Error)?.name}: ${(err as Error)?.message}`, { cause: err });
  }
}

/** Strings from SCRAM's own alphabet, so that random ones often get deep into the parser. */
const scramish = fc
  .array(
    fc.oneof(
      fc.constantFrom(
        "n,,",
        "y,,",
        "p=tls-server-end-point,,",
        "n,a=x,",
        "n=",
        ",r=",
        "r=",
        ",c=biws",
        "c=biws",
        ",p=",
        "s=",
        ",i=4096",
        "m=ext",
        "e=other-error",
        "v=",
        ",",
        "=",
        "=2C",
        "==",
        "\0",
        "\uFFFD",
        "é",
      ),
      fc.string({ maxLength: 12 }),
      fc.base64String({ maxLength: 48 }),
    ),
    { maxLength: 10 },
  )
  .map((parts) => parts.join(""));
const anyString = fc.oneof(fc.string({ maxLength: 200 }), fc.string({ unit: "binary" }), scramish);

describe("ScramServer properties", () => {
  it("handleClientFirst: any string gives a server-first-message or a ProtocolError", () => {
    fc.assert(
      fc.property(anyString, (msg) => {
        const r = protocolErrorOr(() => new ScramServer(VERIFIER).handleClientFirst(msg));
        if (typeof r === "string") expect(r).toMatch(/^r=[\x21-\x2b\x2d-\x7e]+,s=[^,]+,i=16$/);
      }),
      { numRuns: RUNS },
    );
  });

  it("handleClientFinal: any string after a valid first gives { ok: false } or a ProtocolError", () => {
    fc.assert(
      fc.property(anyString, fc.boolean(), (msg, mock) => {
        const server = mock
          ? ScramServer.mock("u", Buffer.alloc(16), 16)
          : new ScramServer(VERIFIER);
        server.handleClientFirst("n,,n=,r=clientnonce");
        const r = protocolErrorOr(() => server.handleClientFinal(msg));
        if (!(r instanceof ProtocolError)) expect(r).toEqual({ ok: false });
        // Single use: anything more is out of order.
        expect(() => server.handleClientFinal(msg)).toThrow(ProtocolError);
      }),
      { numRuns: RUNS },
    );
  });

  it("a near-valid client-final (right nonce and binding, junk elsewhere) never throws anything else", () => {
    fc.assert(
      fc.property(
        fc.constantFrom("n,,", "y,,"),
        scramish,
        fc.oneof(fc.base64String({ maxLength: 60 }), anyString),
        fc.boolean(),
        (gs2, extra, proof, withExtra) => {
          const server = new ScramServer(VERIFIER, "servernonce");
          const first = server.handleClientFirst(`${gs2}n=,r=cn`);
          const nonce = /^r=([^,]+)/.exec(first)![1]!;
          const binding = Buffer.from(gs2).toString("base64");
          const msg = `c=${binding},r=${nonce}${withExtra ? `,${extra}` : ""},p=${proof}`;
          const r = protocolErrorOr(() => server.handleClientFinal(msg));
          if (!(r instanceof ProtocolError)) expect(r).toEqual({ ok: false });
        },
      ),
      { numRuns: RUNS },
    );
  });

  it("a real client logs in with the right password and fails cleanly with a wrong one", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 20 }), fc.boolean(), (wrong, useRight) => {
        const password = useRight || wrong === PASSWORD ? PASSWORD : wrong;
        const client = new ScramClient(password);
        const server = new ScramServer(VERIFIER);
        const serverFirst = server.handleClientFirst(client.clientFirstMessage());
        const result = server.handleClientFinal(client.handleServerFirst(serverFirst));
        expect(result.ok).toBe(password === PASSWORD);
        if (result.ok) client.verifyServerFinal(result.serverFinal);
      }),
      { numRuns: 60 },
    );
  });
});

describe("ScramClient properties (bytes from a server)", () => {
  it("handleServerFirst and verifyServerFinal: junk raises ProtocolError only", () => {
    fc.assert(
      fc.property(anyString, anyString, (first, final) => {
        protocolErrorOr(() => new ScramClient(PASSWORD).handleServerFirst(first));
        const client = new ScramClient(PASSWORD, "cn");
        const server = new ScramServer(VERIFIER);
        client.handleServerFirst(server.handleClientFirst(client.clientFirstMessage()));
        const r = protocolErrorOr(() => client.verifyServerFinal(final));
        // Only the server's real signature is accepted.
        if (!(r instanceof ProtocolError)) expect(final).toMatch(/^v=/);
      }),
      { numRuns: 150 },
    );
  });
});
