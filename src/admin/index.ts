export type { AdminContext, ClientSnapshot, PreparedSnapshot } from "./context.js";
export { executeAdmin } from "./execute.js";
