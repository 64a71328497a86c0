"""Cost of compacting one hour of the prediction log into its traffic table (spam_assets/traffic_tables.py).

Writes N verdicts with the server's own writer (serving.prediction_log.PredictionLog,
segments rotated at --segment-mb) into a temp folder, then times
`compact_hour` (read, parse, validate, dedupe, type) and `write_table`
(Parquet), and reports rows per second and the sizes of log and table.
All verdicts land in the current hour (unless the run straddles its end:
then the figures cover the rows of the hour the first verdict fell in).

    python -m benchmarks.traffic --verdicts 200000     # from the repository root
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from serving.prediction_log import PredictionLog
from spam_assets.traffic.prediction_files import segments
from spam_assets.traffic.verdict_ids import new_verdict_ids
from spam_assets.traffic_tables import compact_hour, table_path, write_table

WORDS = "free call now win prize txt reply stop lunch home later meeting see you tomorrow ok thanks love".split()
CHAMPION = SimpleNamespace(card=SimpleNamespace(name="spam-classifier"), version="7", scorer=SimpleNamespace(name="lean"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verdicts", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=64, help="verdicts per logged call")
    parser.add_argument("--segment-mb", type=float, default=8.0)
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "predictions"
        log = PredictionLog(folder, segment_bytes=int(args.segment_mb * 2**20), retention_days=0).start()
        started = dt.datetime.now(dt.UTC)
        for done in range(0, args.verdicts, args.batch):
            n = min(args.batch, args.verdicts - done)
            texts = [" ".join(rng.choices(WORDS, k=rng.randint(4, 30))) for _ in range(n)]
            probabilities = [rng.random() for _ in range(n)]
            labels = ["spam" if p >= 0.5 else "ham" for p in probabilities]
            log.record("Classify", time.perf_counter(), CHAMPION, [str(i) for i in range(n)], texts, probabilities,
                       labels, new_verdict_ids(n))  # fmt: skip
            if done % (args.batch * 200) == 0:
                log.flush()  # keep the queue from dropping: this measures reading, not the writer
        log.close(timeout=60)
        log_bytes = sum(p.stat().st_size for p in segments(folder))

        import pandas  # noqa: F401 - imported by every run already; its import (~1 s) is not compaction

        t0 = time.perf_counter()
        result = compact_hour(folder, started)
        t1 = time.perf_counter()
        path = write_table(result.table, table_path(Path(tmp) / "traffic", started))
        t2 = time.perf_counter()
        rows = result.table.num_rows
        print(f"verdicts logged: {args.verdicts:,} in {len(segments(folder))} segments, {log_bytes / 2**20:.1f} MiB JSONL")
        print(f"rows in the hour: {rows:,} (dropped by the log's queue: {log.dropped:,})")
        print(f"compact_hour: {t1 - t0:.2f} s ({rows / (t1 - t0):,.0f} rows/s)")
        print(f"write_table:  {t2 - t1:.2f} s, {path.stat().st_size / 2**20:.1f} MiB Parquet")


if __name__ == "__main__":
    main()
