"""No record stops the processor: hostile values, a component that raises, a timer that raises."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_decoder_matches_schema import JSON_FIELDS, JSON_VALUES

from pipeline.config import Settings
from pipeline.core.events import EVENT_TYPES, MAX_SECONDS, MAX_TS_MS, Event, encode_event
from pipeline.core.processor import Processor

SETTINGS = Settings(session_gap_s=60, churn_horizon_s=3_600)
NOW_S = MAX_TS_MS / 1_000  # no valid ts is in the future of this clock

USERS = st.sampled_from(["u1", "u2", "u3"])
ITEMS = st.sampled_from(["i1", "i2", "i3", "i4"])
TIMES = st.sampled_from([0, 1, 59_999, 60_001, 10**9, 10**12, MAX_TS_MS]) | st.integers(
    0, MAX_TS_MS
)
EDGES = st.sampled_from(
    [0, -0.0, 5e-324, 0.5, 1, MAX_SECONDS, 86_399.999, 1.7976931348623157e308, -1e308, 2**63 - 1]
)
OVERRIDES = {"user_id": USERS, "item_id": ITEMS, "ts": TIMES}


@st.composite
def hostile_event(draw: st.DrawFn) -> bytes:
    """A valid record of any type, in which one field (or none) holds an edge or any JSON.

    A field may be one its type does not define, or a new one. Users and items come from
    small sets and times from edges and anywhere, so that sessions end, labels arrive and
    lists are made between the hostile values.
    """
    kind = draw(st.sampled_from(EVENT_TYPES))
    required, optional = JSON_FIELDS[kind]
    fields = {**required, **OVERRIDES}
    fields |= {name: valid for name, valid in optional.items() if draw(st.booleans())}
    obj: dict[str, Any] = {"event_id": draw(st.text(min_size=1, max_size=4)), "type": kind}
    obj["schema_version"] = 1
    obj |= {name: draw(valid) for name, valid in fields.items()}
    names = ["type", "schema_version", *fields, *JSON_FIELDS["play"][1], draw(st.text())]
    hostile = draw(st.none() | st.sampled_from(names))
    if hostile is not None:
        obj[hostile] = draw(EDGES | JSON_VALUES)
    return orjson.dumps(obj)


CATALOG_ITEMS = (
    st.fixed_dictionaries(
        {"item_id": ITEMS | JSON_VALUES},
        optional={
            "title": st.text(max_size=8) | JSON_VALUES,
            "genres": st.lists(st.sampled_from(["Drama", "comedy"]), max_size=3) | JSON_VALUES,
            "duration_s": EDGES | JSON_VALUES,
        },
    )
    | JSON_VALUES
)


def assert_never_fails(catalog: list[Any], stream: list[bytes]) -> None:
    processor = Processor(SETTINGS, clock=lambda: NOW_S)
    processor.load_catalog(catalog)
    for offset, raw in enumerate(stream):
        processor.process(raw, key=b"k", partition=0, offset=offset)
    tally = processor.tally
    assert tally.rejected["processing_error"] == 0 and tally.timer_errors == 0
    assert (
        tally.received
        == len(stream)
        == (sum(tally.consumed.values()) + sum(tally.rejected.values()) + tally.deduplicated)
    )
    outputs = Counter(out.kind for out in processor.take_outbox())
    assert outputs["dlq"] == sum(tally.rejected.values())
    for user_id, _, data in processor.take_dirty():  # every state it made can be stored
        assert processor.decode_state(user_id, data).to_bytes() == data


STREAMS = {
    "catalog": st.lists(CATALOG_ITEMS, max_size=6),
    "stream": st.lists(hostile_event(), max_size=12),
}  # noqa: E501


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**STREAMS)
def test_any_json_in_any_field_is_processed_or_rejected_never_raises(
    catalog: list[Any], stream: list[bytes]
) -> None:
    assert_never_fails(catalog, stream)


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(**STREAMS)
def test_ten_thousand_hostile_streams_never_need_the_processing_error_guard(
    catalog: list[Any], stream: list[bytes]
) -> None:
    assert_never_fails(catalog, stream)


def play(user: str, ts_ms: int, item: str = "i1") -> bytes:
    event = Event(f"{user}-{ts_ms}", "play", user, ts_ms, item_id=item, position_s=0.0)
    return encode_event(event)


def test_a_record_whose_processing_raises_is_dead_lettered_and_the_next_ones_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    processor = Processor(SETTINGS, clock=lambda: NOW_S)
    original = processor.personalizer.on_event

    def on_event(state, models, event, step, previous):
        if event.item_id == "poison":
            raise OverflowError("cannot convert float infinity to integer")
        return original(state, models, event, step, previous)

    monkeypatch.setattr(processor.personalizer, "on_event", on_event)
    stream = [play("u1", 1_000), play("u2", 2_000, "poison"), play("u2", 3_000), play("u3", 9e6)]
    for offset, raw in enumerate(stream):
        processor.process(raw, key=b"u", partition=0, offset=offset)

    tally = processor.tally
    assert tally.rejected == {"processing_error": 1}
    assert sum(tally.consumed.values()) == 3 and tally.received == 4
    letters = [orjson.loads(o.value) for o in processor.take_outbox() if o.kind == "dlq"]
    assert [(letter["reason"], letter["offset"]) for letter in letters] == [("processing_error", 1)]
    assert letters[0]["detail"] == "OverflowError: cannot convert float infinity to integer"
    assert processor.users["u2"].counts[0] == 2  # both plays of u2 reached its state


def test_a_timer_that_raises_is_skipped_and_counted_and_the_record_behind_it_is_consumed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    processor = Processor(SETTINGS, clock=lambda: NOW_S)
    for offset, raw in enumerate([play("u1", 0), play("u2", 1_000)]):
        processor.process(raw, key=b"u", partition=0, offset=offset)
    original = processor._end_session

    def end_session(state, at_ms):
        if state.user_id == "u1":
            raise ZeroDivisionError("float division by zero")
        original(state, at_ms)

    monkeypatch.setattr(processor, "_end_session", end_session)
    processor.process(play("u3", 10**9), key=b"u", partition=0, offset=2)  # ends both sessions

    tally = processor.tally
    assert tally.timer_errors == 1 and not tally.rejected
    assert sum(tally.consumed.values()) == 3 and tally.sessions_closed == 1
    churn = [orjson.loads(o.value) for o in processor.take_outbox() if o.kind == "churn"]
    ends = [(score["user_id"], score["trigger"]) for score in churn]
    assert ends.count(("u2", "session_end")) == 1 and "u1" not in {u for u, _ in ends}
    # u2's session end, after u1's raised (then u2's silence, 11 days long, re-scored)
