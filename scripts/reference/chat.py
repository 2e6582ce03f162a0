#!/usr/bin/env python3
"""Reference greedy completion for the in-process chat backend (SmolLM2-135M-Instruct).

Writes tests/fixtures/chat_reference.json: the prompt messages, the prompt
string the model's chat template renders for them, its token ids, and the
first 32 greedily generated token ids and their text, which the Rust backend
must reproduce token for token from the same files.

Regenerate (after scripts/setup.sh has linked models/smollm2 and built .venv):

    .venv/bin/python scripts/reference/chat.py

The pipeline, done by hand as a Rust backend would:
  - chat_template.jinja rendered with jinja2 as transformers'
    apply_chat_template does (sandboxed, trim_blocks, lstrip_blocks) with
    add_generation_prompt=True; the template adds the default system prompt
    when the first message is not a system message;
  - tokenizer.json via `tokenizers`, add_special_tokens=False (the model adds
    no BOS; <|im_start|> etc. in the rendered text are special tokens);
  - model.onnx under onnxruntime (CPU, 2 intra-op threads, default graph
    optimisations = ORT_ENABLE_ALL): one prefill call with empty
    past_key_values.* ([1, 3, 0, 64]), then one call per token with the new
    token, position_ids = its index, attention_mask all ones over past + new,
    and the previous call's present.* as past_key_values.*;
  - greedy: argmax of the last position's logits (lowest id on ties, as numpy).
The prompt is chosen so that no <|im_end|> (eos) comes within 32 tokens.

The script also checks that 1 intra-op thread gives bit-identical logits,
and that a left-padded batch (this prompt next to a shorter one) decodes the
same 32 tokens.
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models/smollm2"
OUT = ROOT / "tests/fixtures/chat_reference.json"
MAX_NEW_TOKENS = 32
THREADS = 2

MESSAGES = [
    {"role": "user", "content": "Write a short story about a lighthouse keeper who finds a message in a bottle."},
]
# Only for the batch check: a shorter prompt, so the fixture's is not padded
# and the other one is.
OTHER_MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "What is 2 + 2?"},
]


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def session(threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(MODEL_DIR / "model.onnx"), opts, providers=["CPUExecutionProvider"])


def greedy(sess, gen, prompts, n_new):
    """Greedy decoding of a left-padded batch with the KV cache: new ids per
    prompt and the logits of each step's chosen position ([steps, b, vocab])."""
    layers, kv, hd = gen["num_hidden_layers"], gen["num_key_value_heads"], gen["head_dim"]
    batch, width = len(prompts), max(len(p) for p in prompts)
    ids = np.full((batch, width), gen["pad_token_id"], np.int64)
    mask = np.zeros((batch, width), np.int64)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = p
        mask[r, width - len(p):] = 1
    pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    past = {
        f"past_key_values.{i}.{k}": np.zeros((batch, kv, 0, hd), np.float32)
        for i in range(layers) for k in ("key", "value")
    }
    names = ["logits"] + [f"present.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    out, steps = [[] for _ in prompts], []
    for _ in range(n_new):
        res = sess.run(names, {"input_ids": ids, "attention_mask": mask, "position_ids": pos, **past})
        last = res[0][:, -1, :]
        steps.append(last)
        nxt = last.argmax(-1)
        for r in range(batch):
            out[r].append(int(nxt[r]))
        past = {f"past_key_values.{n[len('present.'):]}": v for n, v in zip(names[1:], res[1:])}
        ids = nxt.astype(np.int64)[:, None]
        pos = pos[:, -1:] + 1
        mask = np.concatenate([mask, np.ones((batch, 1), np.int64)], axis=1)
    return out, np.stack(steps)


def main():
    gen = json.loads((MODEL_DIR / "generation.json").read_text())
    template = (MODEL_DIR / "chat_template.jinja").read_text()
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def render(messages):
        return env.from_string(template).render(messages=messages, add_generation_prompt=True)

    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    prompt = render(MESSAGES)
    prompt_ids = tok.encode(prompt, add_special_tokens=False).ids

    sess = session(THREADS)
    (new_ids,), logits = greedy(sess, gen, [prompt_ids], MAX_NEW_TOKENS)
    if gen["eos_token_id"] in new_ids:
        sys.exit(f"eos within {MAX_NEW_TOKENS} tokens: pick a prompt with a longer answer")
    text = tok.decode(new_ids, skip_special_tokens=True)
    top2 = np.sort(logits[:, 0, :], axis=-1)[:, -2:]
    margin = float((top2[:, 1] - top2[:, 0]).min())

    (one_thread,), logits1 = greedy(session(1), gen, [prompt_ids], MAX_NEW_TOKENS)
    if one_thread != new_ids or not np.array_equal(logits1, logits):
        sys.exit("1 intra-op thread differs from 2")
    other_ids = tok.encode(render(OTHER_MESSAGES), add_special_tokens=False).ids
    batched, _ = greedy(sess, gen, [prompt_ids, other_ids], MAX_NEW_TOKENS)
    if batched[0] != new_ids:
        sys.exit(f"left-padded batch differs: {batched[0]} != {new_ids}")

    fixture = {
        "description": "Greedy completion of SmolLM2-135M-Instruct (models/smollm2) with the KV cache under "
                       "onnxruntime; written by scripts/reference/chat.py",
        "onnxruntime": ort.__version__,
        "intra_op_threads": THREADS,
        "model_files_sha256": {
            name: sha256(MODEL_DIR / name)
            for name in ("model.onnx", "tokenizer.json", "chat_template.jinja", "generation.json")
        },
        "messages": MESSAGES,
        "add_generation_prompt": True,
        "prompt": prompt,
        "prompt_ids": prompt_ids,
        "max_new_tokens": MAX_NEW_TOKENS,
        "eos_token_id": gen["eos_token_id"],
        "output_ids": new_ids,
        "output_text": text,
        "min_top2_logit_margin": round(margin, 4),
    }
    text_out = json.dumps(fixture, indent=2, ensure_ascii=False)
    for key in ("prompt_ids", "output_ids"):  # one line per id list
        text_out = text_out.replace(json.dumps(fixture[key], indent=2).replace("\n", "\n  "),
                                    json.dumps(fixture[key]))
    OUT.write_text(text_out + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}: {len(prompt_ids)} prompt ids, {len(new_ids)} new: {text!r} "
          f"(smallest top-2 margin {margin:.3f}; 1 thread and left-padded batch identical)")


if __name__ == "__main__":
    main()
