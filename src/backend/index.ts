export type { ServerOptions, ServerOwner, ServerSink, TlsMode } from "./server-connection.js";
export { pgErrorFrom, ServerConnection } from "./server-connection.js";
