#!/usr/bin/env bash
# A profile-guided release build of `infergate` (PGO): build it instrumented,
# run it on a training load, rebuild it with the measured branch and call
# counts. The training load is the gateway's everyday paths on loopback:
# chat proxied to an OpenAI-compatible upstream (whole answers and streams,
# to infergate-fake-upstream), and chat, embeddings and translation on
# synthetic models. Paths the load does not reach are optimised as rarely
# run code, so the binary is for serving, not for the test suite (which
# builds debug anyway).
#
#   scripts/build-pgo.sh      -> $PGO_DIR/infergate (plus infergate-load,
#       infergate-fake-upstream and, when built, examples/hyper_proxy copied
#       from target/release, for INFERGATE_BIN_DIR=$PGO_DIR in the benchmarks)
# Environment (defaults): PGO_TRAIN_SECONDS=6 (per path) PGO_DIR=target/pgo
#   (the two builds' target directories, gen/ and use/, the profiles, data/)
# Needs the toolchain's llvm-profdata (`rustup component add llvm-tools`; tried
# here when missing). Two release builds of the whole tree: ~15 min on 2 cores.
set -euo pipefail
LOG_TAG=build-pgo
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
SECONDS_PER_PATH="${PGO_TRAIN_SECONDS:-6}"
HOST="$(rustc -vV | sed -n 's/^host: //p')"
PROFDATA="$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata"
if [[ ! -x "$PROFDATA" ]]; then
    log "llvm-profdata missing: rustup component add llvm-tools"
    rustup component add llvm-tools >&2 || die "cannot install llvm-tools"
fi
command -v wrk >/dev/null || die "wrk is missing: scripts/setup.sh --bench"

# Tools the training uses, built as usual.
cargo build --release --bin infergate-fake-upstream --bin infergate-load >&2

bench_workspace pgo
OUT="${PGO_DIR:-$REPO_ROOT/target/pgo}"
rm -rf "$OUT/data" "$OUT"/merged-*.profdata
mkdir -p "$OUT/data"
# --target keeps RUSTFLAGS off build scripts and proc macros; each build has
# a directory of its own so that neither invalidates target/release.
log "building instrumented"
RUSTFLAGS="-Cprofile-generate=$OUT/data" cargo build --release --bin infergate \
    --target "$HOST" --target-dir "$OUT/gen" >&2

up_port="$(free_port)"
target/release/infergate-fake-upstream --listen "127.0.0.1:$up_port" --base-latency 0ms --per-cost 0ms \
    --token-interval 0ms --max-delay 0ms --max-batch 1 >/dev/null 2>&1 &
PIDS+=("$!")
{
    proxy_infergate_toml "$up_port"
    # The synthetic models of examples/synthetic.toml, fast.
    cat <<TOML

[translation]
model = "synthetic-chat"

[[models]]
name = "synthetic-chat"
task = "chat"
concurrency = 4
batch = { max_size = 8, max_delay = "1ms" }
backend = { kind = "synthetic", base_latency = "0ms", per_cost = "1us", token_interval = "0ms" }

[[models]]
name = "synthetic-embed"
task = "embeddings"
concurrency = 2
batch = { max_size = 32, max_delay = "1ms" }
backend = { kind = "synthetic", base_latency = "0ms", per_cost = "1us", dimensions = 384 }
TOML
} >"$TMP/infergate.toml"
port="$(free_port)"
INFERGATE__SERVER__WORKER_THREADS=1 RUST_LOG=error "$OUT/gen/$HOST/release/infergate" serve \
    --config "$TMP/infergate.toml" --listen "127.0.0.1:$port" >"$TMP/gateway.log" 2>&1 &
gateway=$!
ready=0
for _ in $(seq 1 120); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && { ready=1; break; }
    sleep 0.5
done
[[ $ready == 1 ]] || die "the instrumented gateway did not start (see $TMP/gateway.log)"
export BENCH_API_KEY="sk-infergate-test"
train() { # PATH BODY: a profile of error answers would train the wrong paths
    log "training on $1 ($SECONDS_PER_PATH s): $2"
    echo "$2" >"$TMP/body.json"
    local result
    result="$(BENCH_BODY_FILE="$TMP/body.json" wrk -t1 -c16 -d"${SECONDS_PER_PATH}s" -s scripts/bench/post.lua \
        "http://127.0.0.1:$port$1" | grep '^BENCH')" || die "no result from wrk on $1"
    echo "$result" >&2
    [[ "$result" =~ requests=[1-9] && ! "$result" =~ err_[a-z]+=[1-9] ]] || die "training on $1 failed: $result"
}
train /v1/chat/completions '{"model":"remote","messages":[{"role":"user","content":"Say hi."}],"max_tokens":4}'
train /v1/chat/completions \
    '{"model":"remote","messages":[{"role":"user","content":"Say hi."}],"max_tokens":8,"stream":true}'
train /v1/chat/completions '{"model":"synthetic-chat","messages":[{"role":"user","content":"Hello"}],"max_tokens":8}'
train /v1/embeddings '{"model":"synthetic-embed","input":["one sentence","and another"]}'
train /v2/translate '{"text":["Guten Morgen"],"target_lang":"EN"}'
# The profile is written when the process exits normally.
kill -TERM "$gateway"
wait "$gateway" || die "the instrumented gateway did not exit cleanly (see $TMP/gateway.log)"
"$PROFDATA" merge -o "$OUT/merged.profdata" "$OUT/data" >&2
# Named by its contents: cargo does not look into the file RUSTFLAGS names,
# so a new profile must be a new flag to rebuild with it.
profile="$OUT/merged-$(sha256_of "$OUT/merged.profdata" | cut -c1-16).profdata"
mv "$OUT/merged.profdata" "$profile"

log "building with the profile"
RUSTFLAGS="-Cprofile-use=$profile" cargo build --release --bin infergate \
    --target "$HOST" --target-dir "$OUT/use" >&2
cp "$OUT/use/$HOST/release/infergate" "$OUT/infergate"
cp target/release/infergate-load target/release/infergate-fake-upstream "$OUT/"
# So that INFERGATE_BIN_DIR=$OUT scripts/bench-proxy-pinned.sh has its floor too.
if [[ -x target/release/examples/hyper_proxy ]]; then
    mkdir -p "$OUT/examples" && cp target/release/examples/hyper_proxy "$OUT/examples/"
fi
log "done: $OUT/infergate"
