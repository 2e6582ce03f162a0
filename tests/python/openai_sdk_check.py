#!/usr/bin/env python3
"""Drive a running infergate with the official `openai` Python SDK.

Run by the Rust e2e tests (and by hand) as:

    .venv/bin/python tests/python/openai_sdk_check.py \
        --base-url http://127.0.0.1:PORT/v1 --api-key sk-infergate-test

Every check is written against OpenAI's published API and the SDK's behaviour,
not against our server's internals. One line per check (PASS/FAIL), then a
summary; the exit status is 1 if any check failed.
"""

from __future__ import annotations

import argparse
import io
import math
import struct
import sys
import traceback
import warnings
import wave
from typing import Callable

import openai

EMBED_DIM = 384


class CheckFailed(AssertionError):
    pass


def ensure(cond: object, msg: str) -> None:
    if not cond:
        raise CheckFailed(msg)


def make_wav(seconds: float = 1.0, rate: int = 16_000, freq: float = 440.0) -> bytes:
    """A mono 16-bit PCM WAV (a quiet sine tone), built in memory."""
    n = int(seconds * rate)
    frames = b"".join(
        struct.pack("<h", int(0.3 * 32767 * math.sin(2 * math.pi * freq * i / rate))) for i in range(n)
    )
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return buf.getvalue()


def error_message(exc: openai.APIStatusError) -> str:
    """The `error.message` of OpenAI's error body `{"error": {"message", "type", ...}}`.

    The SDK unwraps the `error` object into `exc.body`.
    """
    body = exc.body
    ensure(isinstance(body, dict), f"error body is not a JSON object: {body!r}")
    msg = body.get("message")  # type: ignore[union-attr]
    ensure(isinstance(msg, str) and msg.strip(), f"error body has no message: {body!r}")
    return msg  # type: ignore[return-value]


