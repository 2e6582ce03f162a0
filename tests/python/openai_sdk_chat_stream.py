"""Stream a chat completion through the gateway with the official OpenAI
Python SDK; print what arrived as JSON for the Rust test.

    openai_sdk_chat_stream.py --base-url URL --api-key KEY --model M
"""

import argparse
import json
import sys

import openai


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--model", required=True)
    args = p.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, timeout=120.0, max_retries=0)
    stream = client.chat.completions.create(
        model=args.model,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = {"prompt_tokens": chunk.usage.prompt_tokens, "completion_tokens": chunk.usage.completion_tokens}
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    json.dump({"pieces": pieces, "text": "".join(pieces), "finish_reason": finish, "usage": usage}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
