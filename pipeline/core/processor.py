"""The processing core: one input record in, state updated, output records out.

:class:`Processor` is what the Faust agent, the offline evaluator and the benchmark
all run, so the live worker and a replay of a file give the same results. It never
reads the wall clock to decide anything: event time (the ``ts`` of accepted events)
moves a watermark per partition, and the watermark ends sessions.

Every input record ends in exactly one of four outcomes, each counted in the
:class:`~pipeline.core.tally.Tally`: **consumed** (applied to state), **deduplicated**
(a client retry), **rejected** (dead-lettered with a reason), or **already applied**
(re-read after a restart, its effect already in the restored state).

Events of one user are expected on one partition (key = user_id). A record whose key
sent it to another partition is still applied to the user's state, but cannot be
recognised as a replay by its offset, which belongs to the other partition's sequence.

User states live in memory (``users``) as a write-back cache in front of the
changelog-backed table: a state changed since the last write-back is listed once in
:meth:`Processor.take_dirty` (the worker writes back as it commits), however many
events changed it. After a restart or a rebalance, the worker hands every stored state
of its partitions to :meth:`Processor.adopt` before processing, which re-arms session
timers and watermarks.

Examples
--------
>>> from pipeline.config import Settings
>>> from pipeline.core.events import Event, encode_event
>>> p = Processor(Settings(session_gap_s=60), clock=lambda: 2e9)
>>> for offset, (user, ts) in enumerate([("u1", 0), ("u1", 30_000), ("u2", 200_000)]):
...     ev = Event(f"e{offset}", "search", user, ts, query="drama")
...     p.process(encode_event(ev), key=user.encode(), partition=0, offset=offset)
>>> p.process(b"{not json", key=b"u3", partition=0, offset=3)
>>> [o.kind for o in p.take_outbox()]   # the KPI windows opened; u1's session ended at 90 s
['kpi_partial', 'churn', 'dlq']
>>> p.tally.received, sum(p.tally.consumed.values()), dict(p.tally.rejected)
(4, 3, {'not_json': 1})
>>> sorted(user for user, _, _ in p.take_dirty())
['u1', 'u2']
"""

from __future__ import annotations

import functools
import logging
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from pipeline.config import Settings
from pipeline.core.artwork import Artworks, ArtworkTrial
from pipeline.core.catalog_items import CatalogItemRejected, catalog_item
from pipeline.core.events import Event, EventDecoder, Rejection, format_ts
from pipeline.core.features import CHURN_FEATURES, CHURN_FEATURES_V1, DAY_MS
from pipeline.core.personalize import Personalizer
from pipeline.core.records import (
    DLQ_RECORD_OVERHEAD,
    churn_record,
    dlq_record,
    kpi_partial_record,
    risk_band,
    signal_record,
)
from pipeline.core.state import PendingChurn, UserState
from pipeline.core.tally import Tally
from pipeline.core.timers import EventTimeTimers
from pipeline.crm.consent import Consent
from pipeline.crm.triggers import CrmRules, Triggers
from pipeline.experiments.definition import Knobs
from pipeline.experiments.live import LiveExperiments
from pipeline.experiments.live_results import PartitionOutcomes, experiment_meta
from pipeline.experiments.outcomes import UserOutcome
from pipeline.kpis.windows import HOUR_MS, ONLY_ALL, PartitionKpis, UserKpis
from pipeline.models.churn import ChurnModel, inactive_features
from pipeline.models.exchange import (
    CONTROL_KEY,
    DELTAS,
    PartitionShare,
    decode_merge,
    encode_delta,
    sign,
    verified,
)
from pipeline.models.partition import PartitionModels
from pipeline.models.quality import PUBLISHED, LabelledPrediction, Prequential
from pipeline.models.shared import SharedLearning

__all__ = ["Output", "Processor"]

log = logging.getLogger(__name__)

#: Longest ``detail`` of a ``processing_error`` dead letter (the exception's message).
MAX_DETAIL_CHARS = 500

