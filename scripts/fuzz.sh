#!/usr/bin/env bash
# Run every fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for FUZZ_SECONDS
# each, one after another, from the committed seeds; fails on the first
# crash, timeout or out-of-memory, which libFuzzer leaves in
# fuzz/artifacts/<target>/. Used by `make fuzz`; needs `scripts/setup.sh --fuzz`.
#
#   scripts/fuzz.sh [TARGET...]      (default: every target)
#
# Environment: FUZZ_SECONDS (default 60), FUZZ_NICE (default 19), FUZZ_ARGS
# (more libFuzzer flags). What a run learns goes to fuzz/corpus-run/<target>
# and its log to fuzz/logs/<target>.log (both outside git); each target's
# last statistics line is printed at the end.
set -euo pipefail
LOG_TAG=fuzz
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECONDS_EACH="${FUZZ_SECONDS:-60}"
NICE="${FUZZ_NICE:-19}"
export PATH="$REPO_ROOT/.tools:$PATH"

# Input size limits per target: a few times the largest realistic seed,
# small enough to keep executions fast.
declare -A MAX_LEN=(
    [json_object]=65536 [openai_request]=16384 [multipart]=65536 [kserve_binary]=16384
    [audio_decode]=131072 [image_header]=65536 [sse_relay]=16384 [config_load]=16384
)
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(json_object openai_request multipart kserve_binary audio_decode image_header sse_relay config_load)

command -v cargo-fuzz >/dev/null || die "cargo-fuzz is not installed: run scripts/setup.sh --fuzz"
cd "$REPO_ROOT"
log "building the targets (nightly, AddressSanitizer)"
nice -n "$NICE" cargo +nightly fuzz build

mkdir -p fuzz/logs
summary=()
for target in "${TARGETS[@]}"; do
    [[ -n "${MAX_LEN[$target]:-}" ]] || die "unknown target $target"
    mkdir -p "fuzz/corpus-run/$target" "fuzz/artifacts/$target"
    log "$target: ${SECONDS_EACH}s"
    status=0
    # shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
    nice -n "$NICE" cargo +nightly fuzz run "$target" "fuzz/corpus-run/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" -max_len="${MAX_LEN[$target]}" \
        -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 ${FUZZ_ARGS:-} \
        >"fuzz/logs/$target.log" 2>&1 || status=$?
    last="$(grep -E '^#[0-9]+' "fuzz/logs/$target.log" | tail -1 || true)"
    runs="$(grep -E '^stat::number_of_executed_units' "fuzz/logs/$target.log" | tail -1 | awk '{print $2}' || true)"
    summary+=("$target: ${runs:-?} executions; last: $last")
    if ((status != 0)); then
        tail -40 "fuzz/logs/$target.log" >&2
        die "$target failed (exit $status); input in fuzz/artifacts/$target/, log in fuzz/logs/$target.log"
    fi
done
printf '%s\n' "${summary[@]}"
