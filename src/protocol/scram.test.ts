import { createHash, createHmac, pbkdf2Sync } from "node:crypto";
import { describe, expect, it } from "vitest";
import { ProtocolError } from "./reader.js";
import {
  parseScramVerifier,
  SCRAM_SHA_256,
  ScramClient,
  ScramServer,
  type ScramVerifier,
  saslprep,
  scramVerifier,
} from "./scram.js";

// RFC 7677 §3.
const RFC = {
  password: "pencil",
  clientNonce: "rOprNGfwEbeRWgbNEkqO",
  serverNonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
  salt: "W22ZaJ0SNY7soEsUEjb6gQ==",
  clientFirst: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
  serverFirst:
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
  clientFinal:
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0," +
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
  serverFinal: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
};

// Secrets PostgreSQL 15 wrote to pg_authid (password_encryption = 'scram-sha-256').
const PG15: ReadonlyArray<{ what: string; password: string; secret: string }> = [
  {
    what: "ASCII",
    password: "pencil",
    secret:
      "SCRAM-SHA-256$4096:dCPHyZ081SqIfpTxQwZEbw==$xOpiiiqqe5z1It6AuWzfgR83I0rIOISQR28PZa3l4OE=" +
      ":uUs0IJyiw4orzPVSBVfOGScQhZWxA9osUU8m8dcR6BQ=",
  },
  {
    what: "SASLprep mapping + NFKC (fullwidth, NBSP, ligature, soft hyphen)",
    password: "ｐａｓｓ\u00a0ﬁ\u00adx",
    secret:
      "SCRAM-SHA-256$4096:IuEqKrN39zXDpluso+tU8A==$yB5jai/aM342w8B+qGq3cQ2Rw5co9EGSa3g+IgTkV9Y=" +
      ":S69pjxkoLysmvTIiSe7qyVtZr02IQTL1kenWpbv/fqE=",
  },
  {
    what: "prohibited character falls back to the raw password",
    password: "caf\u00e9\u0007",
    secret:
      "SCRAM-SHA-256$4096:/N1dlLlZ9oxJ4nzr2SiLcw==$BFsA5ZgFyVZXm9BWIGWR6DM66Ga4hgJZFl/DqfZ47ps=" +
      ":Pq4Y305/jEWzBdaE3dChNNGhwYDtURHcL8Mq2AJhxj4=",
  },
  {
    what: "empty after mapping falls back to the raw password",
    password: "\u00ad",
    secret:
      "SCRAM-SHA-256$4096:36SHsIz9cgMWz6lnhMGeQg==$Vm7Wn4d5T8kAAsUeCNtMAFSHrZIXJgZ2PU6CyCrh5iU=" +
      ":FKuiyw9T8P24EHmZLFgv61XdMtHUHVD69hXqfgmI4So=",
  },
  {
    what: "non-ASCII with SCRAM/verifier delimiters",
    password: "p\u00e9$:,=n",
    secret:
      "SCRAM-SHA-256$4096:x3V0a2Yx0ggH0qlDK6gcyg==$aASXKKJWrGnGTKi/COej5ivC85c5c3URWHfuHhfTNWw=" +
      ":ViUOTdTi3b0AqafIqoO7FohYFb4crTRr48+J6WdrJgI=",
  },
];

function verifierFor(password: string, iterations = 4096): ScramVerifier {
  return parseScramVerifier(scramVerifier(password, iterations))!;
}

/** Runs a whole exchange; returns the server's decision and whether the client accepted it. */
function exchange(clientPassword: string, verifier: ScramVerifier) {
  const client = new ScramClient(clientPassword);
  const server = new ScramServer(verifier);
  const serverFirst = server.handleClientFirst(client.clientFirstMessage());
  const result = server.handleClientFinal(client.handleServerFirst(serverFirst));
  if (result.ok) client.verifyServerFinal(result.serverFinal);
  return result;
}

/** A server that has already answered a client-first-message with a fixed client nonce. */
function serverAfterFirst(password = "pencil", gs2 = "n,,") {
  const server = new ScramServer(verifierFor(password, 1), "SERVERNONCE");
  server.handleClientFirst(`${gs2}n=,r=CLIENTNONCE`);
  return server;
}

