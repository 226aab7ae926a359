// node-floor: the least CPU a Node.js proxy spends per transaction, for the bench's `node-floor`
// target (bench/pgbench.mjs). It is not a pooler: each client connection gets its own server
// connection, and bytes are forwarded both ways with no parsing at all, through pgwarden's own
// socket layer (dist/util/socket-io.js: reads into a reused buffer at the handle, writes straight
// to the handle). Every byte pgwarden forwards costs at least one such read and one such write, so
// this process's CPU per transaction is the floor under pgwarden's (and under any Node.js proxy
// built on the same runtime). Its TPS is not comparable with the poolers' (one PostgreSQL backend
// per client instead of a pool), its µs/txn is.
//
//   node bench/node-floor.mjs <listen port> <server host> <server port>
// prints "listening <port>" once it accepts.
import net from "node:net";
import { forward, SocketIO, takeOver } from "./floor-io.mjs";

const [listenPort, host, port] = process.argv.slice(2);
if (!SocketIO.native) console.error("node-floor: this Node.js lacks the direct socket path");

const server = net.createServer({ noDelay: true }, (client) => {
  const upstream = net.connect({ host, port: Number(port), noDelay: true });
  const close = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on("error", close).on("close", close);
  upstream.on("error", close).on("close", close);
  /** @type {SocketIO | null} */
  let serverIO = null;
  /** Client bytes read before the server connection is up. */
  const early = [];
  const clientIO = takeOver(client, (chunk) => {
    if (serverIO === null) early.push(clientIO.keep(chunk));
    else forward(clientIO, serverIO, chunk);
  });
  upstream.once("connect", () => {
    serverIO = takeOver(upstream, (chunk) => forward(serverIO, clientIO, chunk));
    for (const chunk of early.splice(0)) forward(clientIO, serverIO, chunk);
  });
});
server.listen(Number(listenPort), "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
