export * from "./constants.js";
export * from "./framer.js";
export * from "./md5.js";
export * from "./reader.js";
export * from "./scram.js";
export * from "./writer.js";
