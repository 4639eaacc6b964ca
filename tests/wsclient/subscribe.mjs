// Subscribes to one GraphQL operation with the npm graphql-ws client (graphql-transport-ws)
// and prints what happens as JSON lines on stdout, for tests/test_subscriptions_node.py:
//   {"event":"connected"}  {"event":"next","payload":{...}}  {"event":"error","error":...}
//   {"event":"complete"}   {"event":"closed","code":4401,"reason":"Unauthorized"}
// Exits 0 once the socket has closed after the subscription ended, 2 after TIMEOUT_MS.
// Environment: WS_URL, QUERY, TOKEN (sent in connection_init as authorization: Bearer ...).
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const { WS_URL, QUERY, TOKEN } = process.env;
const TIMEOUT_MS = Number(process.env.TIMEOUT_MS || 20000);

const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
let ended = false;
let closed = false;
const finish = () => {
  if (ended && closed) process.exit(0);
};

const client = createClient({
  url: WS_URL,
  webSocketImpl: WebSocket,
  connectionParams: { authorization: `Bearer ${TOKEN}` },
  retryAttempts: 0,
  // Not lazy: the client must not close the socket itself when the subscription completes,
  // so the close code seen is the server's.
  lazy: false,
  onNonLazyError: () => {},
  on: {
    connected: () => print({ event: 'connected' }),
    closed: (event) => {
      print({ event: 'closed', code: event.code, reason: event.reason });
      closed = true;
      finish();
    },
  },
});

client.subscribe(
  { query: QUERY },
  {
    next: (payload) => print({ event: 'next', payload }),
    error: (error) => {
      const code = error && typeof error.code === 'number' ? error.code : undefined;
      print({ event: 'error', code, error: String(error && (error.message || error.reason || error)) });
      ended = true;
      finish();
    },
    complete: () => {
      print({ event: 'complete' });
      ended = true;
      finish();
    },
  },
);

setTimeout(() => {
  print({ event: 'timeout' });
  process.exit(2);
}, TIMEOUT_MS).unref();
