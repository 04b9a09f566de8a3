// Node `ws` peer of the wsloop benchmark, one process, one event loop.
//
//   node server.mjs broadcast PORT   every message to every other open client
//                                    (the broadcast loop of ws's documentation)
//   node server.mjs echo PORT        every message back to its sender
//   node server.mjs echo PORT --deflate
//                                    the same with permessage-deflate: context
//                                    takeover (ws's default), threshold 0
//
// Listens on 127.0.0.1. ws sets TCP_NODELAY on every socket.
import { WebSocketServer, WebSocket } from 'ws';

const [mode, portText, flag] = process.argv.slice(2);
const port = Number(portText);
if (!['broadcast', 'echo'].includes(mode) || !Number.isInteger(port)) {
  console.error('usage: node server.mjs broadcast|echo PORT [--deflate]');
  process.exit(2);
}
const perMessageDeflate = flag === '--deflate' ? { threshold: 0 } : false;
const server = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate });

server.on('connection', (socket) => {
  socket.on('error', (error) => console.error(`connection: ${error.message}`));
  if (mode === 'echo') {
    socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }));
    return;
  }
  socket.on('message', (data, isBinary) => {
    for (const client of server.clients) {
      if (client !== socket && client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    }
  });
});
server.on('error', (error) => {
  console.error(`server: ${error.message}`);
  process.exit(1);
});
process.on('SIGTERM', () => process.exit(0));
