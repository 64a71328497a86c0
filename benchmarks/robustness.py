"""The champion's recall under obfuscation on the SMS corpus, as the graph itself records it.

    python -m benchmarks.robustness                    # the corpus from SPAM_SMS_PATH
    python -m benchmarks.robustness --sms path/to/SMSSpamCollection

What `spam-platform up` does first, in a temp home: the SMS Spam Collection
as one batch, the whole graph materialised (corpus, training, decision) on
a real Dagster instance and MLflow store. Then the figures are read back
from the metadata of trained_model and champion_decision, not recomputed,
and printed as the Markdown the README quotes: holdout spam F1, precision,
recall and ham false-positive rate at P(spam) >= 0.5, and the champion's
spam recall on the obfuscated copies of the holdout spam per family and
strength.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run(sms: Path) -> str:
    import dagster as dg

    from spam_assets.defs.resources import PlatformStore, build_resources
    from spam_assets.intake import register, stage
    from spam_assets.runner import materialize_batches

    with tempfile.TemporaryDirectory() as home:
        os.environ["SPAM_HOME"] = home
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        (Path(home) / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(Path(home) / "dagster")) as instance:
            batch = stage(sms, PlatformStore().batches())
            register(instance, batch)
            results = materialize_batches([batch], instance, build_resources(home), log_level="CRITICAL")
            if not all(r.success for r in results):
                raise SystemExit("the graph failed on the SMS corpus")

            def metadata(key: str) -> dict:
                event = instance.get_latest_materialization_event(dg.AssetKey(key))
                return {k: v.value for k, v in event.asset_materialization.metadata.items()}

            return report(metadata("trained_model"), metadata("champion_decision"))


def report(model: dict, decision: dict) -> str:
    confusion = _confusion(model["confusion_matrix"])
    false_positive_rate = confusion["ham"]["spam"] / (confusion["ham"]["ham"] + confusion["ham"]["spam"])
    robustness = model["adversarial_recall"]
    lines = [
        f"decision: {decision['decision']} v{decision['challenger_version']} ({model['candidate']})",
        "",
        "| holdout | spam F1 | spam precision | spam recall | ham false-positive rate | holdout spam | holdout ham |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| SMS | {model['holdout_spam_f1']:.3f} | {model['holdout_spam_precision']:.3f} | {model['holdout_spam_recall']:.3f} "
        f"| {false_positive_rate:.2%} ({confusion['ham']['spam']} of {confusion['ham']['ham'] + confusion['ham']['spam']}) "
        f"| {robustness['n_spam']} | {confusion['ham']['ham'] + confusion['ham']['spam']} |",
        "",
        "| family | light (strength) | medium | heavy | worst | below clean |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    clean = robustness["clean"]
    for family, by_strength in robustness["recall"].items():
        cells = " | ".join(f"{value:.3f} ({strength})" for strength, value in by_strength.items())
        worst = robustness["by_family"][family]
        lines.append(f"| {family} | {cells} | {worst:.3f} | {clean - worst:.3f} |")
    lines.append(f"| clean | {clean:.3f} | | | | |")
    return "\n".join(lines)


def _confusion(markdown: str) -> dict[str, dict[str, int]]:
    """{actual: {predicted: count}} from trained_model's confusion matrix table."""
    rows = [line.strip("|").split("|") for line in markdown.splitlines()[2:]]
    return {
        cells[0].strip().removeprefix("actual_"): {"ham": int(cells[1]), "spam": int(cells[2])} for cells in rows
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sms", type=Path, default=os.environ.get("SPAM_SMS_PATH"), help="the SMS Spam Collection file")
    args = parser.parse_args()
    if not args.sms:
        raise SystemExit("no corpus: pass --sms or set SPAM_SMS_PATH")
    print(run(args.sms))


if __name__ == "__main__":
    main()
