#!/usr/bin/env bash
# Instructions per proxied request of infergate builds, counted by valgrind's
# callgrind: the proxy benchmark's chat request through an `openai` remote
# model to the fast fake upstream. Unlike time, the count does not move with
# the shared machine's load, so a change of a few per cent shows; it leaves
# out the kernel's share and what cache misses and syscalls cost.
# Each build runs under callgrind with one async worker; wrk (one thread,
# BENCH_CONNECTIONS connections) warms it up for 3 s, the counters are zeroed,
# and BENCH_DURATION s of load are counted.
#
#   scripts/bench-proxy-instructions.sh INFERGATE [INFERGATE...]
# A binary named hyper_proxy (target/release/examples/hyper_proxy, from
# `cargo build --release --example hyper_proxy`) is run as the floor: hyper
# alone proxying the same request.
# Environment (defaults): BENCH_DURATION=5 BENCH_CONNECTIONS=8
#   INFERGATE_BIN_DIR=target/release (for infergate-fake-upstream)
#   BENCH_KEEP=DIR keeps each build's counted dump as DIR/BUILD.callgrind, for
#   `callgrind_annotate --auto=no --threshold=100 DIR/BUILD.callgrind` (names
#   are written uncompressed: a dump after zeroing refers to names defined in
#   the part never written, which callgrind_annotate cannot resolve).
set -euo pipefail
LOG_TAG=proxy-instructions
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
[[ $# -ge 1 ]] || die "usage: $0 INFERGATE [INFERGATE...]"
DURATION="${BENCH_DURATION:-5}"
CONNECTIONS="${BENCH_CONNECTIONS:-8}"
DIR="${INFERGATE_BIN_DIR:-target/release}"
[[ -x "$DIR/infergate-fake-upstream" ]] || die "build first: cargo build --release --bins"
for tool in wrk valgrind callgrind_control; do
    command -v "$tool" >/dev/null || die "$tool is missing: scripts/setup.sh --bench"
done

bench_workspace proxy-instructions
up_port="$(free_port)"
"$DIR/infergate-fake-upstream" --listen "127.0.0.1:$up_port" --base-latency 0ms --per-cost 0ms \
    --token-interval 0ms --max-delay 0ms --max-batch 1 >/dev/null 2>&1 &
PIDS+=("$!")
proxy_infergate_toml "$up_port" >"$TMP/infergate.toml"
echo '{"model":"remote","messages":[{"role":"user","content":"Say hi."}],"max_tokens":4}' >"$TMP/body.json"
export BENCH_BODY_FILE="$TMP/body.json" BENCH_API_KEY="sk-infergate-test"

load() { # PORT SECONDS: prints the requests answered
    wrk -t1 -c"$CONNECTIONS" -d"$2s" -s scripts/bench/post.lua "http://127.0.0.1:$1/v1/chat/completions" |
        sed -n 's/^BENCH requests=\([0-9]*\).*/\1/p'
}

echo "| build | requests | instructions | per request |"
echo "|---|---:|---:|---:|"
for bin in "$@"; do
    [[ -x "$bin" ]] || die "not an executable: $bin"
    port="$(free_port)"
    out="$TMP/callgrind.out"
    rm -f "$out"*
    if [[ "$(basename "$bin")" == hyper_proxy ]]; then # the floor: LISTEN UPSTREAM, one thread
        args=("127.0.0.1:$port" "127.0.0.1:$up_port")
    else
        args=(serve --config "$TMP/infergate.toml" --listen "127.0.0.1:$port")
    fi
    INFERGATE__SERVER__WORKER_THREADS=1 RUST_LOG=error valgrind --tool=callgrind --compress-strings=no --compress-pos=no --callgrind-out-file="$out" \
        "$bin" "${args[@]}" >"$TMP/gw.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 120); do
        code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz" || true)"
        # infergate ready, or the floor answering at all (its upstream has no /healthz).
        [[ "$code" == 200 || ("${args[0]}" != serve && "$code" != 000) ]] && break
        sleep 0.5
    done
    load "$port" 3 >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    requests="$(load "$port" "$DURATION")"
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    # The dump asked for above (the one at exit holds only the shutdown).
    total="$(grep -l '^desc: Trigger: dump' "$out"* | xargs cat | sed -n 's/^summary: //p' | awk '{ s += $1 } END { print s }')"
    [[ "${requests:-0}" -gt 0 && -n "$total" ]] || die "no count for $bin (see $TMP/gw.log)"
    if [[ -n "${BENCH_KEEP:-}" ]]; then
        mkdir -p "$BENCH_KEEP"
        grep -l '^desc: Trigger: dump' "$out"* | head -1 | xargs -I{} cp {} "$BENCH_KEEP/$(basename "$bin").callgrind"
    fi
    echo "| $(basename "$bin") | $requests | $total | $((total / requests)) |"
done
