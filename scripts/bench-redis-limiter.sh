#!/usr/bin/env bash
# Admissions a second one redis-server sustains for the tenant limiter: the
# gateway's admission script (gateway/src/tenancy/redis.rs, ADMIT) with the
# three limits of bench-proxy-instructions.sh's `memory`/`redis` variants
# (requests and tokens per minute, concurrent), sent by redis-benchmark
# (BENCH_CLIENTS connections, pipelined BENCH_PIPELINE deep) to a fresh
# redis-server; both on this machine, so they share its cores.
#
#   scripts/bench-redis-limiter.sh
# Environment (defaults): BENCH_REQUESTS=200000 BENCH_CLIENTS=32 BENCH_PIPELINE=1
set -euo pipefail
LOG_TAG=redis-limiter
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
REQUESTS="${BENCH_REQUESTS:-200000}"
CLIENTS="${BENCH_CLIENTS:-32}"
PIPELINE="${BENCH_PIPELINE:-1}"
for tool in redis-server redis-cli redis-benchmark; do
    command -v "$tool" >/dev/null || die "$tool is missing: scripts/setup.sh"
done
bench_workspace redis-limiter
port="$(free_port)"
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >"$TMP/redis.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
# The script as the gateway sends it: the text between `const ADMIT: &str = r#"` and `"#;`.
sed -n '/^const ADMIT: &str = r#"/,/^"#;/p' gateway/src/tenancy/redis.rs | sed '1d;$d' >"$TMP/admit.lua"
sha="$(redis-cli -p "$port" script load "$(cat "$TMP/admit.lua")")"
[[ ${#sha} == 40 ]] || die "script load failed: $sha"
# KEYS: tenant/requests_per_minute, tenant/tokens_per_minute, tenant/concurrent; ARGV: replica, lease ms,
# then per limit: kind, allowance per ms (or 0), capacity, admission charge, what is asked (no chunk
# here: every request asks, as a quiet tenant's do), from four replicas. Never refused (huge limits);
# each admission adds a slot to its replica's count, as a request would until it ended.
redis-benchmark -p "$port" -n "$REQUESTS" -c "$CLIENTS" -P "$PIPELINE" -q -r 4 \
    EVALSHA "$sha" 3 "infergate:web/requests_per_minute" "infergate:web/tokens_per_minute" "infergate:web/concurrent" \
    "replica-__rand_int__" 30000 m 16666.7 1000000000 1 1 m 16666.7 1000000000 0 0 c 0 100000000 1 1 |
    tr '\r' '\n' | grep -v '^$' | tail -1
