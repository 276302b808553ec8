"""Stored user states: a named, versioned format that every later release reads.

A user state lives in the changelog and the local store between releases, so its format
is a public API: fields are named, never positional; a release may add fields (with a
default for states written before), never change what a name means. :func:`encode`
writes the current format; :func:`decode` reads every format ever released:

format 2 (until 2026-12)
    a positional JSON array, floats packed as base64 float64; migrated on read.
format 3
    a JSON object of named fields; nested objects for the features and the pending
    churn prediction. Their float vectors are packed (base64 of little-endian float64:
    exact, and half the size of JSON text) under a named, versioned layout
    (:data:`COUNTER_LAYOUTS`, :data:`CHURN_FEATURE_LAYOUTS`): a release that changes a
    vector adds a layout, and every layout ever written stays readable.

A scalar field at its default value (:data:`_SCALARS`: ``null``, ``false``, ``0``, an
empty list or map) and a pending prediction that is ``null`` are not written: every format-3
release reads an absent field as its default, and a default never changes once released
(``tests/unit/core/test_state_format.py`` holds them). About 150 bytes of a typical
state's 2,270.

A field a newer release added is kept as it is (``UserState.extra``) and written back
unchanged, so a rollback and a roll-forward lose nothing. A state that cannot be read
(not JSON, a field of the wrong type) raises :class:`StateUnreadable` with a reason: the
worker quarantines it and the user starts afresh, it never stops.

Examples
--------
>>> from pipeline.core.state import UserState
>>> state = UserState.new("u1", partition=2, window_ms=600_000, max_ids=32)
>>> data = encode(state)
>>> orjson.loads(data)["format"], orjson.loads(data)["partition"]
(3, 2)
>>> decode("u1", data, window_ms=600_000, max_ids=32) == state
True
>>> decode("u1", b'{"format": 3, "partition": "two"}', window_ms=600_000, max_ids=32)
Traceback (most recent call last):
...
pipeline.core.state_codec.StateUnreadable: wrong_type: partition: expected int, got str
"""

from __future__ import annotations

import base64
import binascii
import math
import operator
import struct
import sys
from array import array
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson

from pipeline.core.dedupe import RecentIds
from pipeline.core.empty import EMPTY
from pipeline.core.features import (
    CHURN_FEATURES,
    CHURN_FEATURES_V1,
    COUNTERS,
    UserFeatures,
    unpack_floats,
)

if TYPE_CHECKING:
    from pipeline.core.artwork import UserArtwork
    from pipeline.core.state import PendingChurn, UserState
    from pipeline.crm.triggers import UserCrm
    from pipeline.kpis.windows import UserKpis

__all__ = [
    "CHURN_FEATURE_LAYOUTS",
    "COUNTER_LAYOUTS",
    "FORMAT",
    "StateUnreadable",
    "decode",
    "encode",
]

FORMAT: Final = 3
"""The format :func:`encode` writes."""


