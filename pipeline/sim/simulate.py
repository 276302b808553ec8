r"""Deterministic synthetic OTT traffic: a catalog, an audience and their events, in time order.

:class:`Simulator` puts together a :class:`~pipeline.sim.synthetic_catalog.Catalog`
(films and series with Zipf popularity and new releases), an audience of
:class:`~pipeline.sim.audience.UserProfile` s (tastes, habits, churners who drift away) and
their :class:`~pipeline.sim.viewing.Viewer` behaviour (sessions of ``search``, ``click``,
``play``, ``pause``). The viewers' streams are merged on a heap in event-time order and
generated lazily: memory grows with the number of viewers and items, not of events. The
same :class:`SimulationConfig` gives the same bytes.

:meth:`Simulator.records` adds what a client fleet also sends: retries (the same bytes
again, seconds later) at ``duplicate_rate`` and malformed records (every kind of
:data:`MALFORMED_KINDS`) at ``bad_rate``.

A viewer emits about 5.4 events a day on average (2.7 sessions a week of 14 events:
43 % play, 43 % pause, 12 % click, 2 % search), so 2,000 users × 30 days make about
310,000 events, and 5,000 users × 90 days 2.5 million (in about 100 MB of memory).
Generation runs at about 87,000 records/s on one core, of which encoding the events
to JSON takes 40 % (140,000 events/s before encoding), measured with::

    python -c "from pipeline.sim.simulate import *; import time; t = time.process_time(); \
    n = sum(1 for _ in Simulator(SimulationConfig(users=2000, days=30, seed=1)).records()); \
    print(n, n / (time.process_time() - t))"

Examples
--------
>>> sim = Simulator(SimulationConfig(users=30, days=14, seed=7))
>>> events = list(sim.events())
>>> sorted({event.type for event in events})
['click', 'pause', 'play', 'search']
>>> all(a.ts_ms <= b.ts_ms for a, b in zip(events, events[1:]))
True
>>> next(sim.records()) == (events[0].user_id.encode(), encode_event(events[0]))
True
>>> len(sim.truth.churners), sorted(sim.catalog()[0])
(8, ['duration_s', 'genres', 'item_id', 'title'])
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from pipeline.core.events import Event, encode_event, format_ts
from pipeline.sim.audience import DAY_MS, UserProfile, draw_profiles
from pipeline.sim.scenarios import SCENARIOS
from pipeline.sim.synthetic_catalog import Catalog
from pipeline.sim.viewing import Viewer

__all__ = [
    "MALFORMED_KINDS",
    "GroundTruth",
    "SimulationConfig",
    "Simulator",
    "malformed_record",
    "write_catalog",
    "write_jsonl",
]


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """What to simulate.

    Parameters
    ----------
    users
        Number of viewers.
    days
        Length of the simulated period.
    seed
        Seed of every random draw: the same config gives the same bytes.
    start_ms
        Start of the period, epoch milliseconds (default 2026-01-01T00:00:00Z).
    catalog_size
        Number of playable items (films and episodes); None for
        ``max(500, min(users, 5000))``.
    churn_fraction
        Share of viewers who drift away and leave for good during the period.
    new_user_fraction
        Share of viewers who sign up during the first 60 % of the period.
    bad_rate
        Malformed records added per valid record, on average.
    duplicate_rate
        Client retries added per valid record, on average.
    scenario
        The behaviours of the audience, by name (:data:`~pipeline.sim.scenarios.SCENARIOS`):
        ``baseline`` (the default audience), ``breaks``, ``sudden``, ``returners``, ``all``.
    """

    users: int
    days: float
    seed: int
    start_ms: int = 1_767_225_600_000
    catalog_size: int | None = None
    churn_fraction: float = 0.25
    new_user_fraction: float = 0.1
    bad_rate: float = 0.0
    duplicate_rate: float = 0.0
    scenario: str = "baseline"

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario {self.scenario!r}: one of {', '.join(SCENARIOS)}")
        if self.users < 1 or self.days <= 0:
            raise ValueError("users must be at least 1 and days positive")
        for name in ("churn_fraction", "new_user_fraction", "bad_rate", "duplicate_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")

    @property
    def end_ms(self) -> int:
        """End of the simulated period (exclusive), epoch milliseconds."""
        return self.start_ms + int(self.days * DAY_MS)

    @property
    def catalog_items(self) -> int:
        """The catalog size in effect."""
        return self.catalog_size or max(500, min(self.users, 5000))


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """What the simulation knows and the models must infer.

    Attributes
    ----------
    leave_ms
        Every churner, and the event time from which they never emit again. Most of
        them come back once 1–48 hours before it; the others stop earlier.
    joined_ms
        Every viewer's sign-up time (before the period for most).
    """

    leave_ms: dict[str, int]
    joined_ms: dict[str, int]

    @property
    def churners(self) -> frozenset[str]:
        """The viewers who leave during the period."""
        return frozenset(self.leave_ms)


class Simulator:
    """Synthetic OTT traffic for a :class:`SimulationConfig`; see the module docstring."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self._catalog = Catalog(
            size=config.catalog_items,
            seed=config.seed,
            start_ms=config.start_ms,
            end_ms=config.end_ms,
        )
        self.profiles: list[UserProfile] = draw_profiles(
            config.users,
            seed=config.seed,
            start_ms=config.start_ms,
            end_ms=config.end_ms,
            churn_fraction=config.churn_fraction,
            new_user_fraction=config.new_user_fraction,
            behaviours=SCENARIOS[config.scenario],
        )
        self.truth = GroundTruth(
            leave_ms={p.user_id: p.leave_ms for p in self.profiles if p.leave_ms is not None},
            joined_ms={p.user_id: p.joined_ms for p in self.profiles},
        )

    def catalog(self) -> list[dict[str, object]]:
        """Return the catalog as ``ott.catalog`` records, one per item."""
        return self._catalog.records()

    def events(self) -> Iterator[Event]:
        """Generate every valid event lazily, in event-time order (ties by viewer)."""
        config = self.config
        heap = []
        for index, profile in enumerate(self.profiles):
            viewer = Viewer(
                profile,
                self._catalog,
                seed=config.seed,
                start_ms=config.start_ms,
                end_ms=config.end_ms,
            )
            stream = viewer.events()
            first = next(stream, None)
            if first is not None:
                heap.append((first.ts_ms, index, first, stream))
        heapq.heapify(heap)
        while heap:
            _, index, event, stream = heap[0]
            yield event
            following = next(stream, None)
            if following is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (following.ts_ms, index, following, stream))

    def records(self) -> Iterator[tuple[bytes, bytes]]:
        """Generate ``(key, value)`` records as clients send them: events, retries, bad input.

        Valid events come in event-time order, keyed by ``user_id``. A retry repeats the
        exact bytes of an earlier event 0.2–20 s (of event time) later, so its ``ts`` is a
        little behind its neighbours'. A malformed record follows the event it was made
        from, with the same key. Retries and malformed records are drawn from their own
        random stream: the valid events do not depend on ``bad_rate`` or ``duplicate_rate``.
        """
        config = self.config
        noise = random.Random(f"{config.seed}/noise")
        retries: list[tuple[int, int, bytes, bytes]] = []
        for sequence, event in enumerate(self.events()):
            while retries and retries[0][0] <= event.ts_ms:
                _, _, key, value = heapq.heappop(retries)
                yield key, value
            key, value = event.user_id.encode(), encode_event(event)
            yield key, value
            if config.duplicate_rate and noise.random() < config.duplicate_rate:
                due_ms = event.ts_ms + noise.randint(200, 20_000)
                heapq.heappush(retries, (due_ms, sequence, key, value))
            if config.bad_rate and noise.random() < config.bad_rate:
                yield key, malformed_record(noise.choice(MALFORMED_KINDS), noise, event)
        for _, _, key, value in sorted(retries):
            yield key, value


