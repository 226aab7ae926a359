// Import direction of design §1: each folder imports only the folders below it,
// and only through their index.ts. `lib` (the library entry point, `import … from "pgwarden"`)
// is a second top: nothing imports it, and it reaches only the credential engine and what that
// needs (credentials, config, util), never the proxy's layers.
// cluster (workers > 1, design §6) sits right under cli: it wires processes around the layers
// below it (credentials host, admin over IPC, metrics aggregation) and nothing below imports it.
const order = ["cli", "lib", "cluster", "admin", "metrics", "frontend", "pool", "backend", "credentials", "config", "protocol", "util"];
const extraForbidden = {
  lib: ["cluster", "admin", "metrics", "frontend", "pool", "backend", "protocol"],
  admin: ["frontend", "backend"],
  frontend: ["backend", "credentials"],
  pool: ["frontend", "admin", "metrics"],
  backend: ["pool", "frontend", "admin"],
  credentials: ["pool", "backend", "frontend", "protocol"],
  config: ["cli", "admin", "metrics", "frontend", "pool", "backend", "credentials", "protocol"],
  protocol: ["cli", "admin", "metrics", "frontend", "pool", "backend", "credentials", "config"],
};
const forbidden = [];
order.forEach((folder, i) => {
  const above = order.slice(0, i);
  const banned = [...new Set([...above, ...(extraForbidden[folder] ?? [])])];
  if (banned.length > 0) {
    forbidden.push({
      name: `${folder}-imports-upward`,
      comment: `src/${folder} may not import ${banned.join(", ")} (design §1)`,
      severity: "error",
      from: { path: `^src/${folder}/` },
      to: { path: `^src/(${banned.join("|")})/` },
    });
  }
  forbidden.push({
    name: `${folder}-through-index`,
    comment: `other folders import src/${folder} only through its index.ts`,
    severity: "error",
    from: { path: "^src/", pathNot: `^src/${folder}/` },
    to: { path: `^src/${folder}/`, pathNot: `^src/${folder}/index\\.ts$` },
  });
});
forbidden.push({
  name: "protocol-no-sockets",
  comment: "src/protocol stays free of node:net and node:tls (design §1)",
  severity: "error",
  from: { path: "^src/protocol/" },
  to: { path: "^(node:)?(net|tls)$", dependencyTypes: ["core"] },
});
forbidden.push({ name: "no-circular", severity: "error", from: {}, to: { circular: true } });
module.exports = {
  forbidden,
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    exclude: { path: "\\.test\\.ts$" },
  },
};
