#!/usr/bin/env bash
# The response cache on repeated traffic: one workload of Zipf-distributed
# texts, run against the release gateway with the model's cache off, then on
# (a fresh gateway each time, rounds alternating), and compared side by side:
# throughput, p50/p99, hit ratio (hits and coalesced over look-ups, from the
# gateway's infergate_cache_requests_total), and the gateway's CPU per answer
# (its utime + stime over the run, from /proc; the load tester shares the
# cores and is left out).
#
#   scripts/bench-cache.sh     (needs target/release/infergate and infergate-load)
# Environment (defaults): BENCH_WORKLOAD=translation (or embeddings)
#   BENCH_REQUESTS=20000 BENCH_DISTINCT=2000 BENCH_ZIPF=1.1 BENCH_CONCURRENCY=16
#   BENCH_ROUNDS=1
# translation: DeepL's /v2/translate, one text of 3-12 words per request, to a
#   synthetic translator (batches of up to 8, 2 at a time, 5 ms + 100 µs per
#   token: the gateway's own work, not a model's, is what is measured);
# embeddings: /v1/embeddings, one input of 4-16 words, on all-MiniLM-L6-v2
#   (ONNX Runtime, the embedded default's settings; models/ from set-up).
set -euo pipefail
LOG_TAG=cache
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
WORKLOAD="${BENCH_WORKLOAD:-translation}"
REQUESTS="${BENCH_REQUESTS:-20000}"
DISTINCT="${BENCH_DISTINCT:-2000}"
ZIPF="${BENCH_ZIPF:-1.1}"
CONCURRENCY="${BENCH_CONCURRENCY:-16}"
ROUNDS="${BENCH_ROUNDS:-1}"
BIN="${INFERGATE_BIN:-target/release/infergate}"
LOAD="${INFERGATE_LOAD_BIN:-target/release/infergate-load}"
[[ -x "$BIN" && -x "$LOAD" ]] || die "build first: cargo build --release --bins"
bench_workspace cache

case "$WORKLOAD" in
    translation)
        model=chat
        models_toml='[translation]
model = "chat"

[[models]]
name = "chat"
task = "chat"
concurrency = 2
batch = { max_size = 8, max_delay = "2ms" }
queue = { max_jobs = 4096 }
backend = { kind = "synthetic", base_latency = "5ms", per_cost = "100us" }'
        entry="kind = \"translation\"
target_lang = \"DE\"
text_words = [3, 12]"
        ;;
    embeddings)
        model=all-minilm-l6-v2
        [[ -f models/minilm/model.onnx ]] || die "models/minilm is missing: scripts/setup.sh"
        models_toml='[[models]]
name = "all-minilm-l6-v2"
task = "embeddings"
batch = { max_size = 32, max_delay = "2ms" }
queue = { max_jobs = 4096 }
backend = { kind = "onnx", pipeline = "text-embeddings", model = "models/minilm/model.onnx", tokenizer = "models/minilm/tokenizer.json", intra_threads = 1 }'
        entry="kind = \"embeddings\"
model = \"$model\"
input_words = [4, 16]"
        ;;
    *) die "BENCH_WORKLOAD: translation or embeddings, not $WORKLOAD" ;;
esac

cat >"$TMP/scenario.toml" <<TOML
seed = 11
[defaults]
key = "sk-infergate-test"
timeout = "60s"

[[request]]
name = "$WORKLOAD"
$entry
distinct = $DISTINCT
zipf = $ZIPF
TOML

# cpu_ticks PID: utime + stime, in clock ticks
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

echo "$WORKLOAD: $REQUESTS requests over $DISTINCT distinct texts (Zipf s = $ZIPF), $CONCURRENCY in flight, $(nproc) cores"
echo
echo "| cache | round | answers/s | p50 ms | p99 ms | errors | hit ratio | jobs run | gateway CPU ms per answer |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for round in $(seq 1 "$ROUNDS"); do
for cache in off on; do
    cache_line=""
    [[ "$cache" == on ]] && cache_line='cache = { ttl = "1h", max_bytes = 268435456 }'
    {
        bench_tenant_toml
        echo
        # The cache line goes into the one model's table (its last line is the backend).
        echo "$models_toml" | sed "s/^task = \\(.*\\)$/task = \\1\\n$cache_line/"
    } >"$TMP/$cache.toml"
    port="$(free_port)"
    RUST_LOG=error "$BIN" serve --config "$TMP/$cache.toml" --listen "127.0.0.1:$port" >"$TMP/gw-$cache.log" 2>&1 &
    gw=$!
    PIDS+=("$gw")
    for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || die "the gateway did not start (see $TMP/gw-$cache.log)"
    before="$(cpu_ticks "$gw")"
    "$LOAD" run --url "http://127.0.0.1:$port" --scenario "$TMP/scenario.toml" -c "$CONCURRENCY" \
        --requests "$REQUESTS" --warmup 0s --quiet --json "$TMP/report-$cache.json" >/dev/null
    after="$(cpu_ticks "$gw")"
    curl -s "http://127.0.0.1:$port/metrics" >"$TMP/metrics-$cache"
    kill -TERM "$gw"; wait "$gw" 2>/dev/null || true
    "$PYTHON" - "$TMP/report-$cache.json" "$TMP/metrics-$cache" "$model" "$cache" "$round" \
        "$((after - before))" "$(getconf CLK_TCK)" <<'PY'
import json, re, sys
report, metrics, model, cache, rnd, ticks, hz = sys.argv[1:8]
s = json.load(open(report))["summary"]
values = {}
for line in open(metrics):
    m = re.match(r'(\w+)\{([^}]*)\} ([0-9.e+-]+)', line)
    if m:
        values[(m.group(1), m.group(2))] = float(m.group(3))
result = lambda r: values.get(("infergate_cache_requests_total", f'model="{model}",result="{r}"'), 0.0)
served, miss = result("hit") + result("coalesced"), result("miss")
ratio = f"{served / (served + miss):.3f}" if served + miss else "—"
jobs = values.get(("infergate_batch_size_sum", f'model="{model}"'), 0.0)
lat = s["latency_ms"] or {}
cpu_ms = int(ticks) / int(hz) * 1000 / max(s["successes"], 1)
print(f"| {cache} | {rnd} | {s['requests_per_s']:,.0f} | {lat.get('p50', float('nan')):.2f} | "
      f"{lat.get('p99', float('nan')):.2f} | {s['errors']} | {ratio} | {jobs:,.0f} | {cpu_ms:.3f} |")
PY
done
done