_FUTURE_MS = 4_115_491_200_000  # 2100-06-01T00:00:00Z
_UNKNOWN_TYPES = ("rewind", "share", "heartbeat")
_BAD_TIMESTAMPS = ("yesterday", "2026-13-45T25:61:00Z", "01/02/2026 10:00", "2026-02-30T10:00:00Z")
_REQUIRED_FIELDS = {
    "play": ("item_id", "position_s"),
    "pause": ("item_id", "position_s"),
    "search": ("query",),
    "click": ("item_id", "surface"),
}
_MISTYPED: dict[str, tuple[str, Callable[[object], object]]] = {
    "play": ("position_s", str),
    "pause": ("position_s", str),
    "search": ("results_count", lambda count: f"{count} results"),
    "click": ("rank", bool),
}


def _edited(base: Event, edit: Callable[[dict[str, object]], object]) -> bytes:
    """Encode ``base``, after ``edit`` changed its JSON object in place."""
    document = orjson.loads(encode_event(base))
    edit(document)
    return orjson.dumps(document)


def _truncated(rng: random.Random, base: Event) -> bytes:
    value = encode_event(base)
    return value[: rng.randint(1, len(value) - 1)]


def _invalid_utf8(rng: random.Random, base: Event) -> bytes:
    marker = "\u2063" * 3  # invisible separators, replaced by bytes that are not UTF-8
    value = encode_event(dataclasses.replace(base, device=marker))
    return value.replace(marker.encode(), rng.choice([b"tv\xff", b"\xc3\x28", b"\xed\xa0\x80"]))


