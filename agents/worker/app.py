"""The Faust app of ottscore: topics, the changelog-backed user table and the ingest agent.

Records of ``ott.events`` go from Faust's consumer to :class:`IngestWorker` a fetched
batch at a time (:meth:`Consumer._drain_messages`), not through a Faust stream: the
worker hands each to :class:`pipeline.core.processor.Processor` and publishes the batch's
output records before the batch is acknowledged. User states are written to the ``users``
table as the consumer commits (:meth:`Consumer._commit_tps`): every state changed since
the last commit, once per user however many of its events came in between. Faust flushes
its producer before it commits input offsets, so a committed offset always has its states
and outputs durable in Kafka (at-least-once; a replay after a crash is recognised per
user by its offset). The ``ingest`` agent subscribes the topic, so that Faust assigns its
partitions together with the table's, and never receives a record itself.

Run it with ``ottscore worker`` (or ``faust -A agents.worker.app worker``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from typing import Any

import faust
import orjson
from prometheus_client import CollectorRegistry

from agents.worker.faust_patches import App, Refusal, Worker, writing_for
from agents.worker.health import Health, serve
from agents.worker.ingest import IngestWorker, freeze_heap
from agents.worker.kafka import faust_broker_settings, output_topics
from agents.worker.metrics import Metrics
from agents.worker.snapshots import SnapshotWriter
from agents.worker.stores import SCHEME, SharedMemoryOptions, rocksdb_options, store_url
from pipeline.config import Settings
from pipeline.core.audiences import AudienceRules, sizes_by_genre
from pipeline.kpis.combine import PartialsCombiner
from pipeline.models.exchange import CONTROL_KEY, LearningMerger, read_delta, signed_merges
from pipeline.serde.snapshots import MAX_SNAPSHOT_BYTES

__all__ = ["build_app", "logging_config"]

log = logging.getLogger(__name__)

#: The one key of the KPI combining agent's table.
COMBINER_KEY = b"combiner"
#: Users counted between two yields of the event loop by the audience gauges.
AUDIENCE_CHUNK = 5_000
#: Key of the experiment results' combiner in the same table.
RESULTS_KEY = b"experiment-results"
#: Key of the merger of shared learning's state in the same table.
MERGER_KEY = b"learning-merger"


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
        store=store_url(settings.store),  # rocksdb://: one memory budget for RocksDB
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
        broker_commit_interval=settings.kafka_commit_interval_s,
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
    store_options = rocksdb_options(settings)  # memory:// ignores them
    table = app.Table(
        "users",
        key_type=bytes,  # bytes keys and values are written raw: user_id UTF-8, state bytes
        value_type=bytes,
        partitions=settings.topic_partitions,
        options=dict(store_options),
        help="Per-user state (pipeline.core.state.UserState bytes), keyed by user_id.",
    )
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    if store_url(settings.store).startswith(SCHEME):  # read by Prometheus as it scrapes
        shared = SharedMemoryOptions(**store_options).shared()  # the tables' own
        metrics.rocksdb_block_cache.set_function(shared.cache.get_usage)
        metrics.rocksdb_memtables.set_function(shared.write_buffers.get_usage)
    partials = app.topic(settings.topic_kpi_partials, partitions=1, **raw)
    combined = app.Table(
        "kpis",
        key_type=bytes,
        value_type=bytes,
        partitions=1,
        options=dict(store_options),
        help="State of the KPI combining agent (pipeline.kpis.combine.KpiCombiner bytes; "
        "pipeline.experiments.live_results.ResultsCombiner bytes under experiment-results), "
        "and of the merger of shared learning (pipeline.models.exchange.LearningMerger bytes "
        "under learning-merger).",
    )

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

    # the combiners in use, read from the table first
    kpi_combiner: dict[str, PartialsCombiner] = {}

    def events_partitions() -> int:
        """The events topic's partitions, as the group sees them (at least the configured)."""
        return max(
            app.consumer.topic_partitions(settings.topic_events) or 0, settings.topic_partitions
        )

    def combiners() -> PartialsCombiner:
        in_use = kpi_combiner.get("in use")
        if in_use is None:
            in_use = kpi_combiner["in use"] = PartialsCombiner.from_stored(
                combined.get(COMBINER_KEY),
                combined.get(RESULTS_KEY),
                partitions=events_partitions(),
            )
        return in_use

    @app.agent(partials, name="kpis")
    async def combine_kpis(stream: faust.StreamT) -> None:
        """Add up the partitions' KPI windows and experiment outcomes, and publish them.

        Each KPI window once every partition closed it; each experiment's results at each
        hour boundary every partition passed. The records are acknowledged by the broker
        before the combiners' states that gave them are written, so a restart publishes
        them again (the same records, the same keys) rather than never. A record that is
        not a partial one is logged and skipped.
        """
        producer = app.producer
        async for value in stream:
            combiner = combiners()
            try:
                records, results = combiner.feed(value, topic_partitions=events_partitions())
            except ValueError as exc:  # the combiners are as before it
                log.error("KPI partial record skipped (%s): %.200r", exc, value)
                continue
            sends = [(settings.topic_kpis, records), (settings.topic_experiment_results, results)]
            for topic, published in sends:
                if not published:
                    continue
                acknowledged = asyncio.get_running_loop().create_future()
                producer.send_many(
                    topic,
                    [(record["key"].encode(), orjson.dumps(record)) for record in published],
                    lambda _offsets, done=acknowledged: done.done() or done.set_result(None),
                )
                await acknowledged  # a failure fails the next commit's flush: the worker stops
            metrics.set_kpis(records)
            metrics.set_experiment_results(results)
            combined[COMBINER_KEY], combined[RESULTS_KEY] = combiner.to_bytes()

    learning = app.topic(settings.topic_learning, partitions=1, **raw)
    mergers: dict[str, LearningMerger] = {}  # the merger in use, read from the table first

    def merger() -> LearningMerger:
        in_use = mergers.get("in use")
        if in_use is None:
            in_use = mergers["in use"] = LearningMerger.from_stored(
                combined.get(MERGER_KEY), partitions=events_partitions()
            )
        return in_use

    @app.agent(learning, name="learning")
    async def merge_learning(stream: faust.StreamT) -> None:
        """Merge the partitions' learning and write each partition the others' merge.

        The deltas read within ``OTTSCORE_SHARE_MERGE_WITHIN_S`` make one merge, written
        into the events topic at each partition's place in its log
        (:mod:`pipeline.models.exchange`), numbered by the offset after its last delta in
        the learning topic: the numbers grow whatever becomes of the merger's state, so a
        partition never takes a new merge for one it folded. As for the KPIs, the records
        are acknowledged before the merger's state that gave them is written: a restart
        writes a merge again rather than never, and the partitions skip what they folded
        (a crash in between can fold the deltas of that one batch twice). A record that is
        not a delta, or not signed with ``OTTSCORE_SNAPSHOT_KEY`` when it is set, is logged
        and skipped.
        """
        producer = app.producer
        key = settings.snapshot_key.get_secret_value().encode()  # signs and checks (exchange)
        async for events in stream.take_events(10_000, within=settings.share_merge_within_s):
            in_use = merger()
            before = in_use.merges
            for event in events:
                try:
                    in_use.feed(read_delta(event.value, key=key, app_id=settings.app_id))
                except ValueError as exc:  # the merger is as before it
                    log.error("learning record skipped (%s): %.200r", exc, event.value)
            last = events[-1].message
            records = signed_merges(  # numbered by the topic: monotonic
                in_use.flush(merge=last.offset + 1), key=key, app_id=settings.app_id
            )
            if records:
                by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
                for partition, record in records:
                    by_partition.setdefault(partition, []).append((CONTROL_KEY, record))
                waiting = []
                for partition, values in sorted(by_partition.items()):
                    acknowledged = asyncio.get_running_loop().create_future()
                    producer.send_many(
                        settings.topic_events,
                        values,
                        lambda _offsets, done=acknowledged: done.done() or done.set_result(None),
                        partition=partition,
                    )
                    waiting.append(acknowledged)
                await asyncio.gather(*waiting)  # a failure fails the next flush: the worker stops
            metrics.learning_merges.inc(in_use.merges - before)
            with writing_for(app, last):  # a batch of events is outside Faust's iteration
                combined[MERGER_KEY] = in_use.to_bytes()

    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: set[Any], **_: Any) -> None:
        await worker.prefetch_snapshots(
            {tp.partition for tp in assigned if tp.topic == settings.topic_events}
        )

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set[Any], **_: Any) -> None:
        worker.revoke({tp.partition for tp in revoked if tp.topic == settings.topic_events})
        if any(tp.topic == settings.topic_kpi_partials for tp in revoked):
            kpi_combiner.clear()  # its next owner (maybe this worker again) reads the table
        if any(tp.topic == settings.topic_learning for tp in revoked):
            mergers.clear()
        await app.producer.flush()  # the last snapshots are acknowledged before partitions move

    @app.on_before_shutdown.connect
    async def on_shutdown(app: faust.App, **_: Any) -> None:
        worker.snapshot_now(set(worker._restored))  # Faust flushes the producer right after
        await asyncio.to_thread(worker.catalog.close)
        await asyncio.to_thread(worker.experiment_definitions.close)
        await asyncio.to_thread(worker.consent.close)

    @app.timer(settings.catalog_refresh_s)
    async def refresh() -> None:
        items = await asyncio.to_thread(worker.catalog.refresh)
        if items is not None:
            worker.load_catalog(items)
        consent = await asyncio.to_thread(worker.consent.refresh)
        if consent is not None:
            worker.load_consent(consent)
        worker.export_quality()

    audiences_due = [0.0]  # monotonic time before which no count starts (bounded cache)

    @app.timer(settings.audience_refresh_s)
    async def count_audiences() -> None:
        """Count the audiences of every catalog genre over this worker's users.

        A few thousand users at a time, yielding between them, so the count never holds the
        event loop for long; each user is read whole (no await inside one). With a bounded
        cache, the users it evicted are read from the store (each user once: those of the
        cache as it was when the count began, the others as stored); decoding them costs
        ~0.1 ms a user, so counts then start at most every ten times the last one's length:
        counting takes at most a tenth of the worker's time, the gauges age meanwhile.
        """
        if time.monotonic() < audiences_due[0]:
            return
        started = time.monotonic()
        processor = worker.processor
        at_ms = processor.timers.latest()
        genres = sorted(
            {g for item in processor.catalog.values() for g in item.get("genres") or ()}
        )
        if at_ms is None or not genres:
            return
        rules = AudienceRules(settings.audience_active_days, settings.audience_fan_share)
        states = list(processor.users.values())
        sizes: Counter[tuple[str, str]] = Counter()
        for start in range(0, len(states), AUDIENCE_CHUNK):
            chunk = states[start : start + AUDIENCE_CHUNK]
            sizes.update(sizes_by_genre(chunk, genres, at_ms=at_ms, rules=rules))
            await asyncio.sleep(0)
        if settings.user_cache_max:
            stored = worker.stored_states(skip={state.user_id for state in states})
            while chunk := list(itertools.islice(stored, AUDIENCE_CHUNK)):
                sizes.update(sizes_by_genre(chunk, genres, at_ms=at_ms, rules=rules))
                await asyncio.sleep(0)
            audiences_due[0] = time.monotonic() + 9 * (time.monotonic() - started)
        metrics.set_audiences(dict(sizes))

    @app.timer(settings.experiments_refresh_s)
    async def refresh_experiments() -> None:
        definitions = await asyncio.to_thread(worker.experiment_definitions.refresh)
        if definitions is not None:
            worker.load_experiments(definitions)

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
