"""Drift statistics and verdict: synthetic data for the rules, real corpora for calibration."""

from __future__ import annotations

import email
import email.policy
import html
import json
import re
import tarfile
import time

import numpy as np
import pandas as pd
import pytest

from spam_assets.drift import DriftReport, DriftThresholds, compute_drift, descriptors, holm, psi
from spam_assets.model.text import tokens
from tests.datasets import sms_or_skip, spamassassin_or_skip
from tests.synthetic import email_messages, sms_messages

# ------------------------------------------------------------ synthetic data

# Made-up words from syllables: two disjoint vocabularies, Zipf-distributed like real text.
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
_WORDS = [a + b for a in _SYLLABLES for b in _SYLLABLES]
SMS_VOCAB = _WORDS[:400]
MAIL_VOCAB = _WORDS[2000:3500]


def _zipf(n: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1)
    return weights / weights.sum()


def sms_like(rng: np.random.Generator, n: int) -> list[str]:
    """Short texts: 4-20 words, sometimes a number or a shouted word."""
    p = _zipf(len(SMS_VOCAB))
    texts = []
    for _ in range(n):
        words = list(rng.choice(SMS_VOCAB, size=rng.integers(4, 21), p=p))
        if rng.random() < 0.2:
            words.append(str(rng.integers(100, 99999)))
        if rng.random() < 0.1:
            words[0] = words[0].upper()
        texts.append(" ".join(words))
    return texts


def mail_like(rng: np.random.Generator, n: int) -> list[str]:
    """Long texts from another vocabulary, with URLs and punctuation."""
    p = _zipf(len(MAIL_VOCAB))
    texts = []
    for _ in range(n):
        words = list(rng.choice(MAIL_VOCAB, size=rng.integers(80, 300), p=p))
        for i in range(0, len(words), 12):
            words[i] += ","
        if rng.random() < 0.6:
            words.append(f"http://www.{words[1].strip(',')}.com/{rng.integers(1000)}")
        texts.append("Subject: " + " ".join(words) + ".")
    return texts


def table(texts: list[str], labels) -> pd.DataFrame:
    return pd.DataFrame({"text": texts, "label": list(labels)})


def random_labels(rng: np.random.Generator, n: int, spam_share: float) -> list[str]:
    return ["spam" if x else "ham" for x in rng.random(n) < spam_share]


def sms_frame(seed: int, n: int, spam_share: float = 0.15) -> pd.DataFrame:
    """SMS-like texts with labels independent of the text (so only the prior can shift)."""
    rng = np.random.default_rng(seed)
    return table(sms_like(rng, n), random_labels(rng, n, spam_share))


def keyword_frame(seed: int, n: int, spam_share: float = 0.2) -> pd.DataFrame:
    """SMS-like texts where every spam says "prize" and no ham does."""
    rng = np.random.default_rng(seed)
    labels = random_labels(rng, n, spam_share)
    texts = sms_like(rng, n)
    texts = [f"{t} prize" if label == "spam" else t for t, label in zip(texts, labels)]
    return table(texts, labels)


def keyword_scores(texts) -> np.ndarray:
    """A deterministic champion: P(spam) 0.9 when the text says "prize", else 0.1."""
    return np.array([0.9 if "prize" in tokens(t) else 0.1 for t in texts])


def row(report: DriftReport, statistic: str, feature: str | None = None) -> dict:
    return next(r for r in report.rows if r["statistic"] == statistic and feature in (None, r["feature"]))


# ---------------------------------------------------------------------- psi


def test_psi_of_identical_distributions_is_about_zero():
    rng = np.random.default_rng(1)
    x = rng.normal(size=5000)
    assert psi(x, x) == pytest.approx(0.0, abs=1e-12)
    assert psi(x, rng.normal(size=5000)) < 0.02


def test_psi_of_shifted_distributions_is_large():
    rng = np.random.default_rng(2)
    assert psi(rng.normal(size=5000), rng.normal(loc=2.0, size=5000)) > 1.0


def test_psi_floor_handles_empty_bins():
    ref = np.arange(1000, dtype=float)  # ten reference bins of 10% each
    cur = np.full(200, 5000.0)  # everything lands in the open top bin
    floor, share = 1e-4, 0.1
    expected = 9 * (floor - share) * np.log(floor / share) + (1 - share) * np.log(1 / share)
    assert psi(ref, cur) == pytest.approx(expected)
    assert np.isfinite(psi(ref, cur))


def test_psi_handles_tied_quantiles():
    # A count that is mostly zero: all nine inner quantiles tie at 0.
    ref = np.r_[np.zeros(950), np.ones(50)]
    assert psi(ref, ref) == pytest.approx(0.0, abs=1e-12)
    same_share = np.r_[np.zeros(95), np.full(5, 3.0)]  # same presence share, other count
    assert psi(ref, same_share) == pytest.approx(0.0, abs=1e-12)
    assert psi(ref, np.r_[np.zeros(50), np.ones(50)]) > 0.25


