"""Drift: has the traffic moved away from what the champion was trained on?

Pure functions (no Dagster, no MLflow): `compute_drift` compares the newest
labelled batch(es), "current", with the champion's training reference and
returns one verdict plus a row per statistic for the UI.

The statistics look at the data from several sides, because each one alone
is either too sensitive or too blind:

* per-message descriptors (length, digits, symbols, URLs, shouting): KS test
  for "is it different at all" and PSI for "is it different enough to matter";
* vocabulary: out-of-vocabulary rate and chi-square tests on the top terms;
* label prior: the spam share;
* the champion's own behaviour (optional): its score distribution and its
  realised F1 on the labelled batch;
* a domain classifier: if TF-IDF + logistic regression can tell reference
  from current, something moved, even if no hand-made statistic names it.

A stated false-alarm rate: `alpha` (default 0.05) bounds the chance that a
batch drawn from the reference's own distribution is called drift or decay,
at any batch size. It is split evenly (Bonferroni) over the parts of the
verdict: (1) every p-value (KS per descriptor, label prior, domain
classifier, chi-square per top term) as one family, corrected with Holm's
step-down method, which controls the family-wise error rate (a verdict that
pages someone wants that guarantee rather than BH's false-discovery rate);
(2) the OOV rate, (3) the champion's score PSI and (4) its realised F1, each
judged against its own sampling noise at the batch's size (drift_noise.py).
The fixed thresholds (PSI 0.25, OOV 0.2, F1 floor 0.85) stay as "large
enough to matter": a statistic alarms only when it is past both.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from spam_assets import drift_noise
from spam_assets.settings import LABELS, POSITIVE_LABEL
from spam_assets.model.text import URL_RE, tokens

ScoreFn = Callable[[Sequence[str]], np.ndarray]

PSI_FLOOR = 1e-4  # an empty bin would make ln(c/r) infinite; this caps its weight
TOP_TERMS = 50
ROW_KEYS = ("statistic", "feature", "value", "reference", "p_value", "p_corrected", "threshold", "flagged")


@dataclass(frozen=True)
class DriftThresholds:
    psi_moderate: float = 0.1  # above: a warning, not a verdict
    psi_significant: float = 0.25
    alpha: float = 0.05  # false alarms per same-distribution batch, split over the verdict's parts (Bonferroni)
    domain_auc: float = 0.55
    oov_rate: float = 0.2  # measured: SMS vs SMS split ~0.08; e-mail vs SMS 0.26-0.36 (by parsing)
    term_share: float = 0.2  # share of top terms that must shift before it counts
    f1_floor: float = 0.85
    min_rows: int = 30
    max_domain_rows: int = 3000  # per side, keeps the domain classifier to seconds
    seed: int = 0
    resamples: int = drift_noise.RESAMPLES  # per size bucket, for the noise thresholds


@dataclass
class DriftReport:
    """The verdict and the evidence.

    `rows` holds one dict per statistic with keys statistic, feature, value,
    reference (the reference-side value where one exists, else None),
    p_value, p_corrected, threshold and flagged. `flagged` means the statistic
    crossed its own threshold (for ks and label_prior: corrected p < its share of alpha;
    domain_auc: AUC above threshold and significant); `drift` combines them by
    the rule in `compute_drift` (a descriptor needs both its psi and ks rows flagged).
    """

    drift: bool
    decay: bool
    reasons: list[str]
    rows: list[dict]
    n_reference: int
    n_current: int
    warnings: list[str] = field(default_factory=list)  # worth a look, not a verdict
    term_tests: list[dict] = field(default_factory=list)  # per top term, most significant first
    thresholds: dict = field(default_factory=dict)

    def value(self, statistic: str, feature: str | None = None) -> float | None:
        """The value of the first row matching statistic (and feature), else None."""
        for row in self.rows:
            if row["statistic"] == statistic and (feature is None or row["feature"] == feature):
                return row["value"]
        return None

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(ROW_KEYS))

    def to_markdown(self) -> str:
        """A verdict line, the reasons and a table of every statistic."""
        verdict = "**drift**" if self.drift else "no drift"
        if self.decay:
            verdict += ", **decay**"
        lines = [f"Verdict: {verdict} ({self.n_current} current vs {self.n_reference} reference rows)", ""]
        for title, items in (("Reasons", self.reasons), ("Warnings", self.warnings)):
            if items:
                lines += [f"{title}:", *(f"- {_cell(item)}" for item in items), ""]
        if self.rows:
            header = ["statistic", "feature", "value", "reference", "p", "p (Holm)", "threshold", "flagged"]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + " --- |" * len(header))
            for row in self.rows:
                cells = [
                    row["statistic"],
                    row["feature"],
                    _fmt(row["value"]),
                    _fmt(row["reference"]),
                    _fmt_p(row["p_value"]),
                    _fmt_p(row["p_corrected"]),
                    _fmt(row["threshold"]),
                    "**yes**" if row["flagged"] else "no",
                ]
                lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        return "\n".join(lines).rstrip() + "\n"

    def to_dict(self) -> dict:
        """JSON-serialisable: plain Python types, NaN as None."""
        return _jsonable(
            {
                "drift": self.drift,
                "decay": self.decay,
                "reasons": self.reasons,
                "warnings": self.warnings,
                "n_reference": self.n_reference,
                "n_current": self.n_current,
                "rows": self.rows,
                "significant_terms": [t for t in self.term_tests if t["significant"]][:20],
                "thresholds": self.thresholds,
            }
        )


# ---------------------------------------------------------------- statistics


def psi(reference_values, current_values, bins: int = 10) -> float:
    """Population stability index of current against reference.

    Bin edges are the reference's quantiles with open outer edges, so every
    current value lands somewhere. Tied quantiles (a count that is mostly 0)
    collapse to one edge via np.unique; bins are right-closed, so a mass at a
    quantile value stays in one bin instead of being split by float noise.
    Empty-bin shares are floored at 1e-4 so one empty bin cannot make PSI infinite.
    """
    ref = _finite(reference_values)
    cur = _finite(current_values)
    if ref.size == 0 or cur.size == 0:
        raise ValueError("psi needs at least one finite value on each side")
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_share = np.bincount(np.digitize(ref, inner, right=True), minlength=inner.size + 1) / ref.size
    cur_share = np.bincount(np.digitize(cur, inner, right=True), minlength=inner.size + 1) / cur.size
    ref_share = np.maximum(ref_share, PSI_FLOOR)
    cur_share = np.maximum(cur_share, PSI_FLOOR)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def descriptors(texts: Sequence[str]) -> pd.DataFrame:
    """Per-message numeric descriptors, one row per text.

    nonletter_share counts digits, punctuation and symbols among the visible
    (non-whitespace) characters, so it measures "£££ WIN!!!" rather than word length.
    Shares of an empty denominator are 0.
    """
    rows = []
    for text in texts:
        n_chars = len(text)
        letters = sum(map(str.isalpha, text))
        visible = n_chars - sum(map(str.isspace, text))
        rows.append(
            (
                n_chars,
                len(tokens(text)),
                sum(map(str.isdigit, text)) / n_chars if n_chars else 0.0,
                (visible - letters) / visible if visible else 0.0,
                len(URL_RE.findall(text)),
                sum(map(str.isupper, text)) / letters if letters else 0.0,
            )
        )
    columns = ["char_length", "token_length", "digit_share", "nonletter_share", "url_count", "upper_share"]
    return pd.DataFrame(rows, columns=columns, dtype=float)


def holm(p_values) -> np.ndarray:
    """Holm step-down adjusted p-values; NaN entries are left out of the family and stay NaN."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def oov_rate(reference_tokens: Sequence[list[str]], current_tokens: Sequence[list[str]]) -> float:
    """Share of current token occurrences that never occur in the reference."""
    vocabulary = {t for doc in reference_tokens for t in doc}
    total = sum(len(doc) for doc in current_tokens)
    if total == 0:
        return 0.0
    unseen = sum(1 for doc in current_tokens for t in doc if t not in vocabulary)
    return unseen / total


