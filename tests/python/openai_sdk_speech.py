"""Transcribe and translate one audio file through the gateway with the
official OpenAI Python SDK; print the results as JSON for the Rust test.

    openai_sdk_speech.py --base-url URL --api-key KEY --file F \
        --transcribe-model M --translate-model M
"""

import argparse
import json
import sys

import openai


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--transcribe-model", required=True)
    p.add_argument("--translate-model", required=True)
    args = p.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, timeout=120.0, max_retries=0)
    with open(args.file, "rb") as f:
        audio = f.read()
    verbose = client.audio.transcriptions.create(
        model=args.transcribe_model,
        file=("speech.wav", audio, "audio/wav"),
        response_format="verbose_json",
        timestamp_granularities=["segment"],
    )
    srt = client.audio.transcriptions.create(
        model=args.transcribe_model, file=("speech.wav", audio, "audio/wav"), response_format="srt"
    )
    translation = client.audio.translations.create(
        model=args.translate_model, file=("speech.wav", audio, "audio/wav")
    )
    json.dump(
        {
            "text": verbose.text,
            "language": verbose.language,
            "duration": verbose.duration,
            "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in (verbose.segments or [])],
            "srt": srt,
            "translation": translation.text,
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
