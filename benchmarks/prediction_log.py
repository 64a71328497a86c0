"""What the prediction log's writer spends serialising a verdict, in this process, on SMS texts.

    python -m benchmarks.prediction_log          # the corpus from SPAM_SMS_PATH

Times `serving.prediction_log._take_lines` (what the writer runs on each 0.1 s
take) on the SMS Spam Collection's texts, best of 7 rounds, in µs per verdict:

  unary take     110 calls of one verdict each (about 0.1 s of unary traffic)
  batch take     8 calls of 256 verdicts each (a stream's or ModelInfer's batches)
  call by call   the same single-verdict calls, each serialised on its own: the
                 writer's fallback when a take holds a value it cannot serialise

Inside a busy server the same work costs more (caches shared with scoring);
benchmarks/serving.py --compare-observability measures that end to end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from serving.prediction_log import _Batch, _lines, _take_lines  # noqa: E402
from spam_assets.model.operating_point import Tiers  # noqa: E402

DEFAULT_SMS = ROOT.parent / "shared" / "datasets" / "SMSSpamCollection"
CHAMPION = SimpleNamespace(card=SimpleNamespace(name="spam-classifier", tiers=Tiers(0.6, 0.4, "tags")), version="3",
                           scorer=SimpleNamespace(name="lean"))  # fmt: skip


def calls(texts: list[str], size: int, count: int, start: int = 0) -> list[_Batch]:
    now, out = time.time(), []
    for c in range(count):
        chunk = [texts[(start + c * size + j) % len(texts)] for j in range(size)]
        p = [((c * size + j) * 0.618) % 1.0 for j in range(size)]
        out.append(_Batch(
            "Classify" if size == 1 else "ClassifyStream", now + c * 0.0009, 0.0007, CHAMPION,
            [str(c * size + j) for j in range(size)], chunk, p, ["spam" if x >= 0.6 else "ham" for x in p],
            [f"01a22081-0d72-756e-9554-{c * size + j:012d}" for j in range(size)],
        ))  # fmt: skip
    return out


def best_us_per_verdict(run, verdicts: int, rounds: int = 7) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / verdicts * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sms", type=Path, default=Path(os.environ.get("SPAM_SMS_PATH", DEFAULT_SMS)))
    args = parser.parse_args(argv)
    texts = [line.split("\t", 1)[1].rstrip("\n") for line in args.sms.open(encoding="utf-8") if "\t" in line]
    unary, batch = calls(texts, 1, 110), calls(texts, 256, 8)
    rows = {
        "unary take (110 calls of 1 verdict)": best_us_per_verdict(lambda: _take_lines(unary, True), 110),
        "batch take (8 calls of 256 verdicts)": best_us_per_verdict(lambda: _take_lines(batch, True), 2048),
        "call by call (the fallback)": best_us_per_verdict(lambda: [_lines(b, True) for b in unary], 110),
    }
    print(f"{len(texts)} SMS texts; µs per verdict, best of 7 rounds, texts logged")
    for name, value in rows.items():
        print(f"  {name:40s} {value:5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
