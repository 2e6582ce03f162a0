#!/usr/bin/env bash
# In-process llama.cpp chat (infergate's `kind = "llama"` backend, through
# the gateway) against llama.cpp's own `llama-server`, side by side on the
# same GGUF file, threads and parallel sequences: streamed greedy requests,
# 1 and 8 in flight, tokens counted from each answer's usage, in alternating
# rounds (peer, infergate, peer, ...) so that drift on the shared cores hits
# both alike.
#
#   scripts/bench-llama.sh     (needs target/release/infergate, or INFERGATE_BIN)
# Environment (defaults): BENCH_ROUNDS=2 BENCH_REQUESTS=16 BENCH_TOKENS=128
#   BENCH_THREADS=2 BENCH_SEQUENCES=8 BENCH_KV=16384
#   BENCH_MODEL=models/gguf/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
#   LLAMA_SERVER (default: the one `scripts/setup.sh --bench` builds)
set -euo pipefail
LOG_TAG=llama
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

ROUNDS="${BENCH_ROUNDS:-2}"
REQUESTS="${BENCH_REQUESTS:-16}"
TOKENS="${BENCH_TOKENS:-128}"
THREADS="${BENCH_THREADS:-2}"
SEQUENCES="${BENCH_SEQUENCES:-8}"
KV="${BENCH_KV:-16384}"
MODEL="${BENCH_MODEL:-models/gguf/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}"
BIN="${INFERGATE_BIN:-target/release/infergate}"
[[ -x "$BIN" ]] || die "$BIN not found: cargo build --release --bin infergate"
# --bench builds the peer; a LLAMA_SERVER of one's own skips that.
if [[ -n "${LLAMA_SERVER:-}" ]]; then "$REPO_ROOT/scripts/setup.sh"; else "$REPO_ROOT/scripts/setup.sh" --bench; fi
LLAMA_SERVER="${LLAMA_SERVER:-$REPO_ROOT/.tools/llama-server}"
[[ -x "$LLAMA_SERVER" ]] || die "$LLAMA_SERVER not found (scripts/setup.sh --bench builds it)"
PY="$REPO_ROOT/.venv/bin/python"
LOAD="$REPO_ROOT/scripts/bench/chat_load.py"

TMP="$(mktemp -d -t infergate-llama.XXXXXX)"
PID=""
cleanup() {
    [[ -n "$PID" ]] && { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
    rm -rf "$TMP"
}
trap cleanup EXIT

cat >"$TMP/infergate.toml" <<TOML
[[tenants]]
name = "bench"
class = "interactive"
api_key_sha256 = ["$(printf %s sk-infergate-test | sha256sum | cut -d' ' -f1)"]

[[models]]
name = "chat"
task = "chat"
queue = { max_jobs = 256, max_bytes = 16777216 }
backend = { kind = "llama", model = "$MODEL", threads = $THREADS, max_sequences = $SEQUENCES, kv_tokens = $KV }
TOML

start() { # ENGINE -> sets PID and URL
    local port
    port="$(free_port)"
    URL="http://127.0.0.1:$port"
    case "$1" in
        llama-server)
            "$LLAMA_SERVER" -m "$MODEL" -t "$THREADS" -np "$SEQUENCES" -c "$KV" --alias chat \
                --host 127.0.0.1 --port "$port" >"$TMP/$1.log" 2>&1 &
            PID=$!
            for _ in $(seq 1 300); do curl -sf "$URL/health" >/dev/null && return; sleep 0.1; done
            ;;
        infergate)
            RUST_LOG=warn "$BIN" serve --config "$TMP/infergate.toml" --listen "127.0.0.1:$port" >"$TMP/$1.log" 2>&1 &
            PID=$!
            for _ in $(seq 1 300); do curl -sf "$URL/readyz" >/dev/null && return; sleep 0.1; done
            ;;
    esac
    die "$1 did not start: $(tail -5 "$TMP/$1.log")"
}
stop() { kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }

for round in $(seq 1 "$ROUNDS"); do
    for engine in llama-server infergate; do
        start "$engine"
        "$PY" "$LOAD" throughput "$URL" --concurrency 2 --requests 2 --max-tokens 8 >/dev/null # warm-up
        for concurrency in 1 8; do
            requests=$((concurrency == 1 ? REQUESTS / 2 : REQUESTS))
            "$PY" "$LOAD" throughput "$URL" --concurrency "$concurrency" --requests "$requests" \
                --max-tokens "$TOKENS" >"$TMP/$engine-$concurrency-$round.json"
        done
        stop
    done
done

echo "## In-process llama.cpp vs llama-server ($(date -u +%F), $(nproc) cores, $(basename "$MODEL"), $THREADS threads, $SEQUENCES sequences, $TOKENS greedy tokens per request, $ROUNDS rounds)"
echo
"$PY" - "$TMP" "$ROUNDS" <<'PY'
import json, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
def runs(engine, c):
    return [json.load(open(f"{tmp}/{engine}-{c}-{r}.json")) for r in range(1, rounds + 1)]
print("| in flight | llama-server tokens/s | infergate tokens/s | ratio | llama-server TTFT | infergate TTFT |")
print("|---:|---:|---:|---:|---:|---:|")
for c in (1, 8):
    peer, ours = runs("llama-server", c), runs("infergate", c)
    p = statistics.median(r["tokens_per_s"] for r in peer)
    o = statistics.median(r["tokens_per_s"] for r in ours)
    pt = statistics.median(r["ttft_median_s"] for r in peer) * 1000
    ot = statistics.median(r["ttft_median_s"] for r in ours) * 1000
    each = lambda rs: ", ".join(f"{r['tokens_per_s']:.1f}" for r in rs)
    print(f"| {c} | {p:.1f} ({each(peer)}) | {o:.1f} ({each(ours)}) | {o / p:.2f}× | {pt:.0f} ms | {ot:.0f} ms |")
PY
