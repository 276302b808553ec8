"""The processing core: one input record in, state updated, output records out.

:class:`Processor` is what the Faust agent, the offline evaluator and the benchmark
all run, so the live worker and a replay of a file give the same results. It never
reads the wall clock to decide anything: event time (the ``ts`` of accepted events)
moves a watermark per partition, and the watermark ends sessions.

Every input record ends in exactly one of four outcomes, each counted in the
:class:`~pipeline.metrics.Tally`: **consumed** (applied to state), **deduplicated**
(a client retry), **rejected** (dead-lettered with a reason), or **already applied**
(re-read after a restart, its effect already in the restored state).

Events of one user are expected on one partition (key = user_id). A record whose key
sent it to another partition is still applied to the user's state, but cannot be
recognised as a replay by its offset, which belongs to the other partition's sequence.

User states live in memory (``users``) as a write-back cache in front of the
changelog-backed table: a state changed by a batch is listed once in
:meth:`Processor.take_dirty`, however many events changed it. After a restart or a
rebalance, the worker hands every stored state of its partitions to
:meth:`Processor.adopt` before processing, which re-arms session timers and watermarks.

Examples
--------
>>> from pipeline.config import Settings
>>> from pipeline.events import Event, encode_event
>>> p = Processor(Settings(session_gap_s=60), clock=lambda: 2e9)
>>> for offset, (user, ts) in enumerate([("u1", 0), ("u1", 30_000), ("u2", 200_000)]):
...     ev = Event(f"e{offset}", "search", user, ts, query="drama")
...     p.process(encode_event(ev), key=user.encode(), partition=0, offset=offset)
>>> p.process(b"{not json", key=b"u3", partition=0, offset=3)
>>> [o.kind for o in p.take_outbox()]   # u1's session ended when u2's event passed 90 s
['churn', 'dlq']
>>> p.tally.received, sum(p.tally.consumed.values()), dict(p.tally.rejected)
(4, 3, {'not_json': 1})
>>> sorted(user for user, _, _ in p.take_dirty())
['u1', 'u2']
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.churn import PoissonChurnBaseline
from pipeline.config import Settings
from pipeline.events import Event, EventDecoder, Rejection, format_ts
from pipeline.metrics import Tally
from pipeline.records import churn_record, dlq_record, risk_band, signal_record
from pipeline.state import UserState
from pipeline.timers import EventTimeTimers

__all__ = ["Output", "Processor"]

_DAY_MS = 86_400_000
SESSION = "session"


@dataclass(slots=True, frozen=True)
class Output:
    """One record to publish.

    ``kind`` is ``dlq``, ``churn``, ``personalization`` or ``signal``; ``event_ts_ms``
    and ``ingest_ts_ms`` are the event time and the Kafka timestamp of the input record
    that caused it (for latency metrics; 0 when unknown).
    """

    kind: str
    key: bytes | None
    value: bytes
    event_ts_ms: int = 0
    ingest_ts_ms: int = 0


class Processor:
    """Decode, validate, de-duplicate, update state, end sessions and score.

    Parameters
    ----------
    settings
        The ottscore settings.
    clock
        Wall clock, in seconds; used only to stamp dead-letter records and to guard
        against timestamps far in the future, never to drive sessions or labels.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.decoder = EventDecoder(
            max_bytes=settings.max_event_bytes,
            max_future_skew_s=settings.max_future_skew_s,
            clock=clock,
        )
        self.users: dict[str, UserState] = {}
        self.timers = EventTimeTimers()
        self.tally = Tally()
        self.churn_model = PoissonChurnBaseline(horizon_days=settings.churn_horizon_days)
        self._clock = clock
        self._dirty: set[str] = set()
        self._outbox: list[Output] = []
        self._gap_ms = int(settings.session_gap_s * 1000)
        self._dedupe_window_ms = int(settings.dedupe_window_s * 1000)
        self._dedupe_max_ids = settings.dedupe_max_ids
        self._cause: tuple[int, int] = (0, 0)

    # --- input ------------------------------------------------------------------------

    def process(
        self,
        raw: bytes | None,
        *,
        key: bytes | None,
        partition: int,
        offset: int,
        timestamp_ms: int = 0,
        topic: str = "",
    ) -> None:
        """Process one input record read from ``topic``/``partition`` at ``offset``."""
        tally = self.tally
        tally.received += 1
        decoded = self.decoder.decode(raw)
        if isinstance(decoded, Rejection):
            self._dead_letter(decoded, raw, key, topic or self.settings.topic_events,
                              partition, offset)
            return
        event: Event = decoded
        user_id = event.user_id
        state = self.users.get(user_id) or self._new_user(user_id, partition)
        if partition == state.partition:
            if offset <= state.offset:
                tally.already_applied += 1
                return
            state.offset = offset
        self._dirty.add(user_id)
        if state.recent_ids.seen(event.event_id, event.ts_ms):
            tally.deduplicated += 1
            return
        timers = self.timers
        timers.advance(partition, event.ts_ms)
        if timers.due(partition):
            self._cause = (event.ts_ms, timestamp_ms)
            self._fire_timers(partition)
        state.update(event)
        timers.schedule(state.partition, user_id, SESSION, state.last_seen_ms + self._gap_ms)
        tally.consumed[event.type] += 1

    def _new_user(self, user_id: str, partition: int) -> UserState:
        state = UserState.new(
            user_id,
            partition=partition,
            window_ms=self._dedupe_window_ms,
            max_ids=self._dedupe_max_ids,
        )
        self.users[user_id] = state
        return state

    def decode_state(self, user_id: str, data: bytes) -> UserState:
        """A user state from its stored bytes (as :meth:`take_dirty` gave them)."""
        return UserState.from_bytes(
            user_id, data, window_ms=self._dedupe_window_ms, max_ids=self._dedupe_max_ids
        )

    def adopt(self, state: UserState) -> None:
        """Take over a stored state (after a restart or rebalance) and re-arm its timers.

        The partition's watermark moves to the user's last event, so that once all of a
        partition's users are adopted it is where the uninterrupted run had it.
        """
        self.users[state.user_id] = state
        self.timers.advance(state.partition, state.last_seen_ms)
        if state.session_start_ms is not None:
            self.timers.schedule(
                state.partition, state.user_id, SESSION, state.last_seen_ms + self._gap_ms
            )

    def _dead_letter(
        self,
        rejection: Rejection,
        raw: bytes | None,
        key: bytes | None,
        topic: str,
        partition: int,
        offset: int,
    ) -> None:
        self.tally.rejected[rejection.reason] += 1
        value = dlq_record(
            rejection.reason,
            rejection.detail,
            raw,
            key=key,
            topic=topic,
            partition=partition,
            offset=offset,
            received_at_ms=int(self._clock() * 1000),
        )
        self._outbox.append(Output("dlq", key, value))

    # --- event-time timers ------------------------------------------------------------

    def _fire_timers(self, partition: int) -> None:
        for user_id, kind, deadline_ms in self.timers.expired(partition):
            if kind == SESSION:
                self._end_session(self.users[user_id], deadline_ms)

    def _end_session(self, state: UserState, at_ms: int) -> None:
        session = state.close_session()
        self._dirty.add(state.user_id)
        self.tally.sessions_closed += 1
        days_observed = (state.last_seen_ms - state.first_seen_ms) / _DAY_MS
        features = {"sessions": float(state.sessions), "days_observed": days_observed}
        model = self.churn_model
        probability = model.predict_proba_one(features)
        settings = self.settings
        band = risk_band(probability, medium=settings.risk_medium, high=settings.risk_high)
        key = state.user_id.encode()
        self._emit(
            "churn",
            key,
            churn_record(
                state.user_id,
                at_ms,
                probability=probability,
                band=band,
                model_version=model.model_version,
                top_features=model.contributions(features),
                session={
                    "start": format_ts(session.start_ms),
                    "end": format_ts(session.end_ms),
                    "events": session.events,
                    "watch_s": session.watch_s,
                },
            ),
        )
        previous = state.risk_band
        state.risk_band = band
        if previous is not None and (previous == "high") != (band == "high"):
            self._emit(
                "signal",
                key,
                signal_record(
                    state.user_id,
                    at_ms,
                    signal="became_at_risk" if band == "high" else "recovered",
                    probability=probability,
                    band=band,
                    previous_band=previous,
                    model_version=model.model_version,
                ),
            )

    def _emit(self, kind: str, key: bytes, value: bytes) -> None:
        event_ts_ms, ingest_ts_ms = self._cause
        self._outbox.append(Output(kind, key, value, event_ts_ms, ingest_ts_ms))
        self.tally.published[kind] += 1

    # --- output -----------------------------------------------------------------------

    def take_outbox(self) -> list[Output]:
        """The records to publish since the last call, in the order they were made."""
        outbox, self._outbox = self._outbox, []
        return outbox

    def take_dirty(self) -> list[tuple[str, int, bytes]]:
        """``(user_id, partition, state bytes)`` of each user changed since the last call."""
        users = self.users
        dirty = [(u, users[u].partition, users[u].to_bytes()) for u in self._dirty]
        self._dirty.clear()
        return dirty

    def drop_partition(self, partition: int) -> None:
        """Forget the users and timers of a partition this worker no longer owns.

        Call :meth:`take_dirty` first and write its result: dropped states are not kept.
        """
        self.timers.drop_partition(partition)
        for user_id in [u for u, s in self.users.items() if s.partition == partition]:
            del self.users[user_id]
            self._dirty.discard(user_id)
