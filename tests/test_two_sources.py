"""Two sources, real training: a challenger better on the large one and broken on the small one is not promoted.

The SMS Spam Collection is the large source; 200 ham and 200 spam e-mails
of the SpamAssassin public corpus the small one (source `email`). The
champion is the platform's Naive Bayes candidate, trained through the
graph. Then a batch relabels the e-mails of the train split the other way
round (a broken labeller, or poisoned feedback): by the corpus's rule the
newest label wins a tie, so the challenger, the stronger linear SVM, is
trained through the graph on SMS as labelled and e-mail labelled wrong. The
holdout keeps its true labels (its texts were not in the relabelling
batch): the challenger is better on SMS and broken on e-mail.

Under the default gates the challenger is kept and the reasons name
`email`. Then the policy is made lenient on everything else (merged gates
at 0.5, no win over the champion needed, no obfuscation gate), so the
per-source gate alone decides: on, the challenger is still kept and every
reason is about `email`; off (a minimum no source reaches), the same
challenger is promoted.
"""

import json
import tarfile
from pathlib import Path

import dagster as dg
import pytest

from spam_assets.defs.assets.deployment import OUTCOME_KEY
from spam_assets.defs.resources import PlatformStore, PromotionPolicy
from spam_assets.defs.run_tags import FORCE_RETRAIN_TAG
from spam_assets.intake import register, stage
from spam_assets.loaders import SourceSpec
from spam_assets.model.registry import Registry
from spam_assets.runner import graph_assets, materialize_batches
from spam_assets.settings import tracking_uri
from tests.datasets import sms_or_skip, spamassassin_or_skip

# ~45 s here (two trainings, three decisions): slow, so out of the default suite; CI runs it.
pytestmark = [pytest.mark.datasets, pytest.mark.slow]
# E-mails per folder: ~80 in the holdout, ~35 of them spam, gated by the default policy (50 and 10).
SAMPLE = {"easy-ham-1": 200, "spam-1": 200}
NOT_ABOUT_THIS = {"min_improvement": -1.0, "adversarial_gate": False}
LENIENT = {**NOT_ABOUT_THIS, "min_spam_f1": 0.5, "min_spam_precision": 0.5}


def candidate(name: str) -> dict:
    """One candidate, two folds: the test is about the decision, not model selection."""
    return {"ops": {"trained_model": {"config": {"folds": 2, "candidates": [name]}}}}


def email_sample(archive: Path, target: Path) -> Path:
    """The first SAMPLE messages (by name) of easy-ham-1 and spam-1, as a folder tree labelled by folder."""
    with tarfile.open(archive) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
        for folder, count in SAMPLE.items():
            for member in [m for m in members if m.name.startswith(f"{folder}/")][:count]:
                out = target / member.name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(tar.extractfile(member).read())
    return target


