"""What one feedback_sensor tick costs: reports by verdict id, their texts found in the prediction log.

Writes --verdicts verdicts to a real prediction log (PredictionLog, texts on)
and --reports reports by verdict id through a real FeedbackStore, on a temp
home and a temp Dagster instance, then times two sensor ticks: the first
reads every report, finds their texts in the log, screens them and stages
one batch; the second finds nothing new. The MLflow store the disk check
opens is created before the ticks (a fresh home's one-time cost). No daemon
launches the requested run here, so the second tick asks for it again
(same run key: a daemon would launch it once).

    python benchmarks/feedback.py --verdicts 20000 --reports 2000
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHAMPION = SimpleNamespace(card=SimpleNamespace(name="spam-classifier"), version="1", scorer=SimpleNamespace(name="lean"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verdicts", type=int, default=20000)
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--reporters", type=int, default=200)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder) / "home"
        os.environ["SPAM_HOME"] = str(home)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        import dagster as dg

        from serving.feedback import FeedbackStore
        from serving.prediction_log import PredictionLog
        from spam_assets.definitions import defs
        from spam_assets.defs.automation.feedback import FeedbackCursor, feedback_sensor
        from spam_assets.defs.resources import ModelRegistry, PlatformStore
        from spam_assets.traffic.verdict_ids import new_verdict_ids

        rng = random.Random(0)
        log = PredictionLog(home / "predictions", segment_seconds=3600).start()
        ids = new_verdict_ids(args.verdicts)
        texts = [f"message {i} " + " ".join(rng.choice("abcdefghij") * rng.randint(1, 8) for _ in range(12)) for i in range(args.verdicts)]
        probabilities = [rng.random() for _ in ids]
        for start in range(0, len(ids), 1000):
            part = slice(start, start + 1000)
            labels = ["spam" if p >= 0.5 else "ham" for p in probabilities[part]]
            log.record("Classify", time.perf_counter(), CHAMPION, ids[part], texts[part], probabilities[part], labels, ids[part])
            assert log.flush(30)  # the queue is bounded: never drop a verdict here
        feedback = FeedbackStore(log).start()
        started = time.perf_counter()
        for verdict in rng.sample(ids, args.reports):
            feedback.report(verdict, "", rng.choice(["ham", "spam"]), f"user-{rng.randrange(args.reporters)}")
        reporting = time.perf_counter() - started
        feedback.close()
        log.close()

        loaded = defs()
        # The tick's disk check opens the MLflow store; on a fresh home that creates its tables once
        # (seconds, not the sensor's own work): done here first.
        from spam_assets.disk import stored_model_bytes
        from spam_assets.settings import tracking_uri

        stored_model_bytes(tracking_uri())
        (home / "dagster").mkdir(parents=True)
        with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
            cursor = None
            for name in ("first tick (every report new)", "second tick (nothing new)"):
                context = dg.build_sensor_context(
                    instance=instance, instance_ref=instance.get_ref(), cursor=cursor, definitions=loaded,
                    resources={"store": PlatformStore(), "registry": ModelRegistry()},
                )  # fmt: skip
                started = time.perf_counter()
                result = feedback_sensor.evaluate_tick(context)
                took = time.perf_counter() - started
                cursor = result.cursor
                totals = FeedbackCursor.load(cursor).totals
                print(f"{name}: {took:.2f} s, {len(result.run_requests)} run requests, totals {totals}")
        print(f"{args.reports} reports stored in {reporting:.1f} s; log of {args.verdicts} verdicts; cursor {len(cursor)} bytes")


if __name__ == "__main__":
    main()
