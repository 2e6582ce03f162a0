#!/usr/bin/env python3
"""The official `openai` Python SDK computing embeddings through infergate on
a real model, checked against reference vectors from Python onnxruntime.

Run by tests/tests/onnx_models.rs (and by hand) as:

    .venv/bin/python tests/python/openai_sdk_embeddings.py \
        --base-url http://127.0.0.1:PORT/v1 --api-key sk-infergate-dev \
        --model all-minilm-l6-v2 --reference tests/fixtures/embeddings_reference.json

The reference file (scripts/reference/embeddings.py) holds texts, their token
ids and the embeddings that onnxruntime computes for the same model and
tokenizer. One line per check (PASS/FAIL), then a summary; exit status 1 if
any check failed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from typing import Callable

import openai


class CheckFailed(AssertionError):
    pass


def ensure(cond: object, msg: str) -> None:
    if not cond:
        raise CheckFailed(msg)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


class Checks:
    def __init__(self, args: argparse.Namespace) -> None:
        self.model = args.model
        self.client = openai.OpenAI(
            base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=args.timeout
        )
        with open(args.reference, encoding="utf-8") as f:
            self.items = json.load(f)["items"]

    def embed(self, inputs, **kwargs) -> list[list[float]]:
        r = self.client.embeddings.create(model=self.model, input=inputs, **kwargs)
        ensure(r.model == self.model, f"model {r.model!r}")
        data = sorted(r.data, key=lambda d: d.index)
        ensure([d.index for d in data] == list(range(len(data))), "indexes are not 0..n")
        return [d.embedding for d in data]

    def matches_onnxruntime(self) -> str:
        """The SDK's default request (base64) for every reference text at once."""
        texts = [i["text"] for i in self.items]
        r = self.client.embeddings.create(model=self.model, input=texts)
        vectors = [d.embedding for d in sorted(r.data, key=lambda d: d.index)]
        ensure(len(vectors) == len(texts), f"{len(vectors)} vectors for {len(texts)} texts")
        worst = min(cosine(v, i["embedding"]) for v, i in zip(vectors, self.items))
        ensure(worst > 0.99999, f"lowest cosine to onnxruntime's vectors {worst:.7f}")
        tokens = sum(len(i["input_ids"]) for i in self.items)
        ensure(r.usage.prompt_tokens == tokens, f"usage.prompt_tokens {r.usage.prompt_tokens}, want {tokens}")
        ensure(r.usage.total_tokens == tokens, f"usage.total_tokens {r.usage.total_tokens}")
        return f"{len(texts)} texts, lowest cosine {worst:.7f}, {tokens} tokens"

    def float_equals_base64(self) -> str:
        texts = [i["text"] for i in self.items[:4]]
        b64 = self.embed(texts)
        flt = self.embed(texts, encoding_format="float")
        worst = max(abs(a - b) for u, v in zip(b64, flt) for a, b in zip(u, v))
        ensure(worst <= 1e-6, f"base64 and float differ by {worst:g}")
        ensure(all(len(v) == 384 for v in flt), "vectors are not 384-dimensional")
        return f"max difference {worst:g}"

    def single_string_and_tokens(self) -> str:
        item = self.items[0]
        [text] = self.embed(item["text"])
        [tokens] = self.embed([item["input_ids"][1:-1]])  # without [CLS]/[SEP]
        c = cosine(text, tokens)
        ensure(c > 0.99999, f"text and its token ids: cosine {c:.7f}")
        return f"text vs token ids cosine {c:.7f}"

    def meaning(self) -> str:
        v = self.embed(
            [
                "How do I reset my router password?",
                "I forgot the admin password of my wifi box.",
                "Glaciers are retreating faster than predicted.",
            ]
        )
        near, far = cosine(v[0], v[1]), cosine(v[0], v[2])
        ensure(near > far + 0.2, f"related {near:.3f} vs unrelated {far:.3f}")
        return f"related {near:.3f} > unrelated {far:.3f}"

    def bad_token_is_bad_request(self) -> str:
        try:
            self.client.embeddings.create(model=self.model, input=[[101, 100_263]])
        except openai.BadRequestError as e:
            ensure(e.status_code == 400, f"status {e.status_code}")
            ensure(isinstance(e.body, dict) and "100263" in e.body.get("message", ""), f"body {e.body!r}")
            return f"400: {e.body['message'][:80]!r}"
        raise CheckFailed("an out-of-vocabulary token id did not raise BadRequestError")

    def all(self) -> list[tuple[str, Callable[[], str]]]:
        return [
            ("embeddings match onnxruntime", self.matches_onnxruntime),
            ("float == base64", self.float_equals_base64),
            ("string and token ids", self.single_string_and_tokens),
            ("related closer than unrelated", self.meaning),
            ("error 400 out-of-vocabulary token", self.bad_token_is_bad_request),
        ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8080/v1")
    p.add_argument("--api-key", required=True)
    p.add_argument("--model", default="all-minilm-l6-v2")
    p.add_argument("--reference", required=True, help="tests/fixtures/embeddings_reference.json")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, seconds")
    p.add_argument("--verbose", action="store_true", help="print tracebacks of failures")
    args = p.parse_args()

    print(f"openai SDK {openai.__version__} against {args.base_url}, model {args.model}", flush=True)
    checks = Checks(args)
    failed = []
    for name, fn in checks.all():
        try:
            print(f"PASS {name}: {fn()}", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            failed.append(name)
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            if args.verbose:
                traceback.print_exc()
    total = len(checks.all())
    print(f"{total - len(failed)}/{total} checks passed" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
