"""The Faust app of ottscore: topics, the changelog-backed user table and the ingest agent.

Records of ``ott.events`` go from Faust's consumer to :class:`IngestWorker` a fetched
batch at a time (:meth:`Consumer._drain_messages`), not through a Faust stream: the
worker hands each to :class:`pipeline.processor.Processor` and publishes the batch's
output records before the batch is acknowledged. User states are written to the ``users``
table as the consumer commits (:meth:`Consumer._commit_tps`): every state changed since
the last commit, once per user however many of its events came in between. Faust flushes
its producer before it commits input offsets, so a committed offset always has its states
and outputs durable in Kafka (at-least-once; a replay after a crash is recognised per
user by its offset). The ``ingest`` agent subscribes the topic, so that Faust assigns its
partitions together with the table's, and never receives a record itself.

Run it with ``ottscore worker`` (or ``faust -A agents.app worker``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import importlib.metadata
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

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
from faust.types import TP, ConsumerT, Message, ProducerT
from mode import Service, ServiceT
from mode.utils.futures import stampede
from prometheus_client import CollectorRegistry

from agents.faults import FaultInjection
from agents.health import Health, serve
from agents.kafka import faust_broker_settings, output_topics, send_batches
from agents.produce import CatalogReader
from agents.snapshots import SnapshotWriter, latest_snapshot
from pipeline.config import Settings
from pipeline.metrics import Metrics
from pipeline.processor import Processor
from pipeline.records import quarantine_record, reduced_dlq_record
from pipeline.snapshots import MAX_SNAPSHOT_BYTES
from pipeline.state_codec import StateUnreadable

__all__ = ["build_app", "check_versions", "App", "Consumer", "IngestWorker", "Worker"]

log = logging.getLogger(__name__)

WRITE_BACK_PART = 100  # states serialised and handed over between two turns of the loop

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
    >>> next_commit(App("doctest-ottscore", broker="kafka://127.0.0.1:1"))
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
        >>> abandoned_then_more(App("doctest-ottscore-2", broker="kafka://127.0.0.1:1"))
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
        aiokafka (:func:`agents.kafka.send_batches`: to ``partition``, or partitioned by
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
    """A Faust app whose consumer is :class:`Consumer` and producer :class:`Producer`."""

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

    def _new_producer(self) -> ProducerT:
        return Producer(self.transport, loop=self.loop, beacon=self.beacon)

    def _new_consumer(self) -> ConsumerT:
        return Consumer(
            self.transport,
            callback=self.topics.on_message,
            on_partitions_revoked=self._on_partitions_revoked,
            on_partitions_assigned=self._on_partitions_assigned,
            beacon=self.beacon,
            loop=self.transport.loop,
        )


class IngestWorker:
    """Adapts batches of Faust events to the processor, the table and the output topics."""

    def __init__(
        self,
        settings: Settings,
        *,
        table: Any,
        topics: dict[str, faust.TopicT],
        metrics: Metrics,
        snapshots: SnapshotWriter,
        health: Health,
    ) -> None:
        self.settings = settings
        self.health = health
        self.catalog = CatalogReader(settings)  # read at start and at every refresh
        self.table = table
        self.topics = topics
        self.metrics = metrics
        self.snapshots = snapshots
        self.processor = Processor(settings)
        self._restored: set[int] = set()
        self._offsets: dict[int, int] = {}
        self._last: dict[int, Message] = {}  # the last record handled of each partition
        self._lagged: set[int] = set()  # partitions whose lag is exported
        self._quarantined: set[bytes] = set()  # keys of stored states set aside
        #: Reads of the snapshot models of assigned partitions (:meth:`prefetch_snapshots`).
        self._prefetched: dict[int, asyncio.Future] = {}
        self.faults = FaultInjection.parse(settings.fault_crash_at)
        #: A batch raised: nothing more is written back or committed (see :meth:`handle`).
        self.failed = False

    def handle(self, messages: Sequence[Message]) -> None:
        """Process one batch of records: state, outputs, metrics. Never awaits.

        The states the batch changed are written to the table at the next commit
        (:meth:`write_back`), not here. Should the batch raise (no record can: this is
        for a defect of the worker itself), the worker is marked :attr:`failed`: it
        writes back and commits nothing more, so its store and offsets stay where its
        published outputs are, and it stops.
        """
        try:
            self._handle(messages)
        except BaseException:
            self.failed = True
            raise

    def _handle(self, messages: Sequence[Message]) -> None:
        started = time.perf_counter()
        processor = self.processor
        process = processor.process
        last_of_partition = self._last
        restored: list[int] = []  # partitions whose stored states or models were adopted
        for message in messages:
            partition = message.partition
            if partition not in self._restored and self._restore_partition(partition):
                restored.append(partition)
            last_of_partition[partition] = message
            self._offsets[partition] = message.offset
            process(
                message.value,
                key=message.key,
                partition=partition,
                offset=message.offset,
                timestamp_ms=int(message.timestamp * 1000),
                topic=message.topic,
            )
        self.faults.reach("batch_processed")
        self._publish(processor.take_outbox())
        self.faults.reach("outputs_handed")
        if restored:  # one collection for all the partitions a rebalance brought
            freeze_heap(f"restoring partitions {sorted(restored)}")
        now = time.monotonic()
        for partition in {message.partition for message in messages}:
            if self.snapshots.due(partition, now):
                # at most one a batch: pickling and signing a partition's models holds the
                # loop ~10-25 ms, and the partitions of a worker fall due together
                self._snapshot(partition, now)
                break
        self._export_tally()
        metrics = self.metrics
        metrics.users_cached.set(len(processor.users))
        metrics.timers_pending.set(processor.timers.pending())
        metrics.batch_duration.observe(time.perf_counter() - started)

    def _restore_partition(self, partition: int) -> bool:
        """Adopt every stored user of a newly assigned partition (the table is recovered).

        Returns whether anything was adopted: stored states or a snapshot's models.
        """
        processor = self.processor
        restored = 0
        for key, data in self.table.data.items():
            if key in self._quarantined:
                continue
            try:
                user_id = key.decode()
                if user_id in processor.users:
                    continue
                state = processor.decode_state(user_id, data)
            except Exception as exc:  # noqa: BLE001 - one stored state never stops a worker
                self._quarantine(key, data, partition, exc)
                continue
            if state.partition == partition:  # not a standby copy of another worker's
                processor.adopt(state)
                restored += 1
        read = self._prefetched.pop(partition, None)
        if read is not None and read.done() and not read.cancelled() and not read.exception():
            models = read.result()
        else:  # not read on assignment (a worker always does): read now, on the loop
            log.warning("partition %d: snapshot read on the event loop", partition)
            models = latest_snapshot(self.settings, partition, metrics=self.metrics)
        if models is not None:
            processor.install_models(partition, models)
        self._restored.add(partition)
        log.info(
            "partition %d: restored %d user states, %s models",
            partition, restored, "snapshot" if models is not None else "fresh",
        )  # fmt: skip
        return bool(restored) or models is not None

    async def prefetch_snapshots(self, partitions: set[int]) -> None:
        """Read the latest snapshot of each newly assigned partition, off the event loop.

        The worker calls this when partitions are assigned, and before it hands over a
        batch (records may flow before the assignment's reads end); the models are
        installed with the partition's states at its first record. The reads
        (kafka-python, up to 10 s each) run in threads, so the event loop goes on meanwhile:
        timers, health beats, the producer. A partition whose read is under way (a second
        assignment while the first is read) is not read twice.
        """

        def read(partition: int) -> object | None:
            return latest_snapshot(self.settings, partition, metrics=self.metrics)

        for partition in sorted(partitions - self._restored):
            if partition not in self._prefetched:
                self._prefetched[partition] = asyncio.ensure_future(
                    asyncio.to_thread(read, partition)
                )
        reads = [self._prefetched[p] for p in partitions if p in self._prefetched]
        if reads and not all(read.done() for read in reads):
            await asyncio.wait(reads)

    def _quarantine(self, key: bytes, data: bytes, partition: int, error: Exception) -> None:
        """Set aside a stored state that cannot be read: the user starts afresh.

        The state goes to the quarantine topic with the reason, and is counted; its user's
        next event makes a new state, which replaces it in the table.
        """
        reason = error.reason if isinstance(error, StateUnreadable) else type(error).__name__
        self._quarantined.add(key)
        self.metrics.states_unreadable.inc()
        log.error(
            "stored state of key %.100r unreadable (%s): quarantined, the user starts afresh",
            key, error,
        )  # fmt: skip
        record = quarantine_record(
            reason,
            str(error),
            key=key,
            value=data,
            app_id=self.settings.app_id,
            partition=partition,
            quarantined_at_ms=int(time.time() * 1000),
        )
        self.table.app.producer.send_many(self.settings.topic_state_quarantine, [(key, record)])

    def _snapshot(self, partition: int, now: float) -> None:
        self.snapshots.publish(
            partition,
            self.processor.models(partition),
            offset=self._offsets.get(partition),
            now_s=now,
        )

    def snapshot_now(self, partitions: set[int]) -> None:
        """Publish the models of ``partitions`` now (before they move, or at shutdown).

        Only partitions whose snapshot was restored first: fresh models of a partition
        that saw no event would overwrite a good snapshot.
        """
        if self.snapshots.enabled:
            now = time.monotonic()
            for partition in partitions & self._restored:
                self._snapshot(partition, now)

    def limit_dead_letters(self, topic_max_message_bytes: int) -> None:
        """Cut dead letters to the dead-letter topic's own limit when it is below the setting."""
        processor = self.processor
        if topic_max_message_bytes < processor.dlq_max_message_bytes:
            log.warning(
                "dead-letter topic %s takes records of at most %d bytes (setting: %d): "
                "originals are cut to fit it",
                self.settings.topic_dlq, topic_max_message_bytes, processor.dlq_max_message_bytes,
            )  # fmt: skip
            processor.dlq_max_message_bytes = topic_max_message_bytes

    def load_catalog(self, items: list[object]) -> None:
        """Adopt catalog items read from the catalog topic (invalid ones counted, skipped)."""
        self.processor.load_catalog(items)
        self._export_tally()

    def _export_tally(self) -> None:
        """Move the processor's counts into the metrics (between batches, or after one)."""
        processor = self.processor
        self.metrics.add(processor.tally)
        processor.tally.clear()

    def export_quality(self) -> None:
        """Move the rolling prequential quality into the Prometheus gauges."""
        self.metrics.set_quality(self.processor.quality.rolling())

    async def write_back(self) -> None:
        """Write every user state changed since the last write-back to the table, once each.

        :class:`Consumer` calls this as it commits, so a user's state goes to the
        changelog once per commit interval however many of its events came in it (the
        record cache of Kafka Streams), and is serialised only then. The changelog gets
        the states as one list per partition (:meth:`Producer.send_many`), instead of one
        Faust table write each (a changelog message through Faust's producer buffer, its
        sensors and aiokafka's ``send``). The states never run ahead of their outputs:
        each list goes to the changelog only once every output handed over before it is
        acknowledged (``after_acknowledged``), and the table's store (RocksDB) takes the
        states, and records the changelog offset it holds, only once the changelog has
        them (:meth:`_persist`). A worker killed at any point restarts from a store at or
        behind what Kafka holds. The users are taken when called and written
        ``WRITE_BACK_PART`` at a time, yielding to the event loop in between; any left
        unwritten (cancelled, failed) are marked changed again. After a batch that raised
        (:attr:`failed`), nothing is written: its outputs were never handed over.
        """
        if self.failed:
            return
        processor = self.processor
        users = processor.take_dirty_users()
        self.faults.reach("write_back_taken")
        written = 0
        try:
            while written < len(users):
                if written:
                    await asyncio.sleep(0)
                part = users[written : written + WRITE_BACK_PART]
                self._write(processor.states_of(part))
                written += len(part)
        finally:
            if written < len(users):
                processor.keep_dirty(users[written:])

    def _write(self, states: Sequence[tuple[str, int, bytes]]) -> None:
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for user_id, partition, data in states:
            by_partition.setdefault(partition, []).append((user_id.encode(), data))
        table = self.table
        changelog = table.changelog_topic.get_topic_name()
        producer = table.app.producer
        for partition, records in by_partition.items():
            producer.send_many(
                changelog,
                records,
                functools.partial(self._persist, partition, records),
                partition=partition,
                after_acknowledged=True,
            )
        self.faults.reach("changelog_handed")
        self.metrics.state_writes.inc(len(states))

    def _persist(self, partition: int, records: Records, last_offsets: dict[int, int]) -> None:
        """The changelog holds ``records``: write them to the store, with the offset it is at.

        A partition revoked meanwhile is skipped: its next owner recovers the states from
        the changelog.
        """
        self.faults.reach("changelog_acknowledged")
        message = self._last.get(partition)
        if message is None:
            return
        table = self.table
        store = table.data
        with writing_for(table.app, message):  # the partition's database
            for key, data in records:
                store[key] = data
        changelog = table.changelog_topic.get_topic_name()
        for changelog_partition, offset in last_offsets.items():
            store.set_persisted_offset(TP(changelog, changelog_partition), offset)
        self.faults.reach("store_written")

    def _publish(self, outputs: Sequence[Any]) -> None:
        """Hand the batch's output records to the producer, a list per output topic."""
        by_kind: dict[str, list[Any]] = {}
        for out in outputs:
            by_kind.setdefault(out.kind, []).append(out)
        producer = self.table.app.producer
        for kind, outs in by_kind.items():
            producer.send_many(
                self.topics[kind].get_topic_name(),
                [(out.key, out.value) for out in outs],
                self._latency_observer(kind, outs),
                on_refused=self._reduce_dead_letters if kind == "dlq" else None,
            )

    def _reduce_dead_letters(self, records: Records) -> Records:
        """Dead letters the topic refused for their size, again without their originals."""
        self.metrics.records_refused.labels("dlq").inc(len(records))
        return [(key, reduced_dlq_record(value)) for key, value in records]

    def _latency_observer(
        self, kind: str, outputs: Sequence[Any]
    ) -> Callable[[dict[int, int]], None] | None:
        """Observe event → publish and ingest → publish latency of ``outputs`` when called."""
        stamps = [(o.event_ts_ms, o.ingest_ts_ms) for o in outputs if o.event_ts_ms]
        if not stamps:
            return None
        event_hist = self.metrics.event_to_publish_latency.labels(kind)
        ingest_hist = self.metrics.ingest_to_publish_latency.labels(kind)

        def observe(_offsets: dict[int, int]) -> None:
            now = time.time()
            for event_ts_ms, ingest_ts_ms in stamps:
                event_hist.observe(max(0.0, now - event_ts_ms / 1000))
                if ingest_ts_ms:
                    ingest_hist.observe(max(0.0, now - ingest_ts_ms / 1000))

        return observe

    def revoke(self, partitions: set[int]) -> None:
        """Forget partitions this worker no longer owns.

        Faust commits before it revokes, and the commit wrote their states back; if it
        failed, the offsets stay uncommitted and the new owner processes the records again.
        """
        self.snapshot_now(partitions)
        for partition in partitions:
            self.snapshots.forget(partition)
            self.processor.drop_partition(partition)
            self._restored.discard(partition)
            self._prefetched.pop(partition, None)
            self._offsets.pop(partition, None)
            self._last.pop(partition, None)
            self._forget_lag(partition)

    def export_lag(
        self, ends: dict[int, int], committed: dict[int, int | None], owned: set[int]
    ) -> None:
        """Set the lags of each ``owned`` partition from its end offset; drop the others.

        The processing lag counts from the next offset to process: the one after the last
        processed, or, before this worker processed any record of the partition, the
        group's committed offset. The committed lag counts from the committed offset: it
        grows while records are processed but their commit does not succeed. The end
        offsets were read before a rebalance may have moved partitions away, hence
        ``owned``, read after.
        """
        for partition in self._lagged - owned:
            self._forget_lag(partition)
        lag, committed_lag = self.metrics.consumer_lag, self.metrics.consumer_committed_lag
        for partition, end in ends.items():
            if partition not in owned:
                continue
            last = self._offsets.get(partition)
            position = last + 1 if last is not None else committed.get(partition)
            if position is not None:
                lag.labels(str(partition)).set(max(0, end - position))
                self._lagged.add(partition)
            done = committed.get(partition)
            if done is not None:
                committed_lag.labels(str(partition)).set(max(0, end - done))
                self._lagged.add(partition)

    def _forget_lag(self, partition: int) -> None:
        """Drop the lag series of a partition this worker no longer owns."""
        self._lagged.discard(partition)
        for gauge in (self.metrics.consumer_lag, self.metrics.consumer_committed_lag):
            with contextlib.suppress(KeyError):
                gauge.remove(str(partition))


def freeze_heap(after: str) -> None:
    """Collect garbage once, then keep every object alive now out of later collections.

    A full collection traverses every tracked object; with the worker's modules, app
    and restored states in the heap it paused the event loop 75-130 ms (seen as the
    99th percentile of event → score latency). Frozen objects are still freed by
    reference counting; only a reference cycle among them would never be collected,
    hence the collection first. At start-up this freezes ~180,000 objects and the
    pauses fall to 20-35 ms.
    """
    gc.collect()
    gc.freeze()
    log.info("froze %d objects after %s", gc.get_freeze_count(), after)


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


def logging_config(settings: Settings) -> dict[str, Any] | None:
    """Faust's logging set-up for ``settings.log_format``: None keeps Faust's text lines.

    ``json`` writes one JSON object per line (python-json-logger) to stderr, with the
    time, level, logger, process and message, plus the fields of any ``extra``.
    """
    if settings.log_format == "text":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            }
        },
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json"}},
        "root": {"handlers": ["stderr"], "level": "INFO"},
    }