def term_tests(
    reference_tokens: Sequence[list[str]], current_tokens: Sequence[list[str]], top: int = TOP_TERMS
) -> list[dict]:
    """Chi-square per top term on documents containing it, reference vs current (raw p-values).

    Top terms are the most frequent by document frequency over both sides:
    the ones with enough counts for a test to mean something.
    """
    ref_df = Counter(t for doc in reference_tokens for t in set(doc))
    cur_df = Counter(t for doc in current_tokens for t in set(doc))
    n_ref, n_cur = len(reference_tokens), len(current_tokens)
    results = []
    for term, _ in (ref_df + cur_df).most_common(top):
        a, b = ref_df[term], cur_df[term]
        table = np.array([[a, n_ref - a], [b, n_cur - b]])
        results.append(
            {
                "term": term,
                "reference_share": a / n_ref,
                "current_share": b / n_cur,
                "p_value": _chi2_p(table),
            }
        )
    return results


def label_prior_test(reference_labels: pd.Series, current_labels: pd.Series) -> tuple[float, float, float]:
    """(reference spam share, current spam share, p): chi-square, or Fisher's exact test for small counts."""
    ref_spam = int((reference_labels == POSITIVE_LABEL).sum())
    cur_spam = int((current_labels == POSITIVE_LABEL).sum())
    table = np.array([[ref_spam, len(reference_labels) - ref_spam], [cur_spam, len(current_labels) - cur_spam]])
    if table.sum(axis=0).min() == 0:
        p = 1.0  # one class absent on both sides: nothing to compare
    elif stats.contingency.expected_freq(table).min() < 5:
        p = float(stats.fisher_exact(table).pvalue)
    else:
        p = _chi2_p(table)
    return ref_spam / len(reference_labels), cur_spam / len(current_labels), p


