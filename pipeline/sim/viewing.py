"""Simulated viewing behaviour: when a viewer's sessions happen and what they do in them.

A :class:`Viewer` turns a :class:`~pipeline.sim.audience.UserProfile` into a lazy, time-ordered
stream of events. Sessions start at the viewer's habitual hours, at their weekly rate
scaled by weekends and by their engagement, never during a vacation. In a session the
viewer opens one or more titles from a surface: ``continue_watching`` (an unfinished
item), ``home_row`` (chosen ∝ popularity × taste), ``trending`` (recent releases while
they are new, or the most popular titles) or ``search`` (a query for a title they want,
which may find nothing). Each item is played in stretches (``play`` … ``pause``) until
finished or abandoned, the chance to finish growing with how well it matches the
viewer's taste; a finished episode often autoplays the next one. Low engagement means
fewer titles per session, more searches and detail pages without a play, and fewer
items finished. Most churners come back once, hours before they leave, and only browse.

Examples
--------
>>> from pipeline.sim.audience import draw_profiles
>>> from pipeline.sim.synthetic_catalog import Catalog
>>> catalog = Catalog(size=500, seed=3, start_ms=0, end_ms=14 * DAY_MS)
>>> [profile] = draw_profiles(
...     1, seed=3, start_ms=0, end_ms=14 * DAY_MS, churn_fraction=0, new_user_fraction=0
... )
>>> events = list(Viewer(profile, catalog, seed=3, start_ms=0, end_ms=14 * DAY_MS).events())
>>> {event.user_id for event in events} == {profile.user_id}
True
>>> all(a.ts_ms <= b.ts_ms < 14 * DAY_MS for a, b in zip(events, events[1:]))
True
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterator
from itertools import accumulate

from pipeline.core.events import Event
from pipeline.sim.audience import DAY_MS, DEVICES, HOUR_MS, UserProfile
from pipeline.sim.synthetic_catalog import Catalog

__all__ = ["SessionRecorder", "Viewer"]

_MIN_SESSION_GAP_MS = 45 * 60_000  # above the 30-minute inactivity that ends a session
_GAP_SHAPE = 3.0  # gamma shape of the time between sessions: habits are fairly regular
_FAREWELL_SHARE = 0.85  # churners who come back once, just before they leave
_WATCH_STRETCH_S = {"tv": 2700.0, "mobile": 900.0, "web": 1800.0, "tablet": 1500.0}
_IN_PROGRESS_KEPT = 20  # unfinished items a viewer's continue-watching row remembers


class SessionRecorder:
    """The events of one session, stamped on a clock that moves as the viewer acts."""

    __slots__ = ("events", "now_ms", "device", "_rng", "_user_id", "_session_id", "_country")

    def __init__(self, rng: random.Random, profile: UserProfile, start_ms: int) -> None:
        self.events: list[Event] = []
        self.now_ms = start_ms
        self.device = profile.device if rng.random() < 0.85 else rng.choice(DEVICES)
        self._rng = rng
        self._user_id = profile.user_id
        self._session_id = _random_uuid(rng)
        self._country = profile.country

    def record(
        self,
        kind: str,
        *,
        item_id: str | None = None,
        position_s: float | None = None,
        duration_s: float | None = None,
        query: str | None = None,
        results_count: int | None = None,
        surface: str | None = None,
        rank: int | None = None,
        artwork_id: str | None = None,
    ) -> None:
        """Record one event of type ``kind`` at the current time."""
        self.events.append(
            Event(
                _random_uuid(self._rng), kind, self._user_id, self.now_ms, item_id, position_s,
                duration_s, query, results_count, surface, rank, None, self._session_id,
                self.device, self._country, artwork_id,
            )
        )  # fmt: skip

    def playback(self, kind: str, item_id: str, position_s: float, duration_s: float) -> None:
        """Record a ``play`` or ``pause`` of ``item_id`` at ``position_s`` (to 0.1 s)."""
        self.record(kind, item_id=item_id, position_s=round(position_s, 1), duration_s=duration_s)

    def wait(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self.now_ms += int(seconds * 1000.0)


class Viewer:
    """One viewer's behaviour over the period ``[start_ms, end_ms)``, drawn from ``seed``."""

    def __init__(
        self, profile: UserProfile, catalog: Catalog, *, seed: int, start_ms: int, end_ms: int
    ) -> None:
        self.profile = profile
        self.catalog = catalog
        self.rng = random.Random(f"{seed}/{profile.user_id}")
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.stop_ms = end_ms if profile.leave_ms is None else min(end_ms, profile.leave_ms)
        self.taste_cumulative = list(accumulate(profile.taste))
        self.taste_peak = max(profile.taste)
        peak_activity = max(profile.weekend_boost, 1.0)
        self.activity_scale = 1.0 / peak_activity
        week_mean = (5.0 + 2.0 * profile.weekend_boost) / 7.0
        self.mean_gap_days = 7.0 * week_mean / (profile.sessions_per_week * peak_activity)
        self.in_progress: dict[int, float] = {}  # item → position, least recently played first
        self.next_episode: dict[int, int] = {}  # series being watched → episode to play next
        self.completed: set[int] = set()  # titles finished

    def events(self) -> Iterator[Event]:
        """Generate the viewer's events in time order, until they leave or the period ends."""
        rng = self.rng
        if self.profile.joined_ms >= self.start_ms:
            start: int | None = self.profile.joined_ms  # a newcomer's first session: sign-up
        else:
            start = self.next_session_start(
                self.start_ms - int(rng.random() * self.mean_gap_days * DAY_MS)
            )
        farewell = self.profile.leave_ms is not None and rng.random() < _FAREWELL_SHARE
        while start is not None:
            session = self.session(start)
            if session.now_ms >= self.stop_ms:  # cut short: the period ends or the viewer leaves
                yield from (event for event in session.events if event.ts_ms < self.stop_ms)
                start = self._comeback()
                continue
            yield from session.events
            start = self.next_session_start(session.now_ms)
            if start is None and farewell:
                farewell = False
                start = self._farewell_start(session.now_ms)
            if start is None:
                start = self._comeback()

    def _comeback(self) -> int | None:
        """A churner who returns: their first session after their return; None otherwise."""
        back_ms = self.profile.return_ms
        if back_ms is None or self.stop_ms >= self.end_ms:
            return None
        self.stop_ms = self.end_ms
        return self.next_session_start(back_ms)

    def next_session_start(self, after_ms: int) -> int | None:
        """Return when the next session starts after ``after_ms``; None if not before the end."""
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
        """Return the first habitual hour of the viewer from the local day of ``ts_ms`` on.

        The main hour is taken seven times in ten, the secondary one otherwise, each give
        or take an hour; the result is never before ``earliest_ms``.
        """
        rng, offset_ms = self.rng, self.profile.utc_offset_ms
        main, secondary = self.profile.habitual_hours
        first, second = (main, secondary) if rng.random() < 0.7 else (secondary, main)
        day_ms = (ts_ms + offset_ms) // DAY_MS * DAY_MS - offset_ms
        jitter = rng.gauss(0.0, 1.0)
        for hour in (first, second):
            start = int(day_ms + (hour + jitter) * HOUR_MS)
            if start >= earliest_ms:
                return start
        return max(int(day_ms + DAY_MS + (first + jitter) * HOUR_MS), earliest_ms)

    def _farewell_start(self, after_ms: int) -> int:
        """Return when a churner visits for the last time, 1–48 hours before they leave."""
        before_leaving_ms = self.stop_ms - int(self.rng.uniform(1.0, 48.0) * HOUR_MS)
        return max(before_leaving_ms, after_ms + _MIN_SESSION_GAP_MS)

    def session(self, start_ms: int) -> SessionRecorder:
        """Play out one session starting at ``start_ms``."""
        rng = self.rng
        engagement = self.profile.engagement(start_ms)
        session = SessionRecorder(rng, self.profile, start_ms)
        for _ in range(1 + _poisson(rng, self.profile.binge * engagement)):
            opened = self._open(session, engagement)
            while opened is not None and self._watch(session, *opened, engagement):
                opened = self._autoplay(session, opened[0], engagement)
            session.wait(rng.uniform(5.0, 90.0))
        return session

    def _open(self, session: SessionRecorder, engagement: float) -> tuple[int, float] | None:
        """Find something on a surface; return the item and its start position, or None."""
        rng = self.rng
        if self.in_progress and rng.random() < 0.5 * engagement:
            unfinished = list(self.in_progress)
            rank = min(_geometric(rng, 0.6), len(unfinished))
            item = unfinished[-rank]
            return self._click(session, item, "continue_watching", rank, play_chance=0.97)
        search_share = 0.2 + 0.4 * (1.0 - engagement)
        surface_draw = rng.random()
        if surface_draw < search_share:
            return self._search(session, engagement)
        if surface_draw < search_share + 0.08:
            title, surface, rank_decay = self._trending_title(session.now_ms), "trending", 0.35
        else:
            title, surface, rank_decay = self._taste_title(session.now_ms), "home_row", 0.3
        if title is None:
            return None
        item, rank = self._item_of(title), _geometric(rng, rank_decay)
        return self._click(session, item, surface, rank, play_chance=0.4 + 0.5 * engagement)

    def _search(self, session: SessionRecorder, engagement: float) -> tuple[int, float] | None:
        """Search for a title, and maybe click it among the results."""
        rng = self.rng
        title = self._taste_title(session.now_ms)
        if title is None:
            return None
        query, results = self.catalog.search(title, rng)
        session.record("search", query=query, results_count=results)
        session.wait(rng.uniform(3.0, 25.0))
        if results == 0 or rng.random() > 0.3 + 0.65 * engagement:
            return None
        rank = min(_geometric(rng, 0.5), results)
        return self._click(session, self._item_of(title), "search", rank, play_chance=0.95)

    def _click(
        self,
        session: SessionRecorder,
        item: int,
        surface: str,
        rank: int,
        *,
        play_chance: float,
        artwork_id: str | None = None,
    ) -> tuple[int, float] | None:
        """Click ``item`` at ``rank`` on ``surface``; then play it, or only read its page."""
        rng = self.rng
        item_id = self.catalog.items[item].item_id
        session.record("click", item_id=item_id, surface=surface, rank=rank, artwork_id=artwork_id)
        session.wait(rng.uniform(1.0, 20.0))
        if rng.random() >= play_chance:
            return None
        return item, self.in_progress.get(item, 0.0)

    def _watch(
        self, session: SessionRecorder, item: int, position: float, engagement: float
    ) -> bool:
        """Play ``item`` from ``position`` until done or abandoned; return True if finished."""
        rng = self.rng
        entry = self.catalog.items[item]
        item_id, duration = entry.item_id, entry.duration_s
        liking = max(self.profile.taste[g] for g in entry.genres) / self.taste_peak
        appeal = 0.25 + 0.65 * liking + (0.1 if entry.episode > 0 else 0.0)
        finish_chance = appeal * (0.2 + 0.8 * engagement)
        stop = duration
        if rng.random() >= finish_chance:
            stop = position + (duration - position) * rng.uniform(0.03, 0.8)
        stretch_s = _WATCH_STRETCH_S[session.device]
        while True:
            session.playback("play", item_id, position, duration)
            watched = min(stop - position, max(5.0, rng.expovariate(1.0 / stretch_s)))
            session.wait(watched)
            position += watched
            session.playback("pause", item_id, position, duration)
            if position >= stop:
                break
            session.wait(rng.uniform(15.0, 600.0))
        self.in_progress.pop(item, None)
        if position < duration:
            self.in_progress[item] = position
            if len(self.in_progress) > _IN_PROGRESS_KEPT:
                del self.in_progress[next(iter(self.in_progress))]
            return False
        self._finish(entry.title_index, entry.episode)
        return True

    def _finish(self, title: int, episode: int) -> None:
        """Move on from a finished item: to the next episode, or done with the title."""
        if episode + 1 < len(self.catalog.titles[title].items):
            self.next_episode[title] = episode + 1
        else:
            self.next_episode.pop(title, None)
            self.completed.add(title)

    def _autoplay(
        self, session: SessionRecorder, item: int, engagement: float
    ) -> tuple[int, float] | None:
        """Play on the next episode after ``item`` finished, unless the viewer stops there."""
        title = self.catalog.items[item].title_index
        if title not in self.next_episode or self.rng.random() > 0.25 + 0.35 * engagement:
            return None
        session.wait(self.rng.uniform(5.0, 20.0))
        return self._item_of(title), 0.0

    def _taste_title(self, now_ms: int) -> int | None:
        """Draw a released, unfinished title ∝ popularity × taste; None if none is found."""
        rng, catalog, cumulative = self.rng, self.catalog, self.taste_cumulative
        for _ in range(8):
            genre = bisect.bisect_right(cumulative, rng.random() * cumulative[-1])
            title = catalog.popular_title(min(genre, len(cumulative) - 1), rng.random())
            if title not in self.completed and catalog.is_released(title, now_ms):
                return title
        return None

    def _trending_title(self, now_ms: int) -> int | None:
        """Draw a title of the trending row: a recent release while new, or a top title."""
        rng, catalog = self.rng, self.catalog
        recent = [
            title for title in catalog.released_between(now_ms - 28 * DAY_MS, now_ms + 1)
            if title not in self.completed
        ]  # fmt: skip
        if recent and rng.random() < 0.7:
            return rng.choices(recent, [self._novelty(title, now_ms) for title in recent])[0]
        title = catalog.popular_title(None, rng.random())
        return None if title in self.completed or not catalog.is_released(title, now_ms) else title

    def _novelty(self, title: int, now_ms: int) -> float:
        """Appeal of a recent release: popularity, fading over a week, times the viewer's taste."""
        entry = self.catalog.titles[title]
        fading = math.exp((entry.release_ms - now_ms) / (7.0 * DAY_MS))
        return entry.popularity * fading * (0.2 + max(self.profile.taste[g] for g in entry.genres))

    def _item_of(self, title: int) -> int:
        """Return the item of ``title`` to play next: the film, or the next episode."""
        return self.catalog.titles[title].items[self.next_episode.get(title, 0)]


_UUID_RANDOM_BITS = 0xFFFFFFFF_FFFF_0FFF_3FFF_FFFFFFFFFFFF
_UUID_VERSION_4 = 0x00000000_0000_4000_8000_000000000000  # version 4, RFC 4122 variant


def _random_uuid(rng: random.Random) -> str:
    """Draw a version-4 UUID string from ``rng``, so that it is deterministic under its seed."""
    digits = "%032x" % (rng.getrandbits(128) & _UUID_RANDOM_BITS | _UUID_VERSION_4)
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def _geometric(rng: random.Random, p: float) -> int:
    """Draw a rank from 1 to 40: 1 with probability ``p``, each next one less likely."""
    rank = 1
    while rng.random() > p and rank < 40:
        rank += 1
    return rank


def _poisson(rng: random.Random, mean: float) -> int:
    """Draw from a Poisson law of small ``mean`` (Knuth's method)."""
    threshold, count, product = math.exp(-mean), 0, rng.random()
    while product > threshold:
        count += 1
        product *= rng.random()
    return count
