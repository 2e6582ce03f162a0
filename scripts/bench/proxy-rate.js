// k6 open-loop load for scripts/bench-proxy.sh: RATE requests/s of the same POST
// (BODY file) to URL for 8 s, no coordinated omission (constant-arrival-rate).
import http from 'k6/http';
const body = open(__ENV.BODY);
export const options = {
  discardResponseBodies: true,
  scenarios: { load: { executor: 'constant-arrival-rate', rate: Number(__ENV.RATE), timeUnit: '1s', duration: '8s', preAllocatedVUs: 200, maxVUs: 400 } },
  summaryTrendStats: ['med', 'p(99)', 'max'],
};
export default function () {
  http.post(__ENV.URL, body, { headers: { 'Content-Type': 'application/json', 'Authorization': 'Bearer sk-infergate-test' } });
}
