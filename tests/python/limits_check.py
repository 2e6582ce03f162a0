"""Tenant limits as the official clients see them (run by tests/tests/tenants.rs).

    limits_check.py --base-url URL --key KEY --quota-key KEY

The gateway is configured with, for KEY: 60 requests a minute on
synthetic-embed with a 2 s burst (a bucket of two) and 30 characters a
month; for --quota-key: 5 tokens a day.
"""

import argparse
import sys
import time

import deepl
import openai


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--quota-key", required=True)
    args = p.parse_args()
    sent = []
    http = openai.DefaultHttpxClient(event_hooks={"request": [lambda r: sent.append(r.url.path)]})

    def client(key: str, retries: int) -> openai.OpenAI:
        return openai.OpenAI(base_url=args.base_url + "/v1", api_key=key, max_retries=retries, http_client=http)

    # Two pass, the third is a RateLimitError carrying OpenAI's headers.
    plain = client(args.key, 0)
    for _ in range(2):
        plain.embeddings.create(model="synthetic-embed", input="hi")
    try:
        plain.embeddings.create(model="synthetic-embed", input="hi")
        print("FAIL: the third request in the burst was not refused")
        return 1
    except openai.RateLimitError as e:
        h = e.response.headers
        assert e.code == "rate_limit_exceeded", e.code
        assert h["x-ratelimit-limit-requests"] == "60", dict(h)
        assert h["x-ratelimit-remaining-requests"] == "0", dict(h)
        assert int(h["retry-after"]) >= 1, dict(h)
        assert h["x-should-retry"] == "true", dict(h)
    print("rate limit: RateLimitError with x-ratelimit-* and Retry-After")

    # With retries the SDK waits as told and gets through.
    sent.clear()
    start = time.monotonic()
    client(args.key, 3).embeddings.create(model="synthetic-embed", input="hi")
    waited = time.monotonic() - start
    assert len(sent) >= 2, sent
    assert waited < 10, waited
    print(f"retried {len(sent) - 1} time(s), through after {waited:.2f} s")

    # A daily quota is not retried (x-should-retry: false).
    quota = client(args.quota_key, 3)
    quota.embeddings.create(model="synthetic-embed", input="more than five tokens are in this text for sure")
    sent.clear()
    try:
        quota.embeddings.create(model="synthetic-embed", input="hi")
        print("FAIL: the quota was not enforced")
        return 1
    except openai.RateLimitError as e:
        assert e.code == "insufficient_quota", e.code
        assert len(sent) == 1, f"the SDK retried a quota refusal: {sent}"
    print("quota: RateLimitError insufficient_quota, not retried")

    # DeepL: usage and its quota exception on 456.
    translator = deepl.Translator(args.key, server_url=args.base_url, send_platform_info=False)
    translator.translate_text("Good morning, how are you today, my friend?", target_lang="DE")
    usage = translator.get_usage()
    assert usage.character.count == 43, usage.character.count
    assert usage.character.limit == 30, usage.character.limit
    assert usage.character.limit_reached
    try:
        translator.translate_text("Hello", target_lang="DE")
        print("FAIL: DeepL quota not enforced")
        return 1
    except deepl.QuotaExceededException:
        pass
    print("deepl: usage 43/30, QuotaExceededException on 456")
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
