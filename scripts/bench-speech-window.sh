#!/usr/bin/env bash
# Whisper's encoder window against accuracy: tiny.en (f16 and Q8_0) on 90
# espeak-ng clips (15 English sentences of 1-60 words x 3 voices x 2
# speeds), each clip transcribed with every window given, WER after
# lower-casing and removing punctuation, and the time per window.
#
#   scripts/bench-speech-window.sh [WINDOW...]
# WINDOW: 0 (the full 30 s) or auto:MARGIN:MIN (the clip's positions plus
# MARGIN, at least MIN; the backend's audio_ctx = "auto" is auto:128:0).
# Default: 0 auto:128:0 auto:64:0. Environment: BENCH_THREADS=2.
# Builds backends/examples/whisper_stages.rs (release) first.
set -euo pipefail
LOG_TAG=speech-window
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
THREADS="${BENCH_THREADS:-2}"
WINDOWS=("$@")
[[ ${#WINDOWS[@]} -gt 0 ]] || WINDOWS=(0 auto:128:0 auto:64:0)
"$REPO_ROOT/scripts/setup.sh"
cargo build --release -q -p infergate-backends --example whisper_stages
TMP="$(mktemp -d -t infergate-window.XXXXXX)"
trap 'rm -rf "$TMP"' EXIT

cat >"$TMP/sentences.txt" <<'TXT'
Yes.
Stop the music.
Call me back tomorrow morning.
The meeting has been moved to Thursday at three o'clock.
Please remember to bring your passport and a printed copy of the booking.
Our flight was delayed by two hours because of the storm, so we missed the connection in Frankfurt.
I would like to order a large pizza with mushrooms, olives and extra cheese, and two bottles of sparkling water.
The weather forecast says it will rain most of the week, with strong winds along the coast and snow in the mountains.
After the presentation, the team discussed the results of the survey and agreed to repeat it next year with a larger sample of customers from every region.
Scientists have discovered a new species of frog in the rainforest. It is smaller than a coin and its bright orange skin warns predators that it is poisonous. The researchers hope the discovery will help protect the forest.
When I was a child, my grandmother used to tell me stories about the village where she grew up. There was a small bakery, a church with a tall tower, and a river where the children swam every summer. Most of those places are gone now, but the stories remain.
The library will be closed on Monday for the public holiday. Books can be returned at the drop box near the main entrance. Late fees will not be charged for that day, and the reading room will open again on Tuesday at nine in the morning.
Good evening, and welcome to the news. The government announced today that it will invest four billion dollars in new railway lines over the next decade. Critics say the plan is too slow, while supporters argue that it will create thousands of jobs and reduce traffic on the highways. In other news, the national football team won its match against Brazil by two goals to one.
Thank you.
Turn left at the next traffic light.
TXT
i=0
: >"$TMP/clips.tsv"
while IFS= read -r sentence; do
    for voice in en-us en+f3 en-gb-x-rp; do
        for speed in 150 185; do
            i=$((i + 1))
            espeak-ng -v "$voice" -s "$speed" -w "$TMP/raw.wav" "$sentence"
            sox -V1 "$TMP/raw.wav" -r 16000 -c 1 -t f32 -e floating-point "$TMP/c$i.f32"
            printf '%s\t%s\n' "$TMP/c$i.f32" "$sentence" >>"$TMP/clips.tsv"
        done
    done
done <"$TMP/sentences.txt"

for model in ggml-tiny.en.bin ggml-tiny.en-q8_0.bin; do
    log "$model: $i clips x ${#WINDOWS[@]} windows"
    cut -f1 "$TMP/clips.tsv" | target/release/examples/whisper_stages "models/whisper/$model" "$THREADS" \
        "${WINDOWS[@]}" >"$TMP/$model.tsv" 2>/dev/null
    python3 - "$TMP/clips.tsv" "$TMP/$model.tsv" "$model" <<'PY'
import collections, re, statistics, sys
refs = dict(l.rstrip("\n").split("\t") for l in open(sys.argv[1]))
NUM = {"4": "four", "3": "three", "2": "two", "1": "one", "9": "nine"}
def norm(s):
    s = s.lower().replace("o'clock", "oclock").replace("$4 billion", "four billion dollars")
    s = s.replace("4 billion", "four billion")
    return [NUM.get(w, w) for w in re.sub(r"[^a-z0-9' ]", " ", s).split()]
def distance(a, b):
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        p, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            p, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, p + (x != y))
    return d[len(b)]
errors, words, times, bad = collections.Counter(), collections.Counter(), collections.defaultdict(list), collections.Counter()
for line in open(sys.argv[2]):
    path, window, seconds, *text = line.rstrip("\n").split("\t")
    ref, hyp = norm(refs[path]), norm(text[0] if text else "")
    e = distance(ref, hyp)
    errors[window] += e; words[window] += len(ref); times[window].append(float(seconds))
    bad[window] += e > max(1, len(ref) // 5)
print(f"| {sys.argv[3]} window | WER | total time | median | clips with > 20% WER |")
print("|---|---:|---:|---:|---:|")
for w in errors:
    print(f"| {w} | {100 * errors[w] / words[w]:.2f}% | {sum(times[w]):.1f} s | {statistics.median(times[w]):.3f} s | {bad[w]} |")
PY
done
