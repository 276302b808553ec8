"""Property tests: the hand-written decoder accepts exactly what ``event.schema.json`` accepts."""

from __future__ import annotations

import calendar
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.events import (
    EVENT_TYPES,
    MAX_TS_MS,
    REJECT_REASONS,
    Event,
    EventDecoder,
    Rejection,
    encode_event,
)
from pipeline.schemas import validator

SCHEMA = validator("event")
# The oversize and future-timestamp guards are not part of the schema: with this clock and
# limit they can never fire (no valid ts is a day past 9999-12-31T23:59:59.999Z).
SCHEMA_ONLY = EventDecoder(max_bytes=1 << 20, clock=lambda: MAX_TS_MS / 1_000)
EARLIEST_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z

COMMON_REQUIRED = ("event_id", "type", "user_id", "ts", "schema_version")

# --- JSON values ------------------------------------------------------------------------------

U64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what orjson reads and writes
FINITE = st.floats(allow_nan=False, allow_infinity=False)
JSON_LEAVES = st.none() | st.booleans() | U64 | FINITE | st.text(max_size=12)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def number(
    minimum: float, maximum: float | None = None, *, exclusive: bool = False, json: bool
) -> st.SearchStrategy[Any]:
    """Floats in range; as JSON also integers in range."""
    floats = st.floats(
        minimum, maximum, exclude_min=exclusive, allow_nan=False, allow_infinity=False
    )
    if not json:
        return floats
    top = 2**53 if maximum is None else int(maximum)  # exact as a float, so values compare
    return floats | st.integers(int(minimum) + exclusive, top)


def integer(*, json: bool) -> st.SearchStrategy[Any]:
    """Non-negative integers; as JSON also floats with a zero fraction (``3.0``)."""
    ints = st.integers(0, 2**63 - 1)
    return ints | st.integers(0, 2**53).map(float) if json else ints


