"""Deterministic synthetic OTT traffic: viewers with tastes and habits, sessions, and churners.

Each viewer has a genre taste concentrated on two to four genres, a preferred device,
a country (and so a time zone), habitual viewing hours, a session rate between about
one and fourteen sessions a week, more or less viewing at weekends, and a few short
vacations. A session is a sequence such as ``search → click → play → pause → play →
pause``: viewers find titles on surfaces (``continue_watching``, ``home_row``,
``trending``, ``search``), pick them in proportion to popularity × taste, skip what they
finished, continue series episode after episode, and finish or abandon items depending
on how well the item matches their taste.

A quarter of the viewers (``churn_fraction``) drift away: over their last two to five
weeks they come less often, watch less, finish less, and search more without playing;
then they leave and never emit again. Some loyal viewers go through slumps of one to
three weeks and come back, so low activity alone does not mean churn.

The event stream is the per-viewer streams merged on a heap in event-time order,
generated lazily (memory grows with the number of viewers, not of events); the same
:class:`SimulationConfig` gives the same bytes. A viewer emits about 7 events per
active day on average (2,000 users × 30 days ≈ 380,000 events). Generation runs at
about NNN,000 events/s on one core, encoded to bytes::

    python -c "from pipeline.simulate import *; \\
        print(sum(1 for _ in Simulator(SimulationConfig(users=2000, days=30, seed=1)).records()))"

Examples
--------
>>> sim = Simulator(SimulationConfig(users=30, days=14, seed=7))
>>> events = list(sim.events())
>>> sorted({event.type for event in events})
['click', 'pause', 'play', 'search']
>>> all(a.ts_ms <= b.ts_ms for a, b in zip(events, events[1:]))
True
>>> [(key, value) for key, value in sim.records()][0] == (
...     events[0].user_id.encode(), encode_event(events[0]))
True
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from pipeline.catalog import GENRE_SHARE, GENRES, Catalog
from pipeline.events import Event, encode_event, format_ts

__all__ = [
    "MALFORMED_KINDS",
    "GroundTruth",
    "SimulationConfig",
    "Simulator",
    "UserProfile",
    "malformed_record",
    "write_catalog",
    "write_jsonl",
]

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
_MIN_SESSION_GAP_MS = 45 * 60_000  # well above the 30-minute session gap downstream
_GAP_SHAPE = 3.0
_FAREWELL_SHARE = 0.85  # churners who visit once more, just before they leave  # gamma shape of the time between sessions: habits are fairly regular
_FAVOURITE_SHARE = np.sqrt(GENRE_SHARE) / np.sqrt(GENRE_SHARE).sum()
_DEVICES = ("tv", "mobile", "web", "tablet")
_DEVICE_SHARE = (0.45, 0.30, 0.15, 0.10)
_WATCH_STRETCH_S = {"tv": 2700.0, "mobile": 900.0, "web": 1800.0, "tablet": 1500.0}
_COUNTRIES = ("US", "BR", "MX", "CA", "GB", "DE", "FR", "ES", "IN", "JP", "AU")
_COUNTRY_SHARE = (0.30, 0.10, 0.06, 0.05, 0.10, 0.09, 0.08, 0.06, 0.08, 0.05, 0.03)
_UTC_OFFSET_H = (-5.0, -3.0, -6.0, -5.0, 0.0, 1.0, 1.0, 1.0, 5.5, 9.0, 10.0)


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
        Number of playable items; by default ``max(500, min(users, 5000))``.
    churn_fraction
        Share of viewers who drift away and leave for good during the period.
    new_user_fraction
        Share of viewers who sign up during the first 60 % of the period.
    bad_rate
        Malformed records added per valid record, on average (see :data:`MALFORMED_KINDS`).
    duplicate_rate
        Client retries added per valid record: the same bytes again 0.2–20 s later.
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

    def __post_init__(self) -> None:
        if self.users < 1 or self.days <= 0:
            raise ValueError("users must be at least 1 and days positive")
        for name in ("churn_fraction", "new_user_fraction", "bad_rate", "duplicate_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")

    @property
    def end_ms(self) -> int:
        """End of the simulated period (exclusive), epoch milliseconds."""
        return self.start_ms + int(self.days * DAY_MS)

    @property
    def items(self) -> int:
        """The catalog size in effect."""
        return self.catalog_size or max(500, min(self.users, 5000))


@dataclass(frozen=True, slots=True)
class UserProfile:
    """Who a viewer is and how their engagement evolves; drawn once, never changed.

    ``engagement`` is 1 for a viewer in their habits; it falls during a slump and, for
    a churner, falls linearly to 0 over ``decline_ms`` before ``leave_ms``.
    """

    user_id: str
    taste: tuple[float, ...]
    device: str
    country: str
    utc_offset_ms: int
    habitual_hours: tuple[float, float]
    sessions_per_week: float
    weekend_boost: float
    binge: float
    joined_ms: int
    leave_ms: int | None
    decline_ms: int
    slump: tuple[int, int, float] | None
    vacations: tuple[tuple[int, int], ...]

    def engagement(self, ts_ms: int) -> float:
        """How engaged the viewer is at ``ts_ms``, from 0 (gone) to 1 (in their habits)."""
        level = 1.0
        if self.leave_ms is not None and ts_ms > self.leave_ms - self.decline_ms:
            level = max(0.0, (self.leave_ms - ts_ms) / self.decline_ms)
        if self.slump is not None and self.slump[0] <= ts_ms < self.slump[1]:
            level *= self.slump[2]
        return level

    def vacation_end(self, ts_ms: int) -> int | None:
        """The end of the vacation ``ts_ms`` falls in, or None."""
        for start, end in self.vacations:
            if start <= ts_ms < end:
                return end
        return None

    def is_weekend(self, ts_ms: int) -> bool:
        """Whether ``ts_ms`` is a Saturday or Sunday where the viewer lives."""
        return ((ts_ms + self.utc_offset_ms) // DAY_MS + 3) % 7 >= 5


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """What the simulation knows and the models must infer.

    ``leave_ms`` maps every churner to the event time after which they never emit;
    ``joined_ms`` maps every viewer to their sign-up time (before the period for most).
    """

    leave_ms: dict[str, int]
    joined_ms: dict[str, int]

    @property
    def churners(self) -> frozenset[str]:
        """The viewers who leave during the period."""
        return frozenset(self.leave_ms)


class SessionRecorder:
    """The events of one session, stamped on a clock that moves as the viewer acts."""

    __slots__ = ("events", "now_ms", "device", "_rng", "_user_id", "_session_id", "_country")

    def __init__(self, rng: random.Random, profile: UserProfile, start_ms: int) -> None:
        self.events: list[Event] = []
        self.now_ms = start_ms
        self.device = profile.device if rng.random() < 0.85 else rng.choice(_DEVICES)
        self._rng = rng
        self._user_id = profile.user_id
        self._session_id = _uuid(rng)
        self._country = profile.country

    def playback(self, kind: str, item_id: str, position_s: float, duration_s: float) -> None:
        """Record a ``play`` or ``pause`` of ``item_id`` at ``position_s``."""
        self.events.append(
            Event(
                _uuid(self._rng), kind, self._user_id, self.now_ms, item_id=item_id,
                position_s=position_s, duration_s=duration_s, session_id=self._session_id,
                device=self.device, country=self._country,
            )
        )  # fmt: skip

    def search(self, query: str, results_count: int) -> None:
        """Record a ``search`` for ``query`` that found ``results_count`` titles."""
        self.events.append(
            Event(
                _uuid(self._rng), "search", self._user_id, self.now_ms, query=query,
                results_count=results_count, session_id=self._session_id, device=self.device,
                country=self._country,
            )
        )  # fmt: skip

    def click(self, item_id: str, surface: str, rank: int) -> None:
        """Record a ``click`` on ``item_id`` shown at ``rank`` on ``surface``."""
        self.events.append(
            Event(
                _uuid(self._rng), "click", self._user_id, self.now_ms, item_id=item_id,
                surface=surface, rank=rank, session_id=self._session_id, device=self.device,
                country=self._country,
            )
        )  # fmt: skip

    def wait(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self.now_ms += int(seconds * 1000.0)


class Viewer:
    """One viewer's behaviour: when sessions happen and what happens in them."""

    def __init__(
        self, profile: UserProfile, catalog: Catalog, *, seed: int, start_ms: int, end_ms: int
    ) -> None:
        self.profile = profile
        self.catalog = catalog
        self.rng = random.Random(f"{seed}/{profile.user_id}")
        self.start_ms = start_ms
        self.stop_ms = end_ms if profile.leave_ms is None else min(end_ms, profile.leave_ms)
        self.taste_cumulative = list(np.cumsum(profile.taste))
        self.taste_peak = max(profile.taste)
        peak = max(profile.weekend_boost, 1.0)
        self.activity_scale = 1.0 / peak
        week_mean = (5.0 + 2.0 * profile.weekend_boost) / 7.0
        self.mean_gap_days = 7.0 * week_mean / (profile.sessions_per_week * peak)
        self.in_progress: dict[int, float] = {}  # item → position, least recent first
        self.next_episode: dict[int, int] = {}  # series title → episode to watch next
        self.completed: set[int] = set()  # titles finished

    def events(self) -> Iterator[Event]:
        """The viewer's events, in time order, until they leave or the period ends."""
        joined_ms = self.profile.joined_ms
        if joined_ms >= self.start_ms:
            start: int | None = joined_ms  # a newcomer's first session is at sign-up
        else:
            phase_ms = int(self.rng.random() * self.mean_gap_days * DAY_MS)
            start = self.next_session_start(self.start_ms - phase_ms)
        farewell = self.profile.leave_ms is not None and self.rng.random() < _FAREWELL_SHARE
        while start is not None:
            session = self.session(start)
            if session.now_ms >= self.stop_ms:  # cut short: the period ends or the viewer leaves
                yield from (event for event in session.events if event.ts_ms < self.stop_ms)
                return
            yield from session.events
            start = self.next_session_start(session.now_ms)
            if start is None and farewell:
                farewell = False
                start = self._farewell_start(session.now_ms)

    def _farewell_start(self, after_ms: int) -> int:
        """A churner's last visit, hours before they leave: they browse, then cancel."""
        before_leaving_ms = self.stop_ms - int(self.rng.uniform(1.0, 48.0) * HOUR_MS)
        return max(before_leaving_ms, after_ms + _MIN_SESSION_GAP_MS)

    def next_session_start(self, after_ms: int) -> int | None:
        """When the next session starts after ``after_ms``, or None if not before the end."""
        profile, rng = self.profile, self.rng
        while True:
            gap_ms = rng.gammavariate(_GAP_SHAPE, self.mean_gap_days / _GAP_SHAPE) * DAY_MS
            start = self._at_habitual_hour(after_ms + int(gap_ms), after_ms + _MIN_SESSION_GAP_MS)
            if start >= self.stop_ms:
                return None
            vacation_end = profile.vacation_end(start)
            weekend = profile.weekend_boost if profile.is_weekend(start) else 1.0
            activity = profile.engagement(start) * weekend * self.activity_scale
            if vacation_end is None and start >= self.start_ms and rng.random() < activity:
                return start
            after_ms = vacation_end or start

    def _at_habitual_hour(self, ts_ms: int, earliest_ms: int) -> int:
        """The first habitual hour of the viewer from the local day of ``ts_ms`` on.

        A viewer has a main viewing hour (seven sessions in ten) and a secondary one, each
        give or take an hour; none starts before ``earliest_ms``.
        """
        rng, offset_ms = self.rng, self.profile.utc_offset_ms
        main, secondary = self.profile.habitual_hours
        first, second = (main, secondary) if rng.random() < 0.7 else (secondary, main)
        day_ms = (ts_ms + offset_ms) // DAY_MS * DAY_MS - offset_ms
        jitter = rng.gauss(0.0, 1.0)
        for start in (day_ms + (hour + jitter) * HOUR_MS for hour in (first, second)):
            if start >= earliest_ms:
                return int(start)
        return max(int(day_ms + DAY_MS + (first + jitter) * HOUR_MS), earliest_ms)

    def session(self, start_ms: int) -> SessionRecorder:
        """Play out one session starting at ``start_ms``."""
        engagement = self.profile.engagement(start_ms)
        session = SessionRecorder(self.rng, self.profile, start_ms)
        intents = 1 + _poisson(self.rng, self.profile.binge * engagement)
        while intents > 0:
            intents -= 1
            opened = self._open(session, engagement)
            while opened is not None:
                finished = self._watch(session, *opened, engagement)
                opened = self._autoplay(opened[0]) if finished and intents > 0 else None
                intents -= opened is not None
            session.wait(self.rng.uniform(5.0, 90.0))
        return session

    def _open(self, session: SessionRecorder, engagement: float) -> tuple[int, float] | None:
        """Find something to watch on a surface; the item and start position, or None."""
        rng = self.rng
        if self.in_progress and rng.random() < 0.5 * engagement:
            recent = list(self.in_progress)[::-1]
            rank = min(_geometric(rng, 0.6), len(recent))
            item = recent[rank - 1]
            session.click(self._item_id(item), "continue_watching", rank)
            session.wait(rng.uniform(1.0, 4.0))
            return item, self.in_progress[item]
        surface_draw = rng.random()
        search_share = 0.2 + 0.4 * (1.0 - engagement)
        if surface_draw < search_share:
            return self._search(session, engagement)
        trending = surface_draw < search_share + 0.08
        title = self._trending_title(session.now_ms) if trending else self._taste_title(session.now_ms)
        if title is None:
            return None
        item = self._item_of(title)
        surface = "trending" if trending else "home_row"
        session.click(self._item_id(item), surface, _geometric(rng, 0.3))
        session.wait(rng.uniform(1.0, 20.0))
        if rng.random() < 0.1 + 0.5 * (1.0 - engagement):
            return None  # read the details page, did not play
        return item, self.in_progress.get(item, 0.0)

    def _search(self, session: SessionRecorder, engagement: float) -> tuple[int, float] | None:
        """Search for a title, maybe click a result; the item and start position, or None."""
        rng = self.rng
        title = self._taste_title(session.now_ms)
        if title is None:
            return None
        query, results = self.catalog.search(title, rng)
        session.search(query, results)
        session.wait(rng.uniform(3.0, 25.0))
        if results == 0 or rng.random() > 0.3 + 0.65 * engagement:
            return None
        item = self._item_of(title)
        rank = min(_geometric(rng, 0.5), results)
        session.click(self._item_id(item), "search", rank)
        session.wait(rng.uniform(1.0, 6.0))
        return item, self.in_progress.get(item, 0.0)

    def _watch(
        self, session: SessionRecorder, item: int, position: float, engagement: float
    ) -> bool:
        """Play ``item`` from ``position`` in stretches until done or abandoned; True if finished."""
        rng = self.rng
        entry = self.catalog.items[item]
        duration = entry.duration_s
        liking = max(self.profile.taste[g] for g in entry.genres) / self.taste_peak
        finish_chance = (0.25 + 0.65 * liking + 0.1 * (entry.episode > 0)) * (0.2 + 0.8 * engagement)
        stop = duration if rng.random() < finish_chance else position + (
            duration - position) * rng.uniform(0.03, 0.8)  # fmt: skip
        stretch_s = _WATCH_STRETCH_S[session.device]
        item_id = entry.item_id
        while True:
            session.playback("play", item_id, round(position, 1), duration)
            watched = min(stop - position, max(5.0, rng.expovariate(1.0 / stretch_s)))
            session.wait(watched)
            position += watched
            session.playback("pause", item_id, round(position, 1), duration)
            if position >= stop:
                break
            session.wait(rng.uniform(15.0, 600.0))
        self.in_progress.pop(item, None)
        if position < duration:
            self._remember_progress(item, position)
            return False
        self._finish(item)
        return True

    def _remember_progress(self, item: int, position: float) -> None:
        self.in_progress[item] = position
        if len(self.in_progress) > 20:
            del self.in_progress[next(iter(self.in_progress))]

    def _finish(self, item: int) -> None:
        entry = self.catalog.items[item]
        episodes = self.catalog.titles[entry.title_index].items
        if entry.episode + 1 < len(episodes):
            self.next_episode[entry.title_index] = entry.episode + 1
        else:
            self.next_episode.pop(entry.title_index, None)
            self.completed.add(entry.title_index)

    def _autoplay(self, item: int) -> tuple[int, float] | None:
        """The next episode after finishing ``item``, if the viewer lets it play."""
        entry = self.catalog.items[item]
        if entry.title_index not in self.next_episode or self.rng.random() > 0.7:
            return None
        return self._item_of(entry.title_index), 0.0

    def _taste_title(self, now_ms: int) -> int | None:
        """A title drawn ∝ popularity × taste, released and not finished; None if none found."""
        rng, catalog = self.rng, self.catalog
        for _ in range(8):
            genre = bisect.bisect_right(self.taste_cumulative, rng.random() * self.taste_cumulative[-1])
            title = catalog.popular_title(min(genre, len(GENRES) - 1), rng.random())
            if title not in self.completed and catalog.is_released(title, now_ms):
                return title
        return None

    def _trending_title(self, now_ms: int) -> int | None:
        """A title from the trending row: recent releases, boosted while new, or the top titles."""
        rng, catalog = self.rng, self.catalog
        recent = [
            t for t in catalog.released_between(now_ms - 28 * DAY_MS, now_ms + 1)
            if t not in self.completed
        ]  # fmt: skip
        if recent and rng.random() < 0.7:
            weights = [
                catalog.titles[t].popularity
                * math.exp((catalog.titles[t].release_ms - now_ms) / (7.0 * DAY_MS))
                * (0.2 + max(self.profile.taste[g] for g in catalog.titles[t].genres))
                for t in recent
            ]
            return rng.choices(recent, weights)[0]
        title = catalog.popular_title(None, rng.random())
        return None if title in self.completed else title

    def _item_of(self, title: int) -> int:
        """The item of ``title`` to play next: the film, or the viewer's next episode."""
        return self.catalog.titles[title].items[self.next_episode.get(title, 0)]

    def _item_id(self, item: int) -> str:
        return self.catalog.items[item].item_id


