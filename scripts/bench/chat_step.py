"""Decode-step time of the converted chat model against batch size, on
Python onnxruntime (the same library the gateway loads): how much a batched
decoding step can gain on this CPU (BENCHMARKS.md, continuous batching).

    .venv/bin/python scripts/bench/chat_step.py [--past 128]
"""

import argparse
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="models/smollm2/model.onnx")
    p.add_argument("--past", type=int, default=128)
    args = p.parse_args()
    for threads, batches in [(1, [1, 2, 4, 8]), (2, [1, 8, 16])]:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        session = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
        for b in batches:
            feeds = {
                "input_ids": np.full((b, 1), 100, np.int64),
                "attention_mask": np.ones((b, args.past + 1), np.int64),
                "position_ids": np.full((b, 1), args.past, np.int64),
            }
            for layer in range(30):
                for kind in ["key", "value"]:
                    feeds[f"past_key_values.{layer}.{kind}"] = np.zeros((b, 3, args.past, 64), np.float32)
            for _ in range(3):
                session.run(None, feeds)
            times = []
            for _ in range(10):
                start = time.perf_counter()
                session.run(None, feeds)
                times.append(time.perf_counter() - start)
            step = sorted(times)[len(times) // 2]
            print(f"threads {threads} batch {b:2d}: step {step * 1000:6.1f} ms, {b / step:6.1f} tokens/s")


if __name__ == "__main__":
    main()
