#!/usr/bin/env bash
# Telemetry overhead: the same gateway and load with tracing export off and
# on (100% sampling, exporting over OTLP/HTTP to a real collector: rotel with
# its blackhole exporter), side by side in one run, rounds alternated.
# Load: wrk POST /v1/embeddings (scripts/bench/post.lua) against a
# synthetic backend (scripts/bench/embeddings.toml): zero latency by default,
# so the gateway is all the work; BENCH_BACKEND_LATENCY=2ms gives each batch
# a model-like cost (MiniLM on these cores takes milliseconds per batch).
#
#   scripts/bench-telemetry.sh        (needs target/release/infergate)
# Environment (defaults): BENCH_ROUNDS=3 BENCH_DURATION=10 BENCH_CONNECTIONS=16 BENCH_THREADS=2
#   BENCH_BACKEND_LATENCY=0ms
set -euo pipefail
LOG_TAG=telemetry
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

ROUNDS="${BENCH_ROUNDS:-3}"
DURATION="${BENCH_DURATION:-10}"
CONNECTIONS="${BENCH_CONNECTIONS:-16}"
THREADS="${BENCH_THREADS:-2}"
LATENCY="${BENCH_BACKEND_LATENCY:-0ms}"
BIN="${INFERGATE_BIN:-target/release/infergate}"
[[ -x "$BIN" ]] || die "$BIN not found: cargo build --release --bin infergate"
"$REPO_ROOT/scripts/setup.sh" --bench

bench_workspace telemetry

collector_port="$(free_port)"
"$REPO_ROOT/.tools/rotel" start --otlp-http-endpoint "127.0.0.1:$collector_port" \
    --otlp-grpc-endpoint "127.0.0.1:$(free_port)" --exporter blackhole >"$TMP/rotel.log" 2>&1 &
PIDS+=("$!")

declare -A URL PID
for mode in off on; do
    port="$(free_port)"
    sed -E -e "s|^listen = \".*\"|listen = \"127.0.0.1:$port\"|" \
        -e "s|base_latency = \"0ms\"|base_latency = \"$LATENCY\"|" scripts/bench/embeddings.toml >"$TMP/$mode.toml"
    if [[ "$mode" == on ]]; then
        INFERGATE__TELEMETRY__OTLP_ENDPOINT="http://127.0.0.1:$collector_port" \
            INFERGATE__TELEMETRY__SAMPLE_RATIO=1.0 RUST_LOG=warn "$BIN" serve --config "$TMP/$mode.toml" >"$TMP/$mode.log" 2>&1 &
    else
        RUST_LOG=warn "$BIN" serve --config "$TMP/$mode.toml" >"$TMP/$mode.log" 2>&1 &
    fi
    PIDS+=("$!")
    PID[$mode]=$!
    URL[$mode]="http://127.0.0.1:$port/v1/embeddings"
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
done

hz="$(getconf CLK_TCK)"
export BENCH_BODY_FILE="$REPO_ROOT/scripts/bench/embeddings-request.json" BENCH_API_KEY=sk-infergate-test
printf '| round | telemetry | req/s | p50 | p99 | CPU/request |\n|---:|---|---:|---:|---:|---:|\n' >"$TMP/table.md"
for round in $(seq 1 "$ROUNDS"); do
    order="off on"; ((round % 2 == 0)) && order="on off"
    for mode in $order; do
        before="$(proc_ticks "${PID[$mode]}")"
        line="$(wrk -t "$THREADS" -c "$CONNECTIONS" -d "${DURATION}s" --latency -s scripts/bench/post.lua "${URL[$mode]}" | grep '^BENCH')"
        after="$(proc_ticks "${PID[$mode]}")"
        "$PYTHON" - "$line" "$round" "$mode" "$((after - before))" "$hz" >>"$TMP/table.md" <<'PY'
import sys
line, rnd, mode, ticks, hz = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
kv = dict(p.split("=") for p in line.split()[1:])
req, dur = int(kv["requests"]), int(kv["duration_us"]) / 1e6
errs = sum(int(kv[k]) for k in kv if k.startswith("err_"))
cpu = ticks / hz / max(req, 1) * 1e6
print(f"| {rnd} | {mode} | {req / dur:,.0f} | {int(kv['p50_us'])} µs | {int(kv['p99_us'])} µs | {cpu:.1f} µs |" + (f" errors {errs}" if errs else ""))
PY
        log "round $round $mode done"
    done
done
echo "## Telemetry off vs. on ($(date -u +%F), $(nproc) cores, backend $LATENCY per batch, wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s)"
echo
cat "$TMP/table.md"
echo
grep -iE "error|dropped" "$TMP/on.log" | head -5 || true
