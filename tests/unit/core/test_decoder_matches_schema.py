"""Property tests: the hand-written decoder accepts exactly what ``event.schema.json`` accepts."""

from __future__ import annotations

import calendar
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urljoin

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.events import (
    EVENT_TYPES,
    MAX_COUNT,
    MAX_SECONDS,
    MAX_TS_MS,
    REJECT_REASONS,
    Event,
    EventDecoder,
    Rejection,
    encode_event,
    parse_ts,
)
from pipeline.serde.schemas import load_schemas, registry, validator

SCHEMA = validator("event")
# The oversize and future-timestamp guards are not part of the schema: with this clock and
# limit they can never fire (no valid ts is a day past 9999-12-31T23:59:59.999Z).
SCHEMA_ONLY = EventDecoder(max_bytes=1 << 20, clock=lambda: MAX_TS_MS / 1_000)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EARLIEST_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z

COMMON_REQUIRED = ("event_id", "type", "user_id", "ts", "schema_version")

# --- JSON values ------------------------------------------------------------------------------

U64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what orjson reads and writes
FINITE = st.floats(allow_nan=False, allow_infinity=False)
JSON_LEAVES = st.none() | st.booleans() | U64 | FINITE | st.text(max_size=12)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def number(
    minimum: float, maximum: float | None = None, *, exclusive: bool = False, json: bool
) -> st.SearchStrategy[Any]:
    """Draw floats in range; as JSON also integers in range."""
    floats = st.floats(
        minimum, maximum, exclude_min=exclusive, allow_nan=False, allow_infinity=False
    )
    if not json:
        return floats
    top = 2**53 if maximum is None else int(maximum)  # exact as a float, so values compare
    return floats | st.integers(int(minimum) + exclusive, top)


def integer(*, json: bool) -> st.SearchStrategy[Any]:
    """Draw non-negative integers; as JSON also floats with a zero fraction (``3.0``)."""
    ints = st.integers(0, MAX_COUNT)
    return ints | ints.map(float) if json else ints