def domain_classifier(
    reference_texts: Sequence[str], current_texts: Sequence[str], max_rows: int, seed: int
) -> tuple[float, float]:
    """(ROC AUC, p) of a classifier telling reference from current, by 5-fold out-of-fold scores.

    0.5 means indistinguishable. p is the one-sided Mann-Whitney test of the
    out-of-fold scores (AUC = U / n1 n2): on a batch of 50 rows AUC wanders
    to 0.55-0.60 by chance, so the AUC threshold alone would page on noise.
    Each side is subsampled to max_rows. Every fold learns its own
    vocabulary (terms in at least 2 of its training rows) and idf, so no
    test fold leaks; the texts are tokenised and counted once for all folds,
    which is what took the time (e-mail is long), with the same results as a
    TfidfVectorizer(min_df=2) refitted per fold.

    Repeated texts (a batch holding "Ok" five times) stay in one fold, or the
    classifier would recognise them in the test fold by heart; AUC and p are
    then taken over the distinct (text, side) pairs, since copies are no
    independent evidence.
    """
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    rng = np.random.default_rng(seed)
    ref = _subsample(list(reference_texts), max_rows, rng)
    cur = _subsample(list(current_texts), max_rows, rng)
    n_splits = min(5, len(ref), len(cur))
    if n_splits < 2:
        return float("nan"), float("nan")
    texts = ref + cur
    y = np.r_[np.zeros(len(ref), dtype=int), np.ones(len(cur), dtype=int)]
    counter = CountVectorizer(tokenizer=tokens, token_pattern=None, lowercase=False, ngram_range=(1, 2))
    counts = counter.fit_transform(texts).tocsr()
    scores = np.empty(len(texts))
    groups = pd.factorize(pd.Series(texts))[0]
    repeated = groups.max() + 1 < len(texts)
    if repeated:
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(texts, y, groups)
    else:  # no copies: the plain stratified folds (what the results above were checked against)
        folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(texts, y)
    for train, test in folds:
        vocabulary = np.flatnonzero(np.diff(counts[train].tocsc().indptr) >= 2)  # min_df=2 within the fold
        in_train = counts[train][:, vocabulary]
        tfidf = TfidfTransformer(sublinear_tf=True).fit(in_train)
        # balanced: the sides may differ in size; AUC ignores it but the fit should not
        model = LogisticRegression(max_iter=1000, class_weight="balanced")
        model.fit(tfidf.transform(in_train), y[train])
        scores[test] = model.predict_proba(tfidf.transform(counts[test][:, vocabulary]))[:, 1]
    if repeated:
        _, distinct = np.unique(np.c_[groups, y], axis=0, return_index=True)
        scores, y = scores[distinct], y[distinct]
    p = stats.mannwhitneyu(scores[y == 1], scores[y == 0], alternative="greater", method="asymptotic").pvalue
    return float(roc_auc_score(y, scores)), float(p)