def build_app(settings: Settings | None = None) -> faust.App:
    """The ottscore Faust app for ``settings`` (read from the environment by default)."""
    settings = settings or Settings()
    app = App(
        settings.app_id,
        **faust_broker_settings(settings),
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        consumer_auto_offset_reset="earliest",
        web_port=settings.worker_web_port,
        web_bind=settings.worker_web_host,
        producer_max_request_size=MAX_SNAPSHOT_BYTES + 64 * 1024,
        logging_config=logging_config(settings),
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_session_timeout_s / 10,
        broker_max_poll_records=settings.batch_max_events,
        producer_max_batch_size=1_000_000,  # a commit's states of a partition in one batch
        Worker=Worker,
    )
    raw = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    events = app.topic(settings.topic_events, partitions=settings.topic_partitions, **raw)
    topics = {kind: app.topic(name, **raw) for kind, name in output_topics(settings).items()}
    table = app.Table(
        "users",
        key_type=bytes,  # bytes keys and values are written raw: user_id UTF-8, state bytes
        value_type=bytes,
        partitions=settings.topic_partitions,
        help="Per-user state (pipeline.state.UserState bytes), keyed by user_id.",
    )
    registry = CollectorRegistry()
    metrics = Metrics(registry)

    def send_snapshot(key: bytes, value: bytes, *, callback: Any, on_refused: Refusal) -> None:
        producer = app.producer
        producer.send_many(settings.topic_models, [(key, value)], callback, on_refused=on_refused)

    snapshots = SnapshotWriter(
        settings, topic_sender=send_snapshot, metrics=metrics, max_bytes=MAX_SNAPSHOT_BYTES
    )
    health = Health(stale_after_s=settings.health_stale_s, commit_stale_s=settings.commit_stale_s)
    worker = IngestWorker(
        settings, table=table, topics=topics, metrics=metrics, snapshots=snapshots, health=health
    )
    app.ottscore = worker  # type: ignore[attr-defined]

    @app.agent(events, name="ingest")
    async def ingest(stream: faust.StreamT) -> None:
        """Subscribe the input topic; its records reach the worker from :class:`Consumer`."""
        async for event in stream:
            message = event.message
            raise RuntimeError(f"record {message.tp}@{message.offset} bypassed the Consumer")

    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: set[Any], **_: Any) -> None:
        await worker.prefetch_snapshots(
            {tp.partition for tp in assigned if tp.topic == settings.topic_events}
        )

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set[Any], **_: Any) -> None:
        worker.revoke({tp.partition for tp in revoked if tp.topic == settings.topic_events})
        await app.producer.flush()  # the last snapshots are acknowledged before partitions move

    @app.on_before_shutdown.connect
    async def on_shutdown(app: faust.App, **_: Any) -> None:
        worker.snapshot_now(set(worker._restored))  # Faust flushes the producer right after
        await asyncio.to_thread(worker.catalog.close)

    @app.timer(settings.catalog_refresh_s)
    async def refresh() -> None:
        worker.load_catalog(await asyncio.to_thread(worker.catalog.read))
        worker.export_quality()

    @app.timer(1.0)
    async def beat() -> None:
        health.beat()
        if app.rebalancing or app.in_recovery:
            health.set_ready(False, "rebalancing" if app.rebalancing else "recovering table")
        elif app.tables.recovery.completed.is_set():
            health.set_ready(True, "processing")
        metrics.ready.set(1 if health.readiness()[0] else 0)

    @app.timer(settings.lag_interval_s)
    async def lag() -> None:
        consumer = app.consumer
        owned = [tp for tp in consumer.assignment() if tp.topic == settings.topic_events]
        if owned and not (app.rebalancing or app.in_recovery):
            ends = await consumer.highwaters(*owned)
            still = {
                tp.partition for tp in consumer.assignment() if tp.topic == settings.topic_events
            }
            if app.rebalancing or app.in_recovery:
                return  # read across a rebalance: the next round is exact
            worker.export_lag(
                {tp.partition: end for tp, end in ends.items()},
                {tp.partition: consumer._committed_offset.get(tp) for tp in owned},
                still,
            )

    @app.task
    async def prepare() -> None:
        loop = asyncio.get_running_loop()
        log.info("event loop: %s.%s", type(loop).__module__, type(loop).__qualname__)
        freeze_heap("start-up")
        if settings.metrics_port:
            serve(health, registry, host=settings.metrics_host, port=settings.metrics_port)
            log.info(
                "metrics on http://%s:%d/metrics (health: /healthz, /readyz)",
                settings.metrics_host, settings.metrics_port,
            )  # fmt: skip

    return app
