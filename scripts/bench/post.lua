-- wrk script: POST the same JSON body with the same headers to every target,
-- then print one machine-readable result line (parsed by bench-embeddings.sh).
-- Environment: BENCH_BODY_FILE (request body), BENCH_API_KEY (bearer token);
-- with BENCH_NONCE set, every `{n}` in the body becomes a number no other
-- request of any run has sent (the nonce and a counter), so that each request
-- is new to a response cache.
local f = assert(io.open(assert(os.getenv("BENCH_BODY_FILE"), "BENCH_BODY_FILE not set"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_API_KEY") or "sk-infergate-test")

local nonce = os.getenv("BENCH_NONCE")
if nonce then
  local template, n = wrk.body, 0
  function request()
    n = n + 1
    return wrk.format(nil, nil, nil, (template:gsub("{n}", nonce .. "-" .. n)))
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d bytes=%d p50_us=%d p99_us=%d mean_us=%.1f " ..
    "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
