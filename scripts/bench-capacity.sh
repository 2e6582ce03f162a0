#!/usr/bin/env bash
# infergate-load's capacity search against synthetic models of known capacity
# (scripts/bench/capacity.toml): "serial" 200 req/s (20 × 1 per 100 ms) and
# "batched" 320 req/s (4 × 8 per 100 ms).
# Each search: Poisson arrivals, SLO p99 ≤ BENCH_SLO and goodput ≥ 99%,
# BENCH_STEP s per step after 2 s of warmup, 3% precision, BENCH_REPEATS
# searches for a confidence interval. Prints each report and the ratio of the
# found capacity to the analytic one.
#
#   scripts/bench-capacity.sh        (needs target/release/infergate and infergate-load)
# Environment (defaults): BENCH_SLO=500ms BENCH_STEP=5s BENCH_REPEATS=3
set -euo pipefail
LOG_TAG=capacity
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
SLO="${BENCH_SLO:-500ms}"
STEP="${BENCH_STEP:-5s}"
REPEATS="${BENCH_REPEATS:-3}"
DIR="${INFERGATE_BIN_DIR:-target/release}"
[[ -x "$DIR/infergate" && -x "$DIR/infergate-load" ]] || die "build first: cargo build --release --bins"

bench_workspace capacity

port="$(free_port)"
RUST_LOG=warn "$DIR/infergate" serve --config scripts/bench/capacity.toml --listen "127.0.0.1:$port" \
    >"$TMP/infergate.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 200); do curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.05; done

echo "# Capacity search vs. analytic capacity ($(date -u +%F), $(nproc) cores)"
for pair in serial:200 batched:320; do
    model="${pair%%:*}" analytic="${pair##*:}"
    "$DIR/infergate-load" capacity --url "http://127.0.0.1:$port/v1/embeddings" \
        -H "Authorization: Bearer sk-infergate-test" \
        --body-json "{\"model\":\"$model\",\"input\":\"capacity\"}" \
        --slo-latency "$SLO" --start 25 --max 3200 --precision 0.03 --step "$STEP" --warmup 2s \
        --repeats "$REPEATS" --max-lag 20ms --json "$TMP/$model.json" | sed "s/^## Capacity of.*/## $model (analytic $analytic req\/s)/"
    "$PYTHON" - "$TMP/$model.json" "$analytic" <<'PY'
import json, sys
report, analytic = json.load(open(sys.argv[1])), float(sys.argv[2])
found = report["capacity"]
ci = report.get("ci95")
print(f"\nfound/analytic: {found / analytic:.3f}" + (f" (95% CI {ci[0] / analytic:.3f}–{ci[1] / analytic:.3f})" if ci else ""))
PY
    echo
done
