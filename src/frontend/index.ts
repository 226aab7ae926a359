export { Frontend } from "./frontend.js";
export type { ListenAddress } from "./frontend.js";
export { ClientSession } from "./client-session.js";
export type { FrontendContext } from "./client-session.js";
