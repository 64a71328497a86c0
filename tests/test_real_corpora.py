"""The graph on the real corpora: the numbers the platform promises.

Skips, saying how to enable it, where ../shared/datasets (or SPAM_SMS_PATH /
SPAM_SPAMASSASSIN_PATH) is absent. One module-scoped champion is trained on
the first 4,500 SMS lines; the remaining 1,074 lines are a genuinely new
SMS batch, and the SpamAssassin archive is the e-mail batch.
"""

from pathlib import Path

import dagster as dg
import pytest

from spam_assets.defs.resources import PlatformStore, build_resources
from spam_assets.intake import register, stage
from spam_assets.model.registry import Registry
from spam_assets.runner import materialize_batches
from spam_assets.settings import tracking_uri
from tests.datasets import needs_sms, needs_spamassassin, sms_path, spamassassin_path

pytestmark = [
    pytest.mark.datasets,
    needs_sms,
]
FIRST_LINES = 4500


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    """A home with an SMS-trained champion; yields (instance, resources, folder for new batch files)."""
    root = tmp_path_factory.mktemp("real")
    home = root / "home"
    (home / "dagster").mkdir(parents=True)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SPAM_HOME", str(home))
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        lines = sms_path().read_text(encoding="utf-8").splitlines(keepends=True)
        (root / "sms_first.txt").write_text("".join(lines[:FIRST_LINES]), encoding="utf-8")
        (root / "sms_rest.txt").write_text("".join(lines[FIRST_LINES:]), encoding="utf-8")
        with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
            resources = build_resources(str(home))
            first = _ingest(root / "sms_first.txt", instance)
            results = materialize_batches([first], instance, resources)
            assert all(r.success for r in results)
            yield instance, resources, root


def _ingest(path: Path, instance) -> str:
    batch_id = stage(path, PlatformStore().batches())
    register(instance, batch_id)
    return batch_id


def _latest(instance, key):
    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_sms_champion_reaches_spam_f1_095_on_deduplicated_holdout(platform):
    instance, _, _ = platform
    corpus = _latest(instance, "cleaned_corpus")
    assert corpus["duplicates_collapsed"] > 250  # the SMS corpus repeats itself (~7%)
    champion = Registry(tracking_uri()).champion()
    card = Registry(tracking_uri()).card(champion)
    assert card.metrics["holdout_spam_f1"] >= 0.95, card.metrics
    assert card.metrics["holdout_spam_precision"] >= 0.95


def test_new_sms_batch_does_not_drift(platform):
    instance, resources, root = platform
    batch = _ingest(root / "sms_rest.txt", instance)
    materialize_batches([batch], instance, resources, downstream=["cleaned_corpus", "drift_statistics"])
    drift = _latest(instance, "drift_statistics")
    assert drift["new_batches"] == [batch]
    assert drift["drift"] is False, drift["reasons"]
    assert drift["decay"] is False


# ~40 s (the 6,046-message archive through the graph): in the slow stage. The default suite still
# judges real e-mail against real SMS (test_drift) and an e-mail batch in the graph (test_graph).
@needs_spamassassin
@pytest.mark.slow
def test_spamassassin_batch_after_sms_champion_drifts(platform):
    instance, resources, _ = platform
    batch = _ingest(spamassassin_path(), instance)
    materialize_batches([batch], instance, resources, downstream=["cleaned_corpus", "drift_statistics"])
    drift = _latest(instance, "drift_statistics")
    assert batch in drift["new_batches"]
    assert drift["drift"] is True
    reasons = drift["reasons"].lower()
    assert "domain" in reasons and "psi" in reasons, reasons
