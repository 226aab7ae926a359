export type { AdminContext, ClientSnapshot } from "./context.js";
export { executeAdmin } from "./execute.js";
