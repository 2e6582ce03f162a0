#!/usr/bin/env bash
# A/B of two infergate builds as an `openai` proxy in front of the same fast
# upstream: the ceiling run of scripts/bench-proxy.sh (wrk, 2 threads,
# BENCH_CONNECTIONS connections, BENCH_DURATION s), alternating A and B for
# BENCH_ROUNDS rounds so that the shared machine's drift hits both alike;
# prints each run and the medians of requests/s and CPU per request.
#
#   scripts/bench-proxy-ab.sh OLD_INFERGATE NEW_INFERGATE
# Environment (defaults): BENCH_ROUNDS=4 BENCH_DURATION=8 BENCH_CONNECTIONS=32
#   BENCH_BODY (a chat request for model "remote"; e.g. with "stream": true)
#   BENCH_PINNED=1: the arrangement of bench-proxy-pinned.sh's ceiling — the
#     proxy with one async worker alone on CPU 1, the upstream and wrk (one
#     thread) on CPU 0 — so the proxy's own cost decides, not the scheduler
#   INFERGATE_BIN_DIR=target/release (for infergate-fake-upstream)
set -euo pipefail
LOG_TAG=proxy-ab
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
[[ $# -eq 2 && -x "$1" && -x "$2" ]] || die "usage: $0 OLD_INFERGATE NEW_INFERGATE (two executables)"
ROUNDS="${BENCH_ROUNDS:-4}"
DURATION="${BENCH_DURATION:-8}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
DIR="${INFERGATE_BIN_DIR:-target/release}"
[[ -x "$DIR/infergate-fake-upstream" ]] || die "build first: cargo build --release --bins"
command -v wrk >/dev/null || die "wrk is missing: scripts/setup.sh --bench"

bench_workspace proxy-ab
# Command prefixes that place the upstream and wrk, and the proxy.
load_on=(); proxy_on=(); wrk_threads=2
if [[ "${BENCH_PINNED:-0}" == 1 ]]; then
    [[ "$(nproc)" -ge 2 ]] || die "BENCH_PINNED needs two CPUs"
    load_on=(taskset -c 0); proxy_on=(env INFERGATE__SERVER__WORKER_THREADS=1 taskset -c 1); wrk_threads=1
fi

up_port="$(free_port)"
"${load_on[@]}" "$DIR/infergate-fake-upstream" --listen "127.0.0.1:$up_port" --base-latency 0ms --per-cost 0ms \
    --token-interval 0ms --max-delay 0ms --max-batch 1 >/dev/null 2>&1 &
PIDS+=("$!")
proxy_infergate_toml "$up_port" >"$TMP/infergate.toml"
DEFAULT_BODY='{"model":"remote","messages":[{"role":"user","content":"Say hi."}],"max_tokens":4}'
echo "${BENCH_BODY:-$DEFAULT_BODY}" >"$TMP/body.json"
export BENCH_BODY_FILE="$TMP/body.json" BENCH_API_KEY="sk-infergate-test"

# One ceiling run of BINARY: "requests_per_s cpu_us_per_request".
ceiling() {
    local port pid before after line
    port="$(free_port)"
    RUST_LOG=error "${proxy_on[@]}" "$1" serve --config "$TMP/infergate.toml" --listen "127.0.0.1:$port" >"$TMP/gw.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 200); do
        curl -sf -o /dev/null -H 'Authorization: Bearer sk-infergate-test' -H 'Content-Type: application/json' \
            --data-binary @"$TMP/body.json" "http://127.0.0.1:$port/v1/chat/completions" && break
        sleep 0.05
    done
    before="$(proc_ticks "$pid")"
    line="$("${load_on[@]}" wrk -t"$wrk_threads" -c"$CONNECTIONS" -d"${DURATION}s" -s scripts/bench/post.lua \
        "http://127.0.0.1:$port/v1/chat/completions" | grep '^BENCH')"
    after="$(proc_ticks "$pid")"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    awk -v l="$line" -v b="$before" -v a="$after" -v hz="$(getconf CLK_TCK)" -v d="$DURATION" 'BEGIN {
        n = split(l, f, " "); for (i = 2; i <= n; i++) { split(f[i], kv, "="); v[kv[1]] = kv[2] }
        printf "%.0f %.1f\n", v["requests"] / d, (a - b) / hz * 1e6 / v["requests"] }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "| round | A req/s | A CPU µs/req | B req/s | B CPU µs/req |"
echo "|---:|---:|---:|---:|---:|"
: >"$TMP/a"; : >"$TMP/b"
for round in $(seq 1 "$ROUNDS"); do
    read -r a_rps a_cpu < <(ceiling "$1")
    read -r b_rps b_cpu < <(ceiling "$2")
    echo "$a_rps $a_cpu" >>"$TMP/a"; echo "$b_rps $b_cpu" >>"$TMP/b"
    echo "| $round | $a_rps | $a_cpu | $b_rps | $b_cpu |"
done
a_rps="$(cut -d' ' -f1 "$TMP/a" | median)"; a_cpu="$(cut -d' ' -f2 "$TMP/a" | median)"
b_rps="$(cut -d' ' -f1 "$TMP/b" | median)"; b_cpu="$(cut -d' ' -f2 "$TMP/b" | median)"
echo "| median | $a_rps | $a_cpu | $b_rps | $b_cpu |"
ratio="$(paste -d' ' "$TMP/a" "$TMP/b" | awk '{ print $3 / $1 }' | median)"
awk -v ar="$a_rps" -v ac="$a_cpu" -v br="$b_rps" -v bc="$b_cpu" -v r="$ratio" 'BEGIN {
    printf "\nB/A: throughput %.2f× (median of the rounds\x27 ratios %.2f×), CPU per request %.2f×\n",
        br / ar, r, bc / ac }'
