export type { FrontendContext } from "./client-session.js";
export { ClientSession } from "./client-session.js";
export type { ClientView, ListenAddress } from "./frontend.js";
export { Frontend } from "./frontend.js";
export type { PreparedStats } from "./prepared-statements.js";
export { StatementRegistry } from "./prepared-statements.js";
