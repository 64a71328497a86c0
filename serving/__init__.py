"""gRPC serving of the champion spam classifier.

A request goes down, never back up: servicer -> request handling -> the
loaded model's `Scorer`. Modules, in the order a reader needs them:

- `config`     ServingConfig: every option, from CLI flags and SPAM_SERVING_* env vars.
- `servicers`  thin gRPC servicers: read the champion once, call `classify` or `oip`, map errors to statuses.
- `classify`   request handling for spam.v1.Classifier: validate texts, batch, call the scorer, build results.
- `oip`        request handling for the Open Inference Protocol: tensors in, the scorer, tensors out.
- `heavy_pool` worker processes that score requests over 64 KiB of text outside the server's GIL.
- `watcher`    follows the registry alias and hot-swaps the champion; each version passes the
               model contract's gate (`spam_assets.model.verify.load_verified`) first. No gRPC.
- `admission`  who may open a stream: slots in total and per client, refusals that say when to retry.
- `wire`       request parsing that answers invalid UTF-8 with INVALID_ARGUMENT naming the field,
               and service registration with it.
- `prediction_log` every verdict to rotating, crash-safe JSONL segments, off the hot path (the file
               format, verdict ids and readers are the traffic contract, `spam_assets.traffic`).
- `feedback`   users' true labels for verdicts (the Report RPC), stored durably beside the log.
- `auth`       the bearer-token server interceptor.
- `server`     start-up, options and shutdown in one function; `spam-serve`.
- `client`     `spam-classify` and a small Python client.
- `codegen`    regenerates `serving/generated/` from `protos/`.

What a stored model is, how it is checked, loaded and scored (the `Scorer`)
lives in the model contract, `spam_assets.model`; serving imports that and
`spam_assets.settings`, never training or Dagster code.
"""