# ------------------------------------------------------------------ verdict


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    thresholds: DriftThresholds = DriftThresholds(),
    score_fn: ScoreFn | None = None,
    reference_scores: np.ndarray | None = None,
    *,
    reference_f1: float | None = None,
) -> DriftReport:
    """Compare `current` (columns text, label) with `reference` and give one verdict.

    drift is True when any of these holds (t = thresholds; a = t.alpha split evenly
    over the verdict's parts, 2 without score_fn, 4 with; every p is Holm-corrected
    over one family: KS per descriptor, label prior, domain classifier, top terms):

    * a descriptor has PSI > t.psi_significant AND its KS p < a
      (KS alone flags trivial shifts on large batches; PSI alone flags noise on small ones);
    * domain classifier AUC > t.domain_auc AND its Mann-Whitney p < a
      (the AUC of a 50-row batch reaches 0.55-0.60 by chance alone);
    * OOV rate > t.oov_rate and > its (1 - a) null quantile at this size;
    * share of top terms with p < a exceeds t.term_share (one shifted word is news, not drift);
    * label prior p < a;
    * champion score PSI > t.psi_significant and > its (1 - a) null quantile at this
      size, from the reference scores (needs score_fn);
    * the upper end of the one-sided (1 - a) bootstrap interval of the champion's
      spam F1 on current < t.f1_floor (needs score_fn; this alone also sets decay).

    decay is True only for the last one: the platform retrains on drift or decay.
    A current (or reference) batch with fewer than t.min_rows rows is not
    judged: drift=False with the reason "too few rows to judge".

    `current` may be unlabelled traffic, wholly or in part: a label other
    than ham/spam (None, NaN, "") means unknown. The label prior and the
    realised F1 are then judged on the labelled rows alone, and only when
    there are at least t.min_rows of them (else they are left out of the
    verdict and of the alpha split, with a note); everything else needs no
    labels.

    score_fn maps texts to P(spam); reference_scores are the champion's scores
    on rows it was not trained on, e.g. its holdout (computed with score_fn on
    the reference when omitted); reference_f1 is the champion's F1 on its own
    evaluation set, shown beside the realised F1. The thresholds used, and the
    share of alpha each part got, are in report.thresholds.
    """
    t = thresholds
    ref = _clean(reference, "reference")
    cur = _clean(current, "current", unlabelled_ok=True)
    labelled = cur["label"].isin(LABELS).to_numpy()
    judge_labels = int(labelled.sum()) >= t.min_rows
    base = dict(n_reference=len(ref), n_current=len(cur), thresholds=asdict(t))
    if len(cur) < t.min_rows or len(ref) < t.min_rows:
        reason = f"too few rows to judge: {len(cur)} current, {len(ref)} reference (minimum {t.min_rows})"
        return DriftReport(drift=False, decay=False, reasons=[reason], rows=[], **base)

    parts = ["tests", "oov_rate"] + (["score_psi"] if score_fn is not None else [])
    parts += ["realised_f1"] if score_fn is not None and judge_labels else []
    a = t.alpha / len(parts)  # Bonferroni: P(any part alarms on a same-distribution batch) <= t.alpha
    n_bucket = drift_noise.size_bucket(len(cur))
    used: dict = {"alpha": t.alpha, "alpha_per_part": a, "parts": parts, "n": len(cur), "size_bucket": n_bucket}
    base["thresholds"] = {**base["thresholds"], "at_size": used}
    rows: list[dict] = []
    reasons: list[str] = []
    notes: list[str] = []  # becomes DriftReport.warnings
    if not judge_labels:
        notes.append(
            f"label prior and realised F1 not judged: {int(labelled.sum())} of {len(cur)} current rows are labelled "
            f"(minimum {t.min_rows})"
        )
    ref_texts, cur_texts = ref["text"].tolist(), cur["text"].tolist()

    # Tests with p-values first; they are corrected together further down.
    ref_desc, cur_desc = descriptors(ref_texts), descriptors(cur_texts)
    ks_rows, psi_rows = [], []
    for name in ref_desc.columns:
        with warnings.catch_warnings():  # scipy falls back to the asymptotic p itself; no news
            warnings.filterwarnings("ignore", "ks_2samp: Exact calculation unsuccessful")
            ks = stats.ks_2samp(ref_desc[name], cur_desc[name])
        ks_rows.append(_row("ks", name, ks.statistic, p_value=ks.pvalue, threshold=a))
        psi_rows.append(_row("psi", name, psi(ref_desc[name], cur_desc[name]), threshold=t.psi_significant))

    label_rows = []
    if judge_labels:
        ref_share, cur_share, label_p = label_prior_test(ref["label"], cur["label"][labelled])
        label_rows = [_row("label_prior", "spam_share", cur_share, reference=ref_share, p_value=label_p, threshold=a)]

    ref_tokens = [tokens(x) for x in ref_texts]
    cur_tokens = [tokens(x) for x in cur_texts]
    terms = term_tests(ref_tokens, cur_tokens)

    auc, auc_p = domain_classifier(ref_texts, cur_texts, t.max_domain_rows, t.seed)
    auc_row = _row("domain_auc", "tfidf_logreg", auc, p_value=auc_p, threshold=t.domain_auc)

    tested = ks_rows + label_rows + [auc_row]
    corrected = holm([r["p_value"] for r in tested] + [x["p_value"] for x in terms])
    for r, pc in zip(tested, corrected):
        r["p_corrected"] = float(pc)
        r["flagged"] = bool(pc < a)
    for x, pc in zip(terms, corrected[len(tested) :]):
        x["p_corrected"] = float(pc)
        x["significant"] = bool(pc < a)
    terms.sort(key=lambda x: (x["p_corrected"], x["term"]))

    # Descriptors: PSI says how much, KS says it is not noise; both are needed.
    for ks_row, psi_row in zip(ks_rows, psi_rows):
        value, name = psi_row["value"], psi_row["feature"]
        psi_row["flagged"] = bool(value > t.psi_significant)
        if psi_row["flagged"] and ks_row["flagged"]:
            reasons.append(f"{name} PSI {value:.2f} > {t.psi_significant} (KS p={_fmt_p(ks_row['p_corrected'])})")
        elif value > t.psi_moderate:
            notes.append(f"{name} PSI {value:.2f} > {t.psi_moderate} (KS p={_fmt_p(ks_row['p_corrected'])})")
        rows += [ks_row, psi_row]

    oov = oov_rate(ref_tokens, cur_tokens)
    noise = drift_noise.oov_threshold(ref_tokens, len(cur), a, t.seed, t.resamples)
    limit, limit_text = _limit(t.oov_rate, noise, a, len(cur), digits=3)
    used.update(oov_rate=limit, oov_rate_noise=noise)
    rows.append(_row("oov_rate", "tokens", oov, threshold=limit, flagged=oov > limit))
    if oov > limit:
        reasons.append(f"OOV rate {oov:.3f} > {limit_text}: {oov:.0%} of current tokens are unseen in the reference")

    if terms:
        n_sig = sum(x["significant"] for x in terms)
        share = n_sig / len(terms)
        min_raw = min(x["p_value"] for x in terms)
        min_pc = terms[0]["p_corrected"]
        flagged = share > t.term_share
        rows.append(
            _row(
                "term_chi2",
                f"{n_sig} of top {len(terms)} terms",
                share,
                p_value=min_raw,
                p_corrected=min_pc,
                threshold=t.term_share,
                flagged=flagged,
            )
        )
        examples = ", ".join(repr(x["term"]) for x in terms[: min(n_sig, 5)])
        if flagged:
            reasons.append(
                f"{n_sig} of top {len(terms)} terms shifted ({share:.0%} > {t.term_share:.0%}; "
                f"smallest p={_fmt_p(min_pc)}; e.g. {examples})"
            )
        elif n_sig:
            notes.append(f"{n_sig} of top {len(terms)} terms shifted ({share:.0%}), e.g. {examples}")

    rows += label_rows
    if label_rows and label_rows[0]["flagged"]:
        reasons.append(
            f"spam share {cur_share:.3f} vs {ref_share:.3f} in the reference (p={_fmt_p(label_rows[0]['p_corrected'])})"
        )

    decay = False
    if score_fn is not None:
        cur_scores = np.asarray(score_fn(cur_texts), dtype=float).ravel()
        if reference_scores is None:
            reference_scores = score_fn(ref_texts)
        score_psi = psi(reference_scores, cur_scores)
        noise = drift_noise.score_psi_threshold(reference_scores, len(cur), a, t.seed, t.resamples)
        limit, limit_text = _limit(t.psi_significant, noise, a, len(cur))
        used.update(score_psi=limit, score_psi_noise=noise)
        flagged = score_psi > limit
        rows.append(_row("score_psi", "champion", score_psi, threshold=limit, flagged=flagged))
        if flagged:
            reasons.append(f"champion score PSI {score_psi:.2f} > {limit_text}")
        elif score_psi > t.psi_moderate:
            notes.append(f"champion score PSI {score_psi:.2f} > {t.psi_moderate}, within noise (≤ {limit_text})")

    if score_fn is not None and judge_labels:
        known, known_scores = cur["label"][labelled], cur_scores[labelled]
        truth = (known == POSITIVE_LABEL).to_numpy()
        f1 = _spam_f1(known, known_scores)
        upper = drift_noise.f1_upper_bound(truth, known_scores >= 0.5, a, t.seed, t.resamples)
        used.update(realised_f1_floor=t.f1_floor, realised_f1_upper=upper)
        bound = f"its p{100 * (1 - a):g} bootstrap upper bound is {upper:.3f} at n={len(known)}"
        if math.isnan(f1):
            notes.append("no spam in the current batch: realised F1 is undefined, decay not judged")
        decay = bool(upper < t.f1_floor)  # False for NaN
        rows.append(_row("realised_f1", "spam", f1, reference=reference_f1, threshold=t.f1_floor, flagged=decay))
        if decay:
            beside = f" (reference {reference_f1:.3f})" if reference_f1 is not None else ""
            reasons.append(f"champion spam F1 {f1:.3f} < {t.f1_floor} on the current batch{beside}; {bound}")
        elif f1 < t.f1_floor:
            notes.append(f"champion spam F1 {f1:.3f} < {t.f1_floor}, within noise: {bound}")

    auc_row["flagged"] = bool(auc > t.domain_auc and auc_row["flagged"])
    rows.append(auc_row)
    if auc_row["flagged"]:
        reasons.append(
            f"domain classifier tells current from reference: AUC {auc:.3f} > {t.domain_auc} "
            f"(p={_fmt_p(auc_row['p_corrected'])})"
        )
    elif auc > t.domain_auc:
        p_text = _fmt_p(auc_row["p_corrected"])
        notes.append(f"domain classifier AUC {auc:.3f} > {t.domain_auc}, not significant (p={p_text})")

    return DriftReport(
        drift=bool(reasons), decay=decay, reasons=reasons, rows=rows, warnings=notes, term_tests=terms, **base
    )


