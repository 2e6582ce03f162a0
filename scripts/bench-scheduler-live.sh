#!/usr/bin/env bash
# The real gateway under open-loop overload vs. the simulator's prediction.
#
# One embeddings model on a synthetic backend with a known latency model
# (scripts/bench/scheduler-live.toml: 40 ms + 0.1 ms/token per batch of up to
# 8, one worker), traffic half interactive (deadline 200 ms) and half batch
# (2 s) from k6's constant-arrival-rate executor at LOAD × capacity, for each
# policy in turn. Goodput = 200 answers within their deadline, per second.
# The same model, arrivals and policies run through the scheduler's
# discrete-event simulator (example `live_predict`) for the prediction.
#
#   scripts/bench-scheduler-live.sh            (needs target/release/infergate)
# Environment (defaults): LOAD=2 DURATION=20 (s) POLICIES="deadline fifo priority"
set -euo pipefail
LOG_TAG=live
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

LOAD="${LOAD:-2}"
DURATION="${DURATION:-20}"
POLICIES="${POLICIES:-deadline fifo priority}"
BIN="${INFERGATE_BIN:-target/release/infergate}"
CONFIG="$REPO_ROOT/scripts/bench/scheduler-live.toml"
[[ -x "$BIN" ]] || die "$BIN not found: cargo build --release --bin infergate"
"$REPO_ROOT/scripts/setup.sh" --bench
K6="$REPO_ROOT/.tools/k6"

# Capacity: a full batch of 8 requests of 13 tokens takes 40 + 0.1·8·13 ms.
TOKENS=13
CAPACITY="$(awk -v t=$TOKENS 'BEGIN { printf "%.1f", 8 / (0.040 + 0.0001 * 8 * t) }')"
RATE="$(awk -v c="$CAPACITY" -v l="$LOAD" 'BEGIN { printf "%d", 2 * int(c * l / 2 + 0.5) }')"
log "capacity $CAPACITY req/s; offering $RATE req/s (${LOAD}x) for ${DURATION}s per policy"

TMP="$(mktemp -d -t infergate-live.XXXXXX)"
GW=""
cleanup() {
    if [[ -n "$GW" ]]; then kill -TERM "$GW" 2>/dev/null || true; wait "$GW" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT

printf '| policy | offered req/s | goodput req/s | late | rejected | failed |\n|---|---:|---:|---:|---:|---:|\n' >"$TMP/live.md"
for policy in $POLICIES; do
    port="$(free_port)"
    sed -E "s|^listen = \".*\"|listen = \"127.0.0.1:$port\"|" "$CONFIG" >"$TMP/config.toml"
    INFERGATE__MODELS__0__POLICY="$policy" "$BIN" serve --config "$TMP/config.toml" >"$TMP/gw.log" 2>&1 &
    GW=$!
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
    TARGET_URL="http://127.0.0.1:$port/v1/embeddings" RATE="$RATE" DURATION="${DURATION}s" DEADLINE_MS=200 \
        "$K6" run --quiet --no-color --summary-export "$TMP/$policy.json" "$REPO_ROOT/scripts/bench/scheduler-live.js" \
        >"$TMP/k6-$policy.log" 2>&1 || { tail -20 "$TMP/k6-$policy.log" >&2; die "k6 failed"; }
    kill -TERM "$GW"; wait "$GW" 2>/dev/null || true; GW=""
    "$PYTHON" - "$TMP/$policy.json" "$policy" "$RATE" "$DURATION" >>"$TMP/live.md" <<'PY'
import json, sys
path, policy, rate, duration = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
m = json.load(open(path))["metrics"]
count = lambda name: m.get(name, {}).get("count", 0)
print(f"| {policy} | {rate:.0f} | {count('good') / duration:.1f} | {count('late')} | {count('rejected')} | {count('failed')} |")
PY
    log "$policy done"
done

log "simulator prediction (same model, arrivals and deadlines)"
cargo run --release --quiet -p infergate-scheduler --example live_predict -- \
    --rate "$RATE" --duration "$DURATION" --policies "$POLICIES" >"$TMP/sim.md"

echo "## Live: gateway vs. simulator at ${LOAD}x capacity"
echo
echo "$(date -u +%F), $(nproc) cores; k6 constant-arrival-rate $RATE req/s for ${DURATION}s per policy; capacity $CAPACITY req/s"
echo
echo "Measured (real gateway, synthetic backend):"
echo
cat "$TMP/live.md"
echo
echo "Predicted (simulator):"
echo
cat "$TMP/sim.md"
