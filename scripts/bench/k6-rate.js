// k6 open-loop GET for scripts/bench-generators.sh: RATE requests/s to URL for
// DURATION (constant-arrival-rate), bodies discarded.
import http from 'k6/http';
export const options = {
  discardResponseBodies: true,
  scenarios: { load: { executor: 'constant-arrival-rate', rate: Number(__ENV.RATE), timeUnit: '1s',
                       duration: __ENV.DURATION, preAllocatedVUs: 200, maxVUs: 2000 } },
  summaryTrendStats: ['med', 'p(99)'],
};
export default function () { http.get(__ENV.URL); }