def test_holm_adjusts_step_down_and_skips_nan():
    adjusted = holm([0.01, 0.04, 0.03, np.nan])
    np.testing.assert_allclose(adjusted[:3], [0.03, 0.06, 0.06])
    assert np.isnan(adjusted[3])
    assert holm([0.5, 0.9]).max() <= 1.0


def test_descriptors_measure_what_they_say():
    d = descriptors(["WIN £100 at www.win.com now", "", "ok"]).iloc[0]
    assert d["char_length"] == 27
    assert d["token_length"] == len(tokens("WIN £100 at www.win.com now"))
    assert d["url_count"] == 1
    assert d["digit_share"] == pytest.approx(3 / 27)
    assert d["upper_share"] == pytest.approx(3 / 17)
    assert d["nonletter_share"] == pytest.approx(6 / 23)  # £, 1, 0, 0, two dots of 23 visible


# ------------------------------------------------------------------ verdict


def test_same_distribution_gives_no_drift():
    report = compute_drift(sms_frame(10, 600), sms_frame(11, 400))
    assert report.drift is False and report.decay is False
    assert report.reasons == []
    assert report.value("domain_auc") < 0.55
    assert max(r["value"] for r in report.rows if r["statistic"] == "psi") < 0.1
    assert (report.n_reference, report.n_current) == (600, 400)


def test_very_different_texts_give_drift_with_named_reasons():
    rng = np.random.default_rng(12)
    current = table(mail_like(rng, 150), random_labels(rng, 150, 0.15))
    report = compute_drift(sms_frame(13, 600), current)
    assert report.drift is True
    text = "\n".join(report.reasons)
    for name in ("char_length PSI", "token_length PSI", "url_count PSI", "OOV rate", "terms shifted", "domain classifier"):
        assert name in text
    assert "spam share" not in text  # the prior did not move
    assert re.search(r"char_length PSI \d+\.\d\d > 0\.25 \(KS p=", text)
    assert report.value("domain_auc") > 0.9
    assert row(report, "psi", "char_length")["flagged"] and row(report, "ks", "char_length")["flagged"]


def test_label_only_shift_is_detected():
    report = compute_drift(sms_frame(20, 800, spam_share=0.1), sms_frame(21, 400, spam_share=0.5))
    assert report.drift is True
    assert len(report.reasons) == 1 and report.reasons[0].startswith("spam share")
    prior = row(report, "label_prior")
    assert prior["flagged"] and prior["p_corrected"] < 1e-6
    assert prior["value"] == pytest.approx(0.5, abs=0.06) and prior["reference"] == pytest.approx(0.1, abs=0.03)
    assert [r["statistic"] for r in report.rows if r["flagged"]] == ["label_prior"]


def test_small_batch_noise_needs_significance_to_count():
    # 40 rows from the same generator: PSI and domain AUC cross their thresholds by chance
    # (found by scanning seeds), the KS and Mann-Whitney gates keep it from a verdict.
    report = compute_drift(sms_frame(13, 600), sms_frame(305, 40))
    assert row(report, "psi", "char_length")["value"] > 0.25
    assert row(report, "ks", "char_length")["p_corrected"] > 0.05
    auc = row(report, "domain_auc")
    assert auc["value"] > 0.55 and auc["p_corrected"] > 0.05 and not auc["flagged"]
    assert report.drift is False and report.reasons == []
    assert any(w.startswith("domain classifier AUC") for w in report.warnings)


def test_too_few_rows_are_not_judged():
    rng = np.random.default_rng(30)
    tiny = table(mail_like(rng, 12), ["spam"] * 12)  # wildly different, but only 12 rows
    report = compute_drift(sms_frame(31, 600), tiny)
    assert report.drift is False and report.decay is False
    assert len(report.reasons) == 1 and report.reasons[0].startswith("too few rows to judge")
    assert report.rows == []
    judged = compute_drift(sms_frame(31, 600), tiny, DriftThresholds(min_rows=10))
    assert judged.drift is True


def test_multiple_testing_correction_is_applied():
    # Same texts; spam share 10% vs 14.4%: chi-square p ~0.015 alone, not after Holm over ~57 tests.
    reference = sms_frame(40, 1000)
    reference["label"] = ["spam"] * 100 + ["ham"] * 900
    current = sms_frame(41, 500)
    current["label"] = ["spam"] * 72 + ["ham"] * 428
    report = compute_drift(reference, current)
    prior = row(report, "label_prior")
    assert prior["p_value"] < 0.05
    assert prior["p_corrected"] > 0.05
    assert not prior["flagged"]
    assert report.drift is False
    # Holm multiplies the k-th smallest of m p-values by at least m - k + 1; the prior's raw p is
    # among the smallest here, so its factor is large.
    family = [r["p_value"] for r in report.rows if r["statistic"] in ("ks", "label_prior", "domain_auc")]
    family += [t["p_value"] for t in report.term_tests]
    rank = sum(p < prior["p_value"] for p in family)
    assert len(family) == 6 + 1 + 1 + 50
    assert prior["p_corrected"] >= prior["p_value"] * (len(family) - rank) * (1 - 1e-12)


