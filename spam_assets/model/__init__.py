"""The model contract: everything a stored model is and needs, in one place.

Training (`spam_assets.modeling`, the Dagster graph) writes models through it;
serving reads them through it and imports nothing else of `spam_assets` but
`spam_assets.settings`. No Dagster here.

- `text`          the normalisation every pipeline applies first (`normalise`, kept as it was for stored models).
- `evasion`       the evasion-robust preprocessors of today's candidates: skeleton, folded text and word pairs.
- `char_ngrams`   hashed character n-grams, memoised per word.
- `pipelines`     the candidate pipeline classes, the skops allow-list and the old names of moved types.
- `lean_scorer`   compiling a fitted pipeline into a fast, verified scorer.
- `scorer`        the `Scorer` protocol and the one choice per version: lean, else the pipeline.
- `artifact`      a stored model's files: format, allow-list and sha256 checks; skops loading.
- `verify`        `load_verified`, the gate: artifact checks, loading, probe messages, the scorer.
- `tags`          tag keys on MLflow runs and model versions.
- `operating_point` the threshold chosen for a target ham false-positive rate; the action tiers serving gives.
- `explain`       the n-grams of a text that moved its P(spam), with signed weights (lean scorer only).
- `registry`      the MLflow registry conventions: model name, aliases, cards, `load_verified` by version.
- `last_good`     which version serves when the alias names one that cannot: the last good model.
"""