def _missing_field(rng: random.Random, base: Event) -> bytes:
    field = rng.choice(("event_id", "type", "user_id", "ts", *_REQUIRED_FIELDS[base.type]))
    return _edited(base, lambda document: document.pop(field))


def _wrong_type(rng: random.Random, base: Event) -> bytes:
    field, convert = rng.choice([_MISTYPED[base.type], ("user_id", lambda _: 12345)])
    return _edited(base, lambda document: document.update({field: convert(document[field])}))


def _unknown_type(rng: random.Random, base: Event) -> bytes:
    kind = rng.choice(_UNKNOWN_TYPES)
    return _edited(base, lambda document: document.update(type=kind))


def _oversized(rng: random.Random, base: Event) -> bytes:
    padding = "x" * rng.randint(17_000, 40_000)
    return _edited(base, lambda document: document.update(padding=padding))


def _future_ts(rng: random.Random, base: Event) -> bytes:
    ts = format_ts(_FUTURE_MS + rng.randint(0, 200 * DAY_MS))
    return _edited(base, lambda document: document.update(ts=ts))


def _bad_ts(rng: random.Random, base: Event) -> bytes:
    ts = rng.choice(_BAD_TIMESTAMPS)
    return _edited(base, lambda document: document.update(ts=ts))


def _empty(rng: random.Random, base: Event) -> bytes:
    return b""


_MALFORMERS: dict[str, Callable[[random.Random, Event], bytes]] = {
    "not_json": _truncated,
    "invalid_utf8": _invalid_utf8,
    "missing_field": _missing_field,
    "wrong_type": _wrong_type,
    "unknown_type": _unknown_type,
    "oversized": _oversized,
    "future_ts": _future_ts,
    "bad_ts": _bad_ts,
    "empty": _empty,
}

MALFORMED_KINDS: tuple[str, ...] = tuple(_MALFORMERS)
"""The kinds of bad input :meth:`Simulator.records` mixes in, in equal shares."""


def malformed_record(kind: str, rng: random.Random, base: Event) -> bytes:
    """Make a record value of the malformed ``kind`` from the valid event ``base``.

    Parameters
    ----------
    kind
        One of :data:`MALFORMED_KINDS`: ``not_json`` (truncated JSON), ``invalid_utf8``,
        ``missing_field`` (a required one), ``wrong_type`` (a string ``position_s``, a
        boolean ``rank``...), ``unknown_type``, ``oversized`` (more than 16 KiB),
        ``future_ts`` (in the year 2100), ``bad_ts`` (not RFC 3339) or ``empty``.
    rng
        Source of the details: which field, which bad bytes.
    base
        The event to spoil.

    Examples
    --------
    >>> from pipeline.core.events import EventDecoder
    >>> base = Event("e1", "play", "u1", 1_767_225_600_000, item_id="film-00001", position_s=0.0)
    >>> decoder = EventDecoder(clock=lambda: 1_767_225_600.0)
    >>> [decoder.decode(malformed_record(kind, random.Random(0), base)).reason
    ...  for kind in MALFORMED_KINDS]  # doctest: +NORMALIZE_WHITESPACE
    ['not_json', 'not_utf8', 'missing_field', 'wrong_type', 'unknown_type', 'oversized',
     'future_timestamp', 'bad_timestamp', 'empty']
    """
    if kind not in _MALFORMERS:
        raise ValueError(f"unknown malformed kind {kind!r}; expected one of {MALFORMED_KINDS}")
    return _MALFORMERS[kind](rng, base)


def write_jsonl(records: Iterable[tuple[bytes, bytes]], path: str | Path) -> int:
    """Write the values of ``records`` to ``path``, one per line; return how many.

    No record value contains a newline (an empty value is an empty line), so each line
    is one record.
    """
    count = 0
    with open(path, "wb") as out:
        for _, value in records:
            out.write(value + b"\n")
            count += 1
    return count


def write_catalog(items: Iterable[dict[str, object]], path: str | Path) -> int:
    """Write catalog records to ``path``, one JSON object per line; return how many."""
    count = 0
    with open(path, "wb") as out:
        for item in items:
            out.write(orjson.dumps(item) + b"\n")
            count += 1
    return count