def metadata(instance, key: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def by_source(instance) -> dict[str, dict]:
    return {row["source"]: row for row in metadata(instance, "trained_model")["holdout_by_source_json"]}


def test_a_challenger_better_on_sms_but_broken_on_email_is_not_promoted_and_the_reason_names_email(
    home, instance, resources, tmp_path
):
    sms, archive = sms_or_skip(), spamassassin_or_skip()
    batches = PlatformStore().batches()
    first = [stage(sms, batches), stage(email_sample(archive, tmp_path / "mail"), batches)]
    for batch in first:
        register(instance, batch)
    assert all(r.success for r in materialize_batches(first, instance, resources, candidate("tfidf_nb")))
    registry = Registry(tracking_uri())
    assert str(registry.champion().version) == "1"
    champion = by_source(instance)
    assert set(champion) == {"sms", "email"}
    assert champion["email"]["n"] >= 50 and champion["email"]["spams"] >= 10  # gated by the default policy
    assert champion["email"]["spam_f1"]["value"] >= 0.9  # the champion does pass on e-mail

    # The e-mails of the train split, labelled the other way round in a later batch: as often as
    # each was received, so the vote is a tie and the newer label wins.
    corpus = PlatformStore().corpus().read()
    train_mail = corpus[(corpus["source"] == "email") & (corpus["split"] == "train")]
    relabelled_file = tmp_path / "relabelled.jsonl"
    relabelled_file.write_text(
        "".join(
            (json.dumps({"text": text, "label": "ham" if label == "spam" else "spam"}) + "\n") * times
            for text, label, times in train_mail[["text", "label", "occurrences"]].itertuples(index=False)
        ),
        encoding="utf-8",
    )
    poisoned = stage(relabelled_file, batches, SourceSpec(source="relabel"))
    register(instance, poisoned)
    assert all(r.success for r in materialize_batches([poisoned], instance, resources, downstream=["cleaned_corpus"]))
    relabelled = PlatformStore().corpus().read()
    now = relabelled.set_index("normalised").loc[train_mail["normalised"], "label"].to_numpy()
    assert (now != train_mail["label"].to_numpy()).all()
    holdout = lambda frame: frame[frame["split"] == "holdout"].set_index("normalised")["label"]
    assert holdout(relabelled).loc[holdout(corpus).index].equals(holdout(corpus))  # the judge's labels are untouched
    assert set(relabelled["source"]) == {"sms", "email"}  # a text keeps its first source
    holdout_email = relabelled[(relabelled["source"] == "email") & (relabelled["split"] == "holdout")]
    assert f"| email | {(relabelled['source'] == 'email').sum() - len(holdout_email)} | {len(holdout_email)} |" in (
        metadata(instance, "cleaned_corpus")["sources"]
    )

    result = dg.materialize(
        graph_assets(), selection=["trained_model"], instance=instance, resources=resources,
        run_config=candidate("word_char_svm"), tags={FORCE_RETRAIN_TAG: "true"},
    )  # fmt: skip
    assert result.success
    (check,) = result.get_asset_check_evaluations()  # the check already says it, before any decision
    assert not check.passed and "source email: challenger spam_f1 " in check.description, check.description
    challenger, merged = by_source(instance), metadata(instance, "trained_model")
    assert challenger["email"]["spam_f1"]["value"] < 0.5  # far below the gate on the small one ...
    assert merged["holdout_spam_f1"] >= 0.5 and merged["holdout_spam_precision"] >= 0.5  # ... less so merged

    def decide(policy: PromotionPolicy) -> dict:
        assert dg.materialize(
            graph_assets(), selection=["champion_decision"], instance=instance, resources={**resources, "promotion": policy}
        ).success
        return metadata(instance, "champion_decision")

    decision = decide(PromotionPolicy(**NOT_ABOUT_THIS))  # the default gates
    outcome = decision[OUTCOME_KEY]
    assert (outcome["action"], outcome["champion_version_now"]) == ("keep", "1"), outcome["reasons"]
    assert "source email: challenger spam_f1 " in "\n".join(outcome["reasons"]), outcome["reasons"]
    assert "source email: challenger significantly worse than the champion" in "\n".join(outcome["reasons"])
    assert not any(r.startswith("source sms") for r in outcome["reasons"]), outcome["reasons"]
    table = decision["comparison"].splitlines()
    row = lambda metric: next(line for line in table if line.startswith(f"| {metric} |")).split(" | ")
    assert row("spam_f1 [email]")[-1].endswith("gate failed |") and row("spam_f1 [sms]")[-1].endswith("gate passed |")
    sms_champion, sms_challenger = float(row("spam_f1 [sms]")[1]), float(row("spam_f1 [sms]")[2])
    assert sms_challenger > sms_champion, table  # better on the large source, on the same holdout messages

    lenient = decide(PromotionPolicy(**LENIENT))[OUTCOME_KEY]  # only the per-source gate stands in the way
    assert (lenient["action"], lenient["champion_version_now"]) == ("keep", "1"), lenient["reasons"]
    assert lenient["reasons"] and all(r.startswith("source email: ") for r in lenient["reasons"]), lenient["reasons"]

    # The per-source figures are in the challenger's MLflow run too.
    run = registry.client.get_run(registry.client.get_model_version(registry.model_name, "2").run_id)
    assert run.data.metrics["source.email.spam_f1"] == pytest.approx(challenger["email"]["spam_f1"]["value"])
    assert "source.sms.spam_f1_low" in run.data.metrics

    # The gate is the policy's: with a minimum no source reaches, the same challenger is promoted.
    ungated = decide(PromotionPolicy(**LENIENT, min_source_holdout=10**6))[OUTCOME_KEY]  # no source gated
    assert (ungated["action"], ungated["champion_version_now"]) == ("promote", "2"), ungated["reasons"]
