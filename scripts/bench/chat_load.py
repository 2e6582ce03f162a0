"""Load for the chat benchmark (scripts/bench-chat.sh): streamed, greedy chat
completions against a running gateway, measuring what continuous batching
changes.

    chat_load.py throughput URL --concurrency C --requests N --max-tokens T
        N requests, C in flight at a time; prints generated tokens (from
        usage), wall seconds and aggregate tokens/s as JSON.
    chat_load.py ttft URL --background B --max-tokens T --probes P
        B long streams are sent; once two of them are decoding (and a
        second has passed), P probe requests arrive one after another;
        prints each probe's time to first token, and the same with nothing
        else running, as JSON.
"""

import argparse
import concurrent.futures as futures
import json
import statistics
import sys
import threading
import time

import requests

KEY = "sk-infergate-test"
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Describe a walk through a forest in autumn.",
    "Explain how a bicycle works to a child.",
    "Write a letter to a friend about a trip to the sea.",
    "Describe your favourite meal and how to cook it.",
    "Tell a story about a cat who learns to fly.",
    "Explain why the sky is blue.",
    "Write a poem about a city at night.",
]


def stream(url, model, prompt, max_tokens, first=None):
    """One streamed completion; returns (time to first token, completion tokens)."""
    start = time.perf_counter()
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": f"Bearer {KEY}", "X-Request-Timeout": "none"}
    ttft, tokens = None, 0
    with requests.post(f"{url}/v1/chat/completions", json=body, headers=headers, stream=True, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if ttft is None and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                ttft = time.perf_counter() - start
                if first is not None:
                    first.set()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return ttft, tokens


def throughput(args):
    start = time.perf_counter()
    with futures.ThreadPoolExecutor(args.concurrency) as pool:
        jobs = [
            pool.submit(stream, args.url, args.model, PROMPTS[i % len(PROMPTS)], args.max_tokens)
            for i in range(args.requests)
        ]
        results = [j.result() for j in jobs]
    wall = time.perf_counter() - start
    tokens = sum(t for _, t in results)
    ttfts = sorted(t for t, _ in results if t is not None)
    return {
        "concurrency": args.concurrency,
        "requests": args.requests,
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "ttft_median_s": statistics.median(ttfts),
    }


def ttft(args):
    alone = [stream(args.url, args.model, "Name a colour.", 8)[0] for _ in range(args.probes)]
    started = [threading.Event() for _ in range(args.background)]
    with futures.ThreadPoolExecutor(args.background) as pool:
        background = [
            pool.submit(stream, args.url, args.model, PROMPTS[i % len(PROMPTS)], args.max_tokens, started[i])
            for i in range(args.background)
        ]
        while sum(e.is_set() for e in started) < 2:
            time.sleep(0.05)
        time.sleep(1.0)
        busy = []
        for _ in range(args.probes):
            busy.append(stream(args.url, args.model, "Name a colour.", 8)[0])
            time.sleep(0.2)
        still_running = sum(not b.done() for b in background)
        for b in background:
            b.result()
    return {
        "background": args.background,
        "alone_median_s": statistics.median(alone),
        "busy_median_s": statistics.median(busy),
        "busy_s": busy,
        "background_still_running_after_probes": still_running,
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["throughput", "ttft"])
    p.add_argument("url")
    p.add_argument("--model", default="chat")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--requests", type=int, default=8)
    p.add_argument("--background", type=int, default=7)
    p.add_argument("--probes", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=64)
    args = p.parse_args()
    result = throughput(args) if args.mode == "throughput" else ttft(args)
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
