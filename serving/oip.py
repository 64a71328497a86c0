"""Plain functions behind the Open Inference Protocol (KServe v2) service.

The model takes one BYTES input `text` (shape [N] or [N, 1], UTF-8 texts)
and gives four outputs, all shape [N]: `label` (BYTES, "ham"/"spam", by the
version's operating threshold), `probability` (FP32, P(spam)), `verdict_id`
(BYTES, the server-assigned UUIDv7 of each verdict, see
spam_assets/traffic/verdict_ids.py) and `tier` (BYTES, "ham"/"suspicious"/"spam").
A fifth, `explanation` (BYTES, one JSON object per text: {"features":
[{"ngram", "kind", "weight"}, ...]}), is given only when asked for: it costs
scoring time. A request that names outputs gets those, in its order; one
that names none gets the four.

BYTES tensors come either typed (`contents.bytes_contents`, one entry per
element) or raw (`raw_input_contents[i]`: per element a 4-byte little-endian
length, then the bytes). Stock clients such as tritonclient always send raw
and only parse raw outputs for non-BYTES tensors, so a request that used raw
inputs is answered with `raw_output_contents`, and a typed one with typed
contents.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

import grpc
import numpy as np

from serving.classify import (
    Limits,
    RequestError,
    VerdictLog,
    budget_problem,
    spam_probabilities,
    text_problem,
)
from serving import verdicts
from serving.generated.inference import grpc_predict_v2_pb2 as pb
from spam_assets.traffic.verdict_ids import new_verdict_ids

if TYPE_CHECKING:
    from serving.watcher import LoadedChampion

INPUT = "text"
OUTPUTS = ("label", "probability", "verdict_id", "tier")  # what a request naming none gets
OPTIONAL_OUTPUTS = ("explanation",)  # only when named
DATATYPES = {"label": "BYTES", "probability": "FP32", "verdict_id": "BYTES", "tier": "BYTES", "explanation": "BYTES"}
PLATFORM = "sklearn"
SERVER_NAME = "spam-platform"

_LENGTH = struct.Struct("<I")
_RAW_LABELS = {label: _LENGTH.pack(len(label)) + label.encode() for label in ("ham", "spam")}


def server_version() -> str:
    try:
        return version("spam-platform")
    except PackageNotFoundError:
        return "0+unknown"


def check_model(
    name: str,
    requested_version: str,
    model_name: str,
    champion: LoadedChampion | None,
    challenger: LoadedChampion | None = None,
) -> None:
    """NOT_FOUND for another model or a version that is not loaded (the champion, or a live challenger)."""
    if name != model_name:
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"unknown model {name!r}; this server serves {model_name!r}")
    loaded = [m.version for m in (champion, challenger) if m is not None]
    if requested_version and champion is not None and requested_version not in loaded:
        also = f" (challenger {challenger.version} in rollout)" if challenger is not None else ""
        raise RequestError(
            grpc.StatusCode.NOT_FOUND,
            f"version {requested_version!r} of {model_name!r} is not loaded; version {champion.version} is serving{also}",
        )


def model_metadata(
    model_name: str, champion: LoadedChampion | None, rollout: dict[str, str | float] | None = None
) -> pb.ModelMetadataResponse:
    """The model's tensors, the version serving, and in `parameters` which scorer serves it and why.

    `rollout`: the challenger's parameters (`challenger_version`, `challenger_stage`, ...) when there is one;
    a loaded challenger's version is listed in `versions` too (a request may name it).
    """
    tensor = pb.ModelMetadataResponse.TensorMetadata
    parameters = (
        {"scorer": pb.InferParameter(string_param=champion.scorer.name),
         "scorer_reason": pb.InferParameter(string_param=champion.scorer.reason),
         "alias_version": pb.InferParameter(string_param=champion.resolution.alias_version),
         "fallback_reason": pb.InferParameter(string_param=champion.resolution.reason),
         **operating_point_parameters(champion)}
        if champion
        else {}
    )  # fmt: skip
    versions = [champion.version] if champion else []
    for key, value in (rollout or {}).items():
        if isinstance(value, float):
            parameters[key] = pb.InferParameter(double_param=value)
        else:
            parameters[key] = pb.InferParameter(string_param=value)
    if champion and rollout and rollout.get("challenger_loaded") == "true":
        versions.append(str(rollout["challenger_version"]))
    return pb.ModelMetadataResponse(
        name=model_name,
        versions=versions,
        platform=PLATFORM,
        inputs=[tensor(name=INPUT, datatype="BYTES", shape=[-1])],
        outputs=[tensor(name=name, datatype=DATATYPES[name], shape=[-1]) for name in (*OUTPUTS, *OPTIONAL_OUTPUTS)],
        parameters=parameters,
    )


def operating_point_parameters(champion: LoadedChampion) -> dict[str, pb.InferParameter]:
    """The thresholds the version labels and tiers by (serving.verdicts), as ModelMetadata parameters."""
    tiers = champion.card.tiers
    return {
        "operating_threshold": pb.InferParameter(double_param=tiers.threshold),
        "suspicious_threshold": pb.InferParameter(double_param=tiers.suspicious_from),
        "operating_point_source": pb.InferParameter(string_param=tiers.source),
        "operating_point_basis": pb.InferParameter(string_param=tiers.basis),
    }


def _element_count(shape: Sequence[int]) -> int:
    if len(shape) == 1 and shape[0] >= 0:
        return shape[0]
    if len(shape) == 2 and shape[0] >= 0 and shape[1] == 1:
        return shape[0]
    raise RequestError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"input {INPUT!r} has shape {list(shape)}; expected [N] or [N, 1] (one text per row)",
    )


def decode_raw_bytes(raw: bytes, count: int) -> list[bytes]:
    """Split a raw BYTES tensor (4-byte little-endian length, then the bytes, per element)."""
    items, offset, size = [], 0, len(raw)
    view = memoryview(raw)
    for index in range(count):
        if offset + 4 > size:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"raw contents of {INPUT!r} end at element {index} of {count}: truncated length prefix",
            )
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > size:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"raw contents of {INPUT!r}: element {index} claims {length} bytes, only {size - offset} remain",
            )
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != size:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"raw contents of {INPUT!r} hold {size - offset} bytes beyond the {count} elements of its shape",
        )
    return items


def encode_raw_bytes(items: Sequence[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def decode_texts(request: pb.ModelInferRequest, limits: Limits) -> tuple[list[str], bool]:
    """The request's texts, and whether it used raw contents. INVALID_ARGUMENT for any problem."""
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    if len(request.inputs) != 1:
        names = [t.name for t in request.inputs]
        raise RequestError(invalid, f"expected exactly one input named {INPUT!r}, got {len(names)}: {names}")
    tensor = request.inputs[0]
    if tensor.name != INPUT:
        raise RequestError(invalid, f"unknown input {tensor.name!r}; the model's only input is {INPUT!r} (BYTES)")
    if tensor.datatype != "BYTES":
        raise RequestError(invalid, f"input {INPUT!r} has datatype {tensor.datatype!r}; expected BYTES (UTF-8 texts)")
    count = _element_count(tensor.shape)
    raw = len(request.raw_input_contents) > 0
    if raw:
        if len(request.raw_input_contents) != 1:
            raise RequestError(invalid, f"{len(request.raw_input_contents)} raw_input_contents for 1 input")
        if tensor.HasField("contents"):
            raise RequestError(invalid, f"input {INPUT!r} has both contents and raw_input_contents; use one")
        items = decode_raw_bytes(request.raw_input_contents[0], count)
    else:
        items = list(tensor.contents.bytes_contents)
        if len(items) != count:
            raise RequestError(invalid, f"input {INPUT!r} has shape {list(tensor.shape)} but {len(items)} bytes_contents")
    texts = []
    for index, item in enumerate(items):
        if len(item) > limits.max_text_bytes:
            raise RequestError(invalid, f"element {index}: text is {len(item)} bytes, over the limit of {limits.max_text_bytes}")
        try:
            text = item.decode("utf-8")
        except UnicodeDecodeError as error:
            raise RequestError(invalid, f"element {index} is not valid UTF-8: {error.reason} at byte {error.start}") from None
        problem = text_problem(text, limits.max_text_bytes)
        if problem:
            raise RequestError(invalid, f"element {index}: {problem}")
        texts.append(text)
    return texts, raw


