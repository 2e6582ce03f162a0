// Open-loop soak for scripts/bench-soak.sh: scheduler-live.js's traffic
// (constant arrival rate, half interactive with deadline DEADLINE_MS, half
// batch with ×10) with what a soak needs apart: goodput per tenant, the
// time to answer a refusal (503) and every status outside 200/503.
import http from 'k6/http';
import { Counter, Trend } from 'k6/metrics';

const URL = __ENV.TARGET_URL;
const RATE = Number(__ENV.RATE);
const DURATION = __ENV.DURATION || '60s';
const DEADLINE_MS = Number(__ENV.DEADLINE_MS || 200);
const BODY = JSON.stringify({ model: 'embed', input: 'the quick brown fox jumps over the lazy dog again' });

const good = { interactive: new Counter('good_interactive'), bulk: new Counter('good_bulk') };
const late = new Counter('late');
const refused = new Counter('refused');
const other = new Counter('other_status');
const otherServer = new Counter('other_5xx');
const refusalMs = new Trend('refusal_ms', true);
// The statuses a soak must not see, apart: the deadline's 504, no answer at all (0), other 5xx.
const timedOut = new Counter('status_504');
const noAnswer = new Counter('status_0');

function scenario(exec) {
  return {
    executor: 'constant-arrival-rate',
    rate: Math.round(RATE / 2),
    timeUnit: '1s',
    duration: DURATION,
    preAllocatedVUs: Math.ceil(RATE / 8),
    maxVUs: Math.ceil(RATE),
    exec,
  };
}

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['med', 'p(99)', 'max'],
  scenarios: { interactive: scenario('interactive'), bulk: scenario('bulk') },
};

function call(tenant, key, deadlineMs) {
  const res = http.post(URL, BODY, {
    headers: {
      Authorization: `Bearer ${key}`,
      'Content-Type': 'application/json',
      'X-Request-Timeout': `${deadlineMs}ms`,
    },
    timeout: '30s',
  });
  if (res.status === 200) {
    if (res.timings.duration <= deadlineMs) good[tenant].add(1);
    else late.add(1);
  } else if (res.status === 503) {
    refused.add(1);
    refusalMs.add(res.timings.duration);
  } else {
    other.add(1);
    if (res.status >= 500 || res.status === 0) otherServer.add(1);
    if (res.status === 504) timedOut.add(1);
    if (res.status === 0) noAnswer.add(1);
  }
}

export function interactive() {
  call('interactive', 'sk-infergate-test', DEADLINE_MS);
}

export function bulk() {
  call('bulk', 'sk-infergate-batch', DEADLINE_MS * 10);
}
