"""The demo's closed loop through Kafka: simulated users see the lists the worker publishes.

:class:`KafkaLists` is the :data:`~pipeline.sim.closed_loop.ListPolicy` of the demo: it
sends a slice's records to the events topic, paced at a wall-clock rate, and returns the
lists that came back from the worker meanwhile. Those arrive on the personalisation topic,
read by the demo's follower thread into a :class:`ListInbox`, which keeps the latest list
of each user until the loop takes them. The worker answers asynchronously: a list computed
after a user's slice reaches the loop a few slices later, before that user's next session
as long as the worker keeps up with the rate.

Every list that came back is handed to the loop, not only those of the slice's users: a
list arriving after its user's slice is on their home screen at their next session, as
it would be in an app.

>>> inbox = ListInbox()
>>> sent = []
>>> lists = KafkaLists(lambda key, value: sent.append(key), inbox, rate=0.0)
>>> record = b'{"user_id": "u1", "items": [{"item_id": "film-00003"}], "experiments": {}}'
>>> inbox.put(record)
>>> lists(Slice(0, 300_000, [], [(b"u1", b"{}"), (b"u2", b"{}")]))
[PublishedList(user_id='u1', item_ids=('film-00003',), experiments={})]
>>> sent, lists(Slice(300_000, 600_000, [], []))
([b'u1', b'u2'], [])
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.core.events import Event
from pipeline.sim.closed_loop import ClosedLoop, ListPolicy, Slice, Step, published_list
from pipeline.sim.home_screen import PublishedList

__all__ = ["KafkaLists", "ListInbox", "LoopProgress", "run_loop"]


class ListInbox:
    """The latest list published to each user since the loop last took them (thread-safe)."""

    def __init__(self) -> None:
        self._latest: dict[str, PublishedList] = {}
        self._lock = threading.Lock()
        self.received = 0

    def put(self, value: bytes) -> None:
        """Keep a ``personalization`` record's list; it replaces the user's earlier one."""
        published = published_list(value)
        with self._lock:
            self._latest[published.user_id] = published
            self.received += 1

    def take(self) -> list[PublishedList]:
        """The lists kept since the last call, one per user, in the order they came."""
        with self._lock:
            taken, self._latest = list(self._latest.values()), {}
        return taken


class KafkaLists:
    """A list policy whose lists come from the worker through Kafka.

    Parameters
    ----------
    send
        Sends one ``(key, value)`` record to the events topic (a producer's ``send``).
    inbox
        Where the lists the worker publishes arrive.
    rate
        Records per wall-clock second; 0 sends as fast as the simulator goes.
    stop
        Cuts a wait for the pace short when set.
    """

    def __init__(
        self,
        send: Callable[[bytes, bytes], object],
        inbox: ListInbox,
        *,
        rate: float,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.send = send
        self.inbox = inbox
        self.rate = rate
        self.stop = stop or threading.Event()
        self.clock = clock
        self.sent = 0
        self._started: float | None = None

    def __call__(self, piece: Slice) -> list[PublishedList]:
        """Send the slice's records, keep the pace, and return the lists that came back."""
        if self._started is None:
            self._started = self.clock()
        for key, value in piece.records:
            self.send(key, value)
        self.sent += len(piece.records)
        if self.rate > 0:
            self.stop.wait(max(0.0, self._started + self.sent / self.rate - self.clock()))
        return self.inbox.take()


@dataclass
class LoopProgress:
    """What the loop did so far, for the live view and the experiment's report."""

    events: list[Event] = field(default_factory=list)
    screens: Counter[str] = field(default_factory=Counter)
    lists_handed: int = 0
    departures: int = 0
    event_time_ms: int | None = None
    finished: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, step: Step) -> None:
        """Count a step: its events, the home screens seen by surface, lists and departures."""
        with self.lock:
            self.events.extend(step.slice.events)
            self.screens.update(impression.surface for impression in step.impressions)
            self.lists_handed += len(step.published)
            self.departures += len(step.departures)
            self.event_time_ms = step.slice.end_ms


def run_loop(
    loop: ClosedLoop, policy: ListPolicy, progress: LoopProgress, stop: threading.Event
) -> None:
    """Step ``loop`` with ``policy`` until its period ends or ``stop`` is set."""
    for step in loop.steps(policy):
        progress.note(step)
        if stop.is_set():
            return
    progress.finished = True