SESSION = "session"
CHURN = "churn"
SILENCE = "silence"
ARTWORK = "artwork"
SESSION_END = "session_end"
"""The trigger of a churn score made at the end of a session."""


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
    prediction_sink
        Called with every churn prediction whose label became known (offline evaluation
        writes them to a file).
    artwork_sink
        Called with every artwork show that ended, taken or not (offline evaluation
        estimates other artwork policies from them).
    load_state
        Where the states of users evicted from :attr:`users` are read back: given a user
        id and the partition the user's records are on, the bytes last stored for it (see
        :meth:`stored`), or None. Required when ``settings.user_cache_max`` bounds the
        cache (see :meth:`evict`).
    whole_run_quality
        Keep every labelled churn prediction in :attr:`quality` for whole-run figures (an
        offline evaluation); a worker passes False and keeps the last ones only.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        prediction_sink: Callable[[LabelledPrediction], None] | None = None,
        artwork_sink: Callable[[ArtworkTrial], None] | None = None,
        load_state: Callable[[str, int], bytes | None] | None = None,
        whole_run_quality: bool = True,
    ) -> None:
        if settings.user_cache_max and load_state is None:
            raise ValueError("a bounded user cache (user_cache_max) needs load_state")
        self.settings = settings
        self.decoder = EventDecoder(
            max_bytes=settings.max_event_bytes,
            max_future_skew_s=settings.max_future_skew_s,
            clock=clock,
        )
        #: The user states held as objects, least recently used first when the cache is
        #: bounded (``settings.user_cache_max``).
        self.users: dict[str, UserState] = {}
        self._cache_max = settings.user_cache_max
        self._load_state = load_state
        # users whose serialised states are on their way to the store: how many times
        self._writing: dict[str, int] = {}
        # users taken for writing (take_dirty_users), not serialised yet (states_of):
        # no longer dirty, not on their way to the store, so not evictable either
        self._taken: set[str] = set()
        #: The dead-letter topic's ``max.message.bytes``: every dead-letter record fits in
        #: it. The worker lowers it to the topic's own limit when that is smaller.
        self.dlq_max_message_bytes = settings.dlq_max_message_bytes
        self.timers = EventTimeTimers()
        self.tally = Tally()
        #: Prequential quality; a worker keeps the last pairs only (``whole_run_quality``).
        self.quality = Prequential(whole_run=whole_run_quality)
        #: The experiments read from ``ott.experiments`` (:meth:`load_experiments`).
        self.experiments = LiveExperiments()
        self.catalog: dict[str, dict[str, Any]] = {}
        self.artworks = Artworks(
            self.catalog,
            policy=settings.artwork_policy,
            sticky_ms=int(settings.artwork_sticky_s * 1000),
            show_window_ms=int(settings.artwork_show_window_s * 1000),
            take_window_ms=int(settings.artwork_take_window_s * 1000),
            take_play_s=settings.artwork_take_play_s,
            schedule=self._schedule_artwork,
            tally=self.tally,
            sink=artwork_sink,
            context=settings.artwork_context,
        )
        #: Opt-outs read from ``ott.consent`` (:meth:`load_consent`).
        self.consent = Consent()
        self.triggers = Triggers(CrmRules.of(settings), self.consent, self.tally)
        self.personalizer = Personalizer(
            settings, quality=self.quality, experiments=self.experiments, artworks=self.artworks
        )
        self._models: dict[int, PartitionModels] = {}
        self._sharing: SharedLearning | None = None
        self._share_every_ms = int(settings.share_every_s * 1000)
        # signs the deltas published, checks the merges read (empty: neither)
        self._learning_key = settings.snapshot_key.get_secret_value().encode()
        self._share_next_ms = -1  # when the epoch of the latest event time ends
        self._prediction_sink = prediction_sink
        self._clock = clock
        self._dirty: set[str] = set()
        self._outbox: list[Output] = []
        self._gap_ms = int(settings.session_gap_s * 1000)
        self._horizon_ms = int(settings.churn_horizon_s * 1000)
        self._rescore_ms = [days * DAY_MS for days in settings.churn_rescore_days]
        self._dedupe_window_ms = int(settings.dedupe_window_s * 1000)
        self._dedupe_max_ids = settings.dedupe_max_ids
        self._cause: tuple[int, int] = (0, 0)
        # per partition, offsets and last event times of the states adopted since its last
        # record (16 bytes a state: a restore may adopt millions)
        self._floors: dict[int, tuple[array[int], array[int]]] = {}
        #: Each partition's KPI windows (:mod:`pipeline.kpis.windows`), their users' parts in
        #: the user states.
        self.kpis: dict[int, PartitionKpis] = {}
        self._kpi_lateness_ms = int(settings.kpi_lateness_s * 1000)
        self._experiment_window_ms = int(settings.experiment_window_s * 1000)
        self._kpi_next: dict[int, int] = {}  # per partition, the hour after its last KPI record
        self._kpi_marked: dict[int, int] = {}  # per partition, its closed point last stored

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
        """Process one input record read from ``topic``/``partition`` at ``offset``.

        Never raises: a record that is not a valid event is dead-lettered with the reason,
        and so is a valid one whose processing raised (``processing_error``, naming the
        exception), so that no single record can stop the worker.
        """
        self.tally.received += 1
        topic = topic or self.settings.topic_events
        if key == CONTROL_KEY:
            self._fold_learning(raw, key, topic, partition, offset)
            return
        decoded = self.decoder.decode(raw)
        if isinstance(decoded, Rejection):
            self._dead_letter(decoded, raw, key, topic, partition, offset)
            return
        if decoded.artwork_id is not None:
            refused = self.artworks.refuse(decoded)
            if refused is not None:
                self._dead_letter(refused, raw, key, topic, partition, offset)
                return
        try:
            self._apply(decoded, partition, offset, timestamp_ms)
        except Exception as exc:  # noqa: BLE001 - no single record may stop a worker
            log.warning(
                "record %s[%d]@%d dead-lettered: processing raised %s",
                topic, partition, offset, type(exc).__name__, exc_info=True,
            )  # fmt: skip
            detail = f"{type(exc).__name__}: {exc}"[:MAX_DETAIL_CHARS]
            self._dead_letter(
                Rejection("processing_error", detail), raw, key, topic, partition, offset
            )

    def _apply(self, event: Event, partition: int, offset: int, timestamp_ms: int) -> None:
        """Apply a decoded event: replay check, de-duplication, watermark, state, lists.

        It counts the record as consumed only once everything has run: a record that
        raises half-way is counted once, as dead-lettered, by :meth:`process` (what it
        changed in its user's state stays).
        """
        tally = self.tally
        if self._floors:
            self._restore_watermark(partition, offset)
        user_id = event.user_id
        users = self.users
        state = users.get(user_id)
        if state is None:
            state = self._read_back(user_id, partition) or self._new_user(user_id, partition)
        elif self._cache_max:  # the most recently used last
            del users[user_id]
            users[user_id] = state
        timers = self.timers
        if partition == state.partition:
            if offset <= state.offset:
                # Replayed after a crash: the state holds this event, but the watermark
                # must move (and timers fire) here as in the uninterrupted run.
                tally.already_applied += 1
                self._advance(partition, event.ts_ms, timestamp_ms)
                return
            state.offset = offset
        self._dirty.add(user_id)
        if state.recent_ids.seen(event.event_id, event.ts_ms):
            tally.deduplicated += 1
            return
        self._advance(partition, event.ts_ms, timestamp_ms)
        models = self.models(state.partition)
        if state.pending is not None:  # the user came back within the horizon
            timers.cancel(user_id, CHURN)
            timers.cancel(user_id, SILENCE)  # re-scores were of the silence now ended
            self._label(state, models, churned=False, at_ms=event.ts_ms)
        previous = state.current_item
        playing, watch_s = state.playing_item, state.watch_s
        session_start = state.session_start_ms is None
        step = state.update(event, self._genres)
        if step.playback_end is not None and self.triggers:
            item_id, share = step.playback_end
            self.triggers.on_playback_end(state, item_id, share, event.ts_ms)
        if state.artwork is not None and models.artwork is not None:
            self.artworks.on_event(
                state,
                models.artwork,
                event,
                playing,
                state.watch_s - watch_s,
                session_start=session_start,
            )
        scopes = ONLY_ALL
        if self.experiments:
            if not state.experiments:  # the shared EMPTY: the user's own, to be assigned in
                state.experiments = {}
            scopes = self.experiments.assign(
                cast("dict[str, str]", state.experiments),
                user_id,
                ts_ms=event.ts_ms,
                first_seen_ms=state.first_seen_ms,
                segment=state.segment,
                device=event.device,
            )
        timers.schedule(state.partition, user_id, SESSION, state.session_deadline_ms(self._gap_ms))
        kpis = self.kpis.get(state.partition) or self._kpis_of(state.partition)
        late = kpis.late
        kpis.add(
            event,
            scopes=scopes,
            user=state.kpis or self._kpi_tracker(user_id, state.partition),
        )
        if kpis.late != late:
            tally.kpi_late += 1
        else:
            self._emit_kpis(state.partition, kpis)
        if event.item_id is not None:
            record = self.personalizer.on_event(state, models, event, step, previous)
            if record is not None:
                self._emit("personalization", user_id.encode(), record)
        tally.consumed[event.type] += 1

    def _restore_watermark(self, partition: int, offset: int) -> None:
        """At the first record after adopting ``partition``'s users, restore its watermark.

        The uninterrupted run's watermark at this offset is the latest event time before
        it; the adopted states whose last applied offset is before it tell it (a timer
        scheduled by the last event before a restart may be due already and must fire at
        the next event, as it did in that run). States written ahead of the committed
        offset (a crash between the state write-back and the commit) are left out: their
        events are replayed and move the watermark when the replay reaches them.
        """
        floors = self._floors.pop(partition, None)
        if floors:
            offsets, times = floors
            before = max(
                (t for o, t in zip(offsets, times, strict=True) if o < offset), default=None
            )
            if before is not None:
                self.timers.advance(partition, before)

    def _advance(self, partition: int, ts_ms: int, timestamp_ms: int) -> None:
        """Move ``partition``'s watermark to ``ts_ms`` and fire the timers now due."""
        timers = self.timers
        sharing = self._sharing
        if sharing is not None:
            if sharing.at(self._models, ts_ms):
                for promoted_in, _ in sharing.promoted:
                    self._promoted(promoted_in, self._models[promoted_in], ts_ms)
        elif self._share_every_ms and ts_ms >= self._share_next_ms:
            self._share(ts_ms, timestamp_ms)
        timers.advance(partition, ts_ms)
        self._cause = (ts_ms, timestamp_ms)
        kpis = self.kpis.get(partition)
        if kpis is not None and (kpis.watermark_ms is None or ts_ms > kpis.watermark_ms):
            kpis.advance(ts_ms)
            self._emit_kpis(partition, kpis)
        if timers.due(partition):
            self._fire_timers(partition)

    def _share(self, ts_ms: int, timestamp_ms: int) -> None:
        """The latest event time entered a new epoch: each partition publishes its learning.

        Every partition of this processor, with events since or not: a partition's learning
        never waits for its next event (:mod:`pipeline.models.exchange`).
        """
        every = self._share_every_ms
        self._share_next_ms = (ts_ms // every + 1) * every
        for partition in sorted(self._models):
            models = self._models[partition]
            delta = self._side(models).at(models, ts_ms)
            if delta is None or delta.is_empty():
                continue
            delta.partition = partition
            record = encode_delta(delta)
            if self._learning_key:
                record = sign(
                    record, key=self._learning_key, app_id=self.settings.app_id, partition=DELTAS
                )
            self._outbox.append(
                Output("learning", str(partition).encode(), record, ts_ms, timestamp_ms)
            )
            self.tally.learning_published += 1

    def _side(self, models: PartitionModels) -> PartitionShare:
        """The partition's side of shared learning, started (again) at the set epoch length."""
        side = models.shared
        if side is None or side.every_ms != self._share_every_ms:
            side = models.shared = PartitionShare(every_ms=self._share_every_ms)
            side.start(models)
        return side

    def _fold_learning(
        self, raw: bytes | None, key: bytes, topic: str, partition: int, offset: int
    ) -> None:
        """Fold a merge of the other partitions' learning (:mod:`pipeline.models.exchange`)."""
        tally = self.tally
        try:
            if self._learning_key:  # only merges signed for this partition (exchange.sign)
                app_id = self.settings.app_id
                raw = verified(raw, key=self._learning_key, app_id=app_id, partition=partition)
            merge = decode_merge(raw)
        except ValueError as exc:
            detail = f"{exc}"[:MAX_DETAIL_CHARS]
            self._dead_letter(
                Rejection("bad_learning_record", detail), raw, key, topic, partition, offset
            )
            return
        if not self._share_every_ms or self._sharing is not None:
            tally.learning_records["ignored"] += 1
            return
        models = self.models(partition)
        promotions = len(models.promotion.history) if models.promotion is not None else 0
        try:
            folded = self._side(models).fold(models, merge)
        except Exception as exc:  # noqa: BLE001 - no single record may stop a worker
            log.warning("merge record %s[%d]@%d: folding raised", topic, partition, offset,
                        exc_info=True)  # fmt: skip
            detail = f"{type(exc).__name__}: {exc}"[:MAX_DETAIL_CHARS]
            self._dead_letter(
                Rejection("processing_error", detail), raw, key, topic, partition, offset
            )
            return
        tally.learning_records["folded" if folded else "already_folded"] += 1
        if models.promotion is not None and len(models.promotion.history) > promotions:
            self._promoted(partition, models, merge.delta.at_ms)

    def _genres(self, item_id: str) -> tuple[str, ...]:
        record = self.catalog.get(item_id)
        return tuple(record.get("genres") or ()) if record else ()

    def load_catalog(self, items: Iterable[object]) -> None:
        """Learn item titles, genres and durations (from ``ott.catalog`` or a file).

        Each item is validated first (:func:`pipeline.core.catalog_items.catalog_item`): one
        that does not validate is skipped, logged with its reason and counted in the
        tally (``catalog_rejected``), and the items after it are still read.

        Items whose record has not changed are skipped: a catalog republished as a whole
        (``ottscore simulate --to-kafka`` publishes every item) would otherwise re-add
        every item to every partition's models on the event loop (34 ms for 5,000 items
        and four partitions; 3.5 ms skipped).
        """
        catalog = self.catalog
        for item in items:
            try:
                record = catalog_item(item)
            except CatalogItemRejected as rejected:
                self.tally.catalog_rejected[rejected.reason] += 1
                log.warning("catalog item skipped: %s (%.200r)", rejected, item)
                continue
            item_id = record["item_id"]
            if catalog.get(item_id) == record:
                continue
            catalog[item_id] = record
            for models in self._models.values():
                models.items.add_catalog_item(record)

    def load_experiments(self, definitions: Iterable[object]) -> None:
        """Adopt experiment definitions (from ``ott.experiments`` or a file).

        A definition that does not parse, or that changes a registered experiment other
        than by its stop, is skipped, logged with its reason and counted in the tally
        (``experiments_refused``); the ones after it are still read. Users are assigned at
        their next event while an experiment runs (:class:`LiveExperiments`).
        """
        self.experiments.load(definitions)
        self.tally.experiments_refused.update(self.experiments.take_refused())

    def load_consent(self, records: Iterable[object]) -> None:
        """Adopt opt-outs (from ``ott.consent`` or a file), the latest record of a user last.

        A record that does not validate is skipped, logged with its reason and counted in the
        tally (``consent_refused``); the ones after it are still read.
        """
        self.consent.load(records)
        self.tally.consent_refused.update(self.consent.take_refused())

    # --- models -----------------------------------------------------------------------

    def models(self, partition: int) -> PartitionModels:
        """The models of ``partition`` (created on first use)."""
        models = self._models.get(partition)
        if models is None:
            models = PartitionModels.create(
                self.settings, partition=partition, catalog=self.catalog
            )
            self._models[partition] = models
            if self._share_every_ms and self._sharing is None:
                self._side(models)  # its learning from the first event on is published
        return models

    def share_learning(self, sharing: SharedLearning, *, partitions: int) -> None:
        """Merge the learning of the models of ``partitions`` partitions with ``sharing``.

        For a run of every partition in this one processor, in the order of the records
        (``ottscore evaluate``): the models of all partitions are created now, so that
        each starts from the merged knowledge.
        """
        for partition in range(partitions):
            self.models(partition)
        self._sharing = sharing

    def install_models(self, partition: int, models: PartitionModels) -> None:
        """Adopt restored models for ``partition`` (catalog items added since are merged)."""
        for record in self.catalog.values():
            if record["item_id"] not in models.items:
                models.items.add_catalog_item(record)
        models.configure(self.settings)
        self._models[partition] = models

    def _new_user(self, user_id: str, partition: int) -> UserState:
        state = UserState.new(
            user_id,
            partition=partition,
            window_ms=self._dedupe_window_ms,
            max_ids=self._dedupe_max_ids,
        )
        self.users[user_id] = state
        return state

    def _held(self, user_id: str, partition: int) -> UserState:
        """The state of a user known to this processor: cached, or read back if evicted."""
        state = self.users.get(user_id)
        if state is None:
            state = self._read_back(user_id, partition)
            if state is None:
                raise KeyError(user_id)
        return state

    def _read_back(self, user_id: str, partition: int, *, woken: bool = False) -> UserState | None:
        """Read an evicted user's state back from the store into the cache (bounded only).

        Its parts of the KPI windows, summed at eviction, count as its own again, and its
        timers, if they were parked at eviction (``woken``: handed back by
        :meth:`~pipeline.core.timers.EventTimeTimers.woken`), are armed again as the
        state calls for them: they were those when it was parked, and it has not changed.
        """
        if not self._cache_max:
            return None
        data = self._load_state(user_id, partition)  # type: ignore[misc]  # set when bounded
        if data is None:
            return None
        state = self.decode_state(user_id, data)
        self.users[user_id] = state
        if state.kpis is not None:
            self._kpis_of(state.partition).reload(user_id, state.kpis)
        armed = self._timers_of(state)
        timers = self.timers
        if armed and (woken or timers.unpark(state.partition, user_id, armed)):
            for kind, deadline_ms in armed:
                timers.schedule(state.partition, user_id, kind, deadline_ms)
        self.tally.states_read_back += 1
        return state

    def _timers_of(self, state: UserState) -> list[tuple[str, int]]:
        """The timers ``state`` calls for, as :meth:`adopt` arms them: ``(kind, deadline)``.

        In the order of :meth:`~pipeline.core.timers.EventTimeTimers.of` (by kind).
        """
        armed = []
        if state.session_start_ms is not None:
            armed.append((SESSION, state.session_deadline_ms(self._gap_ms)))
        if state.pending is not None:
            armed.append((CHURN, state.last_seen_ms + self._horizon_ms))
            done = len(state.pending.rescores)
            if done < len(self._rescore_ms):
                armed.append((SILENCE, state.last_seen_ms + self._rescore_ms[done]))
        deadline_ms = self.artworks.deadline_ms(state)
        if deadline_ms is not None:
            armed.append((ARTWORK, deadline_ms))
        armed.sort()
        return armed

    def evict(self) -> int:
        """Evict the least recently used states beyond ``settings.user_cache_max``.

        Only states the store holds as they are: not changed, not taken for writing and
        not serialised yet, nor on their way to the store (:meth:`stored` not called yet).
        Their timers are parked (:meth:`~pipeline.core.timers.EventTimeTimers.park`: one
        reference to the user kept, by its earliest deadline) when they are exactly those
        the state calls for (as a restart arms them); otherwise they stay armed.
        Their parts of the KPI windows stay as sums. Their user's next event or timer reads
        them back with ``load_state`` (and arms parked timers again). Returns how many were
        evicted; a caller evicts between batches (the worker after each, offline runs at
        each :meth:`take_dirty`).

        >>> from pipeline.config import Settings
        >>> from pipeline.core.events import Event, encode_event
        >>> store = {}
        >>> p = Processor(Settings(user_cache_max=1), clock=lambda: 2e9,
        ...               load_state=lambda user_id, partition: store.get(user_id))
        >>> for offset, user in enumerate(["u1", "u2"]):
        ...     event = Event(f"e{offset}", "search", user, offset, query="drama")
        ...     p.process(encode_event(event), key=user.encode(), partition=0, offset=offset)
        >>> p.evict(), sorted(p.users)   # nothing is stored yet: nothing can go
        (0, ['u1', 'u2'])
        >>> store.update({user: data for user, _, data in p.take_dirty()})
        >>> sorted(p.users)   # stored at once: the least recently used went
        ['u2']
        >>> p.process(encode_event(Event("e2", "search", "u1", 2, query="drama")),
        ...           key=b"u1", partition=0, offset=2)
        >>> p.users["u1"].counts == [0, 0, 2, 0]   # read back, then its second search
        True
        """
        users = self.users
        excess = len(users) - self._cache_max
        if not self._cache_max or excess <= 0:
            return 0
        dirty, writing, taken = self._dirty, self._writing, self._taken
        victims = []
        for user_id in users:
            if user_id not in dirty and user_id not in writing and user_id not in taken:
                victims.append(user_id)
                if len(victims) == excess:
                    break
        timers = self.timers
        for user_id in victims:
            state = users.pop(user_id)
            if state.kpis is not None:
                kpis = self.kpis.get(state.partition)
                if kpis is not None:
                    kpis.evict(user_id, state.kpis)
            armed = self._timers_of(state)
            if armed and timers.of(user_id) == armed:  # else they stay armed (see _read_back)
                timers.park(state.partition, user_id, armed)
        self.tally.states_evicted += len(victims)
        return len(victims)

    def stored(self, user_ids: Iterable[str]) -> None:
        """The states :meth:`states_of` gave of ``user_ids`` are in the store now.

        With a bounded cache a state is evicted only once stored: call this when the
        store has them (the worker: once the changelog acknowledged them).
        """
        writing = self._writing
        for user_id in user_ids:
            times = writing.pop(user_id, 0)
            if times > 1:
                writing[user_id] = times - 1

    def decode_state(self, user_id: str, data: bytes) -> UserState:
        """A user state from its stored bytes (as :meth:`take_dirty` gave them)."""
        return UserState.from_bytes(
            user_id, data, window_ms=self._dedupe_window_ms, max_ids=self._dedupe_max_ids
        )

    def adopt(self, state: UserState) -> None:
        """Take over a stored state (after a restart or rebalance) and re-arm its timers.

        The partition's watermark is restored at its next record (see
        :meth:`_restore_watermark`), from the states that are not ahead of it.
        """
        self.users[state.user_id] = state
        floors = self._floors.get(state.partition)
        if floors is None:
            floors = self._floors[state.partition] = (array("q"), array("q"))
        floors[0].append(state.offset)
        floors[1].append(state.last_seen_ms)
        if state.kpis is not None:
            self._kpis_of(state.partition).adopt(state.user_id, state.kpis)
        for kind, deadline_ms in self._timers_of(state):
            self.timers.schedule(state.partition, state.user_id, kind, deadline_ms)

    def _schedule_artwork(self, state: UserState, deadline_ms: int | None) -> None:
        """Set (None: cancel) the ``artwork`` timer of a user with open artwork shows."""
        if deadline_ms is None:
            self.timers.cancel(state.user_id, ARTWORK)
        else:
            self.timers.schedule(state.partition, state.user_id, ARTWORK, deadline_ms)

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
        dlq_key, value = dlq_record(
            rejection.reason,
            rejection.detail,
            raw,
            key=key,
            topic=topic,
            partition=partition,
            offset=offset,
            received_at_ms=int(self._clock() * 1000),
            max_bytes=self.dlq_max_message_bytes - DLQ_RECORD_OVERHEAD,
        )
        self._outbox.append(Output("dlq", dlq_key, value))

    # --- event-time timers ------------------------------------------------------------

    def _fire_timers(self, partition: int) -> None:
        """Run every timer the watermark passed; one that raises is counted and skipped.

        A timer belongs to another user than the record that moved the watermark, so its
        failure must not dead-letter that record, nor stop the timers after it.
        """
        for user_id in self.timers.woken(partition):
            self.tally.timers_woken += 1
            try:  # arms its timers again, in the heap before any of them is due
                if (
                    user_id not in self.users
                    and self._read_back(user_id, partition, woken=True) is None
                ):
                    raise KeyError(user_id)
            except Exception as exc:  # noqa: BLE001 - no single user may stop a worker
                self.tally.timer_errors += 1
                log.warning(
                    "parked timers of a user on partition %d not read back: %s raised",
                    partition, type(exc).__name__, exc_info=True,
                )  # fmt: skip
        for user_id, kind, deadline_ms in self.timers.expired(partition):
            try:
                state = self._held(user_id, partition)
                self._dirty.add(user_id)
                if kind == SESSION:
                    self._end_session(state, deadline_ms)
                elif kind == CHURN and state.pending is not None:
                    models = self.models(state.partition)
                    self._label(state, models, churned=True, at_ms=deadline_ms)
                elif kind == SILENCE:
                    self._rescore(state, deadline_ms)
                elif kind == ARTWORK:
                    bandit = self.models(state.partition).artwork
                    if bandit is not None:
                        self.artworks.expire(state, bandit, deadline_ms)
            except Exception as exc:  # noqa: BLE001 - no single user may stop a worker
                self.tally.timer_errors += 1
                log.warning(
                    "%s timer of a user on partition %d at %s skipped: %s raised",
                    kind, partition, format_ts(deadline_ms), type(exc).__name__, exc_info=True,
                )  # fmt: skip

    def _end_session(self, state: UserState, at_ms: int) -> None:
        """Score the churn risk of a user whose session the watermark just ended."""
        session = state.close_session()
        self.tally.sessions_closed += 1
        features = state.features
        gap_days = features.session_ended(
            start_ms=session.start_ms,
            end_ms=session.end_ms,
            searched=session.searched,
            played=session.played,
        )
        vector = features.churn_vector(
            gap_days=gap_days,
            session_ms=session.end_ms - session.start_ms,
            session_events=session.events,
            tenure_ms=session.end_ms - state.first_seen_ms,
        )
        x = dict(zip(CHURN_FEATURES, vector, strict=True))
        models = self.models(state.partition)
        probabilities = {name: model.predict_proba_one(x) for name, model in models.churn.items()}
        # the segments' centres are of the features they were started on (before -7)
        v1 = dict(zip(CHURN_FEATURES_V1, vector, strict=False))
        state.segment = models.segmenter.learn_predict_one(v1)
        state.pending = PendingChurn(at_ms, state.last_seen_ms, array("d", vector), probabilities)
        self.timers.schedule(
            state.partition, state.user_id, CHURN, state.last_seen_ms + self._horizon_ms
        )
        if self._rescore_ms:
            self.timers.schedule(
                state.partition, state.user_id, SILENCE, state.last_seen_ms + self._rescore_ms[0]
            )
        name, champion = models.champion
        self._publish_risk(
            state,
            at_ms,
            probabilities[name],
            model=champion,
            x=x,
            trigger=SESSION_END,
            session={
                "start": format_ts(session.start_ms),
                "end": format_ts(session.end_ms),
                "events": session.events,
                "watch_s": session.watch_s,
            },
        )
        if self.triggers:
            items, trending = models.items, models.recommender.trending

            def most_played() -> Iterator[tuple[str, tuple[str, ...]]]:
                # ranked once, read as far as the first title the user may be offered
                for i in trending.top(self.triggers.rules.trending_top):
                    yield items.ids[i], items.genres(i)

            arms, holdout = self._crm_arms(state, at_ms)
            for value in self.triggers.on_session_end(
                state, at_ms, most_played, experiments=arms, holdout=holdout
            ):
                self._emit("action", state.user_id.encode(), value)

    def _rescore(self, state: UserState, at_ms: int) -> None:
        """Score again the churn risk of a user silent since their last session's end.

        A user's return cancels the timer (their next session end sets a new one); one
        found stale all the same (the user back since) does nothing.
        """
        pending = state.pending
        silence_ms = at_ms - state.last_seen_ms
        if pending is None or pending.last_seen_ms != state.last_seen_ms:
            return
        stages = self._rescore_ms
        if silence_ms not in stages:
            return
        stage = stages.index(silence_ms)
        days = self.settings.churn_rescore_days[stage]
        models = self.models(state.partition)
        model = models.inactive
        if model is None:
            return
        x = inactive_features(pending.features, days)
        probability = model.predict_proba_one(x)
        pending.rescores = {**pending.rescores, str(days): probability}
        self.tally.churn_rescores += 1
        if stage + 1 < len(stages):
            self.timers.schedule(
                state.partition, state.user_id, SILENCE, state.last_seen_ms + stages[stage + 1]
            )
        self._publish_risk(
            state,
            at_ms,
            probability,
            model=model,
            x=x,
            trigger=f"inactive_{days}d",
            silence_days=days,
        )
        if stage == 0 and self.triggers:  # after win_back: the order of TRIGGER_TYPES
            arms, holdout = self._crm_arms(state, at_ms)
            for value in self.triggers.on_silence(
                state, at_ms, silence_days=days, experiments=arms, holdout=holdout
            ):
                self._emit("action", state.user_id.encode(), value)

    def _publish_risk(
        self,
        state: UserState,
        at_ms: int,
        probability: float,
        *,
        model: ChurnModel,
        x: dict[str, float],
        trigger: str,
        session: dict[str, Any] | None = None,
        silence_days: int | None = None,
    ) -> None:
        """Publish a churn score, and a signal when it moves the user in or out of high risk.

        And the CRM triggers the score fires (``at_risk`` at a session end, ``win_back`` at
        a re-score after ``silence_days``).
        """
        settings = self.settings
        medium, high = settings.risk_medium, settings.risk_high
        arms, knobs = self._arms(state, at_ms)
        if knobs is not None and knobs.churn_thresholds is not None:
            medium, high = knobs.churn_thresholds.medium, knobs.churn_thresholds.high
        band = risk_band(probability, medium=medium, high=high)
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
                top_features=model.contributions(x, top=3),
                session=session,
                segment=state.segment,
                experiments=arms,
                trigger=trigger,
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
                    experiments=arms,
                    trigger=trigger,
                ),
            )
        if self.triggers:
            for value in self.triggers.on_risk(
                state,
                at_ms,
                probability,
                high=high,
                silence_days=silence_days,
                experiments=arms,
                holdout=_holdout(knobs),
            ):
                self._emit("action", key, value)

    def _arms(self, state: UserState, at_ms: int) -> tuple[dict[str, str], Knobs | None]:
        """The user's experiment arms at ``at_ms``, and their knobs (None: in no arm)."""
        arms = self.experiments.arms(state.experiments, at_ms) if state.experiments else {}
        return arms, self.experiments.knobs(arms) if arms else None

    def _crm_arms(self, state: UserState, at_ms: int) -> tuple[dict[str, str], frozenset[str]]:
        """The user's experiment arms at ``at_ms``, and the trigger types they hold out."""
        arms, knobs = self._arms(state, at_ms)
        return arms, _holdout(knobs)

    def _label(
        self, state: UserState, models: PartitionModels, *, churned: bool, at_ms: int
    ) -> None:
        """The label of the user's pending prediction is known: score it, then learn it."""
        pending = state.pending
        assert pending is not None
        state.pending = None
        x = dict(zip(CHURN_FEATURES, pending.features, strict=True))
        label = int(churned)
        scores = pending.probabilities
        # the first is the champion's when the prediction was made: the published one
        published = next(iter(scores.values()), None)
        if published is not None:
            self.quality.churn(PUBLISHED, published, label, ts_ms=at_ms)
        for name, model in models.churn.items():
            probability = scores.get(name)
            if probability is not None:
                self.quality.churn(name, probability, label, ts_ms=at_ms)
                if self._prediction_sink is not None:
                    self._prediction_sink(
                        LabelledPrediction(
                            state.user_id,
                            pending.predicted_at_ms,
                            probability,
                            label,
                            at_ms,
                            name,
                            pending.last_seen_ms,
                        )
                    )
            model.learn_one(x, churned)
        if pending.rescores:
            self._label_rescores(pending, models, published, label, at_ms)
        if models.learn_label(scores, churned) is not None:
            self._promoted(state.partition, models, at_ms)

    def _promoted(self, partition: int, models: PartitionModels, at_ms: int) -> None:
        """Count and log the promotion the churn test of ``partition`` just made."""
        self.tally.churn_promotions += 1
        promotion = models.promotion
        assert promotion is not None
        _, former, promoted, positives = promotion.history[-1]
        log.info(
            "partition %d: churn model %s promoted over %s at %s, after %d positives",
            partition, promoted, former, format_ts(at_ms), positives,
        )  # fmt: skip

    def _label_rescores(
        self,
        pending: PendingChurn,
        models: PartitionModels,
        published: float | None,
        label: int,
        at_ms: int,
    ) -> None:
        """Score and learn the re-scores made during the silence before the label.

        Beside each stage's quality (``inactive_<d>d``), the same users' session-end score
        (``session_end_<d>d``): what the re-score adds, on the same users and labels.
        """
        model = models.inactive
        for days, probability in pending.rescores.items():
            self.quality.churn(f"inactive_{days}d", probability, label, ts_ms=at_ms)
            if published is not None:
                self.quality.churn(f"session_end_{days}d", published, label, ts_ms=at_ms)
            if model is not None:
                model.learn_one(inactive_features(pending.features, float(days)), bool(label))

    def _emit(self, kind: str, key: bytes, value: bytes) -> None:
        event_ts_ms, ingest_ts_ms = self._cause
        self._outbox.append(Output(kind, key, value, event_ts_ms, ingest_ts_ms))
        self.tally.published[kind] += 1

    # --- KPI windows --------------------------------------------------------------------

    def _kpis_of(self, partition: int) -> PartitionKpis:
        kpis = self.kpis.get(partition)
        if kpis is None:
            kpis = self.kpis[partition] = PartitionKpis(
                lateness_ms=self._kpi_lateness_ms,
                session_gap_ms=self._gap_ms,
                trackers=functools.partial(self._kpi_tracker, partition=partition),
                changed=self._dirty.add,
                outcomes=PartitionOutcomes(
                    window_ms=self._experiment_window_ms,
                    lookup=functools.partial(self._user_outcomes, partition=partition),
                ),
            )
        return kpis

    def _user_outcomes(self, user_id: str, partition: int) -> Mapping[str, UserOutcome]:
        return self._kpi_tracker(user_id, partition).outcomes

    def _kpi_tracker(self, user_id: str, partition: int) -> UserKpis:
        state = self._held(user_id, partition)
        if state.kpis is None:
            state.kpis = UserKpis()
        return state.kpis

    def _emit_kpis(self, partition: int, kpis: PartitionKpis) -> None:
        """Publish the partition's windows closed since its last record.

        And at least one record an hour of event time: the combining agent waits for
        every partition.
        """
        released = kpis.released_ms
        if released is None:
            return
        due = self._kpi_next.get(partition)
        if not kpis.has_closed and due is not None and released < due:
            return  # the hot path: nothing closed, still in the hour of the last record
        self._kpi_next[partition] = (released // HOUR_MS + 1) * HOUR_MS
        outcomes = kpis.outcomes.take(released) if kpis.outcomes is not None else []
        registry = self.experiments.registry
        value = kpi_partial_record(
            partition,
            released_ms=released,
            follow_ms=kpis.follow_ms,
            closed=kpis.take_closed(),
            outcomes=outcomes,
            experiments={
                experiment_id: experiment_meta(registry[experiment_id])
                for experiment_id in sorted({e for _, at in outcomes for e in at})
                if experiment_id in registry
            },
        )
        event_ts_ms, ingest_ts_ms = self._cause
        self._outbox.append(
            Output("kpi_partial", str(partition).encode(), value, event_ts_ms, ingest_ts_ms)
        )

    def restore_kpis(self, partition: int, closed_ms: int) -> None:
        """Before adopting a partition's users: its windows closing by ``closed_ms`` were given.

        ``closed_ms`` is what :meth:`take_kpi_marks` gave, stored with the states.
        """
        self._kpis_of(partition).restore(closed_ms)
        self._kpi_marked[partition] = closed_ms

    def take_kpi_marks(self) -> list[tuple[int, int]]:
        """``(partition, closed point)`` of each partition whose KPI windows closed further.

        Since the last call; store them with the states, then call :meth:`kpi_mark_stored`.
        """
        marks = []
        for partition, kpis in self.kpis.items():
            if kpis.closed_ms > self._kpi_marked.get(partition, -1):
                self._kpi_marked[partition] = kpis.closed_ms
                marks.append((partition, kpis.closed_ms))
        return marks

    def kpi_mark_stored(self, partition: int, closed_ms: int) -> None:
        """The mark is stored: the users of ``partition`` forget the windows closed by it."""
        kpis = self.kpis.get(partition)
        if kpis is not None:
            kpis.made_durable(closed_ms)

    # --- output -----------------------------------------------------------------------

    def take_outbox(self) -> list[Output]:
        """The records to publish since the last call, in the order they were made."""
        outbox, self._outbox = self._outbox, []
        return outbox

    def take_dirty(self) -> list[tuple[str, int, bytes]]:
        """``(user_id, partition, state bytes)`` of each user changed since the last call.

        For a caller that stores them at once (offline runs): how far the KPI windows
        closed counts as stored too (:meth:`take_kpi_marks`), so users forget their parts
        of closed windows as in the worker.
        """
        for partition, closed_ms in self.take_kpi_marks():
            self.kpi_mark_stored(partition, closed_ms)
        states = self.states_of(self.take_dirty_users())
        if self._cache_max:
            self.stored(user_id for user_id, _, _ in states)
            self.evict()
        return states

    def take_dirty_users(self) -> list[str]:
        """The users changed since the last call, whose states are now to be written.

        Write them in parts with :meth:`states_of`; hand back those left unwritten (a
        write-back that failed) with :meth:`keep_dirty`.
        """
        dirty = list(self._dirty)
        self._dirty.clear()
        if self._cache_max:  # held until serialised (states_of) or handed back (keep_dirty)
            self._taken.update(dirty)
        return dirty

    def states_of(self, user_ids: Iterable[str]) -> list[tuple[str, int, bytes]]:
        """``(user_id, partition, state bytes)`` of those users still held, serialised now.

        >>> from pipeline.config import Settings
        >>> from pipeline.core.events import Event, encode_event
        >>> p = Processor(Settings(), clock=lambda: 2e9)
        >>> event = Event("e1", "search", "u1", 0, query="drama")
        >>> p.process(encode_event(event), key=b"u1", partition=3, offset=0)
        >>> users = p.take_dirty_users()
        >>> [(user, partition) for user, partition, _ in p.states_of(users + ["gone"])]
        [('u1', 3)]
        >>> p.take_dirty_users()   # taken: nothing is dirty until an event changes it again
        []
        """
        users = self.users
        user_ids = list(user_ids)
        states = [(u, users[u].partition, users[u].to_bytes()) for u in user_ids if u in users]
        if self._cache_max:
            self._taken.difference_update(user_ids)
            writing = self._writing
            for user_id, _, _ in states:
                writing[user_id] = writing.get(user_id, 0) + 1
        return states

    def keep_dirty(self, user_ids: Iterable[str]) -> None:
        """Mark users as changed again (taken by :meth:`take_dirty_users`, not written)."""
        user_ids = list(user_ids)
        self._taken.difference_update(user_ids)
        self._dirty.update(u for u in user_ids if u in self.users)

    def drop_partition(self, partition: int) -> None:
        """Forget the users and timers of a partition this worker no longer owns.

        Call :meth:`take_dirty` first and write its result: dropped states are not kept.
        """
        self.timers.drop_partition(partition)
        self._floors.pop(partition, None)
        self.kpis.pop(partition, None)
        self._kpi_next.pop(partition, None)
        self._kpi_marked.pop(partition, None)
        self._models.pop(partition, None)
        for user_id in [u for u, s in self.users.items() if s.partition == partition]:
            del self.users[user_id]
            self._dirty.discard(user_id)
            self._taken.discard(user_id)
            self._writing.pop(user_id, None)


def _holdout(knobs: Knobs | None) -> frozenset[str]:
    """The trigger types an arm's knobs hold out (None: in no arm, none)."""
    return (knobs.crm_holdout if knobs is not None else None) or frozenset()