class Simulator:
    """Synthetic OTT traffic for a :class:`SimulationConfig`; see the module docstring."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self._catalog = Catalog(
            size=config.items, seed=config.seed, start_ms=config.start_ms, end_ms=config.end_ms
        )
        self.profiles = draw_profiles(config)
        self.truth = GroundTruth(
            leave_ms={p.user_id: p.leave_ms for p in self.profiles if p.leave_ms is not None},
            joined_ms={p.user_id: p.joined_ms for p in self.profiles},
        )

    def catalog(self) -> list[dict[str, object]]:
        """The catalog as ``ott.catalog`` records: ``{item_id, title, genres, duration_s}``."""
        return self._catalog.records()

    def events(self) -> Iterator[Event]:
        """Every valid event, in event-time order (ties by viewer), generated lazily."""
        config = self.config
        streams = []
        for profile in self.profiles:
            viewer = Viewer(
                profile, self._catalog, seed=config.seed, start_ms=config.start_ms, end_ms=config.end_ms
            )
            streams.append(viewer.events())
        heap = []
        for index, stream in enumerate(streams):
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
        """``(key, value)`` records as a client fleet sends them: events, retries, bad input.

        Valid events come in event-time order; a retry repeats the exact bytes of an
        earlier event 0.2–20 s (event time) later; a malformed record follows the event
        it was made from. Retries and malformed records use their own random stream, so
        the valid events are the same whatever ``bad_rate`` and ``duplicate_rate`` are.
        """
        config = self.config
        noise = random.Random(f"{config.seed}/noise")
        retries: list[tuple[int, int, bytes, bytes]] = []
        for sequence, event in enumerate(self.events()):
            while retries and retries[0][0] <= event.ts_ms:
                yield heapq.heappop(retries)[2:]
            key, value = event.user_id.encode(), encode_event(event)
            yield key, value
            if config.duplicate_rate and noise.random() < config.duplicate_rate:
                due_ms = event.ts_ms + noise.randint(200, 20_000)
                heapq.heappush(retries, (due_ms, sequence, key, value))
            if config.bad_rate and noise.random() < config.bad_rate:
                yield key, malformed_record(noise.choice(MALFORMED_KINDS), noise, event)
        while retries:
            yield heapq.heappop(retries)[2:]


def draw_profiles(config: SimulationConfig) -> list[UserProfile]:
    """The viewers of ``config``: an exact ``churn_fraction`` of them churners."""
    rng = np.random.default_rng([config.seed, 0x5E55])
    n = config.users
    span = config.end_ms - config.start_ms
    churners = rng.permutation(n) < round(n * config.churn_fraction)
    newcomers = rng.permutation(n) < round(n * config.new_user_fraction)
    joined = np.where(
        newcomers,
        config.start_ms + (rng.random(n) * 0.6 * span).astype(np.int64),
        config.start_ms - rng.integers(DAY_MS, 3 * 365 * DAY_MS, n),
    )
    rate = np.clip(rng.lognormal(math.log(4.0), 0.5, n), 1.5, 14.0)
    countries = rng.choice(len(_COUNTRIES), size=n, p=_COUNTRY_SHARE)
    devices = rng.choice(len(_DEVICES), size=n, p=_DEVICE_SHARE)
    return [
        UserProfile(
            user_id=f"user-{index:06d}",
            taste=_draw_taste(rng),
            device=_DEVICES[devices[index]],
            country=_COUNTRIES[countries[index]],
            utc_offset_ms=int(_UTC_OFFSET_H[countries[index]] * HOUR_MS),
            habitual_hours=_draw_hours(rng),
            sessions_per_week=float(rate[index]),
            weekend_boost=float(rng.uniform(0.8, 1.8)),
            binge=float(rng.uniform(0.2, 1.5)),
            joined_ms=int(joined[index]),
            **_draw_course(rng, config, int(joined[index]), churn=bool(churners[index])),
        )
        for index in range(n)
    ]


def _draw_taste(rng: np.random.Generator) -> tuple[float, ...]:
    """Genre weights: 90 % on one to three favourite genres, the rest spread thinly."""
    favourites = rng.choice(len(GENRES), size=int(rng.integers(1, 4)), replace=False, p=_FAVOURITE_SHARE)
    taste = 0.1 * rng.dirichlet(np.full(len(GENRES), 0.5))
    taste[favourites] += 0.9 * rng.dirichlet(np.full(len(favourites), 2.0))
    return tuple(float(w) for w in taste)


def _draw_hours(rng: np.random.Generator) -> tuple[float, float]:
    """A main viewing hour (mostly evenings) and a secondary one, local time."""
    main = float(rng.choice([rng.uniform(19, 23), rng.uniform(12, 18), rng.uniform(6, 9)], p=[0.7, 0.2, 0.1]))
    return main, float(rng.uniform(8, 23))


def _draw_course(
    rng: np.random.Generator, config: SimulationConfig, joined_ms: int, *, churn: bool
) -> dict[str, object]:
    """How the viewer's engagement evolves: vacations, and either a departure or a slump."""
    first_ms, end_ms = max(joined_ms, config.start_ms), config.end_ms
    vacations = tuple(
        (int(begin), int(begin + rng.uniform(2, 6) * DAY_MS))
        for begin in np.sort(rng.uniform(first_ms, end_ms, rng.poisson((end_ms - first_ms) / (75 * DAY_MS))))
    )
    if churn:
        leave_ms, decline_ms = _draw_departure(rng, config, joined_ms)
        vacations = tuple(v for v in vacations if v[1] < leave_ms - decline_ms)
        return {"leave_ms": leave_ms, "decline_ms": decline_ms, "slump": None, "vacations": vacations}
    slump = None
    if rng.random() < 0.25:
        begin = int(rng.uniform(first_ms, end_ms))
        slump = (begin, begin + int(rng.uniform(7, 21) * DAY_MS), float(rng.uniform(0.5, 0.85)))
    return {"leave_ms": None, "decline_ms": 0, "slump": slump, "vacations": vacations}


