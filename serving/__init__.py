"""gRPC serving of the champion spam classifier.

Modules, in the order a reader needs them:

- `config`     ServingConfig: every option, from CLI flags and SPAM_SERVING_* env vars.
- `champion`   resolving, loading, verifying and hot-swapping the champion (no gRPC).
- `classify`   plain functions: validate texts, score batches, build results.
- `oip`        plain functions: Open Inference Protocol tensors in and out.
- `servicers`  thin gRPC servicers that delegate to the three modules above.
- `auth`       the bearer-token server interceptor.
- `server`     start-up, options and shutdown in one function; `spam-serve`.
- `client`     `spam-classify` and a small Python client.
- `codegen`    regenerates `serving/generated/` from `protos/`.
"""