describe("RFC 7677 known answers", () => {
  it("client produces the RFC client-final and accepts the RFC server signature", () => {
    const client = new ScramClient(RFC.password, RFC.clientNonce, "user");
    expect(client.clientFirstMessage()).toBe(RFC.clientFirst);
    expect(client.handleServerFirst(RFC.serverFirst)).toBe(RFC.clientFinal);
    expect(() => client.verifyServerFinal(RFC.serverFinal)).not.toThrow();
  });

  it("server produces the RFC server-first and server-final", () => {
    const verifier = parseScramVerifier(
      scramVerifier(RFC.password, 4096, Buffer.from(RFC.salt, "base64")),
    )!;
    const server = new ScramServer(verifier, RFC.serverNonce);
    expect(server.handleClientFirst(RFC.clientFirst)).toBe(RFC.serverFirst);
    expect(server.handleClientFinal(RFC.clientFinal)).toEqual({
      ok: true,
      serverFinal: RFC.serverFinal,
    });
  });

  it("client sends an empty username by default, as libpq does", () => {
    const client = new ScramClient("pencil", "abc");
    expect(client.clientFirstMessage()).toBe("n,,n=,r=abc");
  });

  it("escapes ',' and '=' in a username", () => {
    expect(new ScramClient("x", "abc", "a,b=c").clientFirstMessage()).toBe("n,,n=a=2Cb=3Dc,r=abc");
  });
});

describe("PostgreSQL 15 stored secrets", () => {
  for (const { what, password, secret } of PG15) {
    it(`rebuilds the exact secret: ${what}`, () => {
      const parsed = parseScramVerifier(secret)!;
      expect(parsed).not.toBeNull();
      expect(scramVerifier(password, parsed.iterations, parsed.salt)).toBe(secret);
    });

    it(`logs in against the parsed secret: ${what}`, () => {
      expect(exchange(password, parseScramVerifier(secret)!).ok).toBe(true);
    });
  }
});

describe("client ↔ server round trips", () => {
  it("succeeds with the right password and both sides verify each other", () => {
    const result = exchange("correct horse", verifierFor("correct horse"));
    expect(result.ok).toBe(true);
  });

  it("succeeds with non-ASCII and empty passwords", () => {
    expect(exchange("pässwörd ✓", verifierFor("pässwörd ✓", 2)).ok).toBe(true);
    expect(exchange("", verifierFor("", 2)).ok).toBe(true);
  });

  it("treats SASLprep-equivalent passwords as equal", () => {
    expect(exchange("ｐａｓｓ", verifierFor("pass", 2)).ok).toBe(true);
  });

  it("rejects a wrong password without a server-final", () => {
    expect(exchange("wrong", verifierFor("right", 2))).toEqual({ ok: false });
  });

  it("uses fresh random nonces and salts", () => {
    expect(new ScramClient("p").clientFirstMessage()).not.toBe(
      new ScramClient("p").clientFirstMessage(),
    );
    expect(scramVerifier("p", 1)).not.toBe(scramVerifier("p", 1));
    expect(parseScramVerifier(scramVerifier("p", 1))!.salt).toHaveLength(16);
  });
});

