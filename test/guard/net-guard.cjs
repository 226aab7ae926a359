// Network guard for tests (design §4 "Network guards"). Loaded in the vitest workers (as a setup
// file) and in every child pgwarden process (NODE_OPTIONS=--require <this file>), it wraps
// net.Socket.prototype.connect (which net.connect, tls.connect, http, undici/fetch and every SDK
// end up in), dns.lookup and dns.promises.lookup. A target other than loopback (127.0.0.0/8,
// ::1, "localhost") or a unix socket is refused at once: the socket is destroyed with an error
// naming the target (asynchronously, as a real connect error would be), the lookup fails with
// such an error. Each refusal is appended as one JSON line to the file named by
// PGWARDEN_NET_GUARD_LOG (read at refusal time), and the test run fails if that file has lines.
// A hostname other than localhost is refused even if it would resolve to loopback: the guard
// decides on what the code asked for, never on what a resolver says.
"use strict";

const net = require("node:net");
const dns = require("node:dns");
const fs = require("node:fs");

const INSTALLED = Symbol.for("pgwarden.netGuard.installed");

/** A closed loopback port (tcpmux): where the guard env points cloud endpoints. */
const CLOSED_LOOPBACK = "127.0.0.1:1";

function isLoopbackHost(host) {
  if (typeof host !== "string") return false;
  let h = host.trim().toLowerCase();
  if (h.startsWith("[") && h.endsWith("]")) h = h.slice(1, -1);
  if (h.endsWith(".")) h = h.slice(0, -1);
  if (h === "localhost") return true;
  const zone = h.indexOf("%");
  if (zone >= 0) h = h.slice(0, zone);
  if (h.startsWith("::ffff:")) {
    const v4 = h.slice(7);
    if (net.isIPv4(v4)) h = v4;
  }
  if (net.isIPv4(h)) return h.split(".")[0] === "127";
  if (net.isIPv6(h)) {
    // ::1 in any spelling
    const parts = h.split("::");
    if (h === "::1") return true;
    if (parts.length === 2) {
      const head = parts[0] ? parts[0].split(":") : [];
      const tail = parts[1] ? parts[1].split(":") : [];
      const all = [...head, ...tail];
      const last = all.pop();
      return all.every((g) => /^0+$/.test(g)) && last !== undefined && /^0*1$/.test(last);
    }
    const groups = h.split(":");
    return (
      groups.length === 8 &&
      groups.slice(0, 7).every((g) => /^0+$/.test(g)) &&
      /^0*1$/.test(groups[7])
    );
  }
  return false;
}

function shortStack() {
  const lines = (new Error().stack || "").split("\n").slice(3, 9);
  return lines.map((l) => l.trim()).join(" | ");
}

function record(kind, target) {
  const file = process.env.PGWARDEN_NET_GUARD_LOG;
  if (!file) return;
  const line = JSON.stringify({
    time: new Date().toISOString(),
    pid: process.pid,
    argv: process.argv.slice(1, 3).join(" "),
    kind,
    target,
    stack: shortStack(),
  });
  try {
    fs.appendFileSync(file, `${line}\n`);
  } catch {
    // the log is a report, never a reason to crash the process under test
  }
}

function refusal(kind, target) {
  record(kind, target);
  const err = new Error(
    `pgwarden test network guard: refused ${kind} to ${target} (only loopback and unix sockets are allowed in tests)`,
  );
  err.code = "ENETGUARD";
  err.target = target;
  return err;
}

/** What a connect() call asks for: { path } for unix sockets, else { host, port }, or null. */
function connectTarget(args) {
  let first = args[0];
  // net.connect() passes the normalized [options, cb] array
  if (Array.isArray(first)) first = first[0];
  if (first === null || first === undefined) return null;
  if (typeof first === "object") {
    if (first.path !== undefined && first.path !== null) return { path: String(first.path) };
    if (first.fd !== undefined) return null; // an existing descriptor: nothing is dialled
    return {
      host: first.host === undefined || first.host === null ? "localhost" : String(first.host),
      port: first.port,
    };
  }
  if (typeof first === "string" && !/^\d+$/.test(first)) return { path: first };
  const host = typeof args[1] === "string" ? args[1] : "localhost";
  return { host, port: first };
}

