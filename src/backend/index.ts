export type { ServerOptions, ServerSink, TlsMode } from "./server-connection.js";
export { pgErrorFrom, ServerConnection } from "./server-connection.js";