describe("ScramClient validation", () => {
  const first = (serverFirst: string) => () =>
    new ScramClient("hunter2", "abc").handleServerFirst(serverFirst);

  it("rejects a server nonce that does not extend the client nonce", () => {
    expect(first("r=xyzdef,s=c2FsdA==,i=4096")).toThrow(/nonce/);
    expect(first("r=abc,s=c2FsdA==,i=4096")).toThrow(/nonce/);
    expect(first("r=ab,s=c2FsdA==,i=4096")).toThrow(/nonce/);
  });

  it("rejects bad iteration counts", () => {
    for (const i of ["0", "-1", "abc", "1.5", "", "04096", "99999999999"]) {
      expect(first(`r=abcdef,s=c2FsdA==,i=${i}`)).toThrow(/iteration/);
    }
  });

  it("rejects a salt that is not base64", () => {
    for (const s of ["", "c2FsdA", "c2Fsd!==", "====", "c2FsdA==x"]) {
      expect(first(`r=abcdef,s=${s},i=4096`)).toThrow(/salt/);
    }
  });

  it("rejects malformed messages and mandatory extensions", () => {
    expect(first("s=c2FsdA==,r=abcdef,i=4096")).toThrow(ProtocolError);
    expect(first("r=abcdef,s=c2FsdA==")).toThrow(/missing attribute "i"/);
    expect(first("garbage")).toThrow(ProtocolError);
    expect(first("m=ext,r=abcdef,s=c2FsdA==,i=4096")).toThrow(/mandatory extension/);
  });

  it("ignores optional extensions after the iteration count", () => {
    expect(first("r=abcdef,s=c2FsdA==,i=1,x=whatever")).not.toThrow();
  });

  it("reports a server error (e=) from either message", () => {
    expect(first("e=other-error")).toThrow(/failed on the server: "other-error"/);
    const client = new ScramClient("hunter2", "abc");
    client.handleServerFirst("r=abcdef,s=c2FsdA==,i=1");
    expect(() => client.verifyServerFinal("e=invalid-proof")).toThrow(/"invalid-proof"/);
  });

  it("rejects a server signature from a server that does not know the password", () => {
    const client = new ScramClient("hunter2");
    const impostor = new ScramServer(verifierFor("something else", 1));
    const serverFirst = impostor.handleClientFirst(client.clientFirstMessage());
    client.handleServerFirst(serverFirst);
    const forged = `v=${Buffer.alloc(32, 7).toString("base64")}`;
    expect(() => client.verifyServerFinal(forged)).toThrow(/signature mismatch/);
  });

  it("rejects malformed server-final messages", () => {
    for (const bad of ["", "v=", "v=abc", "x=1", `v=${Buffer.alloc(31).toString("base64")}`]) {
      const client = new ScramClient("hunter2", "abc");
      client.handleServerFirst("r=abcdef,s=c2FsdA==,i=1");
      expect(() => client.verifyServerFinal(bad)).toThrow(ProtocolError);
    }
  });

  it("enforces message order and single use", () => {
    const client = new ScramClient("hunter2", "abc");
    expect(() => client.verifyServerFinal("v=x")).toThrow(/out of order/);
    client.handleServerFirst("r=abcdef,s=c2FsdA==,i=1");
    expect(() => client.handleServerFirst("r=abcdef,s=c2FsdA==,i=1")).toThrow(/out of order/);
  });

  it("rejects an invalid caller-supplied nonce", () => {
    expect(() => new ScramClient("p", "")).toThrow(RangeError);
    expect(() => new ScramClient("p", "a,b")).toThrow(RangeError);
    expect(() => new ScramClient("p", "é")).toThrow(RangeError);
  });

  it("never puts the password in an error message", () => {
    const password = "s3cr3t-Pa55word";
    const messages: string[] = [];
    const attempts: Array<(c: ScramClient) => void> = [
      (c) => c.handleServerFirst("r=zzz,s=c2FsdA==,i=1"),
      (c) => c.handleServerFirst("r=abcdef,s=!!!,i=1"),
      (c) => c.handleServerFirst("r=abcdef,s=c2FsdA==,i=0"),
      (c) => c.handleServerFirst("e=invalid-proof"),
      (c) => {
        c.handleServerFirst("r=abcdef,s=c2FsdA==,i=1");
        c.verifyServerFinal(`v=${Buffer.alloc(32).toString("base64")}`);
      },
    ];
    for (const attempt of attempts) {
      try {
        attempt(new ScramClient(password, "abc"));
      } catch (err) {
        messages.push((err as Error).message);
      }
    }
    expect(messages).toHaveLength(attempts.length);
    for (const m of messages) expect(m).not.toContain("s3cr3t");
  });
});

