"""Every patch of Faust's and aiokafka's internals, in one place, guarded by their versions.

The worker runs on faust-streaming and aiokafka, whose private internals it adapts where
they lose data or time (each patch below states the defect and the version it was written
against; docs/upstream/ writes the defects up for their maintainers). They are attached
through Faust's own extension point: :class:`Transport`, registered for the ``ottscore://``
broker scheme (the ``faust.transports`` entry point in ``pyproject.toml``), names
:class:`Consumer` and :class:`Producer`. :func:`check_versions` refuses to start on any
version but :data:`VERIFIED_VERSIONS` unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import importlib.metadata
import logging
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import faust
from aiokafka.errors import (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from faust.exceptions import ProducerSendError
from faust.streams import _current_event  # the event a table write belongs to
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.drivers.aiokafka import ensure_aiokafka_TP
from faust.types import TP, Message, ProducerT
from mode import Service, ServiceT
from mode.utils.futures import stampede

from agents.worker.kafka import send_batches
from pipeline.config import Settings

if TYPE_CHECKING:
    from agents.worker.ingest import IngestWorker

__all__ = ["App", "Consumer", "Producer", "Transport", "Worker", "check_versions"]

log = logging.getLogger(__name__)


#: The versions whose private internals the patches in this module were written against
#: and verified on (the fault tests): any other version may have changed them.
VERIFIED_VERSIONS = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}


class UnverifiedVersion(RuntimeError):
    """An installed framework version the worker's patches were not verified on."""


def check_versions(*, allow_unverified: bool) -> list[str]:
    """Refuse to run on a Faust or aiokafka the patches here were not verified on.

    Returns the mismatches (``name installed X, verified Y``) when ``allow_unverified``
    lets the worker start anyway (logged as a warning); raises otherwise.

    >>> check_versions(allow_unverified=False)
    []
    """
    found = {name: importlib.metadata.version(name) for name in VERIFIED_VERSIONS}
    mismatches = [
        f"{name} {found[name]} is installed, the worker's patches of its internals were "
        f"verified on {verified}"
        for name, verified in VERIFIED_VERSIONS.items()
        if found[name] != verified
    ]
    if mismatches and not allow_unverified:
        raise UnverifiedVersion(
            "; ".join(mismatches) + ": install the verified versions (pip install -e .), or set "
            "OTTSCORE_ALLOW_UNVERIFIED_FAUST=true after running the fault tests on them"
        )
    for mismatch in mismatches:
        log.warning("%s (OTTSCORE_ALLOW_UNVERIFIED_FAUST is set)", mismatch)
    return mismatches


#: What the broker (or aiokafka, before sending) answers for a record or batch too large.
REFUSED_FOR_SIZE = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)
Records = Sequence[tuple[bytes | None, bytes]]
#: Given records refused for their size, the records to send instead (none: drop them).
Refusal = Callable[[Records], Records]


@dataclasses.dataclass(slots=True, frozen=True)
class _Outgoing:
    """A list of records handed to :meth:`Producer.send_many`, waiting to be sent."""

    topic: str
    partition: int | None
    records: Records
    on_acknowledged: Callable[[dict[int, int]], None] | None
    on_refused: Refusal | None
    done: asyncio.Future
    after_acknowledged: bool


def _database(store: Any, partition: int) -> Any | None:
    """``partition``'s own database in Faust's RocksDB store (one per partition); else None."""
    if not hasattr(store, "_visible_items"):
        return None  # not the RocksDB store (memory://)
    return getattr(store, "_dbs", {}).get(partition)


def partition_items(store: Any, partition: int) -> Iterator[tuple[bytes, bytes]]:
    """The items a table's store holds for ``partition``.

    Faust's RocksDB store keeps a database per partition, and its ``items()`` reads every
    assigned partition's: a worker restoring its partitions one by one would read (and
    decode) each state once per partition. This reads that partition's database only.
    Other stores (memory://) give every item; callers keep their own partition check.
    """
    database = _database(store, partition)
    if database is None:
        return iter(store.items())
    return iter(store._visible_items(database))