def test_score_fn_on_a_healthy_champion():
    reference, current = keyword_frame(50, 800), keyword_frame(51, 400)
    report = compute_drift(reference, current, score_fn=keyword_scores, reference_f1=0.98)
    assert report.drift is False and report.decay is False
    assert report.value("realised_f1") == pytest.approx(1.0)
    assert row(report, "realised_f1")["reference"] == pytest.approx(0.98)
    assert report.value("score_psi") < 0.1
    given = compute_drift(reference, current, score_fn=keyword_scores, reference_scores=keyword_scores(reference["text"]))
    assert given.value("score_psi") == pytest.approx(report.value("score_psi"))


def test_score_fn_detects_decay():
    # Same texts, same prior, but which messages are spam changed: only the champion can tell.
    reference = keyword_frame(60, 800)
    current = keyword_frame(61, 400)
    current["label"] = np.random.default_rng(62).permutation(current["label"].to_numpy())
    report = compute_drift(reference, current, score_fn=keyword_scores, reference_f1=0.98)
    assert report.decay is True and report.drift is True
    assert len(report.reasons) == 1
    assert report.reasons[0].startswith("champion spam F1") and "(reference 0.980)" in report.reasons[0]
    assert report.value("realised_f1") < 0.5
    assert not row(report, "score_psi")["flagged"]


def test_score_psi_flags_a_shifted_score_distribution():
    reference = keyword_frame(70, 800)
    current = keyword_frame(71, 400)
    shifted = lambda texts: np.clip(keyword_scores(texts) + 0.3, 0, 1)  # everything looks spammier
    report = compute_drift(reference, current, score_fn=shifted, reference_scores=keyword_scores(reference["text"]))
    assert row(report, "score_psi")["flagged"]
    assert any(r.startswith("champion score PSI") for r in report.reasons)


def test_domain_classifier_matches_a_vectoriser_refitted_per_fold():
    """Counting once must give what TfidfVectorizer(min_df=2) inside each fold gave: no leak, same scores."""
    from scipy import stats
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    from spam_assets.drift import domain_classifier

    reference = sms_messages(300, seed=21)["text"].tolist()
    for current in (sms_messages(200, seed=22)["text"].tolist(), email_messages(80, seed=23)["text"].tolist()):
        texts, y = reference + current, np.r_[np.zeros(len(reference), dtype=int), np.ones(len(current), dtype=int)]
        per_fold = make_pipeline(
            TfidfVectorizer(tokenizer=tokens, token_pattern=None, lowercase=False, ngram_range=(1, 2), sublinear_tf=True, min_df=2),
            LogisticRegression(max_iter=1000, class_weight="balanced"),
        )
        folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
        scores = cross_val_predict(per_fold, texts, y, cv=folds, method="predict_proba")[:, 1]
        expected = (
            roc_auc_score(y, scores),
            stats.mannwhitneyu(scores[y == 1], scores[y == 0], alternative="greater", method="asymptotic").pvalue,
        )
        # max_rows above both sizes: no subsampling, so the rows are in the same order
        assert domain_classifier(reference, current, max_rows=1000, seed=0) == pytest.approx(expected, rel=1e-9)


def test_report_renders_as_frame_markdown_and_json():
    report = compute_drift(keyword_frame(80, 300), keyword_frame(81, 300), score_fn=keyword_scores)
    frame = report.to_frame()
    assert list(frame.columns) == [
        "statistic", "feature", "value", "reference", "p_value", "p_corrected", "threshold", "flagged"
    ]
    assert len(frame) == len(report.rows)
    markdown = report.to_markdown()
    assert markdown.startswith("Verdict: no drift")
    assert "| statistic | feature |" in markdown and "| domain_auc | tfidf_logreg |" in markdown
    summary = report.to_dict()
    assert json.loads(json.dumps(summary, allow_nan=False))["drift"] is False
    assert summary["thresholds"]["psi_significant"] == 0.25


