"""Experiment definitions: the parser against the schema, the rules beyond it, the registry."""

from __future__ import annotations

import copy
import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.events import parse_ts
from pipeline.experiments.definition import (
    KNOBS,
    LIST_SOURCES,
    METRICS,
    REFUSAL_REASONS,
    ChurnThresholds,
    DefinitionRefused,
    Experiment,
    Knobs,
    Population,
    Variant,
    parse_definition,
)
from pipeline.serde.schemas import load_schemas, validator

SCHEMA = validator("experiment")
START = "2026-11-23T00:00:00Z"
START_MS = 1_795_392_000_000
PARSER_REASONS = REFUSAL_REASONS - {"duplicate_id", "salt_reused"}
SCHEMA_REASONS = {"schema", "unknown_knob"}


def definition(**changes: Any) -> dict[str, Any]:
    """Build a valid definition; ``changes`` set top-level fields, ``...`` drops one."""
    obj: dict[str, Any] = {
        "schema_version": 1,
        "id": "rail-size-2026-11",
        "salt": "rail-size-2026-11",
        "variants": [
            {"name": "control", "weight": 0.5, "control": True},
            {"name": "short-rail", "weight": 0.5, "knobs": {"list_size": 5}},
        ],
        "start": START,
        "metrics": ["click_play_conversion"],
    }
    obj |= changes
    return {key: value for key, value in obj.items() if value is not ...}


def changed(path: str, value: Any) -> dict[str, Any]:
    """The valid definition with the value at ``path`` (``"variants/1/weight"``) replaced."""
    obj = definition()
    *parents, last = path.split("/")
    node: Any = obj
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if value is ...:
        del node[int(last) if isinstance(node, list) else last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return obj


def refusal(raw: Any) -> str | None:
    """The reason the parser refuses ``raw``, or ``None`` when it accepts it."""
    try:
        parse_definition(raw)
    except DefinitionRefused as refused:
        assert refused.reason in PARSER_REASONS and refused.detail
        return refused.reason
    return None


def test_refusal_reasons_are_exactly_the_contract() -> None:
    assert REFUSAL_REASONS == {
        *("not_json", "schema", "unknown_knob", "duplicate_variant", "no_control"),
        *("several_controls", "weights_sum", "thresholds_order", "stop_before_start"),
        *("duplicate_id", "salt_reused"),
    }


def test_schema_enums_are_the_parser_constants() -> None:
    defs = load_schemas()["experiment"]["$defs"]
    assert tuple(defs["knobs"]["properties"]) == KNOBS
    assert tuple(defs["knobs"]["properties"]["list_source"]["enum"]) == LIST_SOURCES
    assert tuple(defs["metric"]["enum"]) == METRICS


def test_schema_example_parses_into_every_field() -> None:
    (example,) = load_schemas()["experiment"]["examples"]
    assert list(SCHEMA.iter_errors(example)) == []
    assert parse_definition(orjson.dumps(example)) == Experiment(
        id="rail-size-2026-11",
        salt="rail-size-2026-11",
        variants=(
            Variant("control", 0.5, control=True),
            Variant("short-rail", 0.25, knobs=Knobs(list_size=5)),
            Variant(
                "trending-rail",
                0.25,
                knobs=Knobs(
                    list_source="trending",
                    reco_debounce_s=30.0,
                    churn_thresholds=ChurnThresholds(medium=0.3, high=0.6),
                ),
            ),
        ),
        start_ms=START_MS,
        stop_ms=START_MS + 14 * 86_400_000,
        metrics=("click_play_conversion", "watch_seconds_per_user"),
        population=Population(
            segments=frozenset({0, 1}), devices=frozenset({"tv"}), new_users=False
        ),
    )


def test_text_bytes_and_decoded_value_parse_alike() -> None:
    raw = orjson.dumps(definition())
    expected = parse_definition(definition())
    for text in (raw, bytearray(raw), memoryview(raw)):
        assert parse_definition(text) == expected
    assert refusal(raw.decode()) == "schema"  # a str is a JSON value, not JSON text


def test_integer_fields_accept_numbers_with_a_zero_fraction() -> None:
    experiment = parse_definition(changed("variants/1/knobs/list_size", 5.0))
    assert experiment.variants[1].knobs.list_size == 5
    assert type(experiment.variants[1].knobs.list_size) is int


def test_start_and_stop_are_compared_as_instants() -> None:
    experiment = parse_definition(definition(stop="2026-11-23T01:00:00.001+01:00"))
    assert experiment.stop_ms == START_MS + 1
    assert refusal(definition(stop="2026-11-23T01:00:00+01:00")) == "stop_before_start"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "not_json"),
        (b'{"id": "x"', "not_json"),
        (b"\xff", "not_json"),
        (b"[1, 2]", "schema"),
        (definition(id=...), "schema"),
        (definition(schema_version=2), "schema"),
        (definition(schema_version=True), "schema"),
        (definition(id=""), "schema"),
        (definition(salt="s" * 129), "schema"),
        (definition(owner="me"), "schema"),
        (definition(start=1_795_392_000_000), "schema"),
        (definition(start="2026-02-30T00:00:00Z"), "schema"),
        (definition(start="2026-11-23 00:00:00Z"), "schema"),
        (definition(metrics=[]), "schema"),
        (definition(metrics=["return_7d", "return_7d"]), "schema"),
        (definition(metrics=["revenue"]), "schema"),
        (changed("variants/1", ...), "schema"),
        (changed("variants/1/weight", "0.5"), "schema"),
        (changed("variants/1/weight", 0), "schema"),
        (changed("variants/1/control", "yes"), "schema"),
        (changed("variants/1/colour", "red"), "schema"),
        (changed("variants/1/knobs/list_size", 0), "schema"),
        (changed("variants/1/knobs/list_size", 51), "schema"),
        (changed("variants/1/knobs/list_size", 2.5), "schema"),
        (changed("variants/1/knobs/list_size", True), "schema"),
        (changed("variants/1/knobs/list_source", "popular"), "schema"),
        (changed("variants/1/knobs/reco_debounce_s", -1), "schema"),
        (changed("variants/1/knobs/churn_thresholds", {"medium": 0.3}), "schema"),
        (changed("variants/1/knobs/churn_thresholds", {"medium": 0.3, "high": 1}), "schema"),
        (changed("population/segments", [1, 1.0]), "schema"),
        (changed("population/countries", ["DE"]), "schema"),
        (changed("variants/1/knobs/size", 5), "unknown_knob"),
        (changed("variants/1/name", "control"), "duplicate_variant"),
        (changed("variants/0/control", False), "no_control"),
        (changed("variants/1/control", True), "several_controls"),
        (changed("variants/1/weight", 0.4), "weights_sum"),
        (changed("variants/1/weight", 0.5 + 2e-9), "weights_sum"),
        (
            changed("variants/1/knobs/churn_thresholds", {"medium": 0.4, "high": 0.4}),
            "thresholds_order",
        ),
        (definition(stop=START), "stop_before_start"),
        (definition(stop="2026-11-22T00:00:00Z"), "stop_before_start"),
    ],
)
def test_definition_is_refused_with_its_reason(raw: Any, reason: str) -> None:
    assert refusal(raw) == reason
    if reason != "not_json" and not isinstance(raw, bytes):
        assert SCHEMA.is_valid(raw) is (reason not in SCHEMA_REASONS)


