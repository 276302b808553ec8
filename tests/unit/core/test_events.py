"""Example-based tests of the event decoder, the timestamp helpers and the published schemas."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from pipeline.config import Settings
from pipeline.core.events import (
    EVENT_TYPES,
    MAX_TS_MS,
    REJECT_REASONS,
    Event,
    EventDecoder,
    Rejection,
    encode_event,
    format_ts,
    parse_ts,
)
from pipeline.serde.schemas import SCHEMA_BASE_URI, SCHEMAS_DIR, load_schemas, validator

NOW_S = 1_795_400_000.0  # 2026-11-23T02:13:20Z
TS = "2026-11-22T20:15:03.120Z"
TS_MS = 1_795_378_503_120


def make(type_: str = "play", **changes: Any) -> dict[str, Any]:
    """Build a valid event of ``type_`` as a JSON object; ``changes`` set fields, ``...`` drops."""
    fields: dict[str, dict[str, Any]] = {
        "play": {"item_id": "tt0903747", "position_s": 12.5},
        "pause": {"item_id": "tt0903747", "position_s": 1264.0},
        "search": {"query": "nordic noir"},
        "click": {"item_id": "tt0903747", "surface": "home_row"},
    }
    obj = {"event_id": "e-1", "type": type_, "user_id": "u-1", "ts": TS, "schema_version": 1}
    obj |= fields.get(type_, {})
    obj |= changes
    return {key: value for key, value in obj.items() if value is not ...}


def raw(obj: Any) -> bytes:
    return orjson.dumps(obj)


@pytest.fixture
def decoder() -> EventDecoder:
    return EventDecoder(clock=lambda: NOW_S)


def test_reject_reasons_are_exactly_the_contract() -> None:
    assert REJECT_REASONS == {
        *("empty", "oversized", "not_utf8", "not_json", "not_object", "missing_field"),
        *("wrong_type", "invalid_value", "unknown_type", "unsupported_schema_version"),
        *("bad_timestamp", "future_timestamp", "processing_error", "unknown_artwork"),
        "bad_learning_record",
    }
    assert EVENT_TYPES == ("play", "pause", "search", "click")


# --- accepted events ----------------------------------------------------------------------


def test_decode_play_event_with_all_fields(decoder: EventDecoder) -> None:
    obj = make(
        "play",
        duration_s=2820,
        rating=4.5,
        session_id="s-9",
        device="tv",
        country="DE",
    )
    assert decoder.decode(raw(obj)) == Event(
        event_id="e-1",
        type="play",
        user_id="u-1",
        ts_ms=TS_MS,
        item_id="tt0903747",
        position_s=12.5,
        duration_s=2820.0,
        rating=4.5,
        session_id="s-9",
        device="tv",
        country="DE",
    )


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (
            make("pause", duration_s=0.5),
            {"item_id": "tt0903747", "position_s": 1264.0, "duration_s": 0.5},
        ),
        (make("search", results_count=0), {"query": "nordic noir", "results_count": 0}),
        (make("click", rank=3), {"item_id": "tt0903747", "surface": "home_row", "rank": 3}),
    ],
    ids=["pause", "search", "click"],
)
def test_decode_each_type_sets_its_fields(
    decoder: EventDecoder, obj: dict[str, Any], expected: dict[str, Any]
) -> None:
    event = decoder.decode(raw(obj))
    assert event == Event(event_id="e-1", type=obj["type"], user_id="u-1", ts_ms=TS_MS, **expected)


def test_decode_numbers_become_floats_and_whole_floats_become_ints(decoder: EventDecoder) -> None:
    play = decoder.decode(raw(make("play", position_s=0, duration_s=60)))
    click = decoder.decode(
        b'{"event_id":"e","type":"click","user_id":"u","ts":1.7e12,'
        b'"schema_version":1.0,"item_id":"i","surface":"s","rank":2.0}'
    )
    assert isinstance(play, Event) and isinstance(click, Event)
    assert (type(play.position_s), type(play.duration_s)) == (float, float)
    assert (click.ts_ms, click.rank) == (1_700_000_000_000, 2)
    assert (type(click.ts_ms), type(click.rank)) == (int, int)


def test_decode_keeps_unknown_fields_out_of_the_event_and_accepts_them(
    decoder: EventDecoder,
) -> None:
    obj = make("search", player={"v": 2}, tags=[1, None], note=None, position_s="other type's")
    event = decoder.decode(raw(obj))
    assert isinstance(event, Event)
    assert event.position_s is None and event.query == "nordic noir"


def test_decode_accepts_unicode_ids_and_counts_characters_not_bytes(
    decoder: EventDecoder,
) -> None:
    user = "用户ü🎬" * 32  # 128 characters, 384 bytes in UTF-8
    event = decoder.decode(raw(make("play", user_id=user, country="Ελλάδα")))
    assert isinstance(event, Event) and event.user_id == user
    too_long = decoder.decode(raw(make("play", user_id=user + "x")))
    assert too_long == Rejection("invalid_value", "user_id: length 129 outside 1..128")


@pytest.mark.parametrize(
    ("ts", "expected_ms"),
    [
        (TS_MS, TS_MS),
        (TS, TS_MS),
        ("2026-11-22t20:15:03.120z", TS_MS),
        ("2026-11-22T21:15:03.120+01:00", TS_MS),
        ("2026-11-22T14:45:03.120-05:30", TS_MS),
        ("2026-11-22T20:15:03.1209999Z", TS_MS),
        ("2026-11-22T20:15:03.12Z", TS_MS),
        ("2026-11-22T20:15:03Z", TS_MS - 120),
        ("2026-11-22T20:15:03-00:00", TS_MS - 120),
        ("2024-02-29T00:00:00Z", 1_709_164_800_000),
        ("1969-12-31T23:59:59.999Z", -1),
        (0, 0),
    ],
)
def test_decode_reads_both_timestamp_forms_as_epoch_ms(
    decoder: EventDecoder, ts: str | int, expected_ms: int
) -> None:
    event = decoder.decode(raw(make("click", ts=ts)))
    assert isinstance(event, Event)
    assert event.ts_ms == expected_ms


# --- rejections ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "reason", "detail"),
    [
        (None, "empty", "record has no value"),
        (b"", "empty", "record has no value"),
        (b'{"a":"\xff"}', "not_utf8", "invalid UTF-8 at byte 6: invalid start byte"),
        (b"\xed\xa0\x80", "not_utf8", "invalid UTF-8 at byte 0: invalid continuation byte"),
        (b"{'type': 'play'}", "not_json", None),
        (b'{"type": "play",}', "not_json", None),
        (b"NaN", "not_json", None),
        (b'"\\ud800"', "not_json", None),
        (b"\xef\xbb\xbf{}", "not_json", None),
        (b"[]", "not_object", "expected a JSON object, got array"),
        (b'"play"', "not_object", "expected a JSON object, got string"),
        (b"null", "not_object", "expected a JSON object, got null"),
        (raw(make(type=...)), "missing_field", "type: required"),
        (raw(make(schema_version=...)), "missing_field", "schema_version: required"),
        (raw(make(event_id=...)), "missing_field", "event_id: required in play events"),
        (raw(make(ts=...)), "missing_field", "ts: required in play events"),
        (raw(make("play", position_s=...)), "missing_field", "position_s: required in play events"),
        (raw(make("search", query=...)), "missing_field", "query: required in search events"),
        (raw(make("click", surface=...)), "missing_field", "surface: required in click events"),
        (raw(make(type=None)), "wrong_type", "type: expected string, got null"),
        (raw(make(type=["play"])), "wrong_type", "type: expected string, got array"),
        (raw(make(position_s="12")), "wrong_type", "position_s: expected number, got string"),
        (raw(make(position_s=True)), "wrong_type", "position_s: expected number, got boolean"),
        (raw(make("click", rank=False)), "wrong_type", "rank: expected integer, got boolean"),
        (raw(make("click", rank=1.5)), "wrong_type", "rank: expected integer, got number"),
        (
            raw(make(schema_version=True)),
            "wrong_type",
            "schema_version: expected integer, got boolean",
        ),
        (
            raw(make(schema_version="1")),
            "wrong_type",
            "schema_version: expected integer, got string",
        ),
        (raw(make(device=None)), "wrong_type", "device: expected string, got null"),
        (raw(make(user_id=42)), "wrong_type", "user_id: expected string, got integer"),
        (raw(make(item_id={"id": 1})), "wrong_type", "item_id: expected string, got object"),
        (raw(make(ts=None)), "wrong_type", None),
        (raw(make(ts=1.5e12 + 0.5)), "wrong_type", None),
        (raw(make(type="rewind")), "unknown_type", None),
        (raw(make(type="Play")), "unknown_type", None),
        (raw(make(type="")), "unknown_type", None),
        (raw(make(schema_version=2)), "unsupported_schema_version", None),
        (raw(make(schema_version=0)), "unsupported_schema_version", None),
        (raw(make(ts="2026-13-22T20:15:03Z")), "bad_timestamp", None),
        (raw(make(ts="2026-02-29T20:15:03Z")), "bad_timestamp", "ts: no such date: '2026-02-29'"),
        (raw(make(ts="2026-11-31T20:15:03Z")), "bad_timestamp", None),
        (raw(make(ts="0000-01-01T00:00:00Z")), "bad_timestamp", None),
        (raw(make(ts="2026-11-22T24:00:00Z")), "bad_timestamp", None),
        (raw(make(ts="2026-11-22T23:59:60Z")), "bad_timestamp", None),
        (raw(make(ts="2026-11-22T20:15:03")), "bad_timestamp", None),
        (raw(make(ts="2026-11-22T20:15:03+0100")), "bad_timestamp", None),
        (raw(make(ts="2026-11-22T20:15:03+24:00")), "bad_timestamp", None),
        (raw(make(ts="2026-11-22 20:15:03Z")), "bad_timestamp", None),
        (raw(make(ts="2026-11-22T20:15:03.Z")), "bad_timestamp", None),
        (raw(make(ts="2026-11-22T20:15:03Z\n")), "bad_timestamp", None),
        (raw(make(ts="2026-11-22")), "bad_timestamp", None),
        (raw(make(ts="1795378503120")), "bad_timestamp", None),
        (raw(make(ts="٢٠٢٦-11-22T20:15:03Z")), "bad_timestamp", None),
        (raw(make(ts=-1)), "invalid_value", f"ts: epoch milliseconds -1 outside 0..{MAX_TS_MS}"),
        (raw(make(ts=MAX_TS_MS + 1)), "invalid_value", None),
        (raw(make(event_id="")), "invalid_value", "event_id: length 0 outside 1..128"),
        (raw(make(item_id="x" * 129)), "invalid_value", "item_id: length 129 outside 1..128"),
        (raw(make(position_s=-0.5)), "invalid_value", "position_s: -0.5 is not >= 0 and <= 86400"),
        (raw(make(position_s=86_400.5)), "invalid_value", None),
        (raw(make(duration_s=0)), "invalid_value", "duration_s: 0 is not > 0 and <= 86400"),
        (
            raw(make(duration_s=1e308)),
            "invalid_value",
            "duration_s: 1e+308 is not > 0 and <= 86400",
        ),  # noqa: E501
        (
            b'{"event_id":"e","type":"play","user_id":"u","ts":0,"schema_version":1,"item_id":"i",'
            b'"position_s":1e400}',
            "not_json",
            None,
        ),
        (raw(make(rating=10.01)), "invalid_value", "rating: 10.01 is not >= 0 and <= 10"),
        (raw(make(country="Deutschland")), "invalid_value", None),
        (raw(make("search", query="")), "invalid_value", None),
        (raw(make("search", query="q" * 513)), "invalid_value", None),
        (raw(make("search", results_count=-1)), "invalid_value", None),
        (raw(make("click", surface="")), "invalid_value", None),
        (raw(make("click", rank=-1)), "invalid_value", "rank: -1 is not 0..2147483647"),
        (raw(make("click", rank=2**31)), "invalid_value", None),
        (raw(make("search", results_count=1e23)), "invalid_value", None),
    ],
)
def test_decode_rejects_with_reason_and_detail(
    decoder: EventDecoder, record: bytes | None, reason: str, detail: str | None
) -> None:
    result = decoder.decode(record)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    if detail is not None:
        assert result.detail == detail
    assert result.detail


def test_decode_rejects_oversized_records_before_parsing() -> None:
    decoder = EventDecoder(max_bytes=300, clock=lambda: NOW_S)
    fits = raw(make("search", query="q" * (300 - len(raw(make("search", query=""))))))
    assert len(fits) == 300 and isinstance(decoder.decode(fits), Event)
    assert decoder.decode(fits + b" ") == Rejection("oversized", "301 bytes, limit 300")
    assert decoder.decode(b"\xff" * 301).reason == "oversized"


def test_decode_rejects_timestamps_too_far_ahead_of_the_wall_clock() -> None:
    decoder = EventDecoder(max_future_skew_s=3_600.0, clock=lambda: NOW_S)
    limit_ms = int((NOW_S + 3_600) * 1_000)
    assert isinstance(decoder.decode(raw(make(ts=limit_ms))), Event)
    assert decoder.decode(raw(make(ts=limit_ms + 1))).reason == "future_timestamp"
    assert decoder.decode(raw(make(ts="2027-01-01T00:00:00Z"))) == Rejection(
        "future_timestamp", "ts: 3361600.0 s ahead of the clock (limit 3600 s)"
    )


def test_decode_future_guard_reads_the_clock_on_every_call() -> None:
    now = [NOW_S]
    decoder = EventDecoder(max_future_skew_s=0.0, clock=lambda: now[0])
    record = raw(make(ts=int(NOW_S * 1_000) + 5_000))
    assert decoder.decode(record).reason == "future_timestamp"
    now[0] += 5
    assert isinstance(decoder.decode(record), Event)


def test_from_settings_takes_the_limits() -> None:
    decoder = EventDecoder.from_settings(Settings(max_event_bytes=512, max_future_skew_s=60))
    assert (decoder.max_bytes, decoder.max_future_skew_s) == (512, 60.0)
    assert decoder.decode(b" " * 513).reason == "oversized"


# --- timestamps and encoding ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        TS,
        "2026-11-22T21:15:03.120+01:00",
        "1999-12-31T23:59:59.999999-11:59",
        "0001-01-01T00:00:00Z",
    ],
)
def test_parse_ts_agrees_with_aware_datetime(text: str) -> None:
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None
    assert parse_ts(text) == (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        milliseconds=1
    )


def test_parse_ts_raises_type_error_for_other_json_types() -> None:
    for value in (None, True, 1.5, [], {}):
        with pytest.raises(TypeError):
            parse_ts(value)


@pytest.mark.parametrize(
    ("ts_ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (TS_MS, TS),
        (-1, "1969-12-31T23:59:59.999Z"),
        (MAX_TS_MS, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_format_ts_writes_utc_with_milliseconds(ts_ms: int, text: str) -> None:
    assert format_ts(ts_ms) == text
    assert parse_ts(text) == ts_ms


def test_format_ts_rejects_times_outside_years_1_to_9999() -> None:
    with pytest.raises(ValueError, match="outside the years"):
        format_ts(MAX_TS_MS + 1)


def test_encode_event_writes_the_contract_and_omits_none(decoder: EventDecoder) -> None:
    event = Event(event_id="e-1", type="click", user_id="ü", ts_ms=TS_MS, item_id="i", surface="s")
    record = json.loads(encode_event(event))
    assert record == {
        "event_id": "e-1",
        "type": "click",
        "user_id": "ü",
        "ts": TS,
        "schema_version": 1,
        "item_id": "i",
        "surface": "s",
    }
    assert validator("event").is_valid(record)
    assert decoder.decode(encode_event(event)) == event


def test_encode_event_timestamp_is_utc_even_for_events_read_with_an_offset(
    decoder: EventDecoder,
) -> None:
    event = decoder.decode(raw(make(ts="2026-11-23T05:15:03.120+09:00")))
    assert isinstance(event, Event)
    assert json.loads(encode_event(event))["ts"] == TS


# --- published schemas --------------------------------------------------------------------


SCHEMA_NAMES = (
    *("envelope", "play", "pause", "search", "click", "event"),
    *("dlq", "churn", "personalization", "signal", "catalog", "quarantine"),
    *("experiment", "kpi_partial", "kpi", "experiment_result", "action", "consent"),
    *("learning", "learning_merge"),
)


def test_schemas_directory_holds_exactly_the_published_schemas() -> None:
    assert sorted(load_schemas()) == sorted(SCHEMA_NAMES)
    assert SCHEMAS_DIR.name == "schemas"


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_documented_draft_2020_12(name: str) -> None:
    from jsonschema import Draft202012Validator

    schema = load_schemas()[name]
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"{SCHEMA_BASE_URI}{name}.schema.json"
    assert schema["title"] and schema["description"]

    def undocumented(node: Any, path: str) -> list[str]:
        missing = []
        if isinstance(node, dict):
            for key, sub in node.get("properties", {}).items():
                if "description" not in sub:
                    missing.append(f"{path}/{key}")
            for key, sub in node.items():
                if key not in ("examples", "if"):
                    missing += undocumented(sub, f"{path}/{key}")
        elif isinstance(node, list):
            for index, sub in enumerate(node):
                missing += undocumented(sub, f"{path}/{index}")
        return missing

    assert undocumented(schema, "#") == []


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_examples_are_valid(name: str, decoder: EventDecoder) -> None:
    schema = load_schemas()[name]
    examples = schema.get("examples", [])
    assert examples or name == "event"
    check = validator(name)
    for example in examples:
        assert list(check.iter_errors(example)) == []
        if name in (*EVENT_TYPES, "envelope"):
            assert isinstance(decoder.decode(raw(example)), Event)


def test_type_schemas_dispatch_on_type() -> None:
    check = validator("event")
    assert check.is_valid(make("search", item_id=5, position_s="x"))
    assert not check.is_valid(make("play", query="q", position_s=...))
    assert not validator("play").is_valid(make("search"))
    assert not check.is_valid(make(type="rewind"))


def test_date_time_definition_requires_a_valid_rfc_3339_string() -> None:
    check = validator("churn")
    valid = {**CHURN, "ts": "2026-11-22T20:15:03Z"}
    assert check.is_valid(valid)
    for bad in (
        "2026-11-22T20:15:03",
        "2026-02-30T20:15:03Z",
        "2026-11-22T20:15:03Z\n",
        1795378503120,
    ):
        assert not check.is_valid({**valid, "ts": bad}), bad


CHURN = {
    "user_id": "u-1",
    "ts": TS,
    "churn_probability": 0.42,
    "risk_band": "medium",
    "model_version": "churn-1",
    "schema_version": 1,
}
OUTPUT_RECORDS: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
    "dlq": (
        {
            "reason": "not_utf8",
            "detail": "invalid UTF-8 at byte 6: invalid start byte",
            "original": "eyJhIjoi/yJ9",
            "original_encoding": "base64",
            "key": None,
            "topic": "ott.events",
            "partition": 0,
            "offset": 17,
            "received_at": "2026-11-22T20:15:03.311Z",
            "schema_version": 1,
        },
        [
            {"reason": "bad_json"},
            {"original_encoding": "hex"},
            {"offset": -1},
            {"key": 7},
            {"received_at": "yesterday"},
            {"partition": ...},
        ],
    ),
    "churn": (
        {
            **CHURN,
            "top_features": [{"name": "sessions_7d", "value": 1.0, "contribution": -0.3}],
            "session": {"start": TS, "end": TS, "events": 1, "watch_s": 0},
            "segment": 0,
            "debug": {"anything": True},
        },
        [
            {"churn_probability": 1.2},
            {"risk_band": "severe"},
            {"schema_version": 2},
            {"ts": TS_MS},
            {"session": {"start": TS, "end": TS, "events": 0, "watch_s": 0}},
            {"top_features": [{"name": "x", "value": "1", "contribution": 0}]},
            {"user_id": ...},
        ],
    ),
    "personalization": (
        {
            "user_id": "u-1",
            "ts": TS,
            "items": [{"item_id": "i-1", "score": 0.9, "reason": "model"}],
            "model_version": "reco-1",
            "schema_version": 1,
            "segment": 3,
            "cold_start": False,
        },
        [
            {"items": [{"item_id": "i-1", "score": 0.9}]},
            {"items": [{"item_id": "i", "score": 1, "reason": "r"}] * 101},
            {"cold_start": "no"},
            {"model_version": ...},
        ],
    ),
    "signal": (
        {
            **CHURN,
            "signal": "became_at_risk",
            "risk_band": "high",
            "previous_band": "medium",
        },
        [{"signal": "churned"}, {"previous_band": None}, {"churn_probability": -0.1}],
    ),
}


@pytest.mark.parametrize("name", sorted(OUTPUT_RECORDS))
def test_output_record_schema_accepts_a_valid_record_and_rejects_broken_ones(name: str) -> None:
    check = validator(name)
    valid, breakages = OUTPUT_RECORDS[name]
    assert list(check.iter_errors(valid)) == []
    for change in breakages:
        broken = {key: value for key, value in (valid | change).items() if value is not ...}
        assert not check.is_valid(broken), change
