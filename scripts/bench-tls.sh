#!/usr/bin/env bash
# The TLS listener's cost: the gateway's CPU per request over https next to
# plain http, in one run, rounds alternated. Two gateways with the same
# config (examples/synthetic.toml; the second with server.tls and a
# certificate made here with openssl, ECDSA P-256), wrk GET /v1/models (a
# cheap route through the whole middleware stack: request id, trace span,
# API key) on keep-alive connections, then with `Connection: close` (a new
# connection, hence for https a full handshake, per request). CPU is the
# gateway's utime+stime from /proc/PID/stat over the run, divided by the
# requests served.
#
#   scripts/bench-tls.sh        (needs target/release/infergate)
# Environment (defaults): BENCH_ROUNDS=3 BENCH_DURATION=10 BENCH_CONNECTIONS=16 BENCH_THREADS=1
set -euo pipefail
LOG_TAG=tls
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

ROUNDS="${BENCH_ROUNDS:-3}"
DURATION="${BENCH_DURATION:-10}"
CONNECTIONS="${BENCH_CONNECTIONS:-16}"
THREADS="${BENCH_THREADS:-1}"
BIN="${INFERGATE_BIN:-target/release/infergate}"
[[ -x "$BIN" ]] || die "$BIN not found: cargo build --release --bin infergate"
"$REPO_ROOT/scripts/setup.sh" --bench

bench_workspace tls

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null

declare -A URL PID
for mode in http https; do
    port="$(free_port)"
    tls=""
    [[ "$mode" == https ]] && tls="tls = { cert = \"$TMP/cert.pem\", key = \"$TMP/key.pem\" }"
    sed -E -e "s|^listen = \".*\"|listen = \"127.0.0.1:$port\"\n$tls|" examples/synthetic.toml >"$TMP/$mode.toml"
    RUST_LOG=warn "$BIN" serve --config "$TMP/$mode.toml" >"$TMP/$mode.log" 2>&1 &
    PIDS+=("$!")
    PID[$mode]=$!
    URL[$mode]="$mode://127.0.0.1:$port/v1/models"
    for _ in $(seq 1 100); do curl -skf "$mode://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
done

hz="$(getconf CLK_TCK)"
export BENCH_API_KEY=sk-infergate-test
printf '| round | connections | scheme | req/s | p50 | p99 | gateway CPU/request |\n|---:|---|---|---:|---:|---:|---:|\n' >"$TMP/table.md"
for round in $(seq 1 "$ROUNDS"); do
    for close in 0 1; do
        order="http https"; ((round % 2 == 0)) && order="https http"
        for mode in $order; do
            before="$(proc_ticks "${PID[$mode]}")"
            line="$(BENCH_CLOSE=$close wrk -t "$THREADS" -c "$CONNECTIONS" -d "${DURATION}s" --latency \
                -s scripts/bench/get.lua "${URL[$mode]}" | grep '^BENCH')"
            after="$(proc_ticks "${PID[$mode]}")"
            "$PYTHON" - "$line" "$round" "$mode" "$((after - before))" "$hz" "$close" >>"$TMP/table.md" <<'PY'
import sys
line, rnd, mode, ticks, hz, close = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
kv = dict(p.split("=") for p in line.split()[1:])
req, dur = int(kv["requests"]), int(kv["duration_us"]) / 1e6
errs = sum(int(kv[k]) for k in kv if k.startswith("err_"))
cpu = ticks / hz / max(req, 1) * 1e6
conns = "new per request" if close == "1" else "keep-alive"
print(f"| {rnd} | {conns} | {mode} | {req / dur:,.0f} | {int(kv['p50_us'])} µs | {int(kv['p99_us'])} µs | {cpu:.1f} µs |" + (f" errors {errs}" if errs else ""))
PY
            log "round $round $mode close=$close done"
        done
    done
done
echo "## TLS listener vs. plain HTTP ($(date -u +%F), $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s GET /v1/models)"
echo
cat "$TMP/table.md"
