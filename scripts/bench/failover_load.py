"""Steady load through the gateway while one of three fake upstreams fails
(scripts/bench-failover.sh): open-loop arrivals at a fixed rate for a fixed
time, the fault applied after a warm-up, statuses and latencies recorded.

    failover_load.py GATEWAY_URL FAULTY_UPSTREAM_URL --scenario killed|hung|error|slow
        [--rate 100] [--seconds 12] [--fault-at 3] [--deadline-ms 1000] [--kill-pid PID]
Prints JSON: success share, latency percentiles, the worst latency against
the deadline, and requests each upstream received after the fault.
"""

import argparse
import concurrent.futures as futures
import json
import os
import signal
import sys
import threading
import time

import requests

KEY = "sk-infergate-test"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("gateway")
    p.add_argument("faulty")
    p.add_argument("--others", nargs="*", default=[])
    p.add_argument("--scenario", required=True, choices=["killed", "hung", "error", "slow"])
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--fault-at", type=float, default=3.0)
    p.add_argument("--deadline-ms", type=int, default=1000)
    p.add_argument("--kill-pid", type=int)
    args = p.parse_args()

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=64, pool_maxsize=64)
    session.mount("http://", adapter)
    results = []
    lock = threading.Lock()

    def one(i: int, intended: float) -> None:
        body = {"model": "remote", "messages": [{"role": "user", "content": f"request {i}"}], "max_tokens": 8}
        headers = {"Authorization": f"Bearer {KEY}", "X-Request-Timeout": f"{args.deadline_ms}ms"}
        try:
            r = session.post(f"{args.gateway}/v1/chat/completions", json=body, headers=headers, timeout=30)
            status = r.status_code
        except requests.RequestException:
            status = 0
        # Latency from the intended send time: no coordinated omission.
        with lock:
            results.append((intended, time.perf_counter() - intended, status))

    def counts() -> list:
        out = []
        for base in [args.faulty] + args.others:
            try:
                out.append(requests.get(f"{base}/debug/requests", timeout=1).json()["counts"].get("/v1/chat/completions", 0))
            except (requests.RequestException, ValueError):
                out.append(None)
        return out

    start = time.perf_counter()
    total = int(args.rate * args.seconds)
    faulted = False
    before = None
    with futures.ThreadPoolExecutor(128) as pool:
        for i in range(total):
            intended = start + i / args.rate
            now = time.perf_counter()
            if now < intended:
                time.sleep(intended - now)
            if not faulted and intended - start >= args.fault_at:
                before = counts()
                if args.scenario == "killed":
                    os.kill(args.kill_pid, signal.SIGKILL)
                else:
                    mode = {"hung": "hang", "error": "error", "slow": "slow"}[args.scenario]
                    requests.post(f"{args.faulty}/fault", json={"mode": mode}, timeout=2)
                faulted = True
            pool.submit(one, i, intended)
    after = counts()
    after_fault = [r for r in results if r[0] - start >= args.fault_at]
    latencies = sorted(r[1] for r in results if r[2] == 200)
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else None
    out = {
        "scenario": args.scenario,
        "requests": len(results),
        "success": sum(r[2] == 200 for r in results) / len(results),
        "success_after_fault": sum(r[2] == 200 for r in after_fault) / max(1, len(after_fault)),
        "statuses": {str(s): sum(r[2] == s for r in results) for s in sorted({r[2] for r in results})},
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "worst_ms": max(r[1] for r in results) * 1000,
        "deadline_ms": args.deadline_ms,
        "upstream_requests_after_fault": [
            (a - b) if a is not None and b is not None else None for a, b in zip(after, before or after)
        ],
    }
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
