"""A last good model: a server that cannot load what the alias names serves the newest earlier champion that passes.

Real servers on a real MLflow store with real trained models. The refused
champion is a good model whose recorded sha256 does not match its file (what
a tampered or half-copied artifact looks like to the server).
"""

from __future__ import annotations

import logging
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_fixtures import model_store, running_server, wait_until  # noqa: F401 - fixtures

from serving.generated.inference import grpc_predict_v2_pb2 as oip_pb
from serving.generated.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from serving.generated.spam.v1 import classifier_pb2 as pb
from serving.generated.spam.v1 import classifier_pb2_grpc as pb_grpc
from spam_assets.model.tags import TAG_MODEL_SHA256

SPAM = "WINNER! You have won a cash prize, claim now: call 09061701461"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
BAD_CHECKSUM = {TAG_MODEL_SHA256: "0" * 64}


def health_status(channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def champion(channel) -> pb.Champion:
    return pb_grpc.ClassifierStub(channel).GetChampion(pb.GetChampionRequest(), timeout=5)


def metadata_parameters(channel, model_name: str) -> dict[str, str]:
    meta = oip_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(oip_pb.ModelMetadataRequest(name=model_name), timeout=5)
    return {key: value.string_param for key, value in meta.parameters.items()}


def promote_in_order(registry, versions: list[str]) -> None:
    for version in versions:
        registry.promote(version, f"test promotion of {version}")


def test_a_refused_champion_at_start_up_serves_the_previous_one_and_says_why(model_store, caplog):
    registry = model_store.clone(
        "lastgood", [model_store.good[0], model_store.good[1], model_store.good[1]], tags=[{}, BAD_CHECKSUM, {}]
    )
    promote_in_order(registry, ["1", "2"])  # champion 2 (refused by every server), previous-champion 1; 3 unpromoted
    caplog.set_level(logging.INFO, logger="serving.watcher")
    with running_server(model_store, registry.model_name) as srv, grpc.insecure_channel(srv.target) as ch:
        wait_until(lambda: health_status(ch) == SERVING, timeout=30, message="SERVING on the last good model")
        served = champion(ch)
        assert (served.version, served.alias, served.alias_version) == ("1", "champion", "2")
        assert "champion version 2 refused: model file checksum mismatch" in served.fallback_reason
        assert "serving version 1, the last good model" in served.fallback_reason
        verdict = pb_grpc.ClassifierStub(ch).Classify(pb.ClassifyRequest(text=SPAM), timeout=5).verdict
        assert (verdict.label, verdict.model_version) == ("spam", "1")
        parameters = metadata_parameters(ch, registry.model_name)
        assert (parameters["alias_version"], parameters["fallback_reason"]) == ("2", served.fallback_reason)
        (line,) = [r for r in caplog.records if "SERVING THE LAST GOOD MODEL" in r.getMessage()]
        assert line.levelno == logging.WARNING and served.fallback_reason in line.getMessage()

        # A good promotion ends the fallback: the alias's version serves and nothing needs explaining.
        registry.promote("3", "a good one")
        assert srv.watcher.wait_for("3", timeout=30)
        served = champion(ch)
        assert (served.version, served.alias_version, served.fallback_reason) == ("3", "3", "")
        assert metadata_parameters(ch, registry.model_name)["fallback_reason"] == ""


def test_fallback_walks_earlier_champions_newest_first_and_is_bounded(model_store, caplog):
    # 1 good, 2 good, 3 inverted (wrong probe answers), 4 bad checksum, 5 good but never promoted.
    registry = model_store.clone(
        "walk",
        [model_store.good[0], model_store.good[1], model_store.inverted, model_store.good[0], model_store.good[1]],
        tags=[{}, {}, {}, BAD_CHECKSUM, {}],
    )
    promote_in_order(registry, ["1", "2", "3", "4"])  # champion 4, previous-champion 3, then 2, then 1
    caplog.set_level(logging.INFO, logger="serving.watcher")

    with running_server(model_store, registry.model_name, max_fallbacks=3) as srv, grpc.insecure_channel(srv.target) as ch:
        wait_until(lambda: health_status(ch) == SERVING, timeout=30, message="SERVING")
        served = champion(ch)
        # 3 (previous-champion) is refused, 2 is the newest earlier champion that passes; 5 was never promoted.
        assert (served.version, served.alias_version) == ("2", "4")
        assert "also refused: version 3" in served.fallback_reason
        assert set(srv.watcher.refused) == {"4", "3"}

    caplog.clear()
    with running_server(model_store, registry.model_name, max_fallbacks=1, poll_interval=0.1) as srv:
        with grpc.insecure_channel(srv.target) as ch:
            wait_until(lambda: set(srv.watcher.refused) == {"4", "3"}, timeout=30, message="4 and 3 refused")
            time.sleep(1.0)  # ten more polls: still nothing, and said once
            assert health_status(ch) == NOT_SERVING and srv.watcher.current is None
            errors = [r.getMessage() for r in caplog.records if "NO CHAMPION CAN SERVE" in r.getMessage()]
            assert len(errors) == 1
            assert "champion version 4 refused" in errors[0] and "tried version 3" in errors[0]
            assert srv.watcher.refused["4"].attempts == srv.watcher.refused["3"].attempts == 1


def test_without_an_earlier_champion_nothing_serves_until_a_good_promotion(model_store):
    registry = model_store.clone("nofallback", [model_store.good[0], model_store.good[1]], tags=[BAD_CHECKSUM, {}])
    registry.promote("1", "refused by every server")
    with running_server(model_store, registry.model_name, poll_interval=0.1) as srv, grpc.insecure_channel(srv.target) as ch:
        wait_until(lambda: "1" in srv.watcher.refused, timeout=30, message="version 1 refused")
        assert health_status(ch) == NOT_SERVING
        registry.promote("2", "good")
        assert srv.watcher.wait_for("2", timeout=30)
        assert health_status(ch) == SERVING
        # A poll between the promotion's registry writes may find 2 as the last good model while the alias
        # still names 1; the next poll sees the alias on 2 and clears the reason.
        served = wait_until(lambda: (c := champion(ch)).alias_version == "2" and c, timeout=30, message="alias on 2")
        assert served.fallback_reason == "" and served.version == "2"


def test_a_running_server_keeps_its_model_and_reports_the_refused_alias(model_store):
    registry = model_store.clone("running", [model_store.good[0], model_store.good[1]], tags=[{}, BAD_CHECKSUM])
    registry.promote("1", "good")
    with running_server(model_store, registry.model_name, wait_for="1", poll_interval=0.1) as srv:
        with grpc.insecure_channel(srv.target) as ch:
            watch = pb_grpc.ClassifierStub(ch).WatchChampion(pb.WatchChampionRequest(), timeout=30)
            first = next(watch)
            assert (first.version, first.alias_version, first.fallback_reason) == ("1", "1", "")

            registry.promote("2", "refused by every server")
            news = next(watch)  # no swap, but watchers hear that the alias names a refused version
            assert (news.version, news.alias_version) == ("1", "2")
            assert "champion version 2 refused: model file checksum mismatch" in news.fallback_reason
            assert news.fallback_reason.endswith("version 1 keeps serving")
            assert health_status(ch) == SERVING

            registry.rollback()  # the alias names what serves again
            back = next(watch)
            assert (back.version, back.alias_version, back.fallback_reason) == ("1", "1", "")
            watch.cancel()


def test_last_good_candidates_skip_rolled_back_and_never_promoted_versions(model_store):
    registry = model_store.clone("candidates", [model_store.good[0]] * 5)
    promote_in_order(registry, ["1", "2", "3"])
    registry.rollback()  # champion 2; 3 rolled back (previous-champion)
    registry.promote("4", "after the rollback")  # champion 4; previous-champion 2; 5 never promoted

    def candidates(limit: int = 10) -> list[str]:
        champion = str(registry.champion().version)
        return [str(v.version) for v in registry.last_good_candidates(champion, limit)]

    assert candidates() == ["2", "1"]
    assert candidates(limit=1) == ["2"]
    assert registry.last_good_candidates("4", 0) == []

    registry.rollback()  # champion 2, previous-champion 4 (now rolled back)
    assert candidates() == ["1"]
    registry.rollback()  # rolling back the rollback: 4 is trusted again, 2 is the one rolled back now
    assert str(registry.champion().version) == "4" and candidates() == ["1"]
    assert "rolled_back" not in registry.client.get_model_version(registry.model_name, "4").tags