# ------------------------------------------------------------------ helpers


def _limit(fixed: float, noise: float, alpha: float, n: int, digits: int = 2) -> tuple[float, str]:
    """The threshold a statistic must pass (the fixed one or its noise quantile, the larger) and how to name it."""
    label = drift_noise.quantile_label(alpha, n)
    if not math.isnan(noise) and noise > fixed:
        return noise, f"{noise:.{digits}f} ({label})"
    return fixed, f"{fixed:g} (fixed; {label} is {noise:.{digits}f})"


def _clean(table: pd.DataFrame, name: str, unlabelled_ok: bool = False) -> pd.DataFrame:
    """Columns text and label as strings; with `unlabelled_ok` the label may be absent (None where unknown)."""
    missing = ({"text"} if unlabelled_ok else {"text", "label"}) - set(table.columns)
    if missing:
        raise ValueError(f"{name} lacks columns {sorted(missing)}")
    if "label" not in table.columns:
        labels = pd.Series([None] * len(table), index=table.index, dtype=object)
    else:
        labels = table["label"].where(table["label"].notna(), None).map(lambda x: x if x is None else str(x))
    return pd.DataFrame({"text": table["text"].fillna("").astype(str), "label": labels})


def _row(statistic, feature, value, *, reference=None, p_value=None, p_corrected=None, threshold=None, flagged=False):
    as_float = lambda x: None if x is None else float(x)
    return {
        "statistic": statistic,
        "feature": feature,
        "value": float(value),
        "reference": as_float(reference),
        "p_value": as_float(p_value),
        "p_corrected": as_float(p_corrected),
        "threshold": as_float(threshold),
        "flagged": bool(flagged),
    }


def _chi2_p(table: np.ndarray) -> float:
    # A term in every document (or none) on both sides has a zero column; nothing differs.
    if table.sum(axis=0).min() == 0:
        return 1.0
    return float(stats.chi2_contingency(table).pvalue)


def _spam_f1(labels: pd.Series, scores: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    truth = (labels == POSITIVE_LABEL).to_numpy()
    if not truth.any():
        return float("nan")
    return float(f1_score(truth, np.asarray(scores) >= 0.5))


def _subsample(items: list, max_rows: int, rng: np.random.Generator) -> list:
    if len(items) <= max_rows:
        return items
    keep = np.sort(rng.choice(len(items), size=max_rows, replace=False))
    return [items[i] for i in keep]


def _finite(values) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    return array[np.isfinite(array)]


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _fmt_p(p) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    return "<1e-300" if p == 0 else f"{p:.2g}"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) or math.isinf(obj) else float(obj)
    return obj