def text(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(min_size=min_size, max_size=max_size)


def type_fields(*, json: bool) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Strategies of the required and optional fields of each type, common optional ones included."""
    ident = text(1, 128)
    common = {"session_id": text(0, 128), "device": text(0, 64), "country": text(0, 8)}
    playback = {"item_id": ident, "position_s": number(0, json=json)}
    duration = {"duration_s": number(0, exclusive=True, json=json)}
    return {
        "play": (playback, common | duration | {"rating": number(0, 10, json=json)}),
        "pause": (playback, common | duration),
        "search": ({"query": text(1, 512)}, common | {"results_count": integer(json=json)}),
        "click": (
            {"item_id": ident, "surface": text(1, 64)},
            common | {"rank": integer(json=json)},
        ),
    }


JSON_FIELDS = type_fields(json=True)
REQUIRED = {kind: {*COMMON_REQUIRED, *required} for kind, (required, _) in JSON_FIELDS.items()}
DEFINED = {kind: REQUIRED[kind] | set(optional) for kind, (_, optional) in JSON_FIELDS.items()}
FIELD_NAMES = sorted(set().union(*DEFINED.values()))


# --- timestamps -------------------------------------------------------------------------------


def two_digits(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map("{:02d}".format)


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    """Any valid RFC 3339 date-time between the years 0001 and 9999."""
    year = draw(st.integers(1, 9999))
    month = draw(st.integers(1, 12))
    day = draw(st.integers(1, calendar.monthrange(year, month)[1]))
    fraction = draw(st.just("") | st.text("0123456789", min_size=1, max_size=9).map(".{}".format))
    offset = st.tuples(st.sampled_from(["+", "-"]), two_digits(0, 23), two_digits(0, 59)).map(
        "{0[0]}{0[1]}:{0[2]}".format
    )
    return (
        f"{year:04d}-{month:02d}-{day:02d}{draw(st.sampled_from(['T', 't']))}"
        f"{draw(two_digits(0, 23))}:{draw(two_digits(0, 59))}:{draw(two_digits(0, 59))}"
        f"{fraction}{draw(st.sampled_from(['Z', 'z']) | offset)}"
    )


TIMESTAMP_PARTS: list[tuple[st.SearchStrategy[str], tuple[str, ...]]] = [
    (st.just(""), (" ", "\n", "+")),
    (
        st.sampled_from(["1900", "2000", "2024", "2026", "9999"]),
        ("0000", "0001", "999", "12026", "２０２６", "٢٠٢٦"),
    ),
    (st.just("-"), ("", "/")),
    (two_digits(1, 12), ("00", "13", "1", "99")),
    (st.just("-"), ("", "/")),
    (st.sampled_from(["01", "28", "29", "30", "31"]), ("00", "32", "1")),
    (st.sampled_from(["T", "t"]), (" ", "_", "")),
    (two_digits(0, 23), ("24", "7", "99")),
    (st.just(":"), ("", ".")),
    (two_digits(0, 59), ("60", "5")),
    (st.just(":"), ("",)),
    (two_digits(0, 59), ("60", "5")),
    (st.sampled_from(["", ".0", ".123", ".123456789"]), (".", ",123", ".12a", ".١")),
    (
        st.sampled_from(["Z", "z", "+00:00", "-00:00", "+23:59", "-05:30"]),
        ("", "+24:00", "-12:60", "+0100", "+01", "UTC", " Z", "ZZ"),
    ),
    (st.just(""), ("\n", " ", "x")),
]


@st.composite
def near_rfc3339(draw: st.DrawFn) -> str:
    """Strings close to RFC 3339: up to two parts broken, the rest valid or at their edge."""
    broken = draw(st.sets(st.integers(0, len(TIMESTAMP_PARTS) - 1), max_size=2))
    return "".join(
        draw(st.sampled_from(odd) if index in broken else valid)
        for index, (valid, odd) in enumerate(TIMESTAMP_PARTS)
    )


TIMESTAMPS = rfc3339() | st.integers(0, MAX_TS_MS) | st.integers(0, 2**40).map(float)


# --- events -----------------------------------------------------------------------------------


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event as a JSON object: any type, both ts forms, optional and extra fields."""
    kind = draw(st.sampled_from(EVENT_TYPES))
    extras = draw(st.dictionaries(st.text(max_size=10) | st.sampled_from(FIELD_NAMES), JSON_VALUES))
    obj = {name: value for name, value in extras.items() if name not in DEFINED[kind]}
    obj |= {
        "event_id": draw(text(1, 128)),
        "type": kind,
        "user_id": draw(text(1, 128)),
        "ts": draw(TIMESTAMPS),
        "schema_version": draw(st.sampled_from([1, 1.0])),
    }
    required, optional = JSON_FIELDS[kind]
    return obj | draw(st.fixed_dictionaries(required, optional=optional))


NUMBER_FIELDS = {"ts", "schema_version", "position_s", "duration_s", "rating", "results_count", "rank"}
EDGE_NUMBERS = st.sampled_from(
    [-1, -1e-300, -0.0, 0, 0.0, 1e-300, 1, 1.0, 1.5, 2, 9.999999, 10, 10.0, 10.000001, 11]
    + [2**53, 2**63, 2**64 - 1, -(2**63), 1e300, MAX_TS_MS, MAX_TS_MS + 1, float(MAX_TS_MS + 1)]
)
EDGE_LENGTHS = st.sampled_from([0, 1, 7, 8, 9, 63, 64, 65, 127, 128, 129, 511, 512, 513])
ODD_TYPES = st.sampled_from(["Play", "PLAY", "play ", " click", "", "search\n", "rewind"])
OTHER_JSON_TYPES = st.sampled_from([True, False, None, "1", "", [], {}, [1], {"v": 1}, 1.5]) | JSON_VALUES


def edge_value(field: str) -> st.SearchStrategy[Any]:
    """Values at and across the limits the contract sets on ``field``."""
    if field == "type":
        return ODD_TYPES | st.text(max_size=6)
    if field == "ts":
        return near_rfc3339() | EDGE_NUMBERS | st.text(max_size=30)
    if field in NUMBER_FIELDS:
        return EDGE_NUMBERS | st.floats(-1, 11) | U64 | FINITE
    return st.builds(str.__mul__, st.sampled_from(["x", "é", "🎬"]), EDGE_LENGTHS)


@st.composite
def invalid_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with one or two mutations; most make it invalid, some keep it valid."""
    obj = draw(valid_events())
    for _ in range(draw(st.integers(1, 2))):
        kind = obj["type"] if obj.get("type") in EVENT_TYPES else "play"
        field = draw(st.sampled_from(sorted(DEFINED[kind])))
        mutation = draw(st.sampled_from(["drop", "other_type", "edge", "edge"]))
        if mutation == "drop":
            obj.pop(draw(st.sampled_from(sorted(REQUIRED[kind]))), None)
        elif mutation == "other_type":
            obj[field] = draw(OTHER_JSON_TYPES)
        else:
            obj[field] = draw(edge_value(field))
    return obj


@st.composite
def events(draw: st.DrawFn) -> Event:
    """An Event carrying only its type's fields, with Python types as the decoder returns them."""
    kind = draw(st.sampled_from(EVENT_TYPES))
    required, optional = type_fields(json=False)[kind]
    return Event(
        event_id=draw(text(1, 128)),
        type=kind,
        user_id=draw(text(1, 128)),
        ts_ms=draw(st.integers(EARLIEST_MS, MAX_TS_MS)),
        **draw(st.fixed_dictionaries(required, optional=optional)),
    )


def assert_outcome(result: object) -> None:
    assert isinstance(result, Event | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in REJECT_REASONS and result.detail


# --- properties -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(obj=valid_events())
def test_valid_events_are_accepted_by_the_schema_and_the_decoder(obj: dict[str, Any]) -> None:
    assert list(SCHEMA.iter_errors(obj)) == []
    event = SCHEMA_ONLY.decode(orjson.dumps(obj))
    assert isinstance(event, Event), event
    for name in DEFINED[obj["type"]] - {"ts", "schema_version"}:
        assert getattr(event, name) == obj.get(name), name


@settings(max_examples=1_500, deadline=None)
@given(obj=invalid_events())
def test_decoder_verdict_matches_the_schema_on_mutated_events(obj: dict[str, Any]) -> None:
    result = SCHEMA_ONLY.decode(orjson.dumps(obj))
    assert_outcome(result)
    assert isinstance(result, Event) == SCHEMA.is_valid(obj), result


@settings(max_examples=300, deadline=None)
@given(obj=st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), JSON_VALUES))
def test_decoder_verdict_matches_the_schema_on_arbitrary_objects(obj: dict[str, Any]) -> None:
    result = SCHEMA_ONLY.decode(orjson.dumps(obj))
    assert_outcome(result)
    assert isinstance(result, Event) == SCHEMA.is_valid(obj), result


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES)
def test_decode_of_any_json_value_never_raises(value: Any) -> None:
    assert_outcome(EventDecoder().decode(orjson.dumps(value)))


@settings(max_examples=500, deadline=None)
@given(record=st.binary(max_size=400), max_bytes=st.integers(256, 512))
def test_decode_of_any_bytes_never_raises(record: bytes, max_bytes: int) -> None:
    assert_outcome(EventDecoder(max_bytes=max_bytes).decode(record))


@settings(max_examples=300, deadline=None)
@given(obj=valid_events(), data=st.data())
def test_decode_of_corrupted_event_bytes_never_raises(obj: dict[str, Any], data: st.DataObject) -> None:
    record = bytearray(orjson.dumps(obj))
    for _ in range(data.draw(st.integers(1, 3))):
        record[data.draw(st.integers(0, len(record) - 1))] = data.draw(st.integers(0, 255))
    assert_outcome(EventDecoder().decode(bytes(record)))


@settings(max_examples=300, deadline=None)
@given(event=events())
def test_encode_then_decode_gives_the_event_back(event: Event) -> None:
    record = encode_event(event)
    assert SCHEMA.is_valid(orjson.loads(record))
    assert SCHEMA_ONLY.decode(record) == event
