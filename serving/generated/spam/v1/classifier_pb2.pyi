import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClassifyRequest(_message.Message):
    __slots__ = ("text", "id", "explain")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    text: str
    id: str
    explain: bool
    def __init__(self, text: _Optional[str] = ..., id: _Optional[str] = ..., explain: _Optional[bool] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("id", "verdict")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    id: str
    verdict: Verdict
    def __init__(self, id: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, _Mapping]] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("label", "spam_probability", "model_version", "verdict_id", "tier", "explanation")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SPAM_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERDICT_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    label: str
    spam_probability: float
    model_version: str
    verdict_id: str
    tier: str
    explanation: Explanation
    def __init__(self, label: _Optional[str] = ..., spam_probability: _Optional[float] = ..., model_version: _Optional[str] = ..., verdict_id: _Optional[str] = ..., tier: _Optional[str] = ..., explanation: _Optional[_Union[Explanation, _Mapping]] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("features", "note")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedCompositeFieldContainer[Feature]
    note: str
    def __init__(self, features: _Optional[_Iterable[_Union[Feature, _Mapping]]] = ..., note: _Optional[str] = ...) -> None: ...

class Feature(_message.Message):
    __slots__ = ("ngram", "kind", "weight")
    NGRAM_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ngram: str
    kind: str
    weight: float
    def __init__(self, ngram: _Optional[str] = ..., kind: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("id", "text")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class ClassifyStreamRequest(_message.Message):
    __slots__ = ("messages", "explain")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    explain: bool
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., explain: _Optional[bool] = ...) -> None: ...

class ClassifyStreamResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Result]
    def __init__(self, results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("id", "verdict", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    verdict: Verdict
    error: Status
    def __init__(self, id: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, _Mapping]] = ..., error: _Optional[_Union[Status, _Mapping]] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ("verdict_id", "text", "label", "reporter", "reason")
    VERDICT_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    REPORTER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    verdict_id: str
    text: str
    label: str
    reporter: str
    reason: str
    def __init__(self, verdict_id: _Optional[str] = ..., text: _Optional[str] = ..., label: _Optional[str] = ..., reporter: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ("report_id", "created")
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    report_id: str
    created: bool
    def __init__(self, report_id: _Optional[str] = ..., created: _Optional[bool] = ...) -> None: ...

class GetChampionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchChampionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Champion(_message.Message):
    __slots__ = ("model_name", "version", "run_id", "dagster_run_id", "corpus_data_version", "metrics", "loaded_at", "candidate", "model_sha256", "scorer", "alias", "alias_version", "fallback_reason", "challenger", "operating_point")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    DAGSTER_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CORPUS_DATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    ALIAS_VERSION_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_FIELD_NUMBER: _ClassVar[int]
    OPERATING_POINT_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    run_id: str
    dagster_run_id: str
    corpus_data_version: str
    metrics: _containers.ScalarMap[str, float]
    loaded_at: _timestamp_pb2.Timestamp
    candidate: str
    model_sha256: str
    scorer: Scorer
    alias: str
    alias_version: str
    fallback_reason: str
    challenger: Challenger
    operating_point: OperatingPoint
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ..., run_id: _Optional[str] = ..., dagster_run_id: _Optional[str] = ..., corpus_data_version: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., loaded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., candidate: _Optional[str] = ..., model_sha256: _Optional[str] = ..., scorer: _Optional[_Union[Scorer, _Mapping]] = ..., alias: _Optional[str] = ..., alias_version: _Optional[str] = ..., fallback_reason: _Optional[str] = ..., challenger: _Optional[_Union[Challenger, _Mapping]] = ..., operating_point: _Optional[_Union[OperatingPoint, _Mapping]] = ...) -> None: ...

class Challenger(_message.Message):
    __slots__ = ("version", "stage", "canary_share", "stage_canary_share", "stage_since", "shadow_share", "loaded", "refusal")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    CANARY_SHARE_FIELD_NUMBER: _ClassVar[int]
    STAGE_CANARY_SHARE_FIELD_NUMBER: _ClassVar[int]
    STAGE_SINCE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_SHARE_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    version: str
    stage: str
    canary_share: float
    stage_canary_share: float
    stage_since: str
    shadow_share: float
    loaded: bool
    refusal: str
    def __init__(self, version: _Optional[str] = ..., stage: _Optional[str] = ..., canary_share: _Optional[float] = ..., stage_canary_share: _Optional[float] = ..., stage_since: _Optional[str] = ..., shadow_share: _Optional[float] = ..., loaded: _Optional[bool] = ..., refusal: _Optional[str] = ...) -> None: ...

class OperatingPoint(_message.Message):
    __slots__ = ("threshold", "suspicious_from", "source", "basis")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SUSPICIOUS_FROM_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    threshold: float
    suspicious_from: float
    source: str
    basis: str
    def __init__(self, threshold: _Optional[float] = ..., suspicious_from: _Optional[float] = ..., source: _Optional[str] = ..., basis: _Optional[str] = ...) -> None: ...

class Scorer(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
