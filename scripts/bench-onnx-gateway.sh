#!/usr/bin/env bash
# Dynamic batching on a real model: POST /v1/embeddings through the gateway
# to all-MiniLM-L6-v2 on ONNX Runtime, batched (max_size 32, max_delay 2ms)
# vs. one request per model run (max_size 1), at the same offered load.
#
# Two gateway processes (temporary configs, same model, same threads: one
# session with BENCH_INTRA_THREADS intra-op threads), both started up front;
# k6's constant-arrival-rate executor offers each RATE req/s in turn, rounds
# alternated. Texts: short queries of 8-14 words (scripts/bench/onnx_throughput.py
# --make-texts), each request one text, deadline DEADLINE_MS. Reported per
# run: answered req/s on time, p50/p99 of the 200s, refusals (429/503/504),
# mean batch size, and the gateway's CPU per answered request
# (utime+stime from /proc, model threads included).
#
#   scripts/bench-onnx-gateway.sh        (needs target/release/infergate)
# Environment (defaults): RATES="60 100 150" (req/s) BENCH_ROUNDS=2 BENCH_DURATION=15 (s)
#   BENCH_INTRA_THREADS=1 DEADLINE_MS=1000
set -euo pipefail
LOG_TAG=onnx-gateway
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

RATES="${RATES:-60 100 150}"
ROUNDS="${BENCH_ROUNDS:-2}"
DURATION="${BENCH_DURATION:-15}"
THREADS="${BENCH_INTRA_THREADS:-1}"
DEADLINE_MS="${DEADLINE_MS:-1000}"
BIN="${INFERGATE_BIN:-target/release/infergate}"
[[ -x "$BIN" ]] || die "$BIN not found: cargo build --release --bin infergate"
"$REPO_ROOT/scripts/setup.sh" --bench
K6="$REPO_ROOT/.tools/k6"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$REPO_ROOT/.ort/lib/libonnxruntime.so}"

bench_workspace onnx-gateway

"$REPO_ROOT/.venv/bin/python" scripts/bench/onnx_throughput.py --make-texts "$TMP/texts.txt" \
    --count 256 --lengths 8,10,12,14

declare -A URL PID
for mode in batched single; do
    if [[ "$mode" == batched ]]; then batch='{ max_size = 32, max_delay = "2ms" }'; else batch='{ max_size = 1 }'; fi
    port="$(free_port)"
    cat >"$TMP/$mode.toml" <<EOF
[server]
listen = "127.0.0.1:$port"

[[tenants]]
name = "web"
class = "interactive"
api_key_sha256 = ["3b978aa9b13194c6acccdc77d6d65ded5407e7e4fd82b5647e744e3427d71df4"]

[[models]]
name = "minilm"
task = "embeddings"
batch = $batch
backend = { kind = "onnx", pipeline = "text-embeddings", model = "models/minilm/model.onnx", tokenizer = "models/minilm/tokenizer.json", intra_threads = $THREADS }
EOF
    RUST_LOG=warn "$BIN" serve --config "$TMP/$mode.toml" >"$TMP/$mode.log" 2>&1 &
    PIDS+=("$!")
    PID[$mode]=$!
    URL[$mode]="http://127.0.0.1:$port/v1/embeddings"
    for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$TMP/$mode.log" >&2; die "$mode gateway not ready"; }
done

# run_k6 MODE RATE SECONDS SUMMARY
run_k6() {
    TARGET_URL="${URL[$1]}" RATE="$2" DURATION="${3}s" DEADLINE_MS="$DEADLINE_MS" MODEL=minilm \
        TEXTS_FILE="$TMP/texts.txt" "$K6" run --quiet --no-color --summary-export "$4" \
        scripts/bench/onnx-embeddings.js >"$4.log" 2>&1 || { tail -20 "$4.log" >&2; die "k6 failed against $1"; }
}

log "warm-up: 5 s at 20 req/s per gateway"
for mode in batched single; do run_k6 "$mode" 20 5 "$TMP/warmup-$mode.json"; done

hz="$(getconf CLK_TCK)"
printf '| offered req/s | round | batching | on time req/s | p50 | p99 | late | refused | failed | mean batch | CPU/answer |\n' >"$TMP/table.md"
printf '|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n' >>"$TMP/table.md"
for rate in $RATES; do
    for round in $(seq 1 "$ROUNDS"); do
        order="batched single"; ((round % 2 == 0)) && order="single batched"
        for mode in $order; do
            before="$(proc_ticks "${PID[$mode]}")"
            run_k6 "$mode" "$rate" "$DURATION" "$TMP/$rate-$round-$mode.json"
            after="$(proc_ticks "${PID[$mode]}")"
            "$PYTHON" - "$TMP/$rate-$round-$mode.json" "$rate" "$round" "$mode" "$DURATION" \
                "$((after - before))" "$hz" >>"$TMP/table.md" <<'PY'
import json, sys
path, rate, rnd, mode, duration, ticks, hz = sys.argv[1:8]
m = json.load(open(path))["metrics"]
count = lambda name: int(m.get(name, {}).get("count", 0))
trend = lambda name, stat: m.get(name, {}).get(stat, float("nan"))
answered = count("on_time") + count("late")
cpu_ms = int(ticks) / int(hz) * 1e3 / max(answered, 1)
print(f"| {rate} | {rnd} | {mode} | {count('on_time') / float(duration):.1f} | {trend('ok_ms', 'med'):.0f} ms "
      f"| {trend('ok_ms', 'p(99)'):.0f} ms | {count('late')} | {count('refused')} | {count('failed')} "
      f"| {trend('batch_size', 'avg'):.1f} | {cpu_ms:.2f} ms |")
PY
            log "rate $rate round $round $mode done"
        done
    done
done

echo "## Embeddings through the gateway on all-MiniLM-L6-v2: dynamic batching vs. batch size 1"
echo
echo "$(date -u +%F), $(nproc) cores, $(uname -r); k6 constant-arrival-rate, ${DURATION}s per run, $ROUNDS rounds"
echo "(order alternating), deadline ${DEADLINE_MS} ms, 256 texts of 8-14 words, intra_threads $THREADS, 1 session;"
echo "infergate commit $(git rev-parse --short --verify -q HEAD 2>/dev/null || echo none)"
echo
cat "$TMP/table.md"
