"""What the evasion folds cost per message served: preprocessors and the lean scorer, before and after.

    python -m benchmarks.scorer_cost            # the corpus from SPAM_SMS_PATH
    python -m benchmarks.scorer_cost --email path/to/spamassassin.tar.gz   # and e-mail, one per call

Trains, on every other line of the SMS Spam Collection, word_char_svm as
the previous release built it (word and character n-grams of `normalise`)
and the current candidates, compiles each to the lean scorer the server
runs, and times the other lines in this one process, one after the other
on the same messages (best of 5 rounds): each preprocessor per message, the
lean scorer one text per call (what a unary call runs) and in batches of
256 (what a stream's micro-batch runs). The memo of words is warm, as in a
server that has been up for a while. With --email (default
SPAM_SPAMASSASSIN_PATH), also 300 e-mails of that corpus, one per call,
scored by the same SMS-trained models: e-mail is longer, and its long
words and runs are what the per-word memo does not hold.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def best_of(rounds: int, work: Callable[[], object], count: int) -> float:
    """Microseconds per message, the best of `rounds` (the least disturbed by other work on the machine)."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times) / count * 1e6


def previous_release_word_char_svm():
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.svm import LinearSVC

    from spam_assets.model.pipelines import CompactTfidfVectorizer, TextColumn, _char_ngrams
    from spam_assets.model.text import normalise

    features = FeatureUnion(
        [
            ("word", CompactTfidfVectorizer(preprocessor=normalise, ngram_range=(1, 2), sublinear_tf=True)),
            ("char", _char_ngrams(normalise)),
        ]
    )
    classifier = CalibratedClassifierCV(LinearSVC(random_state=0), cv=3, ensemble=False)
    return Pipeline([("text", TextColumn()), ("features", features), ("clf", classifier)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sms", type=Path, default=os.environ.get("SPAM_SMS_PATH"), help="the SMS Spam Collection file")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--email", type=Path, default=os.environ.get("SPAM_SPAMASSASSIN_PATH"), help="an e-mail corpus")
    args = parser.parse_args()
    if not args.sms:
        raise SystemExit("no corpus: pass --sms or set SPAM_SMS_PATH")

    from spam_assets.loaders.sms import read_sms
    from spam_assets.model.evasion import normalise_folded, normalise_skeleton, normalise_word_pairs
    from spam_assets.model.lean_scorer import compile_scorer
    from spam_assets.model.pipelines import candidate_pipelines
    from spam_assets.model.text import normalise

    records = read_sms(args.sms)
    texts, labels = [r.text for r in records], [r.label for r in records]
    train, train_labels, served = texts[::2], labels[::2], texts[1::2]

    print(f"{len(served)} messages, best of {args.rounds} rounds, µs per message\n")
    print("| preprocessor | µs |\n|---|---:|")
    for function in (normalise, normalise_skeleton, normalise_folded, normalise_word_pairs):
        print(f"| `{function.__name__}` | {best_of(args.rounds, lambda f=function: [f(t) for t in served], len(served)):.1f} |")

    emails = []
    if args.email:
        from spam_assets.loaders import read_batch

        emails = read_batch(args.email)["text"].tolist()[::10][:300]
    if emails:
        print(f"\ne-mail: {len(emails)} messages, median {sorted(map(len, emails))[len(emails) // 2]:,} characters")
    header = "| model | lean scorer, 1 text per call | batches of 256 |" + (" e-mail, 1 per call |" if emails else "")
    print(f"\n{header}\n|---|---:|---:|" + ("---:|" if emails else ""))
    models = {"word_char_svm, previous release": previous_release_word_char_svm(), **candidate_pipelines(0)}
    for name, pipeline in models.items():
        scorer = compile_scorer(pipeline.fit(train, train_labels))
        scorer.batch(served)  # a warm memo
        one = best_of(args.rounds, lambda s=scorer: [s(t) for t in served], len(served))
        batches = best_of(
            args.rounds, lambda s=scorer: [s.batch(served[i : i + 256]) for i in range(0, len(served), 256)], len(served)
        )
        row = f"| {name} | {one:.0f} | {batches:.0f} |"
        if emails:
            scorer.batch(emails)
            row += f" {best_of(args.rounds, lambda s=scorer: [s(t) for t in emails], len(emails)):.0f} |"
        print(row)


if __name__ == "__main__":
    main()
