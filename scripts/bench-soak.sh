#!/usr/bin/env bash
# Soak: the live scheduler benchmark's gateway (scripts/bench/scheduler-live.toml,
# capacity 158.7 req/s) for DURATION seconds at 1x capacity, then DURATION
# seconds at LOAD x capacity, each from k6's constant-arrival-rate executor
# (scripts/bench/soak.js), the gateway's RSS sampled every second. Prints
# a Markdown table: goodput per tenant, refusals and how fast they were
# answered, any other status, and RSS (steady = median over the 1x run).
#
#   scripts/bench-soak.sh            (needs target/release/infergate)
# Environment (defaults): LOAD=10 DURATION=60 (s) POLICY=deadline
set -euo pipefail
LOG_TAG=soak
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

LOAD="${LOAD:-10}"
DURATION="${DURATION:-60}"
POLICY="${POLICY:-deadline}"
BIN="${INFERGATE_BIN:-target/release/infergate}"
CONFIG="$REPO_ROOT/scripts/bench/scheduler-live.toml"
[[ -x "$BIN" ]] || die "$BIN not found: cargo build --release --bin infergate"
"$REPO_ROOT/scripts/setup.sh" --bench >/dev/null
K6="$REPO_ROOT/.tools/k6"
CAPACITY=158.7

TMP="$(mktemp -d -t infergate-soak.XXXXXX)"
GW=""
SAMPLER=""
cleanup() {
    [[ -z "$SAMPLER" ]] || kill "$SAMPLER" 2>/dev/null || true
    if [[ -n "$GW" ]]; then kill -TERM "$GW" 2>/dev/null || true; wait "$GW" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT

port="$(free_port)"
sed -E "s|^listen = \".*\"|listen = \"127.0.0.1:$port\"|" "$CONFIG" >"$TMP/config.toml"
INFERGATE__MODELS__0__POLICY="$POLICY" "$BIN" serve --config "$TMP/config.toml" >"$TMP/gw.log" 2>&1 &
GW=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done

# RSS in KiB, one line a second: "<phase> <kib>".
echo idle >"$TMP/phase"
(
    while kill -0 "$GW" 2>/dev/null; do
        echo "$(cat "$TMP/phase") $(awk '/^VmRSS:/ { print $2 }' "/proc/$GW/status" 2>/dev/null)" >>"$TMP/rss"
        sleep 1
    done
) &
SAMPLER=$!

scrape() { curl -sf "http://127.0.0.1:$port/metrics" >"$TMP/metrics-$1"; }
for load in 1 "$LOAD"; do
    scrape "before-$load"
    rate="$(awk -v c="$CAPACITY" -v l="$load" 'BEGIN { printf "%d", 2 * int(c * l / 2 + 0.5) }')"
    log "${load}x: $rate req/s for ${DURATION}s"
    echo "${load}x" >"$TMP/phase"
    TARGET_URL="http://127.0.0.1:$port/v1/embeddings" RATE="$rate" DURATION="${DURATION}s" DEADLINE_MS=200 \
        "$K6" run --quiet --no-color --summary-export "$TMP/k6-$load.json" "$REPO_ROOT/scripts/bench/soak.js" \
        >"$TMP/k6-$load.log" 2>&1 || { tail -20 "$TMP/k6-$load.log" >&2; die "k6 failed"; }
    scrape "after-$load"
done
echo after >"$TMP/phase"
sleep 2
kill "$SAMPLER" 2>/dev/null || true
SAMPLER=""

"$PYTHON" - "$TMP" "$LOAD" "$DURATION" "$CAPACITY" <<'PY'
import json, statistics, sys
tmp, load, duration, capacity = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
rss = {}
for line in open(f"{tmp}/rss"):
    parts = line.split()
    if len(parts) == 2:
        rss.setdefault(parts[0], []).append(int(parts[1]))
steady = statistics.median(rss["1x"])

def refusal_buckets(name):
    """Cumulative `le` counts of the gateway's own duration histogram for
    503 answers on /v1/embeddings (measured in the server, not by k6)."""
    out = {}
    for line in open(f"{tmp}/metrics-{name}"):
        if (line.startswith("http_server_request_duration_seconds_bucket{")
                and 'http_route="/v1/embeddings"' in line and 'http_response_status_code="503"' in line):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float(le)] = float(line.split("}", 1)[1].split()[0])
    return out

def server_refusals(l):
    before, after = refusal_buckets(f"before-{l}"), refusal_buckets(f"after-{l}")
    delta = sorted((le, c - before.get(le, 0)) for le, c in after.items())
    total = delta[-1][1] if delta else 0
    if not total:
        return "–"
    p99 = next(le for le, c in delta if c >= 0.99 * total)
    under_1ms = next(c for le, c in delta if le >= 0.001) / total
    return f"≤ {p99 * 1000:g} ms ({under_1ms:.2%} ≤ 1 ms)"
print("| load | offered req/s | interactive goodput req/s | batch goodput req/s | late | refused (503) | refusal ms median / p99 / max (k6) | refusal p99 (server) | other statuses (5xx: 504, none) | k6 dropped | RSS MiB max (× steady) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for l in ["1", load]:
    m = json.load(open(f"{tmp}/k6-{l}.json"))["metrics"]
    count = lambda name: m.get(name, {}).get("count", 0)
    offered = 2 * int(capacity * float(l) / 2 + 0.5)
    r = m.get("refusal_ms", {})
    refusal = f"{r.get('med', 0):.2f} / {r.get('p(99)', 0):.2f} / {r.get('max', 0):.2f}" if r else "–"
    peak = max(rss[f"{l}x"])
    print(f"| {l}× | {offered} | {count('good_interactive') / duration:.1f} | {count('good_bulk') / duration:.1f} "
          f"| {count('late')} | {count('refused')} | {refusal} | {server_refusals(l)} | {count('other_status')} ({count('other_5xx')}: {count('status_504')}, {count('status_0')}) "
          f"| {count('dropped_iterations')} "
          f"| {peak / 1024:.1f} ({peak / steady:.2f}×) |")
print()
print(f"Steady RSS (median over the 1× run): {steady / 1024:.1f} MiB; idle before: {max(rss.get('idle', [0])) / 1024:.1f} MiB; after: {max(rss.get('after', [0])) / 1024:.1f} MiB.")
PY
