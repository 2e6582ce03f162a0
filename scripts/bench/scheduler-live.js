// Open-loop load for scripts/bench-scheduler-live.sh: constant arrival rate,
// half from an interactive tenant (deadline DEADLINE_MS), half from a batch
// tenant (deadline ×10), each request carrying its deadline in
// X-Request-Timeout. Counts goodput (200 within the deadline), late answers
// and rejections; k6 measures from the intended send time of each arrival.
import http from 'k6/http';
import { Counter } from 'k6/metrics';

const URL = __ENV.TARGET_URL;
const RATE = Number(__ENV.RATE);
const DURATION = __ENV.DURATION || '20s';
const DEADLINE_MS = Number(__ENV.DEADLINE_MS || 200);
const BODY = JSON.stringify({ model: 'embed', input: 'the quick brown fox jumps over the lazy dog again' });

const good = new Counter('good');
const late = new Counter('late');
const rejected = new Counter('rejected');
const failed = new Counter('failed');

function scenario(exec) {
  return {
    executor: 'constant-arrival-rate',
    rate: Math.round(RATE / 2),
    timeUnit: '1s',
    duration: DURATION,
    preAllocatedVUs: Math.ceil(RATE),
    maxVUs: Math.ceil(RATE * 4),
    exec,
  };
}

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['med', 'p(99)'],
  scenarios: { interactive: scenario('interactive'), bulk: scenario('bulk') },
};

function call(key, deadlineMs) {
  const res = http.post(URL, BODY, {
    headers: {
      Authorization: `Bearer ${key}`,
      'Content-Type': 'application/json',
      'X-Request-Timeout': `${deadlineMs}ms`,
    },
    timeout: '30s',
  });
  if (res.status === 200) {
    (res.timings.duration <= deadlineMs ? good : late).add(1);
  } else if (res.status === 503 || res.status === 429 || res.status === 504) {
    rejected.add(1);
  } else {
    failed.add(1);
  }
}

export function interactive() {
  call('sk-infergate-test', DEADLINE_MS);
}

export function bulk() {
  call('sk-infergate-batch', DEADLINE_MS * 10);
}
