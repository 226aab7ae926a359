// Small helpers shared by the integration tests.
import net from "node:net";
import pg from "pg";
import { cancelRequest } from "../src/protocol/index.js";
import type { Pgwarden } from "./harness/pgwarden.js";

export async function connect(
  pw: { host: string; port: number },
  user: string,
  password: string | undefined,
  database: string,
  extra: Partial<pg.ClientConfig> = {},
): Promise<pg.Client> {
  const client = new pg.Client({
    host: pw.host,
    port: pw.port,
    user,
    password,
    database,
    ...extra,
  });
  client.on("error", () => {});
  await client.connect();
  return client;
}

/** Connects and returns the error the pooler sends, or throws if the login succeeded. */
export async function loginError(
  pw: { host: string; port: number },
  user: string,
  password: string | undefined,
  database: string,
  extra: Partial<pg.ClientConfig> = {},
): Promise<{ code: string; message: string; severity: string }> {
  const client = new pg.Client({
    host: pw.host,
    port: pw.port,
    user,
    password,
    database,
    ...extra,
  });
  client.on("error", () => {});
  try {
    await client.connect();
  } catch (err) {
    const e = err as { code?: string; message: string; severity?: string };
    return { code: e.code ?? "", message: e.message, severity: e.severity ?? "" };
  }
  await client.end();
  throw new Error("login unexpectedly succeeded");
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `fn` until it returns true or `timeoutMs` passes (then fails with `what`). */
export async function eventually(
  fn: () => Promise<boolean> | boolean,
  what: string,
  timeoutMs = 15000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await sleep(100);
  }
}

/** Sends raw bytes on a fresh TCP connection and collects what comes back until close or timeout. */
export function rawExchange(
  pw: { host: string; port: number },
  payload: Buffer,
  waitMs = 2000,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = net.connect({ host: pw.host, port: pw.port }, () => s.write(payload));
    const timer = setTimeout(() => {
      s.destroy();
      resolve(Buffer.concat(chunks));
    }, waitMs);
    s.on("data", (c) => chunks.push(c));
    s.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.on("close", () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
  });
}

export function logLines(pw: Pgwarden): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of pw.logs()) {
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // not a JSON line (stderr text)
    }
  }
  return out;
}

/**
 * A client running `select pg_sleep(seconds)`, with the cancel key pgwarden gave it: `outcome`
 * is the query's SQLSTATE if it failed (57014 when cancelled), else "done".
 */
export async function sleepingClient(
  pw: { host: string; port: number },
  user: string,
  password: string,
  database: string,
  seconds: number,
): Promise<{ client: pg.Client; processID: number; secretKey: number; outcome: Promise<string> }> {
  const client = await connect(pw, user, password, database);
  // biome-ignore lint/suspicious/noExplicitAny: node-pg internals carry the key
  const { processID, secretKey } = client as any as { processID: number; secretKey: number };
  const outcome = client.query(`select pg_sleep(${seconds})`).then(
    () => "done",
    (e: { code: string }) => e.code,
  );
  return { client, processID, secretKey, outcome };
}

/** Sends a CancelRequest for this key on a new connection, as libpq does. */
export function sendCancel(
  pw: { host: string; port: number },
  processID: number,
  secretKey: number,
  waitMs = 300,
): Promise<Buffer> {
  return rawExchange(pw, cancelRequest(processID | 0, secretKey | 0), waitMs);
}
