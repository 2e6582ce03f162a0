#!/usr/bin/env bash
# Routing on what upstreams report (BENCHMARKS.md, "Remote routing"): three
# infergate-fake-upstream servers modelling GPU servers (4 requests running at
# once, the rest queued; a prefix cache holding two of the six system prompts;
# prefill BENCH_PREFILL per uncached token), one of them also loaded straight
# by another client the gateway cannot see. The same open-loop chat traffic
# (scripts/bench/routing.toml: 6 system prompts of 300 words, streamed, first
# token due in 2 s) goes through the gateway twice per round, alternated:
#   p2c     the replica choice as it was (power of two choices on the
#           gateway's own outstanding requests × peak-EWMA latency);
#   routed  the same with load_metrics (each replica's vLLM gauges every
#           250 ms) and prefix_affinity (256 tokens).
# Each run starts fresh upstreams (cold prefix caches) and a fresh gateway.
#
#   scripts/bench-routing.sh     (needs target/release/{infergate,infergate-fake-upstream,infergate-load})
# Environment (defaults): BENCH_RATE=24 BENCH_SECONDS=30 BENCH_ROUNDS=2
#   BENCH_OTHER_RATE=6 (req/s the other client sends to upstream 1) BENCH_PREFILL=300us
set -euo pipefail
LOG_TAG=routing
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

RATE="${BENCH_RATE:-24}"
SECONDS_RUN="${BENCH_SECONDS:-30}"
ROUNDS="${BENCH_ROUNDS:-2}"
OTHER_RATE="${BENCH_OTHER_RATE:-6}"
PREFILL="${BENCH_PREFILL:-300us}"
DIR="${INFERGATE_BIN_DIR:-target/release}"
for bin in infergate infergate-fake-upstream infergate-load; do
    [[ -x "$DIR/$bin" ]] || die "$DIR/$bin not found: cargo build --release --bins"
done
PY="$REPO_ROOT/.venv/bin/python"
bench_workspace routing

fake() { # -> sets FAKE_PID and FAKE_URL
    local port
    port="$(free_port)"
    # A system prompt of 300 words is about 500 tokens: the cache holds two.
    "$DIR/infergate-fake-upstream" --listen "127.0.0.1:$port" --max-running 4 --max-batch 4 --max-delay 1ms \
        --base-latency 10ms --per-cost "$PREFILL" --token-interval 10ms --prefix-cache-tokens 1100 >/dev/null 2>&1 &
    FAKE_PID=$!
    FAKE_URL="http://127.0.0.1:$port"
    for _ in $(seq 1 100); do curl -sf "$FAKE_URL/health" >/dev/null && return; sleep 0.05; done
    die "fake upstream did not start"
}

one_run() { # MODE ROUND
    local mode=$1 round=$2 extra="" port gw other u1 u2 u3 p1 p2 p3
    fake; p1=$FAKE_PID; u1=$FAKE_URL
    fake; p2=$FAKE_PID; u2=$FAKE_URL
    fake; p3=$FAKE_PID; u3=$FAKE_URL
    PIDS+=("$p1" "$p2" "$p3")
    if [[ $mode == routed ]]; then
        extra=', load_metrics = { path = "/metrics", interval = "250ms" }, prefix_affinity = { tokens = 256 }'
    fi
    port="$(free_port)"
    three_upstreams_toml "$u1" "$u2" "$u3" "$extra" >"$TMP/gw-$mode.toml"
    RUST_LOG=error "$DIR/infergate" serve --config "$TMP/gw-$mode.toml" --listen "127.0.0.1:$port" >"$TMP/gw.log" 2>&1 &
    gw=$!; PIDS+=("$gw")
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.05; done
    # The other client: on upstream 1 only, from before the measured run to its end.
    "$DIR/infergate-load" run --url "$u1/v1/chat/completions" --scenario scripts/bench/routing-other.toml \
        --rate "$OTHER_RATE" --arrivals poisson --duration "$((SECONDS_RUN + 5))s" --quiet >/dev/null 2>&1 &
    other=$!; PIDS+=("$other")
    sleep 2
    "$DIR/infergate-load" run --url "http://127.0.0.1:$port/v1/chat/completions" -H "authorization: Bearer sk-infergate-test" \
        --scenario scripts/bench/routing.toml --rate "$RATE" --arrivals poisson --duration "${SECONDS_RUN}s" --timeout 10s --quiet \
        --json "$TMP/$mode-$round.json" >/dev/null
    for u in "$u1" "$u2" "$u3"; do curl -sf "$u/metrics"; done >"$TMP/$mode-$round.metrics"
    wait "$other" 2>/dev/null || true
    kill -TERM "$gw" "$p1" "$p2" "$p3" 2>/dev/null || true
    wait "$gw" "$p1" "$p2" "$p3" 2>/dev/null || true
    PIDS=()
}

log "$ROUNDS rounds of p2c and routed, $RATE req/s for ${SECONDS_RUN}s each, other client $OTHER_RATE req/s on upstream 1"
for round in $(seq 1 "$ROUNDS"); do
    if ((round % 2)); then order="p2c routed"; else order="routed p2c"; fi
    for mode in $order; do one_run "$mode" "$round"; done
done

echo "## Remote routing: three fake upstreams, $RATE req/s for ${SECONDS_RUN}s ($(date -u +%F), $(nproc) cores)"
echo
[[ -n "${BENCH_KEEP:-}" ]] && cp "$TMP"/*.json "$TMP"/*.metrics "$BENCH_KEEP"/
"$PY" - "$TMP" "$ROUNDS" "$SECONDS_RUN" <<'PY'
import json, re, statistics, sys
tmp, rounds, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
print("| run | requests | 2xx/s (goodput) | TTFT p50 | TTFT p90 | TTFT p99 | prefix-cache hit share (tokens) |")
print("|---|---:|---:|---:|---:|---:|---:|")
by = {"p2c": [], "routed": []}
for mode in ("p2c", "routed"):
    for r in range(1, rounds + 1):
        s = json.load(open(f"{tmp}/{mode}-{r}.json"))["summary"]
        t = s.get("ttft_ms") or {}
        page = open(f"{tmp}/{mode}-{r}.metrics").read()
        total = lambda name: sum(float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", page, re.M))
        hits = total("vllm:prefix_cache_hits_total") / max(total("vllm:prefix_cache_queries_total"), 1)
        good = s["successes"] / s["duration_s"]
        by[mode].append((good, t.get("p90", float("nan"))))
        print(f"| {mode} {r} | {s['requests']} | {good:.1f} | {t.get('p50', 0):.0f} ms | {t.get('p90', 0):.0f} ms | "
              f"{t.get('p99', 0):.0f} ms | {hits:.2f} |")
med = lambda xs: statistics.median(xs)
g = med([x[0] for x in by["routed"]]) / med([x[0] for x in by["p2c"]])
p = med([x[1] for x in by["routed"]]) / med([x[1] for x in by["p2c"]])
print()
print(f"Medians, routed ÷ p2c: goodput {g:.2f}×, TTFT p90 {p:.2f}× (targets ≥ 1.0× and ≤ 0.7×).")
PY
