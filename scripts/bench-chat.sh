#!/usr/bin/env bash
# Chat benchmark on the in-process SmolLM2-135M-Instruct through the gateway,
# continuous batching against one-request-per-session (the same binary and
# sessions with `max_run_inputs = 1`), side by side in one run:
#   1. aggregate decode throughput: N streamed greedy requests of T tokens,
#      1 or 8 in flight (tokens from each response's usage);
#   2. time to first token of short requests that arrive one after another
#      while 7 long streams (192 tokens) decode, against the same request on
#      an idle model. Without continuous batching the first probe queues
#      behind the long streams (and later probes find them finished).
#
#   scripts/bench-chat.sh      (needs target/debug/infergate, or INFERGATE_BIN)
# Environment (defaults): BENCH_REQUESTS=16 BENCH_TOKENS=64 BENCH_SESSIONS=2 BENCH_THREADS=1
set -euo pipefail
LOG_TAG=chat
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

REQUESTS="${BENCH_REQUESTS:-16}"
TOKENS="${BENCH_TOKENS:-64}"
SESSIONS="${BENCH_SESSIONS:-2}"
THREADS="${BENCH_THREADS:-1}"
BIN="${INFERGATE_BIN:-target/debug/infergate}"
[[ -x "$BIN" ]] || die "$BIN not found: cargo build --bin infergate"
"$REPO_ROOT/scripts/setup.sh"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$REPO_ROOT/.ort/lib/libonnxruntime.so}"
PY="$REPO_ROOT/.venv/bin/python"
LOAD="$REPO_ROOT/scripts/bench/chat_load.py"

TMP="$(mktemp -d -t infergate-chat.XXXXXX)"
PID=""
cleanup() {
    [[ -n "$PID" ]] && { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
    rm -rf "$TMP"
}
trap cleanup EXIT

config() { # MAX_SEQUENCES -> config on stdout
    cat <<TOML
[[tenants]]
name = "web"
class = "interactive"
api_key_sha256 = ["3b978aa9b13194c6acccdc77d6d65ded5407e7e4fd82b5647e744e3427d71df4"]

[[models]]
name = "chat"
task = "chat"
concurrency = $SESSIONS
queue = { max_jobs = 256, max_bytes = 16777216 }
backend = { kind = "onnx", pipeline = "chat", model = "models/smollm2", sessions = $SESSIONS, intra_threads = $THREADS, max_run_inputs = $1 }
TOML
}

start() { # CONFIG -> sets PID and URL
    local port
    port="$(free_port)"
    "$BIN" serve --config "$1" --listen "127.0.0.1:$port" >"$TMP/gateway.log" 2>&1 &
    PID=$!
    URL="http://127.0.0.1:$port"
    for _ in $(seq 1 300); do curl -sf "$URL/readyz" >/dev/null && return; sleep 0.1; done
    die "gateway did not start: $(tail -5 "$TMP/gateway.log")"
}
stop() { kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }

echo "## Chat through the gateway ($(date -u +%F), $(nproc) cores, $SESSIONS sessions × $THREADS threads, $TOKENS greedy tokens per request)"
echo
echo "| mode | in flight | requests | tokens | wall | tokens/s | median TTFT |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for mode in continuous one-per-session; do
    case "$mode" in continuous) config 16 ;; *) config 1 ;; esac >"$TMP/$mode.toml"
    start "$TMP/$mode.toml"
    "$PY" "$LOAD" throughput "$URL" --concurrency 2 --requests 2 --max-tokens 8 >/dev/null # warm-up
    for concurrency in 1 8; do
        "$PY" "$LOAD" throughput "$URL" --concurrency "$concurrency" --requests "$REQUESTS" --max-tokens "$TOKENS" \
            >"$TMP/$mode-$concurrency.json"
        "$PY" - "$mode" "$TMP/$mode-$concurrency.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
print(f"| {sys.argv[1]} | {r['concurrency']} | {r['requests']} | {r['tokens']} | {r['wall_s']:.1f} s | {r['tokens_per_s']:.1f} | {r['ttft_median_s'] * 1000:.0f} ms |")
PY
    done
    "$PY" "$LOAD" ttft "$URL" --background 7 --max-tokens 192 --probes 5 >"$TMP/$mode-ttft.json"
    stop
done
echo
echo "| mode | TTFT idle (median) | first probe while 7 streams decode | probes' TTFTs (in order) |"
echo "|---|---:|---:|---|"
for mode in continuous one-per-session; do
    "$PY" - "$mode" "$TMP/$mode-ttft.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
busy = ", ".join(f"{t * 1000:.0f}" for t in r["busy_s"])
print(f"| {sys.argv[1]} | {r['alone_median_s'] * 1000:.0f} ms | {r['busy_s'][0] * 1000:.0f} ms | {busy} ms |")
PY
done
