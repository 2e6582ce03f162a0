-- wrk script: POST a JSON body in which every `{n}` becomes a number no other
-- request of any run has sent (BENCH_NONCE, set per run, and a counter), so
-- that each request is new to a response cache; then one result line as
-- post.lua prints it. Environment: BENCH_BODY_FILE, BENCH_API_KEY, BENCH_NONCE.
local f = assert(io.open(assert(os.getenv("BENCH_BODY_FILE"), "BENCH_BODY_FILE not set"), "rb"))
local template = f:read("*a")
f:close()
local nonce = os.getenv("BENCH_NONCE") or tostring(os.time())
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_API_KEY") or "sk-infergate-test")

function request()
  n = n + 1
  local body = template:gsub("{n}", nonce .. "-" .. n)
  return wrk.format(nil, nil, nil, body)
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
