#!/usr/bin/env bash
# `infergate-load tune`'s batch settings against a synthetic model whose batch
# cost is known: one worker, batches of up to 32, each batch taking
# base_latency + per_cost × tokens = 20 ms + 10 ms per request (100 tokens
# each). A capacity search (SLO p99 ≤ BENCH_SLO) reads the gateway's batching
# before and after every step (--metrics-url); `tune` fits the batch cost
# model from the steps and picks max_size / max_delay by running candidates
# through the scheduler in the discrete-event simulator. Prints the fitted
# model beside the configured one, then runs the same load (BENCH_RATE req/s,
# open loop) against the model as configured and as tuned.
#
#   scripts/bench-tune-batching.sh   (needs target/release/infergate and infergate-load)
# Environment (defaults): BENCH_SLO=500ms BENCH_STEP=5s BENCH_RATE=60
set -euo pipefail
LOG_TAG=tune-batching
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
SLO="${BENCH_SLO:-500ms}"
STEP="${BENCH_STEP:-5s}"
RATE="${BENCH_RATE:-60}"
DIR="${INFERGATE_BIN_DIR:-target/release}"
[[ -x "$DIR/infergate" && -x "$DIR/infergate-load" ]] || die "build first: cargo build --release --bins"

bench_workspace tune-batching

config() { # BATCH_LINE -> config file on stdout
    bench_tenant_toml
    cat <<TOML

[[models]]
name = "batched"
task = "embeddings"
concurrency = 1
$1
queue = { max_jobs = 100000 }
backend = { kind = "synthetic", base_latency = "20ms", per_cost = "100us", dimensions = 8 }
TOML
}
start() { # CONFIG -> URL base on stdout
    local port
    port="$(free_port)"
    RUST_LOG=warn "$DIR/infergate" serve --config "$1" --listen "127.0.0.1:$port" >>"$TMP/infergate.log" 2>&1 &
    PIDS+=("$!")
    for _ in $(seq 1 200); do curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.05; done
    echo "http://127.0.0.1:$port"
}
# 100 token ids: 100 tokens of cost, exactly.
BODY="{\"model\":\"batched\",\"input\":[$(seq -s, 1 100)]}"
KEY="Authorization: Bearer sk-infergate-test"

config 'batch = { max_size = 32, max_delay = "50ms" }' >"$TMP/configured.toml"
base="$(start "$TMP/configured.toml")"
echo "# Batch settings from a capacity search ($(date -u +%F), $(nproc) cores)"
echo
"$DIR/infergate-load" capacity --url "$base/v1/embeddings" -H "$KEY" --body-json "$BODY" \
    --slo-latency "$SLO" --start 10 --max 400 --precision 0.05 --step "$STEP" --warmup 2s --max-lag 20ms \
    --metrics-url "$base/metrics" --model batched --json "$TMP/capacity.json" --quiet
"$DIR/infergate-load" tune --capacity "$TMP/capacity.json" --baseline-rate 10 --peak-rate 100 \
    --model batched --out "$TMP/tune"
echo
echo "configured: 20 ms + 10 ms per request (plus the backend's sleep overshoot)"
grep -v '^\[\[models\]\]' "$TMP/tune/scheduler.toml"
batch_line="$(grep '^batch = ' "$TMP/tune/scheduler.toml")"
config "$batch_line" >"$TMP/tuned.toml"
tuned="$(start "$TMP/tuned.toml")"
echo
for which in configured tuned; do
    url="$base"; [[ $which == tuned ]] && url="$tuned"
    echo "### $which, $RATE req/s Poisson, 20 s"
    "$DIR/infergate-load" run --url "$url/v1/embeddings" -H "$KEY" --body-json "$BODY" --rate "$RATE" \
        --arrivals poisson --duration 20s --warmup 2s --max-lag 20ms --quiet |
        grep -E '^\| (throughput|successes|p50|p99|max) '
    echo
done
