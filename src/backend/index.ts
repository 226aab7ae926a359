export type {
  ReplyFilter,
  ServerAttachment,
  ServerOptions,
  ServerOwner,
  ServerSink,
  TlsMode,
} from "./server-connection.js";
export { pgErrorFrom, REPLY_FILTER_TYPES, ServerConnection } from "./server-connection.js";
