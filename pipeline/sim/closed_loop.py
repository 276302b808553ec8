"""The closed-loop simulator: simulated users who see the lists ottscore publishes, and react.

The open-loop :class:`~pipeline.sim.simulate.Simulator` plays out behaviour that ignores
ottscore. :class:`ClosedLoop` steps through event time a slice at a time (five minutes by
default): it emits the events of the slice, hands them to a **list policy** (any
:data:`ListPolicy`: the real core through
:class:`~pipeline.sim.list_policies.ProcessorLists`, or a baseline of
:mod:`pipeline.sim.list_policies`), and the lists the policy publishes become the home
screens of the next sessions (:mod:`pipeline.sim.home_screen`: who clicks what, how much
they watch, how satisfaction lowers churn). A user sees a list published after their
slice's events at their next session. The users' hidden preferences never read the
policy: only the lists it publishes.

Everything is drawn from the seed: the same config and the same policy give the same
events. :meth:`ClosedLoop.run` keeps every record (write them with
:func:`~pipeline.sim.simulate.write_jsonl` to replay them), every home screen seen and
who left when; :meth:`ClosedLoop.steps` streams them a slice at a time instead.

Examples
--------
>>> loop = ClosedLoop(ClosedLoopConfig(users=30, days=7, seed=3))
>>> picks = tuple(item.item_id for item in loop.catalog.items[:3])
>>> def same_three(piece: Slice) -> list[PublishedList]:
...     return [PublishedList(user, picks) for user in {e.user_id: 0 for e in piece.events}]
>>> run = loop.run(same_three)
>>> run.events == sorted(run.events, key=lambda event: event.ts_ms)
True
>>> seen = run.impressions["user-000000"]
>>> [shown.surface for shown in seen[:2]], seen[1].item_ids == picks
(['popular', 'for_you'], True)
>>> run.digest() == loop.run(same_three).digest()
True
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import orjson

from pipeline.core.events import Event, encode_event
from pipeline.sim.artworks import ArtworkWorld
from pipeline.sim.audience import DAY_MS, UserProfile, draw_profiles
from pipeline.sim.home_screen import (
    HomeScreen,
    HomeViewer,
    Impression,
    PublishedList,
    hidden_fit,
    hidden_liking,
)
from pipeline.sim.simulate import MALFORMED_KINDS, malformed_record
from pipeline.sim.synthetic_catalog import Catalog

__all__ = [
    "ClosedLoop",
    "ClosedLoopConfig",
    "ClosedLoopRun",
    "ListPolicy",
    "Message",
    "Slice",
    "Step",
    "published_list",
]


@dataclass(frozen=True, slots=True)
class ClosedLoopConfig:
    """What to simulate in a closed loop.

    Parameters
    ----------
    users, days, seed, start_ms, new_user_fraction, bad_rate
        As in :class:`~pipeline.sim.simulate.SimulationConfig`. The audience has no drawn
        churners: here users leave as their satisfaction tells.
    catalog_size
        Number of playable items; None for ``max(1000, min(users, 5000))`` (about 190
        titles at least: lists of ten unseen titles for weeks).
    slice_s
        Event-time seconds between two hand-overs of events to the policy.
    row_size
        Slots of the home screen's row.
    generic_row
        What the home screen of a user without a list shows: the ``popular`` row (the
        most popular released titles) or ``none``.
    weekly_churn
        Weekly churn hazard of a user at satisfaction 0 and at satisfaction 1. The default
        is steep, so that lists move 4-week retention visibly in a few hundred users.
    artworks
        The range of artworks per title, e.g. ``(4, 10)``, with the viewers' hidden taste in
        them (:mod:`pipeline.sim.artworks`); None: titles have no artwork.
    win_back_response
        Chance that a ``win_back`` message the policy sends (an ``ott.actions`` record,
        :class:`Message`) brings a viewer back within a day: one who has not left, or left
        less than 14 days before.
    """

    users: int
    days: float
    seed: int
    start_ms: int = 1_767_225_600_000
    catalog_size: int | None = None
    new_user_fraction: float = 0.0
    slice_s: float = 300.0
    row_size: int = 10
    generic_row: Literal["popular", "none"] = "popular"
    weekly_churn: tuple[float, float] = (0.5, 0.005)
    bad_rate: float = 0.0
    artworks: tuple[int, int] | None = None
    win_back_response: float = 0.3

    def __post_init__(self) -> None:
        if self.users < 1 or self.days <= 0 or self.slice_s <= 0 or self.row_size < 1:
            raise ValueError("users and row_size must be at least 1, days and slice_s positive")
        for name in ("new_user_fraction", "bad_rate", "win_back_response"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if not all(0.0 < hazard for hazard in self.weekly_churn):
            raise ValueError(f"weekly_churn must be positive, got {self.weekly_churn}")

    @property
    def end_ms(self) -> int:
        """End of the simulated period (exclusive), epoch milliseconds."""
        return self.start_ms + int(self.days * DAY_MS)


@dataclass(frozen=True, slots=True)
class Slice:
    """The events of ``[start_ms, end_ms)`` of event time, and the records that carry them.

    ``records`` are ``(key, value)`` as clients send them: each event encoded, and with
    ``bad_rate`` malformed records among them.
    """

    start_ms: int
    end_ms: int
    events: Sequence[Event]
    records: Sequence[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Message:
    """A CRM message to a user (an ``ott.actions`` record): its type, when, whether sent.

    A withheld one (a holdout) never reaches the user.
    """

    user_id: str
    kind: str
    ts_ms: int
    sent: bool = True


ListPolicy = Callable[[Slice], Iterable[PublishedList | Message]]
"""What publishes lists: given the next slice, the lists (and messages) published after it."""


@dataclass(frozen=True, slots=True)
class Step:
    """One slice, the home screens seen in it, the lists published after it, and departures.

    ``departures`` maps each user found gone to when they left; ``comebacks`` each user a
    message brought back to the start of their next session (one found gone before stays).
    """

    slice: Slice
    impressions: Sequence[Impression]
    published: Sequence[PublishedList]
    departures: dict[str, int]
    messages: Sequence[Message] = ()
    comebacks: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClosedLoopRun:
    """Everything a closed-loop run produced.

    Attributes
    ----------
    events, records
        The valid events in event-time order, and the records that carried them.
    impressions
        Each user's home screens, in time order.
    lists
        The last list published to each user.
    joined_ms, left_ms
        When each user signed up; when each user who left did.
    messages
        The CRM messages published, sent or withheld, in time order; ``comebacks``: the
        session starts of the users a message brought back.
    """

    config: ClosedLoopConfig
    events: list[Event] = field(default_factory=list)
    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    impressions: dict[str, list[Impression]] = field(default_factory=dict)
    lists: dict[str, PublishedList] = field(default_factory=dict)
    joined_ms: dict[str, int] = field(default_factory=dict)
    left_ms: dict[str, int] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    comebacks: list[tuple[str, int]] = field(default_factory=list)

    def digest(self) -> str:
        """SHA-256 of the records, keys and values: equal runs have equal digests."""
        sha = hashlib.sha256()
        for key, value in self.records:
            sha.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
        return sha.hexdigest()


def published_list(value: bytes) -> PublishedList:
    """Read a ``personalization`` record: its user, item ids and experiments.

    >>> from pipeline.core.records import personalization_record
    >>> value = personalization_record("u1", 0, items=[("film-00007", 0.9, "taste")],
    ...     model_version="m", segment=None, cold_start=False, experiments={"rail": "short"})
    >>> published_list(value)
    PublishedList(user_id='u1', item_ids=('film-00007',), experiments={'rail': 'short'})
    """
    record = orjson.loads(value)
    items = record["items"]
    artworks = tuple(item.get("artwork_id") for item in items)
    return PublishedList(
        record["user_id"],
        tuple(item["item_id"] for item in items),
        dict(record.get("experiments") or {}),
        artworks if any(artworks) else (),
    )


class ClosedLoop:
    """Closed-loop traffic for a :class:`ClosedLoopConfig`; see the module docstring.

    Attributes
    ----------
    catalog
        The catalog (:meth:`Catalog.records` is what to load into the core).
    profiles
        The users.
    fit, liking
        The users' hidden fit of each title, and their liking of its genres (rows in the
        order of ``profiles``).
    """

    def __init__(self, config: ClosedLoopConfig) -> None:
        self.config = config
        size = config.catalog_size or max(1000, min(config.users, 5000))
        self.catalog = Catalog(
            size=size, seed=config.seed, start_ms=config.start_ms, end_ms=config.end_ms
        )
        self.profiles: list[UserProfile] = draw_profiles(
            config.users,
            seed=config.seed,
            start_ms=config.start_ms,
            end_ms=config.end_ms,
            churn_fraction=0.0,
            new_user_fraction=config.new_user_fraction,
        )
        self.liking = hidden_liking(self.profiles, self.catalog)
        self.fit = hidden_fit(self.profiles, self.catalog, liking=self.liking)
        #: The titles' artworks and the viewers' hidden taste in them (None: no artworks).
        self.artworks = (
            None
            if config.artworks is None
            else ArtworkWorld(self.catalog, self.profiles, counts=config.artworks, seed=config.seed)
        )

    def catalog_records(self) -> list[dict[str, object]]:
        """The catalog as ``ott.catalog`` records, with the titles' artworks when there are."""
        if self.artworks is None:
            return self.catalog.records()
        return self.artworks.records(self.catalog)

    def run(self, policy: ListPolicy) -> ClosedLoopRun:
        """Run the whole period with ``policy``; keep everything (see :class:`ClosedLoopRun`)."""
        run = ClosedLoopRun(
            self.config,
            impressions={profile.user_id: [] for profile in self.profiles},
            joined_ms={profile.user_id: profile.joined_ms for profile in self.profiles},
        )
        for step in self.steps(policy):
            run.events.extend(step.slice.events)
            run.records.extend(step.slice.records)
            for impression in step.impressions:
                run.impressions[impression.user_id].append(impression)
            run.lists.update((published.user_id, published) for published in step.published)
            run.left_ms.update(step.departures)
            run.messages.extend(step.messages)
            for user_id, start_ms in step.comebacks.items():
                run.left_ms.pop(user_id, None)
                run.comebacks.append((user_id, start_ms))
        return run

    def steps(self, policy: ListPolicy) -> Iterator[Step]:
        """Run the period with ``policy``, a slice at a time; slices without anything skipped.

        Each run starts afresh: the same policy state gives the same steps.
        """
        config = self.config
        home = HomeScreen(self.catalog, size=config.row_size, generic_row=config.generic_row)
        world = self.artworks
        viewers = [
            HomeViewer(
                profile,
                self.catalog,
                home=home,
                fit=self.fit[index],
                liking=self.liking[index],
                rng=np.random.default_rng([config.seed, 0xC105ED, index]),
                weekly_churn=config.weekly_churn,
                seed=config.seed,
                start_ms=config.start_ms,
                end_ms=config.end_ms,
                appeal=None if world is None else functools.partial(world.appeal, index),
                win_back_response=config.win_back_response,
            )
            for index, profile in enumerate(self.profiles)
        ]
        noise = random.Random(f"{config.seed}/closed-loop-noise")
        departures: dict[str, int] = {}
        # (time, viewer, life, next event or session start, the life's stream): a message
        # that brings a viewer back starts a new life, and the old one's entries are dropped
        heap: list[tuple[int, int, int, Event | int, Iterator[Event | int]]] = []
        lives = [0] * len(viewers)
        index_of = {viewer.profile.user_id: index for index, viewer in enumerate(viewers)}

        def advance(index: int, stream: Iterator[Event | int]) -> None:
            following = next(stream, None)
            if following is not None:
                heapq.heappush(heap, (_ts_ms(following), index, lives[index], following, stream))
            elif (left_ms := viewers[index].left_ms) is not None:
                departures[viewers[index].profile.user_id] = left_ms

        for index, viewer in enumerate(viewers):
            advance(index, viewer.visits())
        slice_ms = int(config.slice_s * 1000)
        while heap:
            start_ms = config.start_ms + (heap[0][0] - config.start_ms) // slice_ms * slice_ms
            events: list[Event] = []
            while heap and heap[0][0] < start_ms + slice_ms:
                _, index, life, item, stream = heapq.heappop(heap)
                if life != lives[index]:
                    continue  # a life a message replaced
                if isinstance(item, Event):
                    events.append(item)
                advance(index, stream)  # at a session's start: the viewer reads the home screen
            piece = Slice(start_ms, start_ms + slice_ms, events, _records(events, config, noise))
            published: list[PublishedList] = []
            messages: list[Message] = []
            for out in policy(piece):
                if isinstance(out, Message):
                    messages.append(out)
                else:
                    published.append(out)
            home.publish(published)
            comebacks: dict[str, int] = {}
            for message in messages:
                index = index_of.get(message.user_id, -1)
                if not message.sent or index < 0:
                    continue
                viewer, read_ms = viewers[index], max(message.ts_ms, piece.end_ms)
                come_ms = viewer.answer(message.kind, read_ms)
                if come_ms is not None:
                    lives[index] += 1
                    departures.pop(message.user_id, None)
                    comebacks[message.user_id] = come_ms
                    advance(index, viewer.visits((read_ms, come_ms)))
            yield Step(piece, home.take_impressions(), published, departures, messages, comebacks)
            departures = {}
        if departures:  # everyone left before their first session
            yield Step(Slice(config.end_ms, config.end_ms, [], []), [], [], departures)


def _ts_ms(item: Event | int) -> int:
    return item.ts_ms if isinstance(item, Event) else item


def _records(
    events: Sequence[Event], config: ClosedLoopConfig, noise: random.Random
) -> list[tuple[bytes, bytes]]:
    """The records of ``events``, a malformed one after an event at ``bad_rate``."""
    records = []
    for event in events:
        key = event.user_id.encode()
        records.append((key, encode_event(event)))
        if config.bad_rate and noise.random() < config.bad_rate:
            records.append((key, malformed_record(noise.choice(MALFORMED_KINDS), noise, event)))
    return records