function install() {
  if (globalThis[INSTALLED]) return;
  globalThis[INSTALLED] = true;

  const origConnect = net.Socket.prototype.connect;
  net.Socket.prototype.connect = function guardedConnect(...args) {
    const t = connectTarget(args);
    if (t && t.host !== undefined && !isLoopbackHost(t.host)) {
      const err = refusal("connect", `${t.host}:${t.port}`);
      process.nextTick(() => this.destroy(err));
      return this;
    }
    return origConnect.apply(this, args);
  };

  const origLookup = dns.lookup;
  const guardedLookup = function lookup(hostname, ...rest) {
    const cb = rest[rest.length - 1];
    if (hostname && !isLoopbackHost(hostname)) {
      const err = refusal("dns.lookup", String(hostname));
      if (typeof cb === "function") process.nextTick(() => cb(err));
      else throw err;
      return {};
    }
    return origLookup.call(this, hostname, ...rest);
  };
  Object.defineProperty(guardedLookup, "name", { value: "lookup" });
  dns.lookup = guardedLookup;

  if (dns.promises && typeof dns.promises.lookup === "function") {
    const origPromiseLookup = dns.promises.lookup;
    dns.promises.lookup = function lookup(hostname, ...rest) {
      if (hostname && !isLoopbackHost(hostname)) {
        return Promise.reject(refusal("dns.promises.lookup", String(hostname)));
      }
      return origPromiseLookup.call(this, hostname, ...rest);
    };
  }
}

/** Variables that must not reach a process under test (proxies, real cloud identities). */
const UNSET_VARS = [
  "HTTP_PROXY",
  "HTTPS_PROXY",
  "ALL_PROXY",
  "NO_PROXY",
  "http_proxy",
  "https_proxy",
  "all_proxy",
  "no_proxy",
  "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
  "AWS_CONTAINER_CREDENTIALS_FULL_URI",
  "AWS_CONTAINER_AUTHORIZATION_TOKEN",
  "AWS_SESSION_TOKEN",
  "AWS_PROFILE",
  "AWS_ROLE_ARN",
  "AWS_WEB_IDENTITY_TOKEN_FILE",
  "AWS_ENDPOINT_URL",
  "AZURE_CLIENT_ID",
  "AZURE_TENANT_ID",
  "AZURE_CLIENT_SECRET",
  "AZURE_FEDERATED_TOKEN_FILE",
  "MSI_ENDPOINT",
  "MSI_SECRET",
  "IMDS_ENDPOINT",
  "IDENTITY_SERVER_THUMBPRINT",
  "GOOGLE_APPLICATION_CREDENTIALS",
  "VAULT_ADDR",
  "VAULT_TOKEN",
];

/** Variables that point every SDK at loopback or at nothing (see design §4 "Network guards"). */
function guardEnv() {
  const env = {
    AWS_EC2_METADATA_DISABLED: "true",
    AWS_ACCESS_KEY_ID: "AKIDPGWARDENTESTONLY",
    AWS_SECRET_ACCESS_KEY: "pgwarden-test-dummy-secret",
    AWS_REGION: "us-east-1",
    AWS_CONFIG_FILE: "/nonexistent/pgwarden-test/aws-config",
    AWS_SHARED_CREDENTIALS_FILE: "/nonexistent/pgwarden-test/aws-credentials",
    AZURE_AUTHORITY_HOST: `https://${CLOSED_LOOPBACK}`,
    IDENTITY_ENDPOINT: `http://${CLOSED_LOOPBACK}/msi/token`,
    IDENTITY_HEADER: "pgwarden-test",
    GCE_METADATA_HOST: CLOSED_LOOPBACK,
    GCE_METADATA_IP: CLOSED_LOOPBACK,
    METADATA_SERVER_DETECTION: "none",
    GOOGLE_CLOUD_PROJECT: "pgwarden-test",
    CLOUDSDK_CONFIG: "/nonexistent/pgwarden-test/gcloud",
  };
  if (process.env.PGWARDEN_NET_GUARD_LOG)
    env.PGWARDEN_NET_GUARD_LOG = process.env.PGWARDEN_NET_GUARD_LOG;
  return env;
}

/** Applies the guard variables to `env` in place (unsets UNSET_VARS first) and returns it. */
function applyGuardEnv(env) {
  for (const k of UNSET_VARS) delete env[k];
  Object.assign(env, guardEnv());
  return env;
}

install();

module.exports = {
  guardEnv,
  applyGuardEnv,
  isLoopbackHost,
  UNSET_VARS,
  CLOSED_LOOPBACK,
  guardFile: __filename,
};