def requested_outputs(request: pb.ModelInferRequest) -> list[str]:
    """The outputs asked for, in order; INVALID_ARGUMENT for an unknown or repeated one.

    The KServe v2 protocol does not say what a repeated output means; a
    response holding two tensors of one name would be ambiguous to clients
    that look tensors up by name, so it is refused rather than answered twice.
    """
    names = [o.name for o in request.outputs] or list(OUTPUTS)
    unknown = [n for n in names if n not in DATATYPES]
    if unknown:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT, f"unknown outputs {unknown}; the model has {[*OUTPUTS, *OPTIONAL_OUTPUTS]}"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"outputs {repeated} requested more than once; ask for each once")
    return names


def infer(
    request: pb.ModelInferRequest, champion: LoadedChampion, limits: Limits, log: VerdictLog | None = None
) -> pb.ModelInferResponse:
    """Answer one ModelInfer request with `champion` (already checked to be the model asked for).

    The verdicts go to `log` when given, each with the request's id as the client's id.
    """
    return respond(request, champion, *parse(request, limits), limits, log)


def parse(request: pb.ModelInferRequest, limits: Limits) -> tuple[list[str], bool, list[str]]:
    """The request's texts, whether it used raw contents, and the outputs asked for; RequestError when invalid."""
    over_budget = budget_problem(request, limits)
    if over_budget:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, over_budget)
    outputs = requested_outputs(request)
    texts, raw = decode_texts(request, limits)
    return texts, raw, outputs