def read_from(store: Any, partition: int, key: bytes) -> bytes | None:
    """The value a table's store holds under ``key`` for ``partition``, or None.

    With Faust's RocksDB store, a read from that partition's database: its ``get`` would
    build an event to find the database and run the key and value through the table's
    serialisers (~10 µs; keys and values here are raw bytes). Other stores: their ``get``.
    """
    database = _database(store, partition)
    data: bytes | None = (store if database is None else database).get(key)
    return data


@contextlib.contextmanager
def writing_for(app: faust.App, message: Message) -> Iterator[None]:
    """Make an event of ``message`` the current event, so store writes go to its partition.

    Faust's RocksDB store picks the database of a write (one per partition) from the
    event being processed. Records reach the worker without Faust events, and the
    write-back happens at a commit, so we name a record of the partition being written.
    """
    event = faust.Event(app, message.key, message.value, message.headers, message)
    token = _current_event.set(weakref.ref(event))  # ``event`` lives as long as this frame
    try:
        yield
    finally:
        _current_event.reset(token)


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, whose fetches wait at most ``kafka_fetch_max_wait_s``.

    Faust (0.15.3) creates its aiokafka consumer with ``fetch_max_wait_ms=1500``.
    aiokafka keeps one fetch in flight per broker, and a fetch for partitions that have
    nothing new (the table's changelog, an idle input partition) is held that long by the
    broker, while records arriving on the other partitions wait for the next fetch: at
    2,000 events/s offered, records reached the agent 1.5 to 3.5 s after they were sent.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        settings: Settings = self.consumer.app.ottscore.settings
        # aiokafka hands this to its fetcher at start()
        consumer._fetch_max_wait_ms = int(settings.kafka_fetch_max_wait_s * 1000)
        return consumer

    def verify_event_path(self, now: float, tp: TP) -> None:
        """Faust's check that a partition's records flow, skipped while its position is reset.

        Faust (0.15.3) runs this every 2.5 commit intervals for every assigned partition,
        and reads aiokafka's position of the partition, which asserts that there is one.
        A partition reset to its start (:meth:`Consumer.perform_seek`, for a partition
        with no committed offset) has none until aiokafka's fetcher looks the offset up:
        a check falling in that window raised ``AssertionError`` and crashed the worker
        (seen in the kill -9 test: the fourth life exited with status 1 on its own, 0.2 s
        after it was ready). There is nothing to verify before the partition has a
        position again.
        """
        subscription = self._ensure_consumer()._subscription.subscription
        assignment = None if subscription is None else subscription.assignment
        if assignment is None:
            return None  # nothing assigned any more: a rebalance is under way
        state = assignment.state_value(ensure_aiokafka_TP(tp))
        if state is not None and not state.has_valid_position:
            return None
        return super().verify_event_path(now, tp)


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, with offsets to commit computed from de-duplicated acks.

    Faust (0.15.3) fills a read gap into the list of acked offsets; when the gap overlaps
    offsets that were acked already (records read before the seek to the committed
    offsets that follows table recovery, then read again), the list holds duplicates,
    its run of consecutive offsets breaks at each of them, and the committed offset
    crawls forward by one per commit interval while everything has been processed. We
    fill the gap ourselves and drop the duplicates before Faust picks the run.

    >>> def next_commit(app):
    ...     consumer, tp = app.consumer, TP("events", 0)
    ...     consumer._committed_offset[tp] = 9
    ...     consumer._acked[tp].extend(range(10, 5000))  # processed before the seek
    ...     consumer._gap[tp].addi(10, 5000)              # read again after it
    ...     return consumer._new_offset(tp)
    >>> next_commit(faust.App("doctest-faust", broker="kafka://127.0.0.1:1"))
    11
    >>> next_commit(App("doctest-ottscore", broker="ottscore://127.0.0.1:1"))
    5000
    """

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        """Faust's fetch loop, handing the input topic's records over a fetched batch at a time.

        Faust (0.15.3) passes every record through its conductor, a channel queue and the
        agent's stream, with several awaits, a lock and two tasks per record; a batch
        then waited up to a timer for more. That plumbing cost more than the processing
        at low load and set a floor under latency. Here the records of one ``getmany``
        are kept with Faust's read-offset and gap bookkeeping, handed to
        :meth:`IngestWorker.handle` together (which never awaits), and acknowledged
        after it; records of other topics (the table's changelog during recovery) go to
        Faust's conductor as before. If a rebalance began after the batch was fetched (the
        flow stopped or the generation changed), the batch is dropped unacknowledged and
        its read offsets are left as the rebalance sets them: a rebalance ends with a seek
        to the committed offsets, which reads the batch again.
        """
        worker: IngestWorker = self.app.ottscore  # type: ignore[attr-defined]
        topic = worker.settings.topic_events
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set  # type: ignore[attr-defined]
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        producer = await self.app.maybe_start_producer()  # the worker publishes, never awaiting
        producer.max_pending = worker.settings.producer_max_pending
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                await producer.wait_for_room()  # back-pressure: outputs not acknowledged
                self.diag.set_flag(CONSUMER_FETCHING)
                batch: list[Message] = []
                generation: int | None = None
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in getmany(timeout=1.0):
                        if generation is None:  # getmany checked it is the fetch's
                            generation = self.app.consumer_generation_id
                        offset = message.offset
                        last = read_offset[tp]
                        if last is not None and offset < last:
                            continue  # read already (Faust drops these too)
                        if last and offset - last > 1 and acks_enabled_for(message.topic):
                            await self._add_gap(tp, last + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        if tp.topic == topic:
                            batch.append(message)
                        else:
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        if self._rebalanced_since(generation):
                            break  # keep the read offsets the seek sets
                        read_offset[tp] = offset
                    if batch:  # models of newly assigned partitions are read off the loop
                        await worker.prefetch_snapshots({m.partition for m in batch})
                    if batch and not self._rebalanced_since(generation):
                        worker.handle(batch)
                        for message in batch:
                            self.ack(message)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _commit_tps(self, tps: Any, start_new_transaction: bool) -> bool:
        """Faust's commit of ``tps``, with the states changed since the last commit written first.

        The offsets to commit are chosen, and the users whose states changed taken, in one
        step of the loop: every offset chosen belongs to a record whose state is among them.
        They are written in parts, yielding to the loop between parts (1,000-1,400 states
        in one step at every commit raised the 99th percentile of event → score latency at
        2,000 events/s from 0.04 to 0.13 s); records handled meanwhile change states
        again, to be written at the next commit with their offsets. Faust flushes the
        producer before it commits, so a committed offset has its states durable in the
        changelog.
        """
        commit_offsets = self._filter_committable_offsets(tps)
        worker: IngestWorker = self.app.ottscore  # type: ignore[attr-defined]
        if worker.failed:  # a batch raised: its outputs were never published
            return False
        await worker.write_back()
        if not commit_offsets:
            worker.health.committed()  # nothing processed waits for a commit
            return False
        worker.health.commit_pending()
        try:
            await self._handle_attached(commit_offsets)  # Faust's attached messages, as it does
        except ProducerSendError as exc:
            await self.crash(exc)
            return False
        timeout_s = worker.settings.kafka_commit_timeout_s
        try:
            async with asyncio.timeout(timeout_s):  # the producer's flush, then the commit
                await self.app.producer.flush()
                worker.faults.reach("outputs_flushed")
                committed = await self._commit_offsets(
                    commit_offsets, start_new_transaction=start_new_transaction
                )
        except TimeoutError:
            self._restore_acks(commit_offsets)
            worker.metrics.commit_timeouts.inc()
            log.warning(
                "commit abandoned after %.0f s: the broker has not acknowledged the outputs "
                "or the offsets; trying again at the next interval", timeout_s,
            )  # fmt: skip
            return False
        if committed:
            worker.faults.reach("offsets_committed")
            worker.health.committed()
            worker.metrics.last_commit.set_to_current_time()
        return committed

    def _restore_acks(self, offsets: dict[TP, int]) -> None:
        """Acknowledge again the records an abandoned commit had taken from the acked lists.

        Faust (0.15.3) removes the offsets it picks for a commit from its acked lists
        before committing them (``_new_offset``); a commit that does not complete would
        then leave them acknowledged nowhere: the next commit found nothing to commit, and
        records acked later were held behind the gap. The records from the committed offset
        to the abandoned one are acknowledged again, so the next commit commits them.

        >>> def abandoned_then_more(app):
        ...     consumer, tp = app.consumer, TP("events", 0)
        ...     consumer._committed_offset[tp] = 10
        ...     consumer._acked[tp].extend(range(10, 20))
        ...     picked = consumer._filter_committable_offsets([tp])  # a commit takes them,
        ...     if isinstance(consumer, Consumer):                   # is abandoned, and
        ...         consumer._restore_acks(picked)
        ...     consumer._acked[tp].extend(range(20, 30))            # more are processed
        ...     return picked[tp], consumer._filter_committable_offsets([tp]).get(tp)
        >>> abandoned_then_more(faust.App("doctest-faust-2", broker="kafka://127.0.0.1:1"))
        (20, None)
        >>> abandoned_then_more(App("doctest-ottscore-2", broker="ottscore://127.0.0.1:1"))
        (20, 30)
        """
        for tp, offset in offsets.items():
            committed = self._committed_offset.get(tp)
            restored = range(offset - 1 if committed is None else committed, offset)
            self._acked[tp].extend(restored)
            self._acked_index[tp].update(restored)

    def _rebalanced_since(self, generation: int | None) -> bool:
        """Whether a rebalance began (flow stopped) or happened since ``generation``."""
        return not self.flow_active or self.app.consumer_generation_id != generation

    async def perform_seek(self) -> None:
        """Seek input partitions to their committed offsets, or reset those with none.

        Two Faust (0.15.3) defects lost records here; both were seen in the failover test:

        * It resumes the input partitions before this seek at the end of table recovery,
          so records are flowing when it runs. Records fetched before the seek kept
          arriving after it: each one's offset was taken as a read gap over the offsets
          the seek had just rewound to (counted as processed when committing), and their
          re-reads were dropped as already read. We stop the flow around the seek, so the
          batch being handed out is abandoned and fetched again from the new positions.
        * It seeks only partitions with a committed offset above 0. A partition this
          worker fetched from in an earlier generation but never committed kept its old
          fetch position, and the records before it were never processed. We reset those
          as the group's reset policy says (``earliest``: the start of the partition).
        """
        flowing = self.flow_active
        if flowing:
            self.stop_flow()
        try:
            await super().perform_seek()
            await self._reset_uncommitted()
        finally:
            if flowing:
                self.resume_flow()

    async def _reset_uncommitted(self) -> None:
        changelogs = self.app.tables.changelog_topics
        acking = self.app.topics.acks_enabled_for
        uncommitted = [
            ensure_aiokafka_TP(tp)
            for tp in self.assignment()
            if tp.topic not in changelogs
            and acking(tp.topic)
            and self._committed_offset.get(tp) is None
        ]
        policy = self.app.conf.consumer_auto_offset_reset
        if not uncommitted or policy not in ("earliest", "latest"):
            return
        consumer = self._thread._ensure_consumer()
        reset = consumer.seek_to_beginning if policy == "earliest" else consumer.seek_to_end
        await self._thread.call_thread(reset, *uncommitted)
        for tp in uncommitted:
            self._read_offset.pop(TP(tp.topic, tp.partition), None)

    def _new_offset(self, tp: TP) -> int | None:
        acked = self._acked[tp]
        gap = self._gap[tp]
        if acked and gap:
            max_offset = max(acked)
            filled = [o for i in gap.overlap(0, max_offset) for o in range(i.begin, i.end)]
            if filled:
                acked.extend(filled)
                gap.chop(0, max(max(filled), max_offset + 1))
        if acked:
            acked[:] = sorted(set(acked))
        return super()._new_offset(tp)


class Producer(faust_aiokafka.Producer):
    """Faust's aiokafka producer, whose ``flush()`` returns once every message is acknowledged.

    Table writes and ``send_soon`` wait in a buffer that a task hands to aiokafka. Faust
    (0.15.3) flushes before it commits input offsets, but its flush gives up when one
    message takes more than 0.1 s (routine while a batch holds the event loop), and it
    cannot see the message its task is handing over (waiting for room in a full aiokafka
    batch) nor what aiokafka accepts after the flush began. Offsets were then committed
    while state writes were not in Kafka, and a worker killed at that moment lost them
    (seen after failovers: users missing from the changelog, states missing events).
    This producer keeps every message sent soon until the broker acknowledges it, and
    ``flush()`` waits for all of them; one that fails makes the flush raise, so the
    offsets are not committed and the records are processed again.

    It also publishes whole lists of records (:meth:`send_many`), as aiokafka batches
    without a Faust message, future and buffer pass per record; ``flush()`` waits for
    those too.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self._unacknowledged: set[asyncio.Future] = set()
        self._failure: BaseException | None = None
        self._outgoing: deque[_Outgoing] = deque()
        self._has_outgoing = asyncio.Event()
        self._dispatched: set[asyncio.Future] = set()  # lists handed to aiokafka, unsettled
        self._resending: set[asyncio.Task] = set()  # replacements of refused lists
        self._barrier: asyncio.Future | None = None  # the last run sent after_acknowledged
        self._pending_records = 0  # handed over by send_many, not yet acknowledged
        self._room = asyncio.Event()
        self._room.set()
        self.max_pending = 50_000

    def send_soon(self, fut: Any) -> None:
        """Hand ``fut`` to Faust's buffer, keeping it until the broker acknowledges it."""
        self._track(fut)
        super().send_soon(fut)

    def send_many(
        self,
        topic: str,
        records: Records,
        on_acknowledged: Callable[[dict[int, int]], None] | None = None,
        *,
        partition: int | None = None,
        on_refused: Refusal | None = None,
        after_acknowledged: bool = False,
    ) -> None:
        """Publish ``(key, value)`` records to ``topic``, after everything handed over before.

        Never awaits: the records wait in a queue that a task of the producer hands to
        aiokafka (:func:`agents.worker.kafka.send_batches`: to ``partition``, or partitioned by
        key as ``send`` would; in order). Once the broker has acknowledged all of them,
        ``on_acknowledged`` gets the offset of the last record written to each partition.

        With ``after_acknowledged``, the records are handed to aiokafka only once every
        list handed over before them has been acknowledged, and not at all if one of those
        failed: a state write-back never reaches the changelog ahead of the outputs of the
        records it covers.

        When the broker (or aiokafka) refuses them for their size, ``on_refused`` gets the
        records and returns what to send instead (nothing: they are dropped); without it,
        as after any other failure, the next :meth:`flush` raises and nothing is committed.
        """
        done = asyncio.get_running_loop().create_future()
        self._track(done)
        self._pending_records += len(records)
        if self._pending_records >= self.max_pending:
            self._room.clear()
        done.add_done_callback(functools.partial(self._release, len(records)))
        self._outgoing.append(
            _Outgoing(
                topic, partition, records, on_acknowledged, on_refused, done, after_acknowledged
            )
        )
        self._has_outgoing.set()

    def _release(self, count: int, _done: asyncio.Future) -> None:
        self._pending_records -= count
        if self._pending_records < self.max_pending:
            self._room.set()

    async def wait_for_room(self) -> None:
        """Return once fewer than ``max_pending`` records wait for the broker's acknowledgement.

        The worker calls this before each fetch: when the broker cannot keep up (or does
        not answer), fetching stops rather than the queue of outputs growing without bound.
        """
        if not self._room.is_set():
            await self._room.wait()

    @Service.task
    async def _send_outgoing(self) -> None:
        """Hand the queued lists to aiokafka in order, those waiting for one destination as one.

        aiokafka takes one batch per partition at a time and makes the next wait until the
        sender has taken the previous one into a request; handing each list over on its
        own made every list, outputs included, wait behind a commit's changelog lists one
        request after another (event → score latency rose by tens of milliseconds at each
        commit). Merged, the lists waiting for a destination become one batch. A run of
        lists sent ``after_acknowledged`` first waits, in a task of its own, for every list
        dispatched before it (:meth:`_dispatch_after`).
        """
        while not self.should_stop:
            if (await self.wait(self._has_outgoing)).stopped:
                return
            self._has_outgoing.clear()
            while self._outgoing:
                barrier = self._outgoing[0].after_acknowledged
                run: list[_Outgoing] = []
                while self._outgoing and self._outgoing[0].after_acknowledged == barrier:
                    run.append(self._outgoing.popleft())
                if barrier:  # waits in a task of its own: the lists after it go on
                    self._barrier = asyncio.ensure_future(
                        self._dispatch_after(set(self._dispatched), self._barrier, run)
                    )
                else:
                    await self._dispatch_run(run)

    async def _dispatch_run(self, run: Sequence[_Outgoing]) -> None:
        waiting: dict[tuple[str, int | None], list[_Outgoing]] = {}
        for outgoing in run:
            waiting.setdefault((outgoing.topic, outgoing.partition), []).append(outgoing)
        for (topic, partition), lists in waiting.items():
            await self._dispatch(topic, partition, lists)

    async def _dispatch_after(
        self,
        earlier: set[asyncio.Future],
        previous: asyncio.Future | None,
        run: Sequence[_Outgoing],
    ) -> None:
        """Dispatch ``run`` once the lists dispatched before it are acknowledged.

        ``previous`` is the run of the same kind before it, dispatched first, so that a
        key's states reach the changelog in the order they were written. If a list before
        ``run`` failed, ``run`` fails too, unsent. Outputs handed over after ``run`` do not
        wait for it (the event → score latency of a commit's outputs stays one batch's).
        """
        if previous is not None:
            await asyncio.wait({previous})
        if earlier:
            await asyncio.wait(earlier)
        failed = [f for f in earlier if f.cancelled() or f.exception() is not None]
        if failed:
            reason = "cancelled" if failed[0].cancelled() else repr(failed[0].exception())
            for outgoing in run:
                outgoing.done.set_exception(
                    RuntimeError(f"not sent: a record handed over before it failed ({reason})")
                )
            return
        await self._dispatch_run(run)

    async def _dispatch(self, topic: str, partition: int | None, lists: list[_Outgoing]) -> None:
        records = [record for outgoing in lists for record in outgoing.records]
        done = asyncio.get_running_loop().create_future()
        done.add_done_callback(functools.partial(self._settle_lists, lists))
        for outgoing in lists:
            self._dispatched.add(outgoing.done)
            outgoing.done.add_done_callback(self._dispatched.discard)
        try:
            sent = await send_batches(self._ensure_producer(), topic, records, partition=partition)
        except Exception as exc:  # noqa: BLE001 - the flush raises it
            done.set_exception(exc)
        else:
            _settle_when_all(sent, done)

    def _settle_lists(self, lists: Sequence[_Outgoing], done: asyncio.Future) -> None:
        """Settle each list handed over together as ``done`` (their merged batches) settled.

        The broker takes or refuses a batch whole: a list none of whose records was in a
        batch refused for its size is acknowledged. The records of a list that were are
        sent again one batch each, and only those refused alone go to its ``on_refused``
        (:meth:`_resend_alone`); without ``on_refused`` the list fails.
        """
        failure = done.exception()
        if failure is not None:
            for outgoing in lists:
                outgoing.done.set_exception(failure)
            return
        settled: _Settled = done.result()
        refused = iter(settled.refused)
        position = next(refused, None)
        start = 0
        for outgoing in lists:
            end = start + len(outgoing.records)
            mine = []
            while position is not None and position < end:
                mine.append(outgoing.records[position - start])
                position = next(refused, None)
            start = end
            if not mine:
                if outgoing.on_acknowledged is not None:
                    outgoing.on_acknowledged(settled.last)
                outgoing.done.set_result(None)
            elif outgoing.on_refused is None:
                outgoing.done.set_exception(settled.refusal or RuntimeError("refused"))
            else:  # at once: a barrier may be waiting for this list
                task = asyncio.ensure_future(self._resend_alone(outgoing, mine, settled))
                self._resending.add(task)
                task.add_done_callback(self._resending.discard)

    async def _resend_alone(self, outgoing: _Outgoing, records: Records, settled: _Settled) -> None:
        """Send ``records`` of ``outgoing`` again, each in a batch of its own, then settle it.

        They were in a batch the broker refused for its size, with records that may have
        fitted: a dead letter keeps its original unless it is refused on its own. Those
        refused alone are replaced by what ``outgoing.on_refused`` returns.
        """
        assert outgoing.on_refused is not None
        last = dict(settled.last)
        replaced = 0
        try:
            for record in records:
                try:
                    _merge_last(last, await self._send_now(outgoing, [record]))
                except REFUSED_FOR_SIZE:
                    replaced += 1
                    replacements = outgoing.on_refused([record])
                    if replacements:
                        _merge_last(last, await self._send_now(outgoing, replacements))
        except Exception as exc:  # noqa: BLE001 - the flush raises it
            outgoing.done.set_exception(exc)
            return
        finally:
            log.error(
                "%s refused a batch for its size (%r): of its %d records, %d were sent again "
                "whole and %d refused alone were replaced by what their kind sends instead",
                outgoing.topic, settled.refusal, len(records), len(records) - replaced, replaced,
            )  # fmt: skip
        if outgoing.on_acknowledged is not None:
            outgoing.on_acknowledged(last)
        outgoing.done.set_result(None)

    async def _send_now(self, outgoing: _Outgoing, records: Records) -> dict[int, int]:
        """Send ``records`` as batches of their own; raise if one is refused."""
        producer = self._ensure_producer()
        sent = await send_batches(producer, outgoing.topic, records, partition=outgoing.partition)
        done = asyncio.get_running_loop().create_future()
        _settle_when_all(sent, done)
        settled: _Settled = await done
        if settled.refusal is not None:
            raise settled.refusal
        return settled.last

    def _track(self, fut: asyncio.Future) -> None:
        self._unacknowledged.add(fut)
        fut.add_done_callback(self._settled)

    def _settled(self, fut: asyncio.Future) -> None:
        self._unacknowledged.discard(fut)
        if not fut.cancelled() and fut.exception() is not None and self._failure is None:
            self._failure = fut.exception()

    async def flush(self) -> None:
        """Return once every message and list handed over is acknowledged; raise if one failed."""
        while self._unacknowledged:
            if self.buffer.state != "running":
                raise RuntimeError("cannot flush: the producer buffer is not running")
            await super().flush()  # hand the buffer to aiokafka, wait for its batches
            pending = set(self._unacknowledged)  # may all have been acknowledged meanwhile
            if pending:  # asyncio.wait refuses an empty set (it crashed a worker's commit)
                await asyncio.wait(pending, timeout=1.0)
        await super().flush()
        failure, self._failure = self._failure, None
        if failure is not None:
            raise RuntimeError(f"a message sent before this flush failed: {failure!r}")


class Worker(faust.Worker):
    """Faust's worker without its terminal progress spinner.

    At ``--loglevel warn`` or above, Faust (0.15.3) feeds the spinner from a root-logger
    handler at DEBUG and lowers the root logger to DEBUG for it, for the whole life of
    the worker: every debug call of aiokafka and Faust (several per message sent) then
    builds a log record. Without the spinner the root logger stays at ``--loglevel``.
    """

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        """Set up the root logger as Faust does, with no spinner to feed."""
        self.spinner = None
        super().on_setup_root_logger(logger, level)


class App(faust.App):
    """A Faust app whose producer is handed back without yielding to the event loop.

    Its broker URLs name :class:`Transport` (``ottscore://host:port``), which makes its
    consumer a :class:`Consumer` and its producer a :class:`Producer`.
    """

    async def maybe_start_producer(self) -> ProducerT:
        """The producer, without yielding to the event loop once it has started.

        Faust (0.15.3) calls this for every message it publishes, and its stampede guard
        (mode 0.4) yields to the event loop three times per call: a table write or an
        output then waited three turns of the loop, each turn running a batch when
        records were arriving, and the producer's buffer fell behind at 2,000 events/s
        (its messages took 70 µs each to hand to aiokafka even on an idle loop). The
        guard still starts a producer that has not started.
        """
        producer = self.producer
        if producer.started and not self.in_transaction:
            return producer
        return await self._start_producer()

    @stampede
    async def _start_producer(self) -> ProducerT:
        return await faust.App.maybe_start_producer.__wrapped__(self)


@dataclasses.dataclass(slots=True)
class _Settled:
    """How the batches of one dispatch ended, once all of them have."""

    #: The offset of the last record written to each partition.
    last: dict[int, int]
    #: The positions (in the records dispatched) of those in batches refused for their size.
    refused: list[int]
    #: The broker's answer to the first batch refused for its size.
    refusal: BaseException | None = None


def _merge_last(last: dict[int, int], more: dict[int, int]) -> None:
    for partition, offset in more.items():
        if offset > last.get(partition, -1):
            last[partition] = offset


def _settle_when_all(
    sent: Sequence[tuple[asyncio.Future, list[int]]], done: asyncio.Future
) -> None:
    """Resolve ``done`` with a :class:`_Settled` when every batch has been answered.

    A batch refused for its size is noted there; any other failure (or a cancelled batch)
    fails ``done``.
    """
    remaining = len(sent)
    settled = _Settled({}, [])

    def on_batch(batch: asyncio.Future, held: list[int]) -> None:
        nonlocal remaining
        if done.done():
            return
        if batch.cancelled():
            done.set_exception(RuntimeError("a batch was cancelled before it was acknowledged"))
            return
        failure = batch.exception()
        if isinstance(failure, REFUSED_FOR_SIZE):
            settled.refused.extend(held)
            settled.refusal = settled.refusal or failure
        elif failure is not None:
            done.set_exception(failure)
            return
        else:
            metadata = batch.result()
            _merge_last(settled.last, {metadata.partition: metadata.offset + len(held) - 1})
        remaining -= 1
        if not remaining:
            settled.refused.sort()
            done.set_result(settled)

    if not sent:
        done.set_result(settled)
    for batch, held in sent:
        batch.add_done_callback(functools.partial(on_batch, held=held))


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with ottscore's :class:`Consumer` and :class:`Producer`.

    Faust builds an app's consumer and producer from the transport its broker URL names;
    ``ottscore://host:port`` names this one (the ``faust.transports`` entry point).
    """

    Consumer = Consumer
    Producer = Producer
