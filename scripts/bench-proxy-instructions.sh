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
#   BENCH_LIMITS="off" runs each build once per listed variant: off (no tenant
#   limits), memory (three limits on the tenant: requests and tokens per minute,
#   concurrent; never reached) or redis (the same in a redis-server started here
#   under callgrind too, whose instructions in the counted window are added);
#   BENCH_LIMITED replaces those limits (a TOML inline table).
#   INFERGATE_BIN_DIR=target/release (for infergate-fake-upstream)
#   BENCH_CACHE="off on" runs each build once per listed variant of the remote
#   model's response cache, every request new to it (a miss: the body carries
#   temperature 0, so it is cacheable, and a number of its own); unset, the
#   cache is not configured and every request is the same.
#   BENCH_KEEP=DIR keeps each build's counted dump as
#   DIR/BUILD-LIMITS-cache-CACHE.callgrind, for
#   `callgrind_annotate --auto=no --threshold=100 DIR/….callgrind` (names
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
{ proxy_infergate_toml "$up_port"; echo 'cache = { ttl = "1h", max_bytes = 268435456 }'; } >"$TMP/infergate-cache.toml"
CACHES="${BENCH_CACHE:-}"
if [[ -n "$CACHES" ]]; then
    echo '{"model":"remote","messages":[{"role":"user","content":"Say hi to {n}."}],"max_tokens":4,"temperature":0}' >"$TMP/body.json"
else
    echo '{"model":"remote","messages":[{"role":"user","content":"Say hi."}],"max_tokens":4}' >"$TMP/body.json"
fi
export BENCH_BODY_FILE="$TMP/body.json" BENCH_API_KEY="sk-infergate-test"

load() { # PORT SECONDS: prints the requests answered
    local nonce=()
    [[ -z "$CACHES" ]] || nonce=("BENCH_NONCE=$RANDOM$RANDOM$2")
    env "${nonce[@]}" wrk -t1 -c"$CONNECTIONS" -d"$2s" -s scripts/bench/post.lua "http://127.0.0.1:$1/v1/chat/completions" |
        sed -n 's/^BENCH requests=\([0-9]*\).*/\1/p'
}

LIMITS="${BENCH_LIMITS:-off}"
REDIS_PID=""
if [[ " $LIMITS " == *" redis "* ]]; then
    command -v redis-server >/dev/null || die "redis-server is missing: scripts/setup.sh"
    redis_port="$(free_port)"
    valgrind --tool=callgrind --compress-strings=no --compress-pos=no --callgrind-out-file="$TMP/redis.out" \
        redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$TMP/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break; sleep 0.2; done
fi
DEFAULT_LIMITED='{ requests_per_minute = 1000000000, tokens_per_minute = 1000000000, concurrent = 100000 }'
LIMITED="${BENCH_LIMITED:-$DEFAULT_LIMITED}"

# The dump of a callgrind run after the zeroing: its instruction total.
dumped() { grep -l '^desc: Trigger: dump' "$1"* | xargs cat | sed -n 's/^summary: //p' | awk '{ s += $1 } END { print s }'; }

echo "| build | limits | cache | requests | instructions | per request |"
echo "|---|---|---|---:|---:|---:|"
for cache in ${CACHES:-unset}; do
config="$TMP/infergate.toml"
case "$cache" in
    unset | off) ;;
    on) config="$TMP/infergate-cache.toml" ;;
    *) die "BENCH_CACHE: off or on, not $cache" ;;
esac
for variant in $LIMITS; do
env_of=()
case "$variant" in
    off) ;;
    memory) env_of=("INFERGATE__TENANTS__0__RATE_LIMITS=$LIMITED") ;;
    redis) env_of=("INFERGATE__TENANTS__0__RATE_LIMITS=$LIMITED" "INFERGATE__STORE__URL=redis://127.0.0.1:$redis_port/0"
        # callgrind slows Redis down many times: give it the time, so no admission falls back.
        "INFERGATE__STORE__TIMEOUT=1s") ;;
    *) die "BENCH_LIMITS: off, memory or redis, not $variant" ;;
esac
for bin in "$@"; do
    [[ -x "$bin" ]] || die "not an executable: $bin"
    port="$(free_port)"
    out="$TMP/callgrind.out"
    rm -f "$out"*
    if [[ "$(basename "$bin")" == hyper_proxy ]]; then # the floor: LISTEN UPSTREAM, one thread
        args=("127.0.0.1:$port" "127.0.0.1:$up_port")
    else
        args=(serve --config "$config" --listen "127.0.0.1:$port")
    fi
    env "${env_of[@]}" INFERGATE__SERVER__WORKER_THREADS=1 RUST_LOG=error valgrind --tool=callgrind --compress-strings=no --compress-pos=no --callgrind-out-file="$out" \
        "$bin" "${args[@]}" >"$TMP/gw.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 120); do
        code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz" || true)"
        # infergate ready, or the floor answering at all (its upstream has no /healthz).
        [[ "$code" == 200 || ("${args[0]}" != serve && "$code" != 000) ]] && break
        sleep 0.5
    done
    load "$port" 3 >/dev/null
    redis_here=""
    [[ "$variant" == redis ]] && redis_here="$REDIS_PID"
    [[ -z "$redis_here" ]] || { rm -f "$TMP/redis.out".*; callgrind_control -z "$redis_here" >/dev/null 2>&1; }
    callgrind_control -z "$pid" >/dev/null 2>&1
    requests="$(load "$port" "$DURATION")"
    callgrind_control -d "$pid" >/dev/null 2>&1
    [[ -z "$redis_here" ]] || { sleep 0.5; callgrind_control -d "$redis_here" >/dev/null 2>&1; }
    if [[ "$variant" != off ]]; then
        errors="$(curl -s "http://127.0.0.1:$port/metrics" | sed -n 's/^infergate_store_errors_total \([0-9.]*\).*/\1/p')"
        [[ "${errors:-0}" == 0 ]] || die "$bin: $errors store errors (admissions that fell back): the count would be low"
    fi
    if [[ "$cache" == on ]]; then
        hits="$(curl -s "http://127.0.0.1:$port/metrics" 2>/dev/null | sed -n 's/^infergate_cache_requests_total{model="remote",result="hit"} \([0-9]*\).*/\1/p')"
        [[ "${hits:-0}" == 0 ]] || die "$bin: $hits cache hits: the requests were meant to be new"
    fi
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    # The dump asked for above (the one at exit holds only the shutdown).
    total="$(dumped "$out")"
    [[ -z "$redis_here" ]] || total=$((total + $(dumped "$TMP/redis.out")))
    [[ "${requests:-0}" -gt 0 && -n "$total" ]] || die "no count for $bin (see $TMP/gw.log)"
    if [[ -n "${BENCH_KEEP:-}" ]]; then
        mkdir -p "$BENCH_KEEP"
        grep -l '^desc: Trigger: dump' "$out"* | head -1 | xargs -I{} cp {} "$BENCH_KEEP/$(basename "$bin")-$variant-cache-$cache.callgrind"
    fi
    echo "| $(basename "$bin") | $variant | $cache | $requests | $total | $((total / requests)) |"
done
done
done
