#!/usr/bin/env bash
# Translation quality of the gateway's DeepL route: DeepL's official Python
# client sends every sentence of scripts/bench/translation/everyday.jsonl
# (24 everyday sentences in en, de, fr, es, it, zh and ja; the references are
# the set's own translations) one request each, and sacrebleu scores chrF per
# language pair and overall, with characters per second.
#
#   scripts/bench-translation.sh              (needs target/release/infergate, or INFERGATE_BIN)
# Environment (defaults):
#   BENCH_CONFIG   a gateway config whose [translation] names the model
#                  (examples/embedded.toml); its listen address is replaced
#   BENCH_KEY      an API key of a tenant in it (sk-infergate-dev)
#   BENCH_PAIRS    language pairs (en-de,en-fr,en-es,en-zh,en-ja,de-en,fr-en,es-en,it-en,zh-en,ja-en)
#   BENCH_JSON     also write every translation and score to this file
set -euo pipefail
LOG_TAG=translation
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

BIN="${INFERGATE_BIN:-target/release/infergate}"
CONFIG="${BENCH_CONFIG:-examples/embedded.toml}"
KEY="${BENCH_KEY:-sk-infergate-dev}"
[[ -x "$BIN" ]] || die "$BIN not found: cargo build --release --bin infergate"
"$REPO_ROOT/scripts/setup.sh"
PY="$REPO_ROOT/.venv/bin/python"
"$PY" -c 'import sacrebleu' 2>/dev/null || "$REPO_ROOT/scripts/setup.sh" --bench
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$REPO_ROOT/.ort/lib/libonnxruntime.so}"

bench_workspace translation
port="$(free_port)"
"$BIN" serve --config "$CONFIG" --listen "127.0.0.1:$port" >"$TMP/gateway.log" 2>&1 &
PIDS+=("$!")
URL="http://127.0.0.1:$port"
for _ in $(seq 1 600); do curl -sf "$URL/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "$URL/readyz" >/dev/null || die "gateway did not start: $(tail -5 "$TMP/gateway.log")"

echo "## Translation quality ($(date -u +%F), $(nproc) cores, $CONFIG)"
args=(--server-url "$URL" --auth-key "$KEY")
[[ -n "${BENCH_PAIRS:-}" ]] && args+=(--pairs "$BENCH_PAIRS")
[[ -n "${BENCH_JSON:-}" ]] && args+=(--json "$BENCH_JSON")
"$PY" scripts/bench/translation_quality.py "${args[@]}"
