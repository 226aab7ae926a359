export { ServerConnection, pgErrorFrom } from "./server-connection.js";
export type { ServerOptions, ServerSink, TlsMode } from "./server-connection.js";
