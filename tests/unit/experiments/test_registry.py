"""The registry: a re-send and a stop update pass, any other change or a reused salt does not."""

from __future__ import annotations

from typing import Any

import pytest
from test_definition import changed, definition

from pipeline.experiments.definition import DefinitionRefused, parse_definition
from pipeline.experiments.registry import ExperimentRegistry


def test_registry_accepts_a_resend_and_a_stop_update() -> None:
    registry = ExperimentRegistry()
    registry.register(parse_definition(definition()))
    registry.register(parse_definition(definition()))
    registry.register(parse_definition(definition(stop="2026-12-07T00:00:00Z")))
    registry.register(parse_definition(definition(stop="2026-12-01T00:00:00Z")))
    assert len(registry) == 1
    assert registry["rail-size-2026-11"] == parse_definition(
        definition(stop="2026-12-01T00:00:00Z")
    )
    assert list(registry) == [registry["rail-size-2026-11"]]


@pytest.mark.parametrize(
    "update",
    [
        definition(
            variants=[
                *definition()["variants"][:1],
                {"name": "short-rail", "weight": 0.25, "knobs": {"list_size": 5}},
                {"name": "long-rail", "weight": 0.25, "knobs": {"list_size": 40}},
            ]
        ),
        changed("variants/1/knobs/list_size", 6),
        changed("variants/1/name", "shorter-rail"),
        definition(salt="rail-size-2026-12"),
        definition(metrics=["return_7d"]),
        definition(population={"new_users": True}),
        definition(start="2026-11-24T00:00:00Z"),
    ],
)
def test_registry_refuses_any_other_change_as_duplicate_id(update: dict[str, Any]) -> None:
    registry = ExperimentRegistry()
    registry.register(parse_definition(definition()))
    experiment = parse_definition(update)
    assert experiment != registry["rail-size-2026-11"]
    with pytest.raises(DefinitionRefused) as refused:
        registry.register(experiment)
    assert refused.value.reason == "duplicate_id"
    assert registry["rail-size-2026-11"] == parse_definition(definition())


def test_registry_refuses_the_salt_of_another_experiment() -> None:
    registry = ExperimentRegistry()
    registry.register(parse_definition(definition()))
    with pytest.raises(DefinitionRefused) as refused:
        registry.register(parse_definition(definition(id="other")))
    assert refused.value.reason == "salt_reused"
    registry.register(parse_definition(definition(id="other", salt="other")))
    assert len(registry) == 2
