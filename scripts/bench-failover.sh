#!/usr/bin/env bash
# Failover figures for the remote backends (BENCHMARKS.md): three
# infergate-fake-upstream processes behind one `openai` model, steady
# open-loop load at BENCH_RATE req/s for BENCH_SECONDS, and after 3 s one
# upstream is killed, hangs, fails every request with 500, or slows 10x.
# Reports success share, latency (from the intended send time) and where
# requests went after the fault.
#
#   scripts/bench-failover.sh      (needs target/debug/infergate and infergate-fake-upstream)
# Environment (defaults): BENCH_RATE=100 BENCH_SECONDS=12
set -euo pipefail
LOG_TAG=failover
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

RATE="${BENCH_RATE:-100}"
SECONDS_RUN="${BENCH_SECONDS:-12}"
DIR="${INFERGATE_BIN_DIR:-target/debug}"
[[ -x "$DIR/infergate" && -x "$DIR/infergate-fake-upstream" ]] || die "build first: cargo build --bins"
PY="$REPO_ROOT/.venv/bin/python"
bench_workspace failover

fake() { # -> sets FAKE_PID and FAKE_URL
    local port
    port="$(free_port)"
    "$DIR/infergate-fake-upstream" --listen "127.0.0.1:$port" --base-latency 5ms --token-interval 2ms >/dev/null 2>&1 &
    FAKE_PID=$!
    FAKE_URL="http://127.0.0.1:$port"
    for _ in $(seq 1 100); do curl -sf "$FAKE_URL/health" >/dev/null && return; sleep 0.05; done
    die "fake upstream did not start"
}

echo "## Failover through the gateway ($(date -u +%F), $(nproc) cores, $RATE req/s for ${SECONDS_RUN}s, fault at 3 s, deadline 1 s)"
echo
echo "| scenario | requests | success | success after the fault | p50 | p99 | worst | requests to the faulty / others after the fault |"
echo "|---|---:|---:|---:|---:|---:|---:|---|"
for scenario in killed hung error slow; do
    fake; p1=$FAKE_PID; u1=$FAKE_URL
    fake; p2=$FAKE_PID; u2=$FAKE_URL
    fake; p3=$FAKE_PID; u3=$FAKE_URL
    PIDS+=("$p1" "$p2" "$p3")
    port="$(free_port)"
    three_upstreams_toml "$u1" "$u2" "$u3" ", health = { interval = \"1s\" }" >"$TMP/gw.toml"
    RUST_LOG=error "$DIR/infergate" serve --config "$TMP/gw.toml" --listen "127.0.0.1:$port" >"$TMP/gw.log" 2>&1 &
    gw=$!; PIDS+=("$gw")
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.05; done
    "$PY" scripts/bench/failover_load.py "http://127.0.0.1:$port" "$u2" --others "$u1" "$u3" --scenario "$scenario" \
        --rate "$RATE" --seconds "$SECONDS_RUN" --kill-pid "$p2" >"$TMP/$scenario.json"
    "$PY" - "$TMP/$scenario.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
f = r["upstream_requests_after_fault"]
print(f"| {r['scenario']} | {r['requests']} | {r['success'] * 100:.2f}% | {r['success_after_fault'] * 100:.2f}% | "
      f"{r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['worst_ms']:.0f} ms | {f[0] if f[0] is not None else 'killed'} / {f[1]}, {f[2]} |")
PY
    kill -TERM "$gw" "$p1" "$p2" "$p3" 2>/dev/null || true
    wait "$gw" 2>/dev/null || true
    PIDS=()
done
