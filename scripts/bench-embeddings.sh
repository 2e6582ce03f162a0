#!/usr/bin/env bash
# POST /v1/embeddings throughput and latency: infergate (zero-latency synthetic
# backend) side by side with nginx answering the same JSON body from
# `return 200 '...'` (the HTTP floor). Same load tool (wrk + scripts/bench/post.lua),
# same connections/threads/duration, targets alternated over several rounds in
# one run. Also reports each server's CPU time per request (utime+stime from
# /proc/PID/stat), the number that carries across machines.
#
#   scripts/bench-embeddings.sh               (needs target/release/infergate)
#   scripts/bench-embeddings.sh --nginx-only  harness self-test, no infergate
#
# Environment (defaults): BENCH_ROUNDS=3 BENCH_DURATION=10 (s) BENCH_CONNECTIONS=16
#   BENCH_THREADS=2 BENCH_WARMUP=2 (s) INFERGATE_BIN=target/release/infergate
#   BENCH_KEEP=1 keeps the temp dir (configs, logs, raw wrk output).
# The markdown report is printed and saved to target/bench/embeddings-<time>.md.
set -euo pipefail
LOG_TAG=bench
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

ROUNDS="${BENCH_ROUNDS:-3}"
DURATION="${BENCH_DURATION:-10}"
CONNECTIONS="${BENCH_CONNECTIONS:-16}"
THREADS="${BENCH_THREADS:-2}"
WARMUP="${BENCH_WARMUP:-2}"
BIN="${INFERGATE_BIN:-target/release/infergate}"
API_KEY="sk-infergate-test"
BENCH_DIR="$REPO_ROOT/scripts/bench"
REQUEST="$BENCH_DIR/embeddings-request.json"

NGINX_ONLY=0
case "${1:-}" in
    "") ;;
    --nginx-only) NGINX_ONLY=1 ;;
    -h | --help) sed -n '2,17p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
esac

if ((!NGINX_ONLY)) && [[ ! -x "$BIN" ]]; then
    die "$BIN not found: build it first with 'cargo build --release --bin infergate' (or run 'make bench-embeddings')"
fi

# Benchmark tools (nginx, wrk) come from Debian; setup.sh installs what is missing.
"$REPO_ROOT/scripts/setup.sh" --bench
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$REPO_ROOT/.ort/lib/libonnxruntime.so}"

# ------------------------------------------------------- processes + cleanup ---
TMP="$(mktemp -d -t infergate-bench.XXXXXX)"
PIDS=()
WRK_PID=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local pid i
    if [[ -n "$WRK_PID" ]]; then kill -TERM "$WRK_PID" 2>/dev/null || true; fi
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_http NAME PID URL OUT: poll until URL answers 200 to the benchmark POST,
# saving the body to OUT; fail early if the process died.
wait_http() {
    local name="$1" pid="$2" url="$3" out="$4" code i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || { tail -n 30 "$TMP/$name.log" >&2 || true; die "$name exited during start-up (log above)"; }
        code="$(curl -s -o "$out" -w '%{http_code}' -X POST "$url" \
            -H 'Content-Type: application/json' -H "Authorization: Bearer $API_KEY" \
            --data-binary @"$REQUEST" || true)"
        [[ "$code" == 200 ]] && return 0
        sleep 0.1
    done
    tail -n 30 "$TMP/$name.log" >&2 || true
    die "$name did not answer 200 on $url within 30 s (last status: $code)"
}

declare -A PID_OF URL_OF

# ---------------------------------------------------------------- infergate ---
BODY="$TMP/body.json"
if ((!NGINX_ONLY)); then
    port="$(free_port)"
    sed -E "s|^listen = \".*\"|listen = \"127.0.0.1:$port\"|" "$BENCH_DIR/embeddings.toml" >"$TMP/embeddings.toml"
    grep -q "^listen = \"127.0.0.1:$port\"" "$TMP/embeddings.toml" || die "could not set listen in $TMP/embeddings.toml"
    "$BIN" serve --config "$TMP/embeddings.toml" >"$TMP/infergate.log" 2>&1 &
    PIDS+=("$!")
    PID_OF[infergate]=$!
    URL_OF[infergate]="http://127.0.0.1:$port/v1/embeddings"
    wait_http infergate "${PID_OF[infergate]}" "${URL_OF[infergate]}" "$BODY"
    log "infergate pid ${PID_OF[infergate]} on 127.0.0.1:$port; captured a $(wc -c <"$BODY")-byte response"
else
    # Self-test: a response of the same shape and size as a real one.
    "$PYTHON" - "$BODY" <<'PY'
import json, math, sys
v = [math.sin(i) for i in range(384)]
n = math.sqrt(sum(x * x for x in v))
body = {"object": "list", "model": "synthetic-embed",
        "data": [{"object": "embedding", "index": 0, "embedding": [x / n for x in v]}],
        "usage": {"prompt_tokens": 9, "total_tokens": 9}}
open(sys.argv[1], "w").write(json.dumps(body, separators=(",", ":")))
PY
    log "--nginx-only: using a synthetic $(wc -c <"$BODY")-byte embeddings body"
fi

