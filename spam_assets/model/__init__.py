"""The model contract: everything a stored model is and needs, in one place.

Training (`spam_assets.modeling`, the Dagster graph) writes models through it;
serving reads them through it and imports nothing else of `spam_assets` but
`spam_assets.settings`. No Dagster here.

- `text`          the normalisation every pipeline applies first.
- `char_ngrams`   hashed character n-grams, memoised per word.
- `pipelines`     the candidate pipeline classes and the skops allow-list.
- `lean_scorer`   compiling a fitted pipeline into a fast, verified scorer.
- `tags`          tag keys on MLflow runs and model versions.
- `registry`      the MLflow registry conventions: model name, aliases, cards.
"""
