"""The real worker on the real broker: every record accounted for, and state survives a restart."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from conftest import free_ports
from worker_process import (
    WorkerProcess,
    expected_outcomes,
    labelled,
    produce_all,
    read_topic,
    reference_run,
    stored_states,
    sum_samples,
    wait_committed,
)

from agents.devtools.demo import scrape
from agents.devtools.produce import produce
from pipeline.config import Settings
from pipeline.core.events import Event, EventDecoder
from pipeline.core.processor import Processor
from pipeline.serde.schemas import validator
from pipeline.sim.simulate import SimulationConfig, Simulator

#: Rejection reasons the accounting test must see at least once each.
MALFORMED_REASONS = {
    "not_json", "not_utf8", "missing_field", "wrong_type", "unknown_type", "oversized",
    "future_timestamp",
}  # fmt: skip
RECEIVED = ("ottscore_records_received_total",)


def wait_for_records(settings: Settings, topic: str, count: int, timeout_s: float = 60.0) -> list:
    deadline = time.monotonic() + timeout_s
    while True:
        records = read_topic(settings, topic)
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def test_every_record_ends_processed_deduplicated_or_dead_lettered(
    settings_factory, tmp_path: Path
) -> None:
    settings = settings_factory(metrics_port=free_ports(1)[0], lag_interval_s=0.5)
    simulator = Simulator(
        SimulationConfig(users=300, days=21, seed=11, bad_rate=0.03, duplicate_rate=0.02)
    )
    records = list(simulator.records())
    consumed, rejected, retries = expected_outcomes(records)
    total = len(records)
    assert total >= 10_000
    assert sum(rejected.values()) >= 0.02 * total
    assert MALFORMED_REASONS <= set(rejected) and retries > 0

    produce_all(settings, records)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_received(total)

        # caught up: ready, live, and no record left behind on any partition
        def caught_up() -> bool:
            lag = labelled(worker.samples(), "ottscore_consumer_lag_records", "partition")
            return not lag and worker.probe("/readyz")[0] == 200  # (zero values are left out)

        worker.wait_until(caught_up, timeout_s=30, what="waiting for zero lag and readiness")
        samples = worker.samples()
        # a scrape restricted to some names (how the bench polls progress) gets only those
        restricted = scrape(f"http://127.0.0.1:{settings.metrics_port}/metrics", names=RECEIVED)
        assert restricted == {RECEIVED[0]: total}
        ready = {"ready": True, "live": True, "reason": "processing"}
        assert worker.probe("/readyz") == (200, ready)
        assert worker.probe("/healthz")[0] == 200
        partitions = {dict(labels)["partition"] for name, labels in samples
                      if name == "ottscore_consumer_lag_records"}  # fmt: skip
        assert partitions == {str(p) for p in range(settings.topic_partitions)}
        assert sum_samples(samples, "ottscore_worker_ready") == 1
        dlq = wait_for_records(settings, settings.topic_dlq, sum(rejected.values()))
        churn = wait_for_records(
            settings,
            settings.topic_scores_churn,
            int(worker.metric("ottscore_scores_published_total", kind="churn")),
        )
    finally:
        assert worker.stop() == 0
    assert "event loop: uvloop.Loop" in worker.log_path.read_text()  # not asyncio's default

    # the metrics add up, and agree with what the records are
    assert sum_samples(samples, "ottscore_records_received_total") == total
    assert labelled(samples, "ottscore_events_consumed_total", "type") == consumed
    assert labelled(samples, "ottscore_events_rejected_total", "reason") == rejected
    assert sum_samples(samples, "ottscore_events_deduplicated_total") == retries
    assert sum_samples(samples, "ottscore_events_already_applied_total") == 0
    assert sum(consumed.values()) + sum(rejected.values()) + retries == total
    print(
        f"\naccounting: {total} records = {sum(consumed.values())} processed + "
        f"{retries} de-duplicated + {sum(rejected.values())} dead-lettered {dict(rejected)}"
    )

    # every rejected record is in the DLQ once, with its reason, origin and original bytes
    inputs = {(r.partition, r.offset): r.value for r in read_topic(settings, settings.topic_events)}
    dlq_validator = validator("dlq")
    letters = [orjson.loads(r.value) for r in dlq]
    assert len(letters) == sum(rejected.values())
    assert Counter(letter["reason"] for letter in letters) == rejected
    assert len({(letter["partition"], letter["offset"]) for letter in letters}) == len(letters)
    for letter in letters:
        dlq_validator.validate(letter)
        assert letter["topic"] == settings.topic_events
        original = inputs[(letter["partition"], letter["offset"])]
        if letter["original_encoding"] == "text":
            assert letter["original"].encode() == original[: 512 * 1024]
    # every active user is scored, and every score record is valid per schemas/
    decoder = EventDecoder()
    events = [e for _, v in records if isinstance(e := decoder.decode(v), Event)]
    horizon_ms = max(e.ts_ms for e in events) - 86_400_000  # sessions surely ended by then
    with_session_end = {e.user_id for e in events if e.ts_ms < horizon_ms}
    with_items = {e.user_id for e in events if e.type in ("play", "click")}
    lists = wait_for_records(
        settings, settings.topic_scores_personalization,
        int(samples.get(("ottscore_scores_published_total",
                         frozenset({("kind", "personalization")})), 0)),
    )  # fmt: skip
    signals = read_topic(settings, settings.topic_signals)
    for kind, published, schema in (
        ("churn", churn, "churn"), ("personalization", lists, "personalization"),
        ("signal", signals, "signal"),
    ):  # fmt: skip
        check = validator(schema)
        for record in published:
            check.validate(orjson.loads(record.value))
        assert len(published) == labelled(samples, "ottscore_scores_published_total", "kind").get(
            kind, 0
        )
    assert {r.key.decode() for r in churn} >= with_session_end
    assert {r.key.decode() for r in lists} >= with_items
    print(
        f"scores: {len(churn)} churn for {len(with_session_end)}+ users, {len(lists)} lists "
        f"for {len(with_items)} users, {len(signals)} signals, all valid"
    )


@pytest.mark.slow
@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_state_after_a_restart_mid_stream_equals_an_uninterrupted_run(
    settings_factory, tmp_path: Path, store: str
) -> None:
    # With RocksDB (the production store) the second worker starts from the first one's
    # local database, then reads the changelog after the offset it recorded as persisted.
    settings = settings_factory(
        metrics_port=free_ports(1)[0],
        batch_max_events=200,
        snapshot_key="restart-test-key",
        store=store,
    )
    records = list(
        Simulator(
            SimulationConfig(users=300, days=21, seed=5, bad_rate=0.01, duplicate_rate=0.01)
        ).records()
    )
    total = len(records)
    feeder = threading.Thread(target=produce, args=(settings, records), kwargs={"rate": 4000})
    feeder.start()
    first = WorkerProcess(settings, tmp_path / "worker-1.log").start()
    try:
        first.wait_received(total // 3)
    finally:
        assert first.stop(signal.SIGTERM) == 0
    second = WorkerProcess(settings, tmp_path / "worker-2.log").start()
    try:
        feeder.join()
        wait_committed(settings)
    finally:
        assert second.stop(signal.SIGTERM) == 0

    stored = stored_states(settings)
    expected, _ = reference_run(settings)
    assert stored.keys() == expected.keys()
    processor = Processor(settings)
    differing = [
        user
        for user in expected
        if processor.decode_state(user, stored[user]).activity()
        != processor.decode_state(user, expected[user]).activity()
    ]
    # Everything events alone determine must be equal; model outputs (risk band, lists)
    # may differ by the learning after the last snapshot.
    assert not differing, f"{len(differing)} of {len(expected)} user states differ"
    print(f"\nrestart ({store}): {total} records, {len(expected)} users, states equal to one run")
