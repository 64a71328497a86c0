"""PromotionPolicy (the resource the launchpad edits) carries every DecisionRules field to the rules."""

import dataclasses

import pytest

from spam_assets.decision import DecisionRules
from spam_assets.defs.resources import PromotionPolicy


def _changed(value):
    """A valid value of the same type that differs from `value`."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 7
    if isinstance(value, float):
        return value / 2 + 0.001
    if isinstance(value, tuple):
        return ("spam_precision", "mcc")
    raise AssertionError(f"no changed value for {value!r}: extend _changed for the new field's type")


RULE_FIELDS = [f.name for f in dataclasses.fields(DecisionRules)]


def test_every_rule_has_a_same_named_policy_field_with_its_default():
    policy_fields = PromotionPolicy.model_fields
    missing = [name for name in RULE_FIELDS if name not in policy_fields]
    assert not missing, f"DecisionRules fields PromotionPolicy cannot set: {missing}"
    assert PromotionPolicy().rules() == DecisionRules()


@pytest.mark.parametrize("name", RULE_FIELDS)
def test_a_changed_policy_field_reaches_the_rules(name):
    value = _changed(getattr(DecisionRules(), name))
    configured = list(value) if isinstance(value, tuple) else value  # a list in config, as the launchpad gives it
    rules = PromotionPolicy(**{name: configured}).rules()
    assert getattr(rules, name) == value and type(getattr(rules, name)) is type(value)
    assert rules == dataclasses.replace(DecisionRules(), **{name: value})  # and nothing else changed
