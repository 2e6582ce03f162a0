// Open-loop load for scripts/bench-onnx-gateway.sh: POST /v1/embeddings at a
// constant arrival rate, one text per request drawn in turn from TEXTS_FILE
// (one per line), each with a deadline (X-Request-Timeout: DEADLINE_MS).
// Counts answers on time (200 within the deadline), late 200s, refusals
// (429/503/504) and other failures; `ok_ms` is the latency of the 200s and
// `batch_size` the x-infergate-batch-size they report. k6 measures from the
// intended send time of each arrival, so queueing shows in the latency.
import http from 'k6/http';
import exec from 'k6/execution';
import { Counter, Trend } from 'k6/metrics';

const URL = __ENV.TARGET_URL;
const RATE = Number(__ENV.RATE);
const DURATION = __ENV.DURATION || '20s';
const DEADLINE_MS = Number(__ENV.DEADLINE_MS || 1000);
const MODEL = __ENV.MODEL || 'minilm';
const KEY = __ENV.API_KEY || 'sk-infergate-test';
const TEXTS = open(__ENV.TEXTS_FILE).split('\n').filter((l) => l.length > 0);

const onTime = new Counter('on_time');
const late = new Counter('late');
const refused = new Counter('refused');
const failed = new Counter('failed');
const okMs = new Trend('ok_ms', true);
const batchSize = new Trend('batch_size');

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'med', 'p(99)'],
  scenarios: {
    embeddings: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: Math.ceil(RATE / 2),
      maxVUs: Math.ceil(RATE * 4),
    },
  },
};

export default function () {
  const text = TEXTS[exec.scenario.iterationInTest % TEXTS.length];
  const res = http.post(URL, JSON.stringify({ model: MODEL, input: text }), {
    headers: {
      Authorization: `Bearer ${KEY}`,
      'Content-Type': 'application/json',
      'X-Request-Timeout': `${DEADLINE_MS}ms`,
    },
    timeout: '30s',
  });
  if (res.status === 200) {
    okMs.add(res.timings.duration);
    batchSize.add(Number(res.headers['X-Infergate-Batch-Size'] || 0));
    (res.timings.duration <= DEADLINE_MS ? onTime : late).add(1);
  } else if (res.status === 429 || res.status === 503 || res.status === 504) {
    refused.add(1);
  } else {
    failed.add(1);
  }
}