class StateUnreadable(ValueError):
    """A stored state no release can read, and why.

    ``reason`` is ``not_json``, ``not_a_state``, ``unknown_format`` (older than any
    release) or ``wrong_type``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --- field types ------------------------------------------------------------------------


def _check(name: str, value: object, *kinds: type) -> Any:
    if type(value) not in kinds:
        expected = " or ".join(kind.__name__ for kind in kinds)
        raise StateUnreadable(
            "wrong_type", f"{name}: expected {expected}, got {type(value).__name__}"
        )
    return value


def _int(name: str, value: object) -> int:
    if type(value) is int:  # the usual case first: reading states back is on the hot path
        return value
    return _check(name, value, int)  # type: ignore[no-any-return]


def _float(name: str, value: object) -> float:
    if type(value) is float:
        return value
    return float(_check(name, value, int, float))


def _optional(read: Callable[[str, object], Any]) -> Callable[[str, object], Any]:
    return lambda name, value: None if value is None else read(name, value)


def _bool(name: str, value: object) -> bool:
    return _check(name, value, bool)  # type: ignore[no-any-return]


def _str(name: str, value: object) -> str:
    if type(value) is str:
        return value
    return _check(name, value, str)  # type: ignore[no-any-return]


def _name(name: str, value: object) -> str:
    """A string many states hold (an item, a band, an experiment): one object, shared."""
    return _intern(_str(name, value))


_intern = sys.intern


def _list_of(read: Callable[[str, object], Any]) -> Callable[[str, object], list[Any]]:
    # copied: a list of exactly its length, not one grown item by item (~48 bytes less
    # for a list of ten, as a state's lists of items are)
    return lambda name, value: list([read(name, item) for item in _check(name, value, list)])


def _names(name: str, value: object) -> list[str]:
    """``_list_of(_name)``: a list of strings, each interned, of exactly its length."""
    if type(value) is list:
        try:  # sys.intern refuses anything but an exact str
            return list([_intern(item) for item in value])
        except TypeError:
            pass
    return _list_of(_name)(name, value)


def _dict_of(read: Callable[[str, object], Any]) -> Callable[[str, object], dict[str, Any]]:
    def check(name: str, value: object) -> dict[str, Any]:
        return {
            _name(name, key): read(name, item) for key, item in _check(name, value, dict).items()
        }

    return check


_floats_by_name = _dict_of(_float)


#: Every top-level field of format 3 but the nested ones: how to read it, and its value in
#: a state written before the field existed (copied: a release adding a field adds it here).
_SCALARS: dict[str, tuple[Callable[[str, object], Any], Any]] = {
    "offset": (_int, -1),
    "first_seen_ms": (_int, 0),
    "last_seen_ms": (_int, 0),
    "counts": (_list_of(_int), [0, 0, 0, 0]),
    "sessions": (_int, 0),
    "session_start_ms": (_optional(_int), None),
    "session_events": (_int, 0),
    "session_watch_s": (_float, 0.0),
    "session_searched": (_bool, False),
    "session_played": (_bool, False),
    "watch_s": (_float, 0.0),
    "playing_item": (_optional(_name), None),
    "playing_position_s": (_float, 0.0),
    "playing_since_ms": (_int, 0),
    "playing_duration_s": (_optional(_float), None),
    "current_item": (_optional(_name), None),
    "clicked_item": (_optional(_name), None),
    "finished": (_names, []),
    "risk_band": (_optional(_name), None),
    "segment": (_optional(_int), None),
    "reco_at_ms": (_int, 0),
    "reco_items": (_names, []),
    "trending_items": (_names, []),
    "experiments": (_dict_of(_name), EMPTY),  # since 2026-12 (EMPTY == {})
}
#: The decayed counters of :class:`~pipeline.core.features.UserFeatures`, by layout number, in
#: the order they are packed (``events_7d`` holds one count per event type).
COUNTER_LAYOUTS: dict[int, tuple[str, ...]] = {
    1: (
        "sessions_7d", "sessions_28d", "events_7d", "events_7d", "events_7d", "events_7d",
        "watch_s_7d", "completion_sum", "completion_n", "search_only_sessions", "clicks",
        "clicks_played", "tv_events", "all_events", "gap_mean_days",
    ),
    2: COUNTERS,  # since 2026-12: last week's engagement counters too
}  # fmt: skip
COUNTER_LAYOUT: Final = 2
#: The churn features of a pending prediction, by layout number, in the order packed.
CHURN_FEATURE_LAYOUTS: dict[int, tuple[str, ...]] = {1: CHURN_FEATURES_V1, 2: CHURN_FEATURES}
CHURN_FEATURE_LAYOUT: Final = 2


def _last_week(named: dict[str, float], names: tuple[str, ...]) -> list[float]:
    """``names``' values; a 7-day one an older layout lacks is read as its 28-day one.

    Layouts before 2 kept the engagement counters and ratios over 28 days only: their
    last week's starts as the longer view (the ratios are the same), and decays to the
    user's own as they watch.

    >>> _last_week({"clicks": 4.0}, ("clicks", "clicks_7d"))
    [4.0, 4.0]
    """
    return [named[name] if name in named else named[name.removesuffix("_7d")] for name in names]


_NESTED = (
    "partition", "features", "recent_ids", "pending", "format", "kpis", "artwork", "crm"
)  # fmt: skip
_get_scalars = operator.attrgetter(*_SCALARS)


def _at_default(default: object) -> Callable[[object], bool]:
    """Whether a value is exactly ``default``: same type, same value, same sign of zero."""
    if default is None or type(default) is bool:
        return lambda value: value is default
    if isinstance(default, Mapping):  # a dict, or the shared EMPTY: any empty one
        return lambda value: isinstance(value, Mapping) and not value
    if type(default) is float:
        return lambda value: type(value) is float and value == default and (
            math.copysign(1.0, value) == math.copysign(1.0, default)
        )  # fmt: skip
    kind = type(default)
    return lambda value: type(value) is kind and value == default


#: Per scalar field, whether a value is its default: such a value is not written.
_DEFAULT_TESTS = tuple(_at_default(default) for _, default in _SCALARS.values())
_KNOWN = frozenset(_SCALARS) | frozenset(_NESTED)
#: Per scalar field: its name, how to read it, its default, and whether a state gets a copy
#: of the default (a container's copy; every other default is immutable, and shared).
_READ_SCALARS = tuple(
    (name, read, default, type(default) in (list, dict, set))
    for name, (read, default) in _SCALARS.items()
)


# --- writing ----------------------------------------------------------------------------


def encode(state: UserState) -> bytes:
    """The stored form of ``state``: format :data:`FORMAT`, named fields."""
    pending = state.pending
    features = state.features
    record: dict[str, Any] = {
        **state.extra,
        "format": FORMAT,
        "partition": state.partition,
        **{
            name: value
            for name, value, at_default in zip(
                _SCALARS, _get_scalars(state), _DEFAULT_TESTS, strict=True
            )
            if not at_default(value)
        },
        "features": {
            "at_ms": features.at_ms,
            "previous_session_end_ms": features.previous_session_end_ms,
            "genre_affinity": features.genre_affinity,
            "counters": {
                "layout": COUNTER_LAYOUT,
                # held in COUNTER_LAYOUT's order (tests/unit/core/test_features.py)
                "f64": _pack(features.counters),
            },
        },  # fmt: skip
        "recent_ids": base64.b64encode(state.recent_ids.to_bytes()).decode("ascii"),
    }
    if pending is not None:  # absent: none (read as null by every format-3 release)
        record["pending"] = {
            "predicted_at_ms": pending.predicted_at_ms,
            "last_seen_ms": pending.last_seen_ms,
            "features": {"layout": CHURN_FEATURE_LAYOUT, "f64": _pack(pending.features)},
            "probabilities": pending.probabilities,
            **({"rescores": pending.rescores} if pending.rescores else {}),
        }
    if state.kpis is not None:  # since 2026-12; absent from a state without KPI windows
        record["kpis"] = state.kpis.to_json()
    if state.artwork is not None:  # since 2026-12; absent from a state never shown artwork
        record["artwork"] = state.artwork.to_json()
    if state.crm is not None:  # since 2026-12; absent from a state no trigger rule touched
        record["crm"] = state.crm.to_json()
    return orjson.dumps(record, default=_fields)


def _fields(value: object) -> tuple[Any, ...]:
    """A named tuple (orjson writes plain tuples only) as the array of its fields."""
    if isinstance(value, tuple):
        return tuple(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _pack(values: Sequence[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}d", *values)).decode("ascii")


# --- reading ----------------------------------------------------------------------------


def decode(user_id: str, data: bytes, *, window_ms: int, max_ids: int) -> UserState:
    """Read a stored state of any released format (see the module docstring).

    Raises
    ------
    StateUnreadable
        When ``data`` is not a state any release wrote.
    """
    from pipeline.core.state import PendingChurn, UserState

    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise StateUnreadable("not_json", str(exc)) from None
    if type(obj) is list:
        obj = _from_format_2(obj)
    if type(obj) is not dict:
        raise StateUnreadable("not_a_state", f"a JSON {type(obj).__name__}")
    fmt = obj.get("format")
    if type(fmt) is not int or fmt < 3:
        raise StateUnreadable("unknown_format", f"format {fmt!r}")
    try:
        ids = RecentIds.from_bytes(
            base64.b64decode(_str("recent_ids", obj.get("recent_ids", "")), validate=True),
            window_ms=window_ms,
            max_ids=max_ids,
        )
    except (binascii.Error, ValueError) as exc:
        if isinstance(exc, StateUnreadable):
            raise
        raise StateUnreadable("wrong_type", f"recent_ids: {exc}") from None
    values = {
        name: read(name, obj[name]) if name in obj else default.copy() if copied else default
        for name, read, default, copied in _READ_SCALARS
    }
    return UserState(
        user_id,
        _int("partition", obj.get("partition")),
        ids,
        features=_features(_check("features", obj.get("features", {}), dict)),
        pending=_pending(PendingChurn, obj.get("pending")),
        kpis=_kpis(user_id, obj.get("kpis")),
        artwork=_artwork(obj.get("artwork")),
        crm=_crm(obj.get("crm")),
        extra={name: value for name, value in obj.items() if name not in _KNOWN} or EMPTY,
        **values,
    )


def _features(obj: dict[str, Any]) -> UserFeatures:
    values: dict[str, Any] = {
        "at_ms": _int("features.at_ms", obj.get("at_ms", 0)),
        "previous_session_end_ms": _int(
            "features.previous_session_end_ms", obj.get("previous_session_end_ms", 0)
        ),
        "genre_affinity": _floats_by_name("features.genre_affinity", obj.get("genre_affinity", {})),
    }
    if "counters" in obj:
        names = _layout("features.counters", obj["counters"], COUNTER_LAYOUTS)
        floats = _unpacked("features.counters", obj["counters"], len(names))
        if names is COUNTERS:  # this release's layout: the array as stored
            return UserFeatures.of_counters(
                values["at_ms"], values["previous_session_end_ms"], values["genre_affinity"], floats
            )
        named = list(zip(names, floats, strict=True))
        values["events_7d"] = [value for name, value in named if name == "events_7d"]
        values |= {name: value for name, value in named if name != "events_7d"}
        if names is not COUNTERS:
            singles = tuple(name for name in dict.fromkeys(COUNTERS) if name != "events_7d")
            values |= zip(singles, _last_week(values, singles), strict=True)
    return UserFeatures(**values)


def _layout(name: str, obj: object, layouts: dict[int, tuple[str, ...]]) -> tuple[str, ...]:
    layout = _check(name, obj, dict).get("layout")
    if type(layout) is not int or layout not in layouts:
        raise StateUnreadable("unknown_format", f"{name}: layout {layout!r}")
    return layouts[layout]


def _unpacked(name: str, obj: dict[str, Any], count: int) -> list[float]:
    try:
        floats = unpack_floats(_str(f"{name}.f64", obj.get("f64")))
    except (ValueError, struct.error) as exc:  # binascii.Error, and text that is not ASCII
        raise StateUnreadable("wrong_type", f"{name}.f64: {exc}") from None
    if len(floats) != count:
        raise StateUnreadable("wrong_type", f"{name}.f64: {len(floats)} floats, not {count}")
    return floats


def _pending(cls: type[PendingChurn], obj: object) -> PendingChurn | None:
    if obj is None:
        return None
    fields = _check("pending", obj, dict)
    names = _layout("pending.features", fields.get("features"), CHURN_FEATURE_LAYOUTS)
    features = _unpacked("pending.features", fields["features"], len(names))
    if names is not CHURN_FEATURES:
        features = _last_week(dict(zip(names, features, strict=True)), CHURN_FEATURES)
    return cls(
        _int("pending.predicted_at_ms", fields.get("predicted_at_ms")),
        _int("pending.last_seen_ms", fields.get("last_seen_ms")),
        array("d", features),
        _floats_by_name("pending.probabilities", fields.get("probabilities")),
        _floats_by_name("pending.rescores", fields["rescores"])  # absent before, and none
        if "rescores" in fields
        else EMPTY,
    )


#: What reading a part (KPIs, artworks, CRM) of the wrong shape raises, from deep inside it:
#: a state no release wrote, refused as ``wrong_type``.
_MALFORMED = (ValueError, TypeError, KeyError, IndexError, AttributeError)


def _kpis(user_id: str, obj: object) -> UserKpis | None:
    from pipeline.kpis.windows import UserKpis

    if obj is None:
        return None
    try:
        return UserKpis.from_json(obj, user_id)
    except _MALFORMED as exc:
        raise StateUnreadable("wrong_type", f"kpis: {type(exc).__name__}: {exc}") from None


def _artwork(obj: object) -> UserArtwork | None:
    from pipeline.core.artwork import UserArtwork

    if obj is None:
        return None
    try:
        return UserArtwork.from_json(_check("artwork", obj, dict))
    except _MALFORMED as exc:
        raise StateUnreadable("wrong_type", f"artwork: {type(exc).__name__}: {exc}") from None


def _crm(obj: object) -> UserCrm | None:
    from pipeline.crm.triggers import UserCrm

    if obj is None:
        return None
    try:
        return UserCrm.from_json(_check("crm", obj, dict))
    except _MALFORMED as exc:
        raise StateUnreadable("wrong_type", f"crm: {type(exc).__name__}: {exc}") from None


# --- migrations -------------------------------------------------------------------------

#: Format 2's positional layout: the name of each position (0 is the format number).
_FORMAT_2 = (
    "format", "partition", "offset", "first_seen_ms", "last_seen_ms", "counts", "sessions",
    "session_start_ms", "session_events", "session_watch_s", "session_searched",
    "session_played", "watch_s", "playing_item", "playing_position_s", "playing_since_ms",
    "playing_duration_s", "current_item", "clicked_item", "finished", "features",
    "recent_ids", "reco_at_ms", "pending", "risk_band", "segment", "reco_items",
    "trending_items",
)  # fmt: skip


def _from_format_2(values: list[Any]) -> dict[str, Any]:
    """Format 2 (positional array) as the named fields of format 3."""
    if len(values) != len(_FORMAT_2) or values[0] != 2:
        raise StateUnreadable(
            "unknown_format", f"an array of {len(values)} fields starting {values[:1]!r}"
        )
    obj = dict(zip(_FORMAT_2, values, strict=True))
    try:  # the packed floats of format 2 are layouts 1 of format 3
        at_ms, previous_end_ms, packed, affinity = obj["features"]
        obj["features"] = {
            "at_ms": at_ms,
            "previous_session_end_ms": previous_end_ms,
            "genre_affinity": affinity,
            "counters": {"layout": 1, "f64": packed},
        }
        if obj["pending"]:
            predicted_at_ms, last_seen_ms, packed_x, probabilities = obj["pending"]
            obj["pending"] = {"predicted_at_ms": predicted_at_ms, "last_seen_ms": last_seen_ms,
                              "features": {"layout": 1, "f64": packed_x},
                              "probabilities": probabilities}  # fmt: skip
        else:
            obj["pending"] = None
    except (TypeError, ValueError) as exc:
        raise StateUnreadable("wrong_type", f"format 2: {exc}") from None
    obj["format"] = FORMAT
    return obj
