export { setMockSecret } from "./client-auth.js";
export type { FrontendContext } from "./client-session.js";
export { ClientSession } from "./client-session.js";
export type { CancelRouting, ClientView, ListenAddress } from "./frontend.js";
export { CANCEL_WORKER_BITS, cancelKeyWorker, Frontend, workerPid } from "./frontend.js";
export type { PreparedStats } from "./prepared-statements.js";
export { StatementRegistry } from "./prepared-statements.js";
