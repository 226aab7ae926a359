// Ports and the watchdog of the demo.
//
// The demo starts PostgreSQL and pgwarden in their own process groups, so that Ctrl-C reaches
// only the demo, which then stops them in order (pgwarden first, so that it drains its clients
// while the server is still up). Its signal handlers cover SIGINT and SIGTERM; the watchdog
// covers the rest: a detached `sh` whose stdin is a pipe from the demo. The demo tells it each
// child ("SIGNAL PID" lines) and finally "done"; when the pipe closes without "done" (the demo
// was SIGKILLed or crashed), it signals each child, SIGKILLs what is still there after 10 s and
// removes the demo's directory.

import { type ChildProcess, spawn } from "node:child_process";
import net from "node:net";
import { freePort } from "../test/harness/util.js";

/** `preferred` when it can be bound on 127.0.0.1 right now, else a free port; 0 = any. */
export function portOr(preferred: number): Promise<number> {
  if (preferred === 0) return freePort();
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once("error", () => resolve(freePort()));
    srv.listen({ host: "127.0.0.1", port: preferred, exclusive: true }, () => {
      srv.close(() => resolve(preferred));
    });
  });
}

const SCRIPT = `
trap '' INT HUP TERM
list=""
while IFS= read -r line; do
  case "$line" in
    done) exit 0 ;;
    *) list="$list $(echo "$line" | tr ' ' ':')" ;;
  esac
done
for e in $list; do kill -"\${e%%:*}" "\${e#*:}" 2>/dev/null; done
i=0
while [ $i -lt 100 ]; do
  alive=0
  for e in $list; do kill -0 "\${e#*:}" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break
  sleep 0.1
  i=$((i+1))
done
for e in $list; do kill -KILL "\${e#*:}" 2>/dev/null; done
if [ -n "$1" ]; then rm -rf "$1"; fi
`;

export interface Watchdog {
  pid: number | undefined;
  /** The watchdog ends `pid` with `signal` if the demo dies first. */
  watch(pid: number | undefined, signal: "INT" | "TERM" | "QUIT" | "KILL"): void;
  /** Everything is stopped: the watchdog exits without touching anything. */
  release(): Promise<void>;
}

export function startWatchdog(dir: string): Watchdog {
  const proc: ChildProcess = spawn("/bin/sh", ["-c", SCRIPT, "pgwarden-demo-watchdog", dir], {
    stdio: ["pipe", "ignore", "ignore"],
    detached: true,
  });
  proc.on("error", () => {});
  proc.stdin?.on("error", () => {});
  proc.unref();
  // the pipe must not keep the demo alive on its own
  (proc.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  const exited = new Promise<void>((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) resolve();
    proc.once("exit", () => resolve());
    proc.once("error", () => resolve());
  });
  return {
    pid: proc.pid,
    watch(pid, signal) {
      if (pid !== undefined) proc.stdin?.write(`${signal} ${pid}\n`);
    },
    async release() {
      proc.stdin?.end("done\n");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 2000);
      await exited;
      clearTimeout(timer);
    },
  };
}