def respond(
    request: pb.ModelInferRequest,
    champion: LoadedChampion,
    texts: list[str],
    raw: bool,
    outputs: list[str],
    limits: Limits,
    log: VerdictLog | None = None,
) -> pb.ModelInferResponse:
    """Score a parsed request's texts with `champion` (whichever model answers it) and build the response."""
    probabilities = spam_probabilities(champion, texts, limits.max_batch, limits.heavy) if texts else np.empty(0)
    tiers = verdicts.tiers_of(champion)
    labels = [tiers.label(p) for p in probabilities.tolist()]
    verdict_ids = new_verdict_ids(len(texts))
    if log is not None and texts:
        log(champion, [request.id] * len(texts), texts, probabilities.tolist(), labels, verdict_ids)
    response = pb.ModelInferResponse(model_name=request.model_name, model_version=champion.version, id=request.id)
    n = len(texts)
    for name in outputs:
        tensor = response.outputs.add(name=name, datatype=DATATYPES[name], shape=[n])
        if name == "probability":
            if raw:
                response.raw_output_contents.append(probabilities.astype("<f4").tobytes())
            else:
                tensor.contents.fp32_contents.extend(probabilities.tolist())
        elif name == "label":
            if raw:
                response.raw_output_contents.append(b"".join(_RAW_LABELS[label] for label in labels))
            else:
                tensor.contents.bytes_contents.extend(label.encode() for label in labels)
        else:
            values = _bytes_output(name, champion, texts, probabilities, verdict_ids)
            if raw:
                response.raw_output_contents.append(encode_raw_bytes(values))
            else:
                tensor.contents.bytes_contents.extend(values)
    return response


def _bytes_output(name: str, champion: LoadedChampion, texts, probabilities: np.ndarray, verdict_ids) -> list[bytes]:
    if name == "verdict_id":
        return [v.encode() for v in verdict_ids]
    if name == "tier":
        tiers = verdicts.tiers_of(champion)
        return [tiers.tier(p).encode() for p in probabilities.tolist()]
    return [verdicts.explanation_json(champion, text).encode() for text in texts]  # explanation