def text(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    """Draw any text (no lone surrogates, which are not JSON) of a length in range."""
    return st.text(min_size=min_size, max_size=max_size)


def type_fields(*, json: bool) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Build strategies for the required and optional fields of each type (common optional too)."""
    ident = text(1, 128)
    common = {"session_id": text(0, 128), "device": text(0, 64), "country": text(0, 8)}
    playback = {"item_id": ident, "position_s": number(0, MAX_SECONDS, json=json)}
    duration = {"duration_s": number(0, MAX_SECONDS, exclusive=True, json=json)}
    return {
        "play": (playback, common | duration | {"rating": number(0, 10, json=json)}),
        "pause": (playback, common | duration),
        "search": ({"query": text(1, 512)}, common | {"results_count": integer(json=json)}),
        "click": (
            {"item_id": ident, "surface": text(1, 64)},
            common | {"rank": integer(json=json), "artwork_id": ident},
        ),
    }


JSON_FIELDS = type_fields(json=True)
REQUIRED = {kind: {*COMMON_REQUIRED, *required} for kind, (required, _) in JSON_FIELDS.items()}
DEFINED = {kind: REQUIRED[kind] | set(optional) for kind, (_, optional) in JSON_FIELDS.items()}
FIELD_NAMES = sorted(set().union(*DEFINED.values()))


# --- timestamps -------------------------------------------------------------------------------


@st.composite
def rfc3339_and_ms(draw: st.DrawFn) -> tuple[str, int]:
    """Draw any valid RFC 3339 date-time (years 0001 to 9999) and the epoch ms it names."""
    year = draw(st.integers(1, 9999))
    month = draw(st.integers(1, 12))
    day = draw(st.integers(1, calendar.monthrange(year, month)[1]))
    hour, minute, second = (draw(st.integers(0, high)) for high in (23, 59, 59))
    digits = draw(st.text("0123456789", max_size=9))
    offset = draw(st.integers(-(24 * 60 - 1), 24 * 60 - 1))
    sign = "-" if offset < 0 else "+"
    zone = (
        draw(st.sampled_from(["Z", "z"]))
        if offset == 0 and draw(st.booleans())
        else f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    )
    text = (
        f"{year:04d}-{month:02d}-{day:02d}{draw(st.sampled_from(['T', 't']))}"
        f"{hour:02d}:{minute:02d}:{second:02d}{'.' if digits else ''}{digits}{zone}"
    )
    zone_info = timezone(timedelta(minutes=offset))
    moment = datetime(year, month, day, hour, minute, second, tzinfo=zone_info)
    return text, (moment - EPOCH) // timedelta(milliseconds=1) + int(digits[:3].ljust(3, "0"))


# Each part of a date-time: values that keep it valid (some at an edge), values that break it.
TIMESTAMP_PARTS: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (("",), (" ", "\n", "+")),
    (("2026", "1900", "2000", "2024", "9999"), ("0000", "999", "12026", "２０２６", "٢٠٢٦")),
    (("-",), ("", "/")),
    (("02", "01", "04", "09", "10", "12"), ("00", "13", "1", "99")),
    (("-",), ("", "/")),
    (("28", "01", "29", "30", "31"), ("00", "32", "1")),
    (("T", "t"), (" ", "_", "")),
    (("20", "00", "09", "19", "23"), ("24", "7", "99")),
    ((":",), ("", ".")),
    (("15", "00", "59"), ("60", "5")),
    ((":",), ("",)),
    (("03", "00", "59"), ("60", "5")),
    ((".120", "", ".0", ".123456789"), (".", ",123", ".12a", ".١")),
    (("Z", "z", "+00:00", "-00:00", "+23:59", "-05:30"), ("", "+24:00", "-12:60", "+0100", "UTC")),
    (("",), ("\n", " ", "x", "Z")),
]
# One broken part at a time, and the calendar around 29 February.
TIMESTAMP_PROBES = [
    "".join(
        odd if index == broken else valid[0] for index, (valid, _) in enumerate(TIMESTAMP_PARTS)
    )
    for broken, (_, odds) in enumerate(TIMESTAMP_PARTS)
    for odd in odds
] + [f"{year}-02-{day}T00:00:00Z" for year in (1900, 2000, 2024, 2026) for day in (28, 29, 30)]


@st.composite
def near_rfc3339(draw: st.DrawFn) -> str:
    """Draw a string close to RFC 3339: up to two parts broken, the rest valid or at an edge."""
    broken = draw(st.sets(st.integers(0, len(TIMESTAMP_PARTS) - 1), max_size=2))
    return "".join(
        draw(st.sampled_from(odd if index in broken else valid))
        for index, (valid, odd) in enumerate(TIMESTAMP_PARTS)
    )


RFC3339 = rfc3339_and_ms().map(lambda pair: pair[0])
TIMESTAMPS = RFC3339 | st.integers(0, MAX_TS_MS) | st.integers(0, 2**40).map(float)


# --- events -----------------------------------------------------------------------------------


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """Draw a valid event as a JSON object: any type, both ts forms, optional and extra fields."""
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


# --- limits, read from the schema -------------------------------------------------------------


def field_schemas(kind: str) -> dict[str, dict[str, Any]]:
    """Collect the schema of each field of ``kind`` (envelope, then type; ``$ref`` followed)."""
    schemas = load_schemas()
    resolver = registry().resolver()
    fields = {}
    for name in ("envelope", kind):
        for field, schema in schemas[name]["properties"].items():
            ref = schema.get("$ref")
            target = resolver.lookup(urljoin(schemas[name]["$id"], ref)).contents if ref else {}
            fields[field] = target | schema
    return fields


def probes(schema: dict[str, Any]) -> list[Any]:
    """List values at and just across each numeric, length and const limit of ``schema``."""
    values: list[Any] = []
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "const"):
        bound = schema.get(key)
        if type(bound) in (int, float):
            below, above = math.nextafter(bound, -math.inf), math.nextafter(bound, math.inf)
            values += [bound - 1, below, bound, float(bound), above, bound + 0.5, bound + 1]
    for key in ("minLength", "maxLength"):
        if key in schema:
            lengths = [n for n in (schema[key] - 1, schema[key], schema[key] + 1) if n >= 0]
            values += [char * n for n in lengths for char in ("x", "é", "🎬")]
    for alternative in schema.get("oneOf", []):
        values += probes(alternative)
    return values


FIELD_PROBES = {
    kind: {field: probes(schema) for field, schema in field_schemas(kind).items()}
    for kind in EVENT_TYPES
}
ODD_TYPES = ["Play", "PLAY", "play ", " click", "", "search\n", "rewind"]
OTHER_JSON_TYPES = [True, False, None, "1", "", [], {}, [1], {"v": 1}, 1.5]


def edge_value(kind: str, field: str) -> st.SearchStrategy[Any]:
    """Draw values at and across the limits the schema sets on ``field`` of ``kind`` events."""
    if field == "type":
        return st.sampled_from(ODD_TYPES) | st.text(max_size=6)
    edges = st.sampled_from(FIELD_PROBES[kind][field])
    return near_rfc3339() | edges if field == "ts" else edges


@st.composite
def invalid_events(draw: st.DrawFn) -> dict[str, Any]:
    """Draw a valid event with one or two mutations: most make it invalid, some keep it valid."""
    obj = draw(valid_events())
    for _ in range(draw(st.integers(1, 2))):
        kind = obj["type"] if obj.get("type") in EVENT_TYPES else "play"
        field = draw(st.sampled_from(sorted(DEFINED[kind])))
        mutation = draw(st.sampled_from(["drop", "other_type", "edge", "edge"]))
        if mutation == "drop":
            obj.pop(draw(st.sampled_from(sorted(REQUIRED[kind]))), None)
        elif mutation == "other_type":
            obj[field] = draw(st.sampled_from(OTHER_JSON_TYPES) | JSON_VALUES)
        else:
            obj[field] = draw(edge_value(kind, field))
    return obj


@st.composite
def events(draw: st.DrawFn) -> Event:
    """Draw an Event carrying only its type's fields, typed as the decoder returns them."""
    kind = draw(st.sampled_from(EVENT_TYPES))
    required, optional = type_fields(json=False)[kind]
    return Event(
        event_id=draw(text(1, 128)),
        type=kind,
        user_id=draw(text(1, 128)),
        ts_ms=draw(st.integers(EARLIEST_MS, MAX_TS_MS)),
        **draw(st.fixed_dictionaries(required, optional=optional)),
    )


def make_search(**fields: Any) -> dict[str, Any]:
    """Build a minimal search event as a JSON object, with ``fields`` set."""
    base = {"event_id": "e", "type": "search", "user_id": "u", "ts": 0, "schema_version": 1}
    return base | {"query": "q"} | fields


def assert_outcome(result: object) -> None:
    """Check that ``result`` is an event or a rejection with a known reason and a detail."""
    assert isinstance(result, Event | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in REJECT_REASONS and result.detail


# --- properties -------------------------------------------------------------------------------


def test_generators_cover_exactly_the_fields_the_schema_defines() -> None:
    for kind in EVENT_TYPES:
        assert set(field_schemas(kind)) == DEFINED[kind]
        assert all(FIELD_PROBES[kind][field] for field in DEFINED[kind] - {"type"}), kind


@settings(max_examples=200, deadline=None)
@given(obj=valid_events())
def test_valid_events_are_accepted_by_the_schema_and_the_decoder(obj: dict[str, Any]) -> None:
    assert list(SCHEMA.iter_errors(obj)) == []
    event = SCHEMA_ONLY.decode(orjson.dumps(obj))
    assert isinstance(event, Event), event
    for name in DEFINED[obj["type"]] - {"ts", "schema_version"}:
        assert getattr(event, name) == obj.get(name), name


MINIMAL = {
    "play": {"item_id": "i", "position_s": 0},
    "pause": {"item_id": "i", "position_s": 0},
    "search": {"query": "q"},
    "click": {"item_id": "i", "surface": "s"},
}


def test_decoder_verdict_matches_the_schema_at_every_limit_and_for_every_json_type() -> None:
    mismatches = []
    for kind, probes_by_field in FIELD_PROBES.items():
        base = {"event_id": "e", "type": kind, "user_id": "u", "ts": 0, "schema_version": 1}
        base |= MINIMAL[kind]
        for field, values in probes_by_field.items():
            without = {name: value for name, value in base.items() if name != field}
            odd = (*OTHER_JSON_TYPES, *ODD_TYPES, *(TIMESTAMP_PROBES if field == "ts" else ()))
            replaced = [base | {field: value} for value in (*values, *odd)]
            for obj in (without, *replaced):
                result = SCHEMA_ONLY.decode(orjson.dumps(obj))
                if isinstance(result, Event) != SCHEMA.is_valid(obj):
                    mismatches.append((obj, result))
    assert mismatches == []


@settings(max_examples=600, deadline=None)
@given(obj=invalid_events())
def test_decoder_verdict_matches_the_schema_on_mutated_events(obj: dict[str, Any]) -> None:
    result = SCHEMA_ONLY.decode(orjson.dumps(obj))
    assert_outcome(result)
    assert isinstance(result, Event) == SCHEMA.is_valid(obj), result


@settings(max_examples=600, deadline=None)
@given(ts=near_rfc3339() | st.text(max_size=32))
def test_decoder_verdict_matches_the_schema_on_timestamp_strings(ts: str) -> None:
    obj = make_search(ts=ts)
    result = SCHEMA_ONLY.decode(orjson.dumps(obj))
    assert_outcome(result)
    assert isinstance(result, Event) == SCHEMA.is_valid(obj), result


@settings(max_examples=300, deadline=None)
@given(pair=rfc3339_and_ms())
def test_rfc3339_strings_decode_to_the_instant_they_name(pair: tuple[str, int]) -> None:
    text, ts_ms = pair
    assert parse_ts(text) == ts_ms
    event = SCHEMA_ONLY.decode(orjson.dumps(make_search(ts=text)))
    assert isinstance(event, Event) and event.ts_ms == ts_ms


@settings(max_examples=200, deadline=None)
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


@settings(max_examples=200, deadline=None)
@given(obj=valid_events(), data=st.data())
def test_decode_of_corrupted_event_bytes_never_raises(
    obj: dict[str, Any], data: st.DataObject
) -> None:
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
