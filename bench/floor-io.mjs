// What bench/node-floor.mjs and bench/node-floor-pool.mjs share: pgwarden's own socket layer
// (dist/util/socket-io.js: reads into a reused buffer at the handle, writes straight to the
// handle), taken over the way pgwarden takes over a socket after login, and its flow control.
import { SocketIO } from "../dist/util/socket-io.js";

export { SocketIO };

/** Hands `socket` to SocketIO once it flows with nothing buffered (as pgwarden does after login). */
export function takeOver(socket, onChunk) {
  const noop = () => {};
  socket.on("data", noop);
  socket.removeListener("data", noop);
  return new SocketIO(socket, onChunk);
}

/** Flow control as pgwarden's: a reader pauses while its peer holds writes libuv could not finish. */
export function forward(from, to, chunk) {
  if (!to.write(chunk)) {
    from.pause();
    to.onceDrain(() => from.resume());
  }
}