def _draw_departure(
    rng: np.random.Generator, config: SimulationConfig, joined_ms: int
) -> tuple[int, int]:
    """When a churner leaves, at least 14 days before the end, and how long they decline first.

    The decline lasts two to five weeks and may start before the period (the viewer was
    already drifting away), but not before the viewer joined.
    """
    first_ms, end_ms = max(joined_ms, config.start_ms), config.end_ms
    earliest = first_ms + 0.1 * (end_ms - first_ms)
    latest = end_ms - min(14 * DAY_MS, 0.2 * (end_ms - config.start_ms))
    leave_ms = int(rng.uniform(earliest, max(earliest, latest)))
    decline_ms = int(min(rng.uniform(14, 35) * DAY_MS, 0.7 * (leave_ms - joined_ms)))
    return leave_ms, max(decline_ms, HOUR_MS)


_UUID_RANDOM_BITS = 0xFFFFFFFF_FFFF_0FFF_3FFF_FFFFFFFFFFFF
_UUID_VERSION_4 = 0x00000000_0000_4000_8000_000000000000  # version 4, RFC 4122 variant


def _uuid(rng: random.Random) -> str:
    """A random version-4 UUID string drawn from ``rng`` (so deterministic under its seed)."""
    h = "%032x" % (rng.getrandbits(128) & _UUID_RANDOM_BITS | _UUID_VERSION_4)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _geometric(rng: random.Random, p: float) -> int:
    """A draw from {1, 2, ...}, 1 with probability ``p``: ranks clicked on a surface."""
    rank = 1
    while rng.random() > p and rank < 50:
        rank += 1
    return rank


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw with a small ``mean`` (Knuth's method)."""
    threshold, count, product = math.exp(-mean), 0, rng.random()
    while product > threshold:
        count += 1
        product *= rng.random()
    return count


_FUTURE_MS = 4_115_491_200_000  # 2100-06-01T00:00:00Z
_UNKNOWN_TYPES = ("rewind", "share", "heartbeat")
_BAD_TIMESTAMPS = ("yesterday", "2026-13-45T25:61:00Z", "01/02/2026 10:00", "2026-02-30T10:00:00Z")
_REQUIRED_FIELDS = {
    "play": ("item_id", "position_s"),
    "pause": ("item_id", "position_s"),
    "search": ("query",),
    "click": ("item_id", "surface"),
}
_WRONG_TYPES: dict[str, tuple[str, Callable[[object], object]]] = {
    "play": ("position_s", str),
    "pause": ("position_s", str),
    "search": ("results_count", lambda count: f"{count} results"),
    "click": ("rank", bool),
}


def _edited(base: Event, edit: Callable[[dict[str, object]], object]) -> bytes:
    """``base`` encoded, after ``edit`` changed its JSON object in place."""
    document = orjson.loads(encode_event(base))
    edit(document)
    return orjson.dumps(document)


def _truncated(rng: random.Random, base: Event) -> bytes:
    value = encode_event(base)
    return value[: rng.randint(1, len(value) - 1)]


def _invalid_utf8(rng: random.Random, base: Event) -> bytes:
    marker = "\u2063" * 3
    value = encode_event(dataclasses.replace(base, device=marker))
    return value.replace(marker.encode(), rng.choice([b"tv\xff", b"\xc3\x28", b"\xed\xa0\x80"]))


def _missing_field(rng: random.Random, base: Event) -> bytes:
    required = ("event_id", "type", "user_id", "ts", *_REQUIRED_FIELDS[base.type])
    return _edited(base, lambda document: document.pop(rng.choice(required)))


def _wrong_type(rng: random.Random, base: Event) -> bytes:
    field, convert = rng.choice([_WRONG_TYPES[base.type], ("user_id", lambda _: 12345)])
    return _edited(base, lambda document: document.update({field: convert(document[field])}))


def _unknown_type(rng: random.Random, base: Event) -> bytes:
    return _edited(base, lambda document: document.update(type=rng.choice(_UNKNOWN_TYPES)))


def _oversized(rng: random.Random, base: Event) -> bytes:
    return _edited(base, lambda document: document.update(padding="x" * rng.randint(17_000, 40_000)))


def _future_ts(rng: random.Random, base: Event) -> bytes:
    ts = format_ts(_FUTURE_MS + rng.randint(0, 200 * DAY_MS))
    return _edited(base, lambda document: document.update(ts=ts))


def _bad_ts(rng: random.Random, base: Event) -> bytes:
    return _edited(base, lambda document: document.update(ts=rng.choice(_BAD_TIMESTAMPS)))


_MALFORMERS: dict[str, Callable[[random.Random, Event], bytes]] = {
    "not_json": _truncated,
    "invalid_utf8": _invalid_utf8,
    "missing_field": _missing_field,
    "wrong_type": _wrong_type,
    "unknown_type": _unknown_type,
    "oversized": _oversized,
    "future_ts": _future_ts,
    "bad_ts": _bad_ts,
    "empty": lambda rng, base: b"",
}

MALFORMED_KINDS: tuple[str, ...] = tuple(_MALFORMERS)
"""The kinds of bad input :meth:`Simulator.records` mixes in, and :func:`malformed_record` makes."""


def malformed_record(kind: str, rng: random.Random, base: Event) -> bytes:
    """A record value of the given malformed ``kind``, made from the valid event ``base``.

    Examples
    --------
    >>> base = Event("e1", "play", "u1", 1_767_225_600_000, item_id="film-00001", position_s=0.0)
    >>> malformed_record("empty", random.Random(0), base)
    b''
    >>> len(malformed_record("oversized", random.Random(0), base)) > 16_384
    True
    """
    if kind not in _MALFORMERS:
        raise ValueError(f"unknown malformed kind {kind!r}; expected one of {MALFORMED_KINDS}")
    return _MALFORMERS[kind](rng, base)


def write_jsonl(records: Iterable[tuple[bytes, bytes]], path: str | Path) -> int:
    """Write the values of ``records``, one per line, to ``path``; return how many."""
    count = 0
    with open(path, "wb") as out:
        for _, value in records:
            out.write(value + b"\n")
            count += 1
    return count


def write_catalog(items: Iterable[dict[str, object]], path: str | Path) -> int:
    """Write catalog records, one JSON object per line, to ``path``; return how many."""
    count = 0
    with open(path, "wb") as out:
        for item in items:
            out.write(orjson.dumps(item) + b"\n")
            count += 1
    return count
