"""Time each asset and measure peak memory at 1x, 10x and 100x the SMS corpus.

    python benchmarks/pipeline.py                 # scales 1 10 100
    python benchmarks/pipeline.py --scales 1 10   # a quicker look

Each scale runs in a fresh process with its own temp home: the corpus is
resampled to scale x 5,574 rows with light perturbation (one word of the
corpus' own vocabulary inserted at random into every row) so deduplication
does not collapse it back to 5,171 texts. Two runs per scale,
as the platform lives: 90% of the rows bootstrap a champion, then the other
10% arrive as a new batch and the whole graph runs again (drift against the
champion, retrain, decision). Step times come from Dagster's event log;
memory is the peak RSS of the process tree (CV workers are child processes),
sampled every 50 ms while each step runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ASSET_ORDER = ["raw_sample", "cleaned_corpus", "drift_statistics", "trained_model", "champion_decision"]


def perturbed_sample(rows: list[tuple[str, str]], n: int, seed: int) -> list[tuple[str, str]]:
    """n rows drawn with replacement, each with one word of the corpus inserted at random.

    Every row changes (short messages too), so copies of one message do not
    collapse back into one on deduplication, and the vocabulary stays the
    corpus' own, so the data is resampled, not made different.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    vocabulary = sorted({word for _, text in rows for word in text.split()})
    picks = rng.integers(0, len(rows), size=n)
    inserts = rng.integers(0, len(vocabulary), size=n)
    out = []
    for index, word in zip(picks, inserts):
        label, text = rows[index]
        words = text.split()
        words.insert(int(rng.integers(0, len(words) + 1)), vocabulary[word])
        out.append((label, " ".join(words)))
    return out


class TreeRss:
    """Peak resident memory of this process and its descendants."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.samples, self._stop = interval, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree_rss(self) -> int:
        parents, rss = {}, {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
                rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, IndexError):
                continue
        tree, frontier = {os.getpid()}, [os.getpid()]
        while frontier:
            pid = frontier.pop()
            children = [c for c, p in parents.items() if p == pid and c not in tree]
            tree.update(children)
            frontier.extend(children)
        return sum(rss.get(p, 0) for p in tree)

    def _run(self):
        while not self._stop.is_set():
            self.samples.append((time.time(), self._tree_rss()))
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def peak(self, start: float, end: float) -> int:
        return max((r for t, r in self.samples if start <= t <= end), default=0)


def run_scale(scale: int, sms: Path, bootstrap_only: bool = False) -> dict:
    """Runs in a child process: one temp home, two graph runs, per-step time and memory."""
    home = Path(tempfile.mkdtemp(prefix=f"bench-{scale}x-"))
    os.environ["SPAM_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    import dagster as dg

    from spam_assets.defs.resources import PlatformStore, build_resources
    from spam_assets.intake import register, stage
    from spam_assets.runner import materialize_batches

    rows = [tuple(line.rstrip("\n").split("\t", 1)) for line in sms.read_text(encoding="utf-8").splitlines(True)]
    sample = perturbed_sample(rows, scale * len(rows), seed=scale)
    cut = int(len(sample) * 0.9)
    files = []
    parts = [("bootstrap", sample[:cut])] + ([] if bootstrap_only else [("new", sample[cut:])])
    for name, part in parts:
        path = home / f"{name}.txt"
        path.write_text("".join(f"{label}\t{text}\n" for label, text in part), encoding="utf-8")
        files.append(path)

    (home / "dagster").mkdir()
    out = {"scale": scale, "rows": len(sample), "runs": []}
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance, TreeRss() as memory:
        resources = build_resources(str(home))
        for path in files:
            batch = stage(path, PlatformStore().batches())
            register(instance, batch)
            started = time.time()
            results = materialize_batches([batch], instance, resources)
            steps = {}
            for result in results:
                assert result.success, f"run failed at scale {scale}"
                begin = {}
                for entry in instance.all_logs(result.run_id):
                    event = entry.dagster_event
                    if event is None:
                        continue
                    if event.event_type_value == "STEP_START":
                        begin[event.step_key] = entry.timestamp
                    elif event.event_type_value == "STEP_SUCCESS":
                        start = begin[event.step_key]
                        steps[event.step_key] = {
                            "seconds": entry.timestamp - start,
                            "peak_rss_mb": memory.peak(start, entry.timestamp) / 2**20,
                        }
            out["runs"].append({"batch_rows": sum(1 for _ in path.open()), "wall_seconds": time.time() - started, "steps": steps})
        out["peak_rss_mb"] = max(r for _, r in memory.samples) / 2**20
    drift = json.loads((home / "drift" / "latest.json").read_text())
    out["drift_on_new_batch"] = None if bootstrap_only else drift["drift"]
    return out


def table(results: list[dict]) -> str:
    scales = [r["scale"] for r in results]
    head = "| asset (retrain run) | " + " | ".join(f"{s}× s" for s in scales) + " | " + " | ".join(
        f"{s}× peak MB" for s in scales
    )
    ratios = [f"{b}×/{a}× time" for a, b in zip(scales, scales[1:])]
    head = head.replace("(retrain run)", "(last run)")
    lines = [head + (" | " + " | ".join(ratios) if ratios else "") + " |"]
    lines.append("|---" * (1 + 2 * len(scales) + len(ratios)) + "|")
    for asset in ASSET_ORDER + ["total (all runs, wall)"]:
        if asset.startswith("total"):
            secs = [sum(run["wall_seconds"] for run in r["runs"]) for r in results]
            mem = [r["peak_rss_mb"] for r in results]
        else:
            secs = [r["runs"][-1]["steps"][asset]["seconds"] for r in results]
            mem = [r["runs"][-1]["steps"][asset]["peak_rss_mb"] for r in results]
        cells = [f"{s:.2f}" for s in secs] + [f"{m:.0f}" for m in mem]
        cells += [f"{b / a:.1f}" for a, b in zip(secs, secs[1:])]
        lines.append(f"| {asset} | " + " | ".join(cells) + " |")
    rows = ", ".join(f"{r['scale']}× = {r['rows']:,} rows" for r in results)
    return "\n".join(lines) + f"\n\nRows: {rows}. Drift on the new 10% batch: " + ", ".join(
        f"{r['scale']}×: {r['drift_on_new_batch']}" for r in results
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--sms", type=Path, default=os.environ.get("SPAM_SMS_PATH", ROOT.parent / "shared" / "datasets" / "SMSSpamCollection"))
    parser.add_argument("--bootstrap-only", action="store_true", help="time only the first run (90%% of the rows)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write raw results here")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_scale(args.child, Path(args.sms), args.bootstrap_only)))
        return 0
    results = []
    for scale in args.scales:
        print(f"running {scale}× ...", file=sys.stderr, flush=True)
        child = subprocess.run(
            [sys.executable, __file__, "--child", str(scale), "--sms", str(args.sms)]
            + (["--bootstrap-only"] if args.bootstrap_only else []),
            capture_output=True, text=True,
        )
        if child.returncode != 0:
            print(child.stderr[-4000:], file=sys.stderr)
            return 1
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(table(results), file=sys.stderr)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
