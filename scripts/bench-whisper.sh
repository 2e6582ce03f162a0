#!/usr/bin/env bash
# Speech benchmark on the real whisper.cpp models through the gateway:
#   1. real-time factor per model (processing seconds / audio seconds) on an
#      espeak-ng English clip, one request at a time, each model with every
#      core (1 state × THREADS threads);
#   2. throughput of tiny.en with 1 vs. 2 concurrent requests on 2 states of
#      1 thread each: audio seconds transcribed per wall second.
#
#   scripts/bench-whisper.sh        (needs target/release/infergate)
# Environment (defaults): BENCH_REQUESTS=6 BENCH_THREADS=2
set -euo pipefail
LOG_TAG=whisper
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

REQUESTS="${BENCH_REQUESTS:-6}"
THREADS="${BENCH_THREADS:-2}"
BIN="${INFERGATE_BIN:-target/release/infergate}"
[[ -x "$BIN" ]] || die "$BIN not found: cargo build --release --bin infergate"
"$REPO_ROOT/scripts/setup.sh"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$REPO_ROOT/.ort/lib/libonnxruntime.so}"

TMP="$(mktemp -d -t infergate-whisper.XXXXXX)"
PID=""
cleanup() {
    [[ -n "$PID" ]] && { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
    rm -rf "$TMP"
}
trap cleanup EXIT

espeak-ng -v en-us -w "$TMP/clip.wav" "The weather today is sunny with a light breeze. \
Please send the quarterly report by Friday afternoon. Our gateway schedules every request by its deadline, \
and the load tester turns what it measures into autoscaler settings."
seconds="$("$REPO_ROOT/.venv/bin/python" -c 'import sys, wave; w = wave.open(sys.argv[1]); print(w.getnframes() / w.getframerate())' "$TMP/clip.wav")"

# start CONFIG -> sets PID and URL
start() {
    local port
    port="$(free_port)"
    "$BIN" serve --config "$1" --listen "127.0.0.1:$port" >"$TMP/gateway.log" 2>&1 &
    PID=$!
    URL="http://127.0.0.1:$port"
    for _ in $(seq 1 200); do curl -sf "$URL/readyz" >/dev/null && return; sleep 0.1; done
    die "gateway did not start: $(tail -5 "$TMP/gateway.log")"
}
stop() { kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }

# one MODEL -> prints wall seconds of one transcription
one() {
    curl -sf -o /dev/null -w '%{time_total}\n' "$URL/v1/audio/transcriptions" \
        -H 'Authorization: Bearer sk-infergate-test' -H 'X-Request-Timeout: none' \
        -F "file=@$TMP/clip.wav" -F "model=$1"
}

config() { # STATES THREADS -> config on stdout
    cat <<TOML
[[tenants]]
name = "web"
class = "interactive"
api_key_sha256 = ["3b978aa9b13194c6acccdc77d6d65ded5407e7e4fd82b5647e744e3427d71df4"]

[[models]]
name = "tiny.en"
task = "transcription"
concurrency = $1
backend = { kind = "whisper", model = "models/whisper/ggml-tiny.en.bin", states = $1, threads = $2 }

[[models]]
name = "base"
task = "transcription"
concurrency = $1
backend = { kind = "whisper", model = "models/whisper/ggml-base.bin", states = $1, threads = $2 }
TOML
}

echo "## Whisper through the gateway ($(date -u +%F), $(nproc) cores, clip ${seconds}s of espeak-ng English)"
echo
echo "| model | threads | median wall | real-time factor |"
echo "|---|---:|---:|---:|"
config 1 "$THREADS" >"$TMP/rtf.toml"
start "$TMP/rtf.toml"
for model in tiny.en base; do
    one "$model" >/dev/null # warm-up
    for _ in $(seq 1 "$REQUESTS"); do one "$model"; done | sort -n >"$TMP/$model.times"
    median="$(awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}' "$TMP/$model.times")"
    awk -v m="$model" -v t="$THREADS" -v med="$median" -v s="$seconds" \
        'BEGIN { printf "| %s | %d | %.2f s | %.3f |\n", m, t, med, med / s }'
done
stop

echo
echo "| concurrent requests (tiny.en, 2 states × 1 thread) | requests | wall | audio s per wall s |"
echo "|---:|---:|---:|---:|"
config 2 1 >"$TMP/tput.toml"
start "$TMP/tput.toml"
one tiny.en >/dev/null
for concurrency in 1 2; do
    total=$((REQUESTS * 2))
    began="$EPOCHREALTIME"
    seq 1 "$total" | xargs -P "$concurrency" -I{} sh -c "curl -sf -o /dev/null '$URL/v1/audio/transcriptions' \
        -H 'Authorization: Bearer sk-infergate-test' -H 'X-Request-Timeout: none' \
        -F 'file=@$TMP/clip.wav' -F model=tiny.en"
    ended="$EPOCHREALTIME"
    awk -v c="$concurrency" -v n="$total" -v b="$began" -v e="$ended" -v s="$seconds" \
        'BEGIN { printf "| %d | %d | %.1f s | %.2f |\n", c, n, e - b, n * s / (e - b) }'
done
stop
