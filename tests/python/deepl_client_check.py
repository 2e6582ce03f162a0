"""Translate through the gateway with DeepL's official Python client
(`deepl`, server_url pointed at the gateway); print what came back as JSON
for the Rust test.

    deepl_client_check.py --server-url URL --auth-key KEY
"""

import argparse
import json
import sys

import deepl


def result(r: deepl.TextResult) -> dict:
    return {
        "text": r.text,
        "detected_source_lang": r.detected_source_lang,
        "billed_characters": r.billed_characters,
    }


def error_name(call) -> str:
    try:
        call()
    except deepl.DeepLException as e:
        return type(e).__name__
    return "none"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--server-url", required=True)
    p.add_argument("--auth-key", required=True)
    args = p.parse_args()
    translator = deepl.Translator(args.auth_key, server_url=args.server_url, send_platform_info=False)
    one = translator.translate_text("Good morning, how are you?", target_lang="DE")
    many = translator.translate_text(
        ["Where is the railway station?", "Guten Morgen, wie geht es dir?"], target_lang="DE"
    )
    usage = translator.get_usage()
    targets = [lang.code for lang in translator.get_target_languages()]
    wrong = deepl.Translator("wrong-key", server_url=args.server_url, send_platform_info=False)
    out = {
        "one": result(one),
        "many": [result(r) for r in many],
        "usage": {"character_count": usage.character.count},
        "target_languages": targets,
        "bad_key": error_name(lambda: wrong.translate_text("Hello", target_lang="DE")),
        "bad_target": error_name(lambda: translator.translate_text("Hello", target_lang="XX")),
    }
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
