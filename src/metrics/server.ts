// The scrape endpoint: a bare node:http server, since it serves one path and a framework would
// be a dependency for nothing. Each GET /metrics renders the registry, whose collectors read the
// snapshots at that moment (see registry.ts).
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import { errorMessage, type Logger } from "../util/index.js";

export interface MetricsServerOptions {
  readonly host: string;
  /** 0 picks a free port; the one chosen is returned. */
  readonly port: number;
  /** A prom-client Registry, or anything that renders like one (the cluster aggregate). */
  readonly registry: Pick<Registry, "metrics" | "contentType">;
  readonly logger: Logger;
}

export interface MetricsServer {
  readonly port: number;
  /** Stops listening and resolves once open scrapes are answered. */
  close(): Promise<void>;
}

export function startMetricsServer(opts: MetricsServerOptions): Promise<MetricsServer> {
  const { registry, logger } = opts;

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    // the path only: Prometheus may add query parameters (e.g. from `params` in a scrape config)
    const path = (req.url ?? "/").split("?", 1)[0];
    if (path !== "/metrics") {
      reply(res, 404, "text/plain; charset=utf-8", "not found\n");
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("Allow", "GET, HEAD");
      reply(res, 405, "text/plain; charset=utf-8", "method not allowed\n");
      return;
    }
    try {
      const body = await registry.metrics();
      reply(res, 200, registry.contentType, req.method === "HEAD" ? null : body);
    } catch (err) {
      // a collector threw: say so to the scraper (Prometheus marks the target down) and log it
      logger.error({ err: errorMessage(err) }, "metrics scrape failed");
      reply(res, 500, "text/plain; charset=utf-8", "metrics collection failed\n");
    }
  };

  const server = createServer((req, res) => {
    void handle(req, res);
  });

  return new Promise((resolve, reject) => {
    const onListenError = (err: Error) => reject(err);
    server.once("error", onListenError);
    server.listen(opts.port, opts.host, () => {
      server.off("error", onListenError);
      // after startup an error (e.g. EMFILE on accept) must not crash the pooler: log it
      server.on("error", (err) => logger.error({ err: errorMessage(err) }, "metrics server error"));
      const port = (server.address() as AddressInfo).port;
      logger.info({ host: opts.host, port }, "metrics listening on /metrics");
      resolve({
        port,
        close: () =>
          new Promise<void>((done, fail) => {
            server.close((err) => (err ? fail(err) : done()));
            // keep-alive scrapers hold idle connections that would otherwise delay close()
            server.closeIdleConnections();
          }),
      });
    });
  });
}

function reply(res: ServerResponse, status: number, type: string, body: string | null): void {
  res.statusCode = status;
  res.setHeader("Content-Type", type);
  if (body !== null) res.setHeader("Content-Length", Buffer.byteLength(body));
  res.end(body ?? undefined);
}
