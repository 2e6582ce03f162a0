#!/usr/bin/env bash
# How fast a tenant's limit refuses: the release gateway with the synthetic
# embeddings model and tenant `web` held to one request a minute, wrk (one
# thread, BENCH_CONNECTIONS connections) sending it embeddings requests for
# BENCH_DURATION s, so all but the first answer 429 rate_limit_exceeded. Prints
# wrk's rate and latency and the refusals' p50/p99 from the gateway's own
# duration histogram (so the client's share of the cores is left out), for
# the memory store and, with BENCH_STORE=redis, a redis-server started here.
#
#   scripts/bench-limit-refusals.sh           (needs target/release/infergate)
# Environment (defaults): BENCH_DURATION=10 BENCH_CONNECTIONS=8 BENCH_STORE="memory redis"
set -euo pipefail
LOG_TAG=limit-refusals
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
DURATION="${BENCH_DURATION:-10}"
CONNECTIONS="${BENCH_CONNECTIONS:-8}"
STORES="${BENCH_STORE:-memory redis}"
BIN="${INFERGATE_BIN:-target/release/infergate}"
[[ -x "$BIN" ]] || die "$BIN not found: cargo build --release --bin infergate"
command -v wrk >/dev/null || die "wrk is missing: scripts/setup.sh --bench"
bench_workspace limit-refusals
echo '{"model":"embed","input":"hello"}' >"$TMP/body.json"
export BENCH_BODY_FILE="$TMP/body.json" BENCH_API_KEY="sk-infergate-test"

echo "| store | requests/s (wrk) | 429s | wrk p50 / p99 ms | server p50 / p99 (429s) |"
echo "|---|---:|---:|---:|---:|"
for store in $STORES; do
    store_toml=""
    if [[ "$store" == redis ]]; then
        redis_port="$(free_port)"
        redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
        PIDS+=("$!")
        for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break; sleep 0.1; done
        store_toml="[store]
url = \"redis://127.0.0.1:$redis_port/0\""
    fi
    port="$(free_port)"
    cat >"$TMP/$store.toml" <<TOML
$store_toml

$(bench_tenant_toml)
rate_limits = { requests_per_minute = 1 }

[[models]]
name = "embed"
task = "embeddings"
backend = { kind = "synthetic", base_latency = "1ms", per_cost = "1us", dimensions = 8 }
TOML
    RUST_LOG=error "$BIN" serve --config "$TMP/$store.toml" --listen "127.0.0.1:$port" >"$TMP/gw-$store.log" 2>&1 &
    gw=$!
    PIDS+=("$gw")
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
    line="$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s scripts/bench/post.lua "http://127.0.0.1:$port/v1/embeddings" | grep '^BENCH')"
    curl -s "http://127.0.0.1:$port/metrics" >"$TMP/metrics-$store"
    kill -TERM "$gw"; wait "$gw" 2>/dev/null || true
    "$PYTHON" - "$TMP/metrics-$store" "$line" "$store" <<'PY'
import sys
path, line, store = sys.argv[1], sys.argv[2], sys.argv[3]
f = dict(kv.split("=") for kv in line.split()[1:])
buckets = []
for l in open(path):
    if l.startswith("http_server_request_duration_seconds_bucket{") and 'http_response_status_code="429"' in l:
        buckets.append((float(l.split('le="', 1)[1].split('"', 1)[0]), float(l.split("}", 1)[1].split()[0])))
buckets.sort()
total = buckets[-1][1] if buckets else 0
q = lambda p: next(le for le, c in buckets if c >= p * total) * 1000 if total else float("nan")
rate = int(f["requests"]) / (int(f["duration_us"]) / 1e6)
print(f"| {store} | {rate:,.0f} | {int(total):,} | {int(f['p50_us']) / 1000:.2f} / {int(f['p99_us']) / 1000:.2f} "
      f"| ≤ {q(0.5):g} / ≤ {q(0.99):g} ms |")
PY
done