def test_unlabelled_traffic_is_judged_by_what_needs_no_labels():
    """Served traffic has no labels: the text statistics and the score still judge it, the label parts wait."""
    reference = keyword_frame(80, 800)
    rng = np.random.default_rng(81)
    mail = pd.DataFrame({"text": mail_like(rng, 150)})  # no label column at all
    report = compute_drift(reference, mail, score_fn=keyword_scores)
    assert report.drift is True and report.decay is False
    assert "domain classifier" in "\n".join(report.reasons)
    statistics = {r["statistic"] for r in report.rows}
    assert "label_prior" not in statistics and "realised_f1" not in statistics and "score_psi" in statistics
    assert report.thresholds["at_size"]["parts"] == ["tests", "oov_rate", "score_psi"]
    assert any(w.startswith("label prior and realised F1 not judged: 0 of 150") for w in report.warnings)

    same = keyword_frame(82, 400).assign(label=None)
    assert compute_drift(reference, same, score_fn=keyword_scores).drift is False


def test_partly_labelled_traffic_judges_f1_on_its_labelled_rows():
    """Feedback labels a share of the traffic: realised F1 and the prior come from those rows alone."""
    reference = keyword_frame(83, 800)
    current = keyword_frame(84, 400)
    current["label"] = np.random.default_rng(85).permutation(current["label"].to_numpy())  # the champion is now wrong
    current.loc[current.index[:300], "label"] = None  # 100 labelled rows
    report = compute_drift(reference, current, score_fn=keyword_scores)
    assert report.decay is True and report.value("realised_f1") < 0.5
    assert report.thresholds["at_size"]["parts"] == ["tests", "oov_rate", "score_psi", "realised_f1"]
    assert row(report, "label_prior")["value"] == pytest.approx((current["label"] == "spam").sum() / 100)

    current.loc[current.index[:380], "label"] = float("nan")  # 20 labelled: too few to judge labels by
    few = compute_drift(reference, current, score_fn=keyword_scores)
    assert few.decay is False and "realised_f1" not in {r["statistic"] for r in few.rows}
    assert any("20 of 400 current rows are labelled" in w for w in few.warnings)


def test_missing_columns_are_an_error():
    with pytest.raises(ValueError, match="reference lacks columns \\['label'\\]"):
        compute_drift(pd.DataFrame({"text": ["a"] * 40}), sms_frame(90, 40))
    with pytest.raises(ValueError, match="current lacks columns \\['text'\\]"):
        compute_drift(sms_frame(90, 40), pd.DataFrame({"label": ["ham"] * 40}))


# -------------------------------------------------------------- real corpora


def load_sms() -> pd.DataFrame:
    path = sms_or_skip()
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            label, _, text = line.rstrip("\r\n").partition("\t")
            rows.append((text, label))
    return pd.DataFrame(rows, columns=["text", "label"])


def load_some_mail(every: int = 15) -> pd.DataFrame:
    """Every n-th message of the SpamAssassin archive: subject plus text parts, HTML tags dropped."""
    path = spamassassin_or_skip()
    rows = []
    with tarfile.open(path) as archive:
        files = (m for m in archive if m.isfile())
        for i, member in enumerate(files):
            if i % every:
                continue
            message = email.message_from_bytes(archive.extractfile(member).read(), policy=email.policy.compat32)
            parts = [str(message.get("subject") or "")]
            for part in message.walk():
                if part.get_content_maintype() == "text":
                    payload = (part.get_payload(decode=True) or b"").decode("latin-1", "replace")
                    if part.get_content_subtype() == "html":
                        payload = html.unescape(re.sub(r"<[^>]+>", " ", payload))
                    parts.append(payload)
            rows.append(("\n".join(parts), "spam" if member.name.startswith("spam") else "ham"))
    return pd.DataFrame(rows, columns=["text", "label"])


def _measured(report: DriftReport) -> str:
    psis = {r["feature"]: round(r["value"], 3) for r in report.rows if r["statistic"] == "psi"}
    return f"PSI {psis}, AUC {report.value('domain_auc'):.3f}, OOV {report.value('oov_rate'):.3f}"


@pytest.mark.datasets
def test_random_split_of_sms_shows_no_drift():
    sms = load_sms()
    assert len(sms) == 5574
    order = np.random.default_rng(0).permutation(len(sms))
    half = len(sms) // 2
    started = time.perf_counter()
    report = compute_drift(sms.iloc[order[:half]], sms.iloc[order[half:]])
    elapsed = time.perf_counter() - started
    print(f"SMS vs SMS: {elapsed:.2f} s; {_measured(report)}")
    assert report.drift is False, report.reasons
    assert report.value("domain_auc") < 0.55
    assert report.value("oov_rate") < 0.2
    assert max(r["value"] for r in report.rows if r["statistic"] == "psi") < 0.1


@pytest.mark.datasets
def test_email_against_sms_is_drift():
    sms = load_sms()
    mail = load_some_mail()
    assert len(mail) > 300
    report = compute_drift(sms, mail)
    print(f"e-mail vs SMS: {_measured(report)}")
    assert report.drift is True
    assert report.value("domain_auc") > 0.9
    assert any(r.startswith("char_length PSI") for r in report.reasons)
