"""Call tools through the gateway's remote model with the official OpenAI
Python SDK, as a JSON answer and as a stream (tool-call deltas put back
together the way the SDK's users do), with logprobs; print what arrived as
JSON for the Rust test.

    openai_sdk_tools.py --base-url URL --api-key KEY --model M
"""

import argparse
import json
import sys

import openai

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_capital",
            "description": "The capital of a country",
            "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        },
    }
]
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--model", required=True)
    args = p.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, timeout=60.0, max_retries=0)

    answer = client.chat.completions.create(model=args.model, messages=MESSAGES, tools=TOOLS, max_tokens=12)
    choice = answer.choices[0]
    calls = [{"name": c.function.name, "arguments": json.loads(c.function.arguments)} for c in choice.message.tool_calls]

    stream = client.chat.completions.create(
        model=args.model, messages=MESSAGES, tools=TOOLS, max_tokens=12, stream=True
    )
    streamed, stream_finish, models, empty_chunks = {}, None, set(), 0
    for chunk in stream:
        models.add(chunk.model)
        if not chunk.choices:
            empty_chunks += 1
        for c in chunk.choices:
            for call in c.delta.tool_calls or []:
                entry = streamed.setdefault(call.index, {"name": "", "arguments": ""})
                if call.function and call.function.name:
                    entry["name"] = call.function.name
                if call.function and call.function.arguments:
                    entry["arguments"] += call.function.arguments
            if c.finish_reason:
                stream_finish = c.finish_reason
    streamed_calls = [{"name": e["name"], "arguments": json.loads(e["arguments"])} for e in streamed.values()]

    plain = client.chat.completions.create(model=args.model, messages=MESSAGES, max_tokens=6, logprobs=True)
    tokens = [t.token for t in plain.choices[0].logprobs.content]

    json.dump(
        {
            "model": answer.model,
            "system_fingerprint": answer.system_fingerprint,
            "finish_reason": choice.finish_reason,
            "calls": calls,
            "stream_models": sorted(models),
            "stream_finish_reason": stream_finish,
            "stream_calls": streamed_calls,
            "stream_usage_only_chunks": empty_chunks,
            "text": plain.choices[0].message.content,
            "logprob_tokens": tokens,
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