def test_non_json_values_are_refused_by_the_schema_checks() -> None:
    # jsonschema lets NaN through every bound (comparisons with NaN are false); JSON has no NaN
    assert refusal(changed("variants/1/weight", math.nan)) == "schema"
    assert refusal(changed("variants/1/knobs/reco_debounce_s", math.inf)) == "schema"
    assert refusal(definition(metrics=("return_7d",))) == "schema"


@pytest.mark.parametrize(
    "raw",
    [
        changed("variants/1/weight", 0.5 + 5e-10),
        definition(
            variants=[{"name": f"v{i}", "weight": 0.1, "control": i == 0} for i in range(10)]
        ),
        definition(stop="2026-11-23T00:00:00.001Z", population={}),
        changed("variants/0/knobs", {}),
        changed("population/devices", [""]),
        changed("variants/1/knobs/reco_debounce_s", 0),
    ],
)
def test_definition_at_an_edge_is_accepted(raw: Any) -> None:
    assert SCHEMA.is_valid(raw)
    assert refusal(raw) is None


# --- properties: the parser and the schema agree ----------------------------------------------

U64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what orjson reads and writes
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | U64
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
WEIGHT_SETS = ([0.5, 0.5], [0.2, 0.3, 0.5], [0.25] * 4, [0.1] * 10, [0.07, 0.93], [1 / 3] * 3)
TIMESTAMPS = (
    "2026-11-23T00:00:00Z",
    "2026-11-23T01:00:00+01:00",
    "2026-11-23t00:00:00.000001z",
    "2026-11-30T12:00:00-05:30",
    "2026-12-07T00:00:00.5Z",
)
ADDED_FIELDS = (*KNOBS, "control", "knobs", "new_users", "segments", "stop", "size", "owner")


@st.composite
def thresholds(draw: st.DrawFn) -> dict[str, float]:
    low, high = sorted(
        draw(st.lists(st.floats(0, 1, exclude_min=True, exclude_max=True), min_size=2, max_size=2))
    )
    return {"medium": low, "high": high}


KNOB_VALUES = st.fixed_dictionaries(
    {},
    optional={
        "list_source": st.sampled_from(LIST_SOURCES),
        "list_size": st.integers(1, 50) | st.integers(1, 50).map(float),
        "reco_debounce_s": st.floats(0, 86_400) | st.integers(0, 86_400),
        "churn_thresholds": thresholds(),
    },
)
POPULATIONS = st.fixed_dictionaries(
    {},
    optional={
        "segments": st.lists(st.integers(0, 20), min_size=1, max_size=4, unique=True),
        "devices": st.lists(st.text(max_size=64), min_size=1, max_size=3, unique=True),
        "new_users": st.booleans(),
    },
)


