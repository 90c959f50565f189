// Open-model load of small json requests over CONNECTIONS persistent WebSockets, for bench/vs_k6.py.
//
// An iteration that holds a WebSocket cannot end while the socket is open, so the scenario runs one
// iteration per connection (per-vu-iterations: CONNECTIONS VUs, one iteration each), and each iteration
// keeps RATE / CONNECTIONS messages per second in flight on its connection:
// a 1 ms timer sends every message whose due time (start + i / RATE_PER) has come, so the rate does not
// drift. k6/experimental/websockets is used because its global event loop lets one VU keep many
// messages in flight; k6/ws blocks the VU in a local loop.
//
// Answers are matched by parameters.<CORRELATION_KEY>, which the gateway echoes. k6 has no
// sub-millisecond clock (no performance.now(); Date.now() counts whole ms), so latencies are whole ms.
//
// Environment: TARGET (ws://127.0.0.1:PORT), RATE (messages/s in all), CONNECTIONS (default 1), DURATION_S,
// FRAME_PREFIX and FRAME_SUFFIX (the request frame around the id), CORRELATION_KEY, ID_WIDTH, GRACE_MS,
// SUMMARY_PATH.
import { WebSocket } from 'k6/experimental/websockets';
import { Counter, Trend } from 'k6/metrics';

const TARGET = __ENV.TARGET;
const RATE = Number(__ENV.RATE);
const DURATION_S = Number(__ENV.DURATION_S);
const PREFIX = __ENV.FRAME_PREFIX;
const SUFFIX = __ENV.FRAME_SUFFIX;
const KEY = __ENV.CORRELATION_KEY || 'flowrelay_rid';
const ID_WIDTH = Number(__ENV.ID_WIDTH || 24);
const GRACE_MS = Number(__ENV.GRACE_MS || 5000);
const CONNECTIONS = Number(__ENV.CONNECTIONS || 1);
const RATE_PER = RATE / CONNECTIONS; // each connection's share
const TOTAL = Math.round(RATE_PER * DURATION_S);

const rtt = new Trend('msg_rtt', true); // answer - send
const rttFromDue = new Trend('msg_rtt_from_due', true); // answer - due time
const sent = new Counter('msgs_sent');
const answered = new Counter('msgs_answered');
const unanswered = new Counter('msgs_unanswered');

export const options = {
  scenarios: {
    open: {
      executor: 'per-vu-iterations',
      vus: CONNECTIONS,
      iterations: 1,
      maxDuration: `${DURATION_S + Math.ceil(GRACE_MS / 1000) + 60}s`,
    },
  },
  summaryTrendStats: ['med', 'p(90)', 'p(99)', 'avg', 'max', 'count'],
};

export default function () {
  const ws = new WebSocket(TARGET, 'json');
  const pending = new Map();
  let seq = 0;
  let t0 = 0;
  let ticker = null;
  let closer = null;

  function finish() {
    if (closer !== null) clearTimeout(closer);
    unanswered.add(pending.size);
    pending.clear();
    ws.close();
  }

  ws.onopen = () => {
    t0 = Date.now();
    ticker = setInterval(() => {
      const now = Date.now();
      const due = Math.min(TOTAL, Math.floor(((now - t0) * RATE_PER) / 1000) + 1);
      const before = seq;
      while (seq < due) {
        const rid = String((__VU - 1) * 1000000000 + seq).padStart(ID_WIDTH, '0'); // unique across connections
        pending.set(rid, [now, t0 + (seq * 1000) / RATE_PER]);
        ws.send(PREFIX + rid + SUFFIX);
        seq += 1;
      }
      if (seq > before) sent.add(seq - before);
      if (seq >= TOTAL) {
        clearInterval(ticker);
        if (pending.size === 0) finish();
        else closer = setTimeout(finish, GRACE_MS);
      }
    }, 1);
  };

  ws.onmessage = (event) => {
    const now = Date.now();
    const rid = JSON.parse(event.data).parameters[KEY];
    const entry = pending.get(rid);
    if (entry === undefined) return;
    pending.delete(rid);
    rtt.add(now - entry[0]);
    rttFromDue.add(now - entry[1]);
    answered.add(1);
    if (seq >= TOTAL && pending.size === 0) finish();
  };

  ws.onerror = (event) => {
    console.error(`websocket error: ${event.error}`);
  };
}

export function handleSummary(data) {
  return { [__ENV.SUMMARY_PATH]: JSON.stringify(data) };
}
