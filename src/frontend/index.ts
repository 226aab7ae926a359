export type { FrontendContext } from "./client-session.js";
export { ClientSession } from "./client-session.js";
export type { ClientView, ListenAddress } from "./frontend.js";
export { Frontend } from "./frontend.js";
