#!/usr/bin/env bash
# Open-loop load generators on one core: infergate-load (`run --rate`), oha
# (`-q`, with --latency-correction) and k6 (constant-arrival-rate), each pinned
# to CPU 0 with taskset, against nginx `return 200` pinned to CPU 1, at rising
# offered rates. For each: the achieved rate (requests completed / duration)
# and, for infergate-load, its schedule-lag p99 and validity verdict. A tool
# sustains a rate when it achieves it within 1%.
#
#   scripts/bench-generators.sh    (needs target/release/infergate-load; oha via OHA=path)
# Environment (defaults): BENCH_RATES="5000 10000 20000 30000 40000" BENCH_DURATION=5
#   OHA=oha (skipped when missing)
set -euo pipefail
LOG_TAG=generators
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
RATES="${BENCH_RATES:-5000 10000 20000 30000 40000}"
DURATION="${BENCH_DURATION:-5}"
OHA="${OHA:-oha}"
LOAD="${INFERGATE_BIN_DIR:-target/release}/infergate-load"
[[ -x "$LOAD" ]] || die "build first: cargo build --release --bins"
"$REPO_ROOT/scripts/setup.sh" --bench >/dev/null

bench_workspace generators

port="$(free_port)"
cat >"$TMP/nginx.conf" <<NGINX
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log;
daemon off;
events { worker_connections 8192; }
http { access_log off; server { listen 127.0.0.1:$port; location / { return 200 '{"ok":true}'; } } }
NGINX
taskset -c 1 nginx -c "$TMP/nginx.conf" -p "$TMP" &
PIDS+=("$!")
URL="http://127.0.0.1:$port/"
for _ in $(seq 1 100); do curl -sf -o /dev/null "$URL" && break; sleep 0.05; done

echo "## Open-loop generators on one core against nginx return 200 ($(date -u +%F), ${DURATION}s per run)"
echo
echo "| offered req/s | infergate-load achieved | lag p99 | verdict | oha -q achieved | k6 achieved |"
echo "|---:|---:|---:|---|---:|---:|"
for rate in $RATES; do
    taskset -c 0 "$LOAD" run --url "$URL" --rate "$rate" --duration "${DURATION}s" -c 256 --json "$TMP/load.json" >/dev/null
    read -r ours lag verdict < <("$PYTHON" -c '
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
rate, lag = s["requests"] / float(sys.argv[2]), s["schedule"]["lag_ms"]["p99"]
print(f"{rate:.0f} {lag:.3f}ms", "valid" if s["schedule"]["valid"] else "invalid")
' "$TMP/load.json" "$DURATION")
    oha="—"
    if command -v "$OHA" >/dev/null; then
        taskset -c 0 "$OHA" -q "$rate" -z "${DURATION}s" -c 256 --latency-correction --no-tui \
            --output-format json "$URL" >"$TMP/oha.json" 2>/dev/null || true
        oha="$("$PYTHON" -c '
import json, sys
d = json.load(open(sys.argv[1]))
n = sum(d["statusCodeDistribution"].values())
print(f"{n / float(sys.argv[2]):.0f}")
' "$TMP/oha.json" "$DURATION" 2>/dev/null || echo "?")"
    fi
    k6out="$(taskset -c 0 "$REPO_ROOT/.tools/k6" run -q -e URL="$URL" -e RATE="$rate" -e DURATION="${DURATION}s" \
        scripts/bench/k6-rate.js 2>&1 || true)"
    k6="$(awk -v d="$DURATION" '/http_reqs/ { printf "%.0f", $2 / d }' <<<"$k6out")"
    echo "| $rate | $ours | $lag | $verdict | $oha | ${k6:-?} |"
done
