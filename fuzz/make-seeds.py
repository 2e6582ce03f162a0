#!/usr/bin/env python3
"""Write the seed corpora under fuzz/corpus/<target>/ (committed; re-run to
regenerate). Each seed is a small valid input in the target's framing (see
the target's doc comment). Images and compressed audio are copied in from
files given on the command line (see README.md): FLAC, OGG, JPEG, WebP."""
import json, os, struct, sys, zlib

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(ROOT)


def put(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def wav(rate=16000, channels=1, bits=16, frames=400):
    width = bits // 8
    data = bytes((i * 37) & 0xFF for i in range(frames * channels * width))
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * width, channels * width, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def png(width=3, height=2):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\0" + bytes(range(width * 3)) for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def form(fields, boundary="fuzzboundary"):
    out = b""
    for name, value, filename in fields:
        out += f"--{boundary}\r\n".encode()
        disposition = f'Content-Disposition: form-data; name="{name}"'
        if filename:
            disposition += f'; filename="{filename}"\r\nContent-Type: application/octet-stream'
        out += disposition.encode() + b"\r\n\r\n" + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def files(ext):
    return [p for p in sys.argv[1:] if p.endswith(ext)]


def main():
    chat = {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
            "max_tokens": 16, "temperature": 0.5, "stream": True, "stream_options": {"include_usage": True}}
    answer = {"id": "c", "object": "chat.completion", "model": "up/b",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "length"}],
              "usage": {"prompt_tokens": 6, "completion_tokens": 4}}
    put("json_object", "chat-request.json", json.dumps(chat))
    put("json_object", "chat-answer.json", json.dumps(answer))
    put("json_object", "escapes.json", r'{"a\u00e9\n":[1.5e-3,-0,true,null,{"b":"\ud83d\ude00"}],"model":"x","model":"y"}')

    tools = dict(chat, tools=[{"type": "function", "function": {"name": "f"}}], n=2, logprobs=True)
    put("openai_request", "chat", b"\0" + json.dumps(chat).encode())
    put("openai_request", "chat-remote", b"\1" + json.dumps(tools).encode())
    put("openai_request", "embeddings", b"\2" + json.dumps({"model": "e", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 8}).encode())
    put("openai_request", "embeddings-tokens", b"\2" + json.dumps({"model": "e", "input": [[1, 2, 3], [4]]}).encode())
    put("openai_request", "moderations", b"\3" + json.dumps({"input": [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}).encode())

    put("multipart", "audio", b"\0" + form([("model", b"whisper", None), ("response_format", b"verbose_json", None),
                                            ("language", b"en", None), ("temperature", b"0.2", None),
                                            ("stream", b"false", None), ("file", wav(), "a.wav")]))
    put("multipart", "ocr", b"\1" + form([("model", b"ocr", None), ("file", png(), "a.png")]))

    infer = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4.5]]},
                        {"name": "t", "shape": [1], "datatype": "BYTES", "data": ["hi"]}],
             "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    put("kserve_binary", "json", struct.pack("<H", 0xFFFF) + json.dumps(infer).encode())
    header = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
                         {"name": "t", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 11}},
                         {"name": "b", "shape": [3], "datatype": "BOOL", "data": [True, False, True]}],
              "parameters": {"binary_data_output": True}}
    head = json.dumps(header).encode()
    binary = struct.pack("<ff", 1.0, -2.5) + struct.pack("<I", 2) + b"hi" + struct.pack("<I", 1) + b"x"
    put("kserve_binary", "binary", struct.pack("<H", len(head)) + head + binary)

    put("audio_decode", "mono16.wav", wav())
    put("audio_decode", "stereo8-8k.wav", wav(rate=8000, channels=2, bits=8, frames=300))
    for p in files(".flac") + files(".ogg"):
        put("audio_decode", os.path.basename(p), open(p, "rb").read())

    put("image_header", "rgb.png", png())
    for p in files(".jpg") + files(".webp"):
        put("image_header", os.path.basename(p), open(p, "rb").read())
    put("image_header", "data-url.txt", "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")

    role = {"id": "c", "model": "up", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    token = {"id": "c", "model": "up", "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}
    end = {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    usage = {"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    stream = "".join(f"data: {json.dumps(e)}\n\n" for e in (role, token, end, usage)) + ": keep-alive\n\ndata: [DONE]\n\n"
    put("sse_relay", "stream", b"\0" + stream.encode())
    put("sse_relay", "stream-cut", b"\3" + struct.pack("<HHH", 5, 40, 41) + stream.encode())
    put("sse_relay", "error", b"\0" + b'data: {"error":{"message":"overloaded"}}\r\n\r\n')

    for name in ("synthetic.toml", "embedded.toml"):
        put("config_load", name, open(os.path.join(REPO, "examples", name), "rb").read())
    put("config_load", "env-overrides",
        open(os.path.join(REPO, "examples", "synthetic.toml")).read()
        + "\n%%\nINFERGATE__SERVER__MAX_BODY_BYTES=1024\nINFERGATE__MODELS__0__CONCURRENCY=2\nINFERGATE__LOG__FORMAT=json\n")


if __name__ == "__main__":
    main()