# -------------------------------------------------------------------- nginx ---
# The captured body goes verbatim into nginx's `return 200`. nginx limits one
# config token to 4 KiB, so the body is split into `set $bN '...'` pieces that
# `return` joins (a few memcpys per request). Backslashes and quotes are
# escaped; `$` would start an nginx variable, so refuse it.
grep -q '\$' "$BODY" && die "response body contains '\$'; cannot embed it in nginx's return"
"$PYTHON" - "$BODY" "$TMP/nginx-body.conf" <<'PY'
import sys
body = open(sys.argv[1], "rb").read()
parts = [body[i:i + 3000] for i in range(0, len(body), 3000)] or [b""]
esc = lambda b: b.replace(b"\\", b"\\\\").replace(b"'", b"\\'")
with open(sys.argv[2], "wb") as f:
    for i, p in enumerate(parts):
        f.write(b"            set $b%d '%s';\n" % (i, esc(p)))
    f.write(b'            return 200 "%s";\n' % b"".join(b"$b%d" % i for i in range(len(parts))))
PY
port="$(free_port)"
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx.conf" <<EOF
# Generated by scripts/bench-embeddings.sh: the HTTP floor for POST /v1/embeddings.
daemon off;
worker_processes auto;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/json;
    keepalive_requests 10000000;   # like hyper: never close a keep-alive connection
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    server {
        listen 127.0.0.1:$port;
        location / {
$(cat "$TMP/nginx-body.conf")
        }
    }
}
EOF
nginx -t -q -p "$TMP/nginx" -c "$TMP/nginx.conf" -e "$TMP/nginx.log" || die "nginx config test failed ($TMP/nginx.conf)"
nginx -p "$TMP/nginx" -c "$TMP/nginx.conf" -e "$TMP/nginx.log" &
PIDS+=("$!")
PID_OF[nginx]=$!
URL_OF[nginx]="http://127.0.0.1:$port/v1/embeddings"
wait_http nginx "${PID_OF[nginx]}" "${URL_OF[nginx]}" "$TMP/nginx-body.json"
cmp -s "$BODY" "$TMP/nginx-body.json" || die "nginx does not return the captured body byte for byte"
log "nginx pid ${PID_OF[nginx]} on 127.0.0.1:$port returns the same $(wc -c <"$BODY")-byte body"

# ------------------------------------------------------------------ load runs ---
TARGETS=(infergate nginx)
((NGINX_ONLY)) && TARGETS=(nginx)
CLK_TCK="$(getconf CLK_TCK)"
export BENCH_BODY_FILE="$REQUEST" BENCH_API_KEY="$API_KEY"

# run_wrk TARGET SECONDS OUT: one wrk run (raw output in OUT); sets REQUESTS,
# DURATION_US, P50_US, P99_US, ERRORS. wrk runs in the background so that a
# signal interrupts `wait` and the EXIT trap stops everything at once.
run_wrk() {
    wrk -t "$THREADS" -c "$CONNECTIONS" -d "${2}s" --latency -s "$BENCH_DIR/post.lua" "${URL_OF[$1]}" >"$3" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || { cat "$3" >&2; die "wrk failed against $1"; }
    WRK_PID=""
    local line pair
    local -A kv=()
    line="$(grep '^BENCH ' "$3")" || { cat "$3" >&2; die "no result line from wrk against $1"; }
    for pair in ${line#BENCH }; do kv[${pair%%=*}]="${pair#*=}"; done
    REQUESTS=${kv[requests]} DURATION_US=${kv[duration_us]} P50_US=${kv[p50_us]} P99_US=${kv[p99_us]}
    ERRORS=$((kv[err_connect] + kv[err_read] + kv[err_write] + kv[err_status] + kv[err_timeout]))
}

log "warm-up: ${WARMUP}s per target"
for t in "${TARGETS[@]}"; do run_wrk "$t" "$WARMUP" "$TMP/wrk-warmup-$t.txt"; done

RESULTS="$TMP/results.tsv"
printf 'round\ttarget\trequests\tduration_us\tp50_us\tp99_us\terrors\tcpu_ticks\tclk_tck\n' >"$RESULTS"
for ((r = 1; r <= ROUNDS; r++)); do
    # Alternate the order so neither target always runs first.
    order=("${TARGETS[@]}")
    ((r % 2 == 0)) && mapfile -t order < <(printf '%s\n' "${TARGETS[@]}" | tac)
    for t in "${order[@]}"; do
        before="$(proc_ticks "${PID_OF[$t]}")"
        run_wrk "$t" "$DURATION" "$TMP/wrk-$r-$t.txt"
        after="$(proc_ticks "${PID_OF[$t]}")"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$t" "$REQUESTS" "$DURATION_US" \
            "$P50_US" "$P99_US" "$ERRORS" "$((after - before))" "$CLK_TCK" >>"$RESULTS"
        log "round $r/$ROUNDS $t: $REQUESTS requests in ${DURATION}s, p50 $P50_US µs, p99 $P99_US µs, $ERRORS errors"
    done
done

# ------------------------------------------------------------------- report ---
mkdir -p target/bench
REPORT="target/bench/embeddings-$(date +%Y%m%d-%H%M%S).md"
rc=0
"$PYTHON" "$BENCH_DIR/report.py" "$RESULTS" >"$TMP/tables.md" || rc=$?
{
    echo "## POST /v1/embeddings: ${TARGETS[*]}"
    echo
    echo "$(date -u +%FT%TZ), $(nproc) cores, $(uname -r); wrk -t $THREADS -c $CONNECTIONS -d ${DURATION}s --latency," \
        "$ROUNDS rounds (order alternating), $(nginx -v 2>&1 | sed 's/.*: //'), response body $(wc -c <"$BODY") bytes," \
        "infergate commit $(git rev-parse --short --verify -q HEAD 2>/dev/null || echo none)"
    echo
    cat "$TMP/tables.md"
} | tee "$REPORT"
log "report saved to $REPORT"
exit "$rc"