describe("ScramServer validation", () => {
  it("rejects channel binding it cannot honour (p=)", () => {
    const server = new ScramServer(verifierFor("x", 1));
    expect(() => server.handleClientFirst("p=tls-server-end-point,,n=,r=abc")).toThrow(
      /channel binding/,
    );
  });

  it("accepts the y flag and binds the proof to it", () => {
    const server = new ScramServer(verifierFor("pencil", 1), "SRV");
    const serverFirst = server.handleClientFirst("y,,n=,r=CLI");
    expect(server.handleClientFinal(yFlagClientFinal("pencil", "CLI", serverFirst)).ok).toBe(true);
  });

  it("rejects an n-style final after a y header (downgrade attempt)", () => {
    const client = new ScramClient("pencil", "CLIENTNONCE");
    const clientFinal = client.handleServerFirst("r=CLIENTNONCESERVERNONCE,s=c2FsdA==,i=1");
    expect(clientFinal.startsWith("c=biws,")).toBe(true);
    expect(() => serverAfterFirst("pencil", "y,,").handleClientFinal(clientFinal)).toThrow(
      /channel binding check failed/,
    );
  });

  it("rejects c= that does not match the gs2 header", () => {
    const server = serverAfterFirst();
    const proof = Buffer.alloc(32).toString("base64");
    expect(() => server.handleClientFinal(`c=eSws,r=CLIENTNONCESERVERNONCE,p=${proof}`)).toThrow(
      /channel binding check failed/,
    );
  });

  it("rejects a tampered nonce", () => {
    const client = new ScramClient("pencil");
    const server = new ScramServer(verifierFor("pencil", 1));
    const serverFirst = server.handleClientFirst(client.clientFirstMessage());
    const clientFinal = client.handleServerFirst(serverFirst);
    const tampered = clientFinal.replace(/,r=([^,]*)/, (_m, n: string) => `,r=${n}X`);
    expect(tampered).not.toBe(clientFinal);
    expect(() => server.handleClientFinal(tampered)).toThrow(/nonce mismatch/);
  });

  it("rejects a tampered proof as a failed login, not a protocol error", () => {
    const client = new ScramClient("pencil");
    const server = new ScramServer(verifierFor("pencil", 1));
    const clientFinal = client.handleServerFirst(
      server.handleClientFirst(client.clientFirstMessage()),
    );
    const tampered = clientFinal.replace(/p=./, (m) => (m === "p=A" ? "p=B" : "p=A"));
    expect(server.handleClientFinal(tampered)).toEqual({ ok: false });
  });

  it("rejects authzid, mandatory extensions and malformed client-first messages", () => {
    const first = (msg: string) => () =>
      new ScramServer(verifierFor("x", 1)).handleClientFirst(msg);
    expect(first("n,a=admin,n=,r=abc")).toThrow(/authorization identity/);
    expect(first("n,,m=ext,n=,r=abc")).toThrow(/mandatory extension/);
    expect(first("x,,n=,r=abc")).toThrow(/channel-binding flag/);
    expect(first("n,,r=abc")).toThrow(ProtocolError);
    expect(first("n,,n=,r=")).toThrow(/client nonce/);
    expect(first("n,,n=,r=a\u00e9")).toThrow(/client nonce/);
    expect(first("")).toThrow(ProtocolError);
    expect(first("n,")).toThrow(ProtocolError);
  });

  it("ignores the SCRAM username (the startup packet names the role)", () => {
    const server = new ScramServer(verifierFor("x", 1), "S");
    expect(server.handleClientFirst("n,,n=whoever,r=C")).toMatch(/^r=CS,s=[^,]+,i=1$/);
  });

  it("rejects malformed client-final messages", () => {
    const proof = Buffer.alloc(32).toString("base64");
    for (const bad of [
      "",
      "c=biws,r=CLIENTNONCESERVERNONCE",
      "c=biws,r=CLIENTNONCESERVERNONCE,p=abc",
      `c=biws,r=CLIENTNONCESERVERNONCE,p=${Buffer.alloc(31).toString("base64")}`,
      `r=CLIENTNONCESERVERNONCE,c=biws,p=${proof}`,
      `c=biws,p=${proof}`,
    ]) {
      expect(() => serverAfterFirst().handleClientFinal(bad)).toThrow(ProtocolError);
    }
  });

  it("enforces message order and single use", () => {
    const server = new ScramServer(verifierFor("x", 1));
    expect(() => server.handleClientFinal("c=biws")).toThrow(/out of order/);
    server.handleClientFirst("n,,n=,r=abc");
    expect(() => server.handleClientFirst("n,,n=,r=abc")).toThrow(/out of order/);
    expect(() => server.handleClientFinal("x")).toThrow(ProtocolError);
    expect(() => server.handleClientFinal("x")).toThrow(/out of order/);
  });

  it("refuses a verifier with wrong key sizes", () => {
    const v = verifierFor("x", 1);
    expect(() => new ScramServer({ ...v, storedKey: Buffer.alloc(16) })).toThrow(RangeError);
    expect(() => new ScramServer({ ...v, iterations: 0 })).toThrow(RangeError);
  });
});

describe("ScramServer.mock", () => {
  const secret = Buffer.from("per-process mock secret");

  it("always fails, even for a client that guesses", () => {
    const server = ScramServer.mock("ghost", secret, 1);
    const client = new ScramClient("");
    const clientFinal = client.handleServerFirst(
      server.handleClientFirst(client.clientFirstMessage()),
    );
    expect(server.handleClientFinal(clientFinal)).toEqual({ ok: false });
  });

  it("shows a stable per-user salt, like a real role would", () => {
    const salt = (user: string) =>
      ScramServer.mock(user, secret).handleClientFirst("n,,n=,r=abc").split(",")[1];
    expect(salt("ghost")).toBe(salt("ghost"));
    expect(salt("ghost")).not.toBe(salt("phantom"));
    expect(salt("ghost")).toMatch(/^s=[A-Za-z0-9+/]{22}==$/);
    expect(
      ScramServer.mock("ghost", Buffer.from("other secret")).handleClientFirst("n,,n=,r=abc"),
    ).not.toContain(salt("ghost")!);
  });
});

