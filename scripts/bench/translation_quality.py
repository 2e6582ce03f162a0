"""Translation quality through the gateway's DeepL route with DeepL's official
Python client: chrF (sacrebleu) per language pair, overall, and characters
per second, on a multi-parallel set of everyday sentences (one JSON object a
line, one key per language: scripts/bench/translation/everyday.jsonl).

    translation_quality.py --server-url URL --auth-key KEY [--data FILE]
        [--pairs en-de,de-en,...] [--json OUT] [--show N]

Each text is sent alone (one request a sentence, as a front door's UI texts
come), source language given. chrF is computed per pair over the pair's
sentences (corpus chrF, sacrebleu's defaults: character 6-grams, beta 2);
"overall" is chrF over every hypothesis and reference of every pair at once.
"""

import argparse
import json
import sys
import time

import deepl
import sacrebleu

# Into English from the languages a European/Asian front door sees most, and
# out of English into them.
DEFAULT_PAIRS = "en-de,en-fr,en-es,en-zh,en-ja,de-en,fr-en,es-en,it-en,zh-en,ja-en"

# DeepL names English and Portuguese targets by variant; sources are plain.
TARGET_CODE = {"en": "EN-US", "pt": "PT-PT", "zh": "ZH-HANS"}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--server-url", required=True)
    p.add_argument("--auth-key", required=True)
    p.add_argument("--data", default="scripts/bench/translation/everyday.jsonl")
    p.add_argument("--pairs", default=DEFAULT_PAIRS)
    p.add_argument("--json", help="write every translation and score here")
    p.add_argument("--show", type=int, default=2, help="worst translations to print per pair")
    args = p.parse_args()

    rows = [json.loads(line) for line in open(args.data, encoding="utf-8") if line.strip()]
    translator = deepl.Translator(args.auth_key, server_url=args.server_url, send_platform_info=False)
    results, all_hyp, all_ref = [], [], []
    chars, seconds = 0, 0.0
    print(f"{'pair':6} {'chrF':>6} {'chars/s':>8}  sentences={len(rows)}")
    for pair in args.pairs.split(","):
        src, tgt = pair.split("-")
        hyps, refs, took = [], [], 0.0
        for row in rows:
            start = time.monotonic()
            out = translator.translate_text(
                row[src], source_lang=src.upper(), target_lang=TARGET_CODE.get(tgt, tgt.upper())
            )
            took += time.monotonic() - start
            hyps.append(out.text)
            refs.append(row[tgt])
        pair_chars = sum(len(row[src]) for row in rows)
        chars += pair_chars
        seconds += took
        score = sacrebleu.corpus_chrf(hyps, [refs]).score
        per = [sacrebleu.sentence_chrf(h, [r]).score for h, r in zip(hyps, refs)]
        print(f"{pair:6} {score:6.1f} {pair_chars / took:8.1f}")
        for i in sorted(range(len(rows)), key=lambda i: per[i])[: args.show]:
            print(f"    {per[i]:5.1f}  {rows[i][src]!r} -> {hyps[i]!r}")
        results.append(
            {
                "pair": pair,
                "chrf": score,
                "chars_per_second": pair_chars / took,
                "sentences": [
                    {"source": row[src], "reference": ref, "hypothesis": hyp, "chrf": s}
                    for row, ref, hyp, s in zip(rows, refs, hyps, per)
                ],
            }
        )
        all_hyp += hyps
        all_ref += refs
    overall = sacrebleu.corpus_chrf(all_hyp, [all_ref]).score
    print(f"{'all':6} {overall:6.1f} {chars / seconds:8.1f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {"overall_chrf": overall, "chars_per_second": chars / seconds, "pairs": results},
                f,
                ensure_ascii=False,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