@st.composite
def valid_definitions(draw: st.DrawFn) -> dict[str, Any]:
    """Draw a definition that the schema and the rules both accept."""
    weights = draw(st.sampled_from(WEIGHT_SETS))
    names = draw(
        st.lists(
            st.text(min_size=1, max_size=8),
            min_size=len(weights),
            max_size=len(weights),
            unique=True,
        )
    )
    control = draw(st.integers(0, len(weights) - 1))
    variants = []
    for index, (name, weight) in enumerate(zip(names, weights, strict=True)):
        variant: dict[str, Any] = {"name": name, "weight": weight}
        if index == control or draw(st.booleans()):
            variant["control"] = index == control
        knobs = draw(KNOB_VALUES)
        if knobs or draw(st.booleans()):
            variant["knobs"] = knobs
        variants.append(variant)
    start = draw(st.sampled_from(TIMESTAMPS[:2]))
    obj = definition(
        id=draw(st.text(min_size=1, max_size=128)),
        salt=draw(st.text(min_size=1, max_size=128)),
        variants=variants,
        start=start,
        metrics=draw(st.lists(st.sampled_from(METRICS), min_size=1, unique=True)),
    )
    if draw(st.booleans()):
        obj["stop"] = draw(st.sampled_from(TIMESTAMPS[3:]))
    if draw(st.booleans()):
        obj["population"] = draw(POPULATIONS)
    return obj


def containers(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every object and array in a JSON value, the value itself first."""
    if isinstance(node, dict):
        children = list(node.items())
    elif isinstance(node, list):
        children = list(enumerate(node))
    else:
        return []
    found = [path]
    for key, child in children:
        found += containers(child, (*path, key))
    return found


def at(obj: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


@st.composite
def mutated_definitions(draw: st.DrawFn) -> dict[str, Any]:
    """Draw a valid definition with one field replaced, dropped or added, or one rule broken."""
    obj = copy.deepcopy(draw(valid_definitions()))
    node = at(obj, draw(st.sampled_from(containers(obj))))
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    mutation = draw(st.sampled_from(["replace", "drop", "add", "rule"]))
    if mutation == "replace" and keys:
        node[draw(st.sampled_from(keys))] = draw(JSON_VALUES)
    elif mutation == "drop" and keys:
        del node[draw(st.sampled_from(keys))]
    elif mutation == "add" and isinstance(node, dict):
        node[draw(st.sampled_from(ADDED_FIELDS))] = draw(JSON_VALUES)
    elif mutation == "rule":
        variants = obj["variants"]
        rule = draw(st.sampled_from(["name", "control", "controls", "weight", "order", "stop"]))
        if rule == "name":
            variants[-1]["name"] = variants[0]["name"]
        elif rule == "control":
            for variant in variants:
                variant.pop("control", None)
        elif rule == "controls":
            variants[-1]["control"] = variants[0]["control"] = True
        elif rule == "weight":
            variants[0]["weight"] += draw(st.sampled_from([1e-10, -1e-10, 2e-9, -0.01]))
        elif rule == "order":
            high = draw(st.sampled_from([0.5, 0.4]))
            variants[0]["knobs"] = {"churn_thresholds": {"medium": 0.5, "high": high}}
        else:
            obj["stop"] = draw(st.sampled_from(TIMESTAMPS[:3]))
    return obj


def broken_rule(obj: dict[str, Any]) -> str | None:
    """The first rule beyond the schema that a schema-valid definition breaks, in contract order."""
    variants = obj["variants"]
    names = [variant["name"] for variant in variants]
    controls = sum(variant.get("control", False) for variant in variants)
    if len(set(names)) < len(names):
        return "duplicate_variant"
    if controls != 1:
        return "no_control" if controls == 0 else "several_controls"
    if abs(math.fsum(variant["weight"] for variant in variants) - 1) > 1e-9:
        return "weights_sum"
    for variant in variants:
        churn = variant.get("knobs", {}).get("churn_thresholds")
        if churn is not None and churn["medium"] >= churn["high"]:
            return "thresholds_order"
    if "stop" in obj and parse_ts(obj["stop"]) <= parse_ts(obj["start"]):
        return "stop_before_start"
    return None


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=valid_definitions() | mutated_definitions())
def test_parser_agrees_with_schema_and_rules(obj: dict[str, Any]) -> None:
    reason = refusal(orjson.dumps(obj))
    assert refusal(obj) == reason
    if SCHEMA.is_valid(obj):
        assert reason == broken_rule(obj)
    else:
        assert reason in SCHEMA_REASONS


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_are_refused_with_a_reason(raw: bytes) -> None:
    assert refusal(raw) in PARSER_REASONS


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES)
def test_arbitrary_json_is_refused_with_a_reason(value: Any) -> None:
    assert refusal(value) == refusal(orjson.dumps(value)) == "schema"
