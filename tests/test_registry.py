"""Aliases on a real MLflow registry: promotion keeps the previous champion, rollback restores it."""

import pytest
from serving_fixtures import model_store  # noqa: F401  (a real store with trained versions)


def test_promote_keeps_previous_champion_and_rollback_swaps_back(model_store):
    registry = model_store.clone("rollback", [model_store.good[0], model_store.good[1]])
    assert registry.promote("1", "first") is None
    assert registry.promote("2", "better") == "1"
    assert str(registry.champion().version) == "2"
    assert str(registry.version_for("previous-champion").version) == "1"
    assert registry.client.get_model_version(registry.model_name, "1").tags["retired_by"] == "2"

    assert registry.rollback() == "1"
    assert str(registry.champion().version) == "1"
    assert str(registry.version_for("previous-champion").version) == "2"
    assert registry.client.get_model_version(registry.model_name, "2").tags["rolled_back"] == "true"


def test_promoting_the_champion_again_changes_nothing(model_store):
    registry = model_store.clone("again", [model_store.good[0]])
    registry.promote("1", "first")
    assert registry.promote("1", "again") == "1"
    assert registry.version_for("previous-champion") is None


def test_rollback_without_previous_champion_says_so(model_store):
    registry = model_store.clone("norollback", [model_store.good[0]])
    registry.promote("1", "first")
    with pytest.raises(LookupError, match="no previous-champion"):
        registry.rollback()