describe("scramVerifier / parseScramVerifier", () => {
  it("produces PostgreSQL's format and parses back", () => {
    const salt = Buffer.from("0123456789abcdef");
    const text = scramVerifier("pencil", 4096, salt);
    expect(text).toMatch(
      /^SCRAM-SHA-256\$4096:[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=$/,
    );
    expect(text.startsWith(`${SCRAM_SHA_256}$4096:${salt.toString("base64")}$`)).toBe(true);
    const parsed = parseScramVerifier(text)!;
    expect(parsed.iterations).toBe(4096);
    expect(parsed.salt.equals(salt)).toBe(true);
    expect(parsed.storedKey).toHaveLength(32);
    expect(parsed.serverKey).toHaveLength(32);
    const [, , keys] = text.split("$");
    expect(`${parsed.storedKey.toString("base64")}:${parsed.serverKey.toString("base64")}`).toBe(
      keys,
    );
  });

  it("returns null for anything that is not a SCRAM-SHA-256 secret", () => {
    const good = PG15[0]!.secret;
    for (const bad of [
      "",
      "pencil",
      "md52aea419619857e8a27f0f7aa641db0c6",
      good.replace("SCRAM-SHA-256", "SCRAM-SHA-1"),
      good.replace("$4096:", "$0:"),
      good.replace("$4096:", "$-1:"),
      good.replace("$4096:", "$abc:"),
      good.replace("$4096:dCPH", "$4096:!CPH"),
      good.replace("$4096:dCPHyZ081SqIfpTxQwZEbw==", "$4096:"),
      good.slice(0, -4) + "AA=",
      good + "$extra",
      good.replace(":uUs0", "uUs0"),
    ]) {
      expect(parseScramVerifier(bad)).toBeNull();
    }
    expect(parseScramVerifier(good)).not.toBeNull();
  });

  it("validates its arguments", () => {
    expect(() => scramVerifier("p", 0)).toThrow(RangeError);
    expect(() => scramVerifier("p", 1.5)).toThrow(RangeError);
    expect(() => scramVerifier("p", 1, Buffer.alloc(0))).toThrow(RangeError);
  });
});

describe("saslprep", () => {
  it("passes ASCII through untouched, control characters included", () => {
    expect(saslprep("pencil")).toBe("pencil");
    expect(saslprep(" a\tb\u0007 ")).toBe(" a\tb\u0007 ");
  });

  it("maps spaces, drops mapped-to-nothing characters and applies NFKC", () => {
    expect(saslprep("a\u00a0b\u3000c")).toBe("a b c");
    expect(saslprep("I\u00adX")).toBe("IX");
    expect(saslprep("\u2168")).toBe("IX");
    expect(saslprep("ｐａｓｓ")).toBe("pass");
    expect(saslprep("e\u0301")).toBe("\u00e9");
  });

  it("falls back to the raw password when the result would be empty or prohibited", () => {
    expect(saslprep("\u00ad")).toBe("\u00ad");
    expect(saslprep("é\u0007")).toBe("é\u0007");
    expect(saslprep("é\ue000")).toBe("é\ue000");
    expect(saslprep("é\ud800")).toBe("é\ud800");
  });
});

/**
 * An independent, minimal client-final for a client that sent "y,,": the proof covers c=eSws,
 * so this checks the server binds the proof to the header the client really used.
 */
function yFlagClientFinal(password: string, clientNonce: string, serverFirst: string): string {
  const attrs = new Map(serverFirst.split(",").map((a) => [a.slice(0, 1), a.slice(2)]));
  const salt = Buffer.from(attrs.get("s")!, "base64");
  const salted = pbkdf2Sync(password, salt, Number(attrs.get("i")), 32, "sha256");
  const clientKey = createHmac("sha256", salted).update("Client Key").digest();
  const storedKey = createHash("sha256").update(clientKey).digest();
  const withoutProof = `c=eSws,r=${attrs.get("r")}`;
  const authMessage = `n=,r=${clientNonce},${serverFirst},${withoutProof}`;
  const signature = createHmac("sha256", storedKey).update(authMessage).digest();
  const proof = Buffer.from(clientKey.map((b, i) => b ^ signature[i]!));
  return `${withoutProof},p=${proof.toString("base64")}`;
}