class Checks:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client = openai.OpenAI(
            base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=args.timeout
        )
        self.wav = make_wav()

    def audio_file(self) -> tuple[str, bytes, str]:
        return ("speech.wav", self.wav, "audio/wav")

    # ------------------------------------------------------------------ models
    def models_list(self) -> str:
        ids = {m.id for m in self.client.models.list()}
        want = {self.args.chat_model, self.args.embed_model, self.args.audio_model}
        missing = want - ids
        ensure(not missing, f"missing {sorted(missing)} in {sorted(ids)}")
        return f"{len(ids)} models, includes {sorted(want)}"

    # -------------------------------------------------------------------- chat
    def chat(self) -> str:
        r = self.client.chat.completions.create(
            model=self.args.chat_model, messages=[{"role": "user", "content": "Hello"}]
        )
        ensure(r.choices, "no choices")
        c = r.choices[0]
        ensure(c.message.content, f"empty content: {c.message!r}")
        ensure(c.finish_reason in ("stop", "length"), f"finish_reason={c.finish_reason!r}")
        ensure(r.usage is not None and r.usage.total_tokens > 0, f"usage={r.usage!r}")
        return f"{len(c.message.content)} chars, finish_reason={c.finish_reason}, usage.total_tokens={r.usage.total_tokens}"

    def chat_stream(self) -> str:
        stream = self.client.chat.completions.create(
            model=self.args.chat_model,
            messages=[{"role": "user", "content": "Hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        deltas: list[str] = []
        finish = None
        chunks = []
        for chunk in stream:
            chunks.append(chunk)
            for choice in chunk.choices:
                if choice.delta.content:
                    deltas.append(choice.delta.content)
                if choice.finish_reason:
                    finish = choice.finish_reason
        ensure(chunks, "no chunks")
        ensure(len(deltas) >= 2, f"{len(deltas)} content deltas (want >= 2)")
        text = "".join(deltas)
        ensure(text.strip(), "joined text is empty")
        ensure(finish in ("stop", "length"), f"finish_reason={finish!r}")
        last = chunks[-1]
        ensure(last.usage is not None and last.usage.total_tokens > 0, f"final chunk usage={last.usage!r}")
        ensure(last.choices == [], f"final chunk has choices: {last.choices!r}")
        for c in chunks[:-1]:
            ensure(c.usage is None, "usage on a chunk before the last one")
        return f"{len(chunks)} chunks, {len(deltas)} deltas, {len(text)} chars, usage.total_tokens={last.usage.total_tokens}"

    # -------------------------------------------------------------- embeddings
    def embeddings(self) -> str:
        inputs = ["The quick brown fox", "jumps over the lazy dog"]
        # SDK default: requests encoding_format=base64 and decodes to floats.
        raw = self.client.embeddings.with_raw_response.create(model=self.args.embed_model, input=inputs)
        wire = raw.http_response.json()
        ensure(
            all(isinstance(d.get("embedding"), str) for d in wire.get("data", [])),
            "default request (encoding_format=base64) did not return base64 strings",
        )
        r = raw.parse()
        ensure(len(r.data) == 2, f"{len(r.data)} embeddings (want 2)")
        vectors = []
        for i, d in enumerate(sorted(r.data, key=lambda d: d.index)):
            ensure(d.index == i, f"indexes {[d.index for d in r.data]}")
            v = d.embedding
            ensure(len(v) == EMBED_DIM, f"vector {i} has length {len(v)} (want {EMBED_DIM})")
            ensure(all(math.isfinite(x) for x in v), f"vector {i} has non-finite values")
            norm = math.sqrt(sum(x * x for x in v))
            ensure(abs(norm - 1.0) < 1e-3, f"vector {i} L2 norm {norm:.6f} (want 1)")
            vectors.append(v)
        ensure(r.usage is not None and r.usage.prompt_tokens > 0, f"usage={r.usage!r}")

        f = self.client.embeddings.create(model=self.args.embed_model, input=inputs, encoding_format="float")
        ensure(len(f.data) == 2, f"float: {len(f.data)} embeddings (want 2)")
        worst = 0.0
        for d in f.data:
            ensure(len(d.embedding) == EMBED_DIM, f"float: vector {d.index} length {len(d.embedding)}")
            worst = max(worst, max(abs(a - b) for a, b in zip(d.embedding, vectors[d.index])))
        ensure(worst <= 1e-6, f"base64 and float vectors differ by {worst:g}")
        return f"2 x {EMBED_DIM} floats, unit norm, base64 == float (max diff {worst:.1g})"

    # ------------------------------------------------------------------- audio
    def transcription(self) -> str:
        r = self.client.audio.transcriptions.create(model=self.args.audio_model, file=self.audio_file())
        ensure(isinstance(r.text, str) and r.text.strip(), f"empty text: {r!r}")
        return f"text={r.text[:60]!r}"

    def transcription_text(self) -> str:
        r = self.client.audio.transcriptions.create(
            model=self.args.audio_model, file=self.audio_file(), response_format="text"
        )
        ensure(isinstance(r, str), f"response_format=text returned {type(r).__name__}, not str")
        ensure(r.strip(), "response_format=text returned an empty string")
        return f"str {r.strip()[:60]!r}"

    def translation(self) -> str:
        with warnings.catch_warnings():
            # The SDK marks translations deprecated; the endpoint is still part of the API.
            warnings.simplefilter("ignore", DeprecationWarning)
            r = self.client.audio.translations.create(model=self.args.audio_model, file=self.audio_file())
        ensure(isinstance(r.text, str) and r.text.strip(), f"empty text: {r!r}")
        return f"text={r.text[:60]!r}"

    # ------------------------------------------------------------------ errors
    def bad_request(self) -> str:
        try:
            self.client.chat.completions.create(model=self.args.chat_model, messages=[])
        except openai.BadRequestError as e:
            ensure(e.status_code == 400, f"status {e.status_code}")
            return f"400: {error_message(e)[:80]!r}"
        raise CheckFailed("chat with messages=[] did not raise BadRequestError")

    def unknown_model(self) -> str:
        try:
            self.client.chat.completions.create(
                model="no-such-model-infergate", messages=[{"role": "user", "content": "Hello"}]
            )
        except openai.NotFoundError as e:
            ensure(e.status_code == 404, f"status {e.status_code}")
            return f"404: {error_message(e)[:80]!r}"
        raise CheckFailed("unknown model did not raise NotFoundError")

    def wrong_key(self) -> str:
        bad = openai.OpenAI(
            base_url=self.args.base_url, api_key="sk-wrong-key", max_retries=0, timeout=self.args.timeout
        )
        try:
            bad.models.list()
        except openai.AuthenticationError as e:
            ensure(e.status_code == 401, f"status {e.status_code}")
            return f"401: {error_message(e)[:80]!r}"
        raise CheckFailed("wrong API key did not raise AuthenticationError")

    def all(self) -> list[tuple[str, Callable[[], str]]]:
        return [
            ("models.list", self.models_list),
            ("chat.completions", self.chat),
            ("chat.completions stream", self.chat_stream),
            ("embeddings base64+float", self.embeddings),
            ("audio.transcriptions", self.transcription),
            ("audio.transcriptions text", self.transcription_text),
            ("audio.translations", self.translation),
            ("error 400 bad request", self.bad_request),
            ("error 404 unknown model", self.unknown_model),
            ("error 401 wrong key", self.wrong_key),
        ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8080/v1")
    p.add_argument("--api-key", required=True)
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    p.add_argument("--chat-model", default="synthetic-chat")
    p.add_argument("--embed-model", default="synthetic-embed")
    p.add_argument("--audio-model", default="synthetic-whisper")
    p.add_argument("--verbose", action="store_true", help="print tracebacks of failures")
    args = p.parse_args()

    print(f"openai SDK {openai.__version__} against {args.base_url}", flush=True)
    checks = Checks(args)
    failed = []
    for name, fn in checks.all():
        try:
            detail = fn()
            print(f"PASS {name}: {detail}", flush=True)
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
