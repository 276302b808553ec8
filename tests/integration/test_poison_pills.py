"""On the real broker, no record stops the worker: each one that crash-looped it is dead-lettered.

The records (a schema-valid play with ``duration_s: 1e308``, 600 KB of 0x01 bytes, 600 KB
of ``"``, a 900 KB key), a catalog with bad items and a models topic whose snapshots have a
hostile header go to a worker among good events; the worker stays up, dead-letters each
with its reason, and processes every good event after them. Then the dead-letter and
models topics are made to refuse large records: refused dead letters are sent again
without their originals, refused snapshots are dropped, and the worker still goes on.
"""

from __future__ import annotations

import struct
import time
from collections import Counter
from pathlib import Path

import orjson
from conftest import free_ports, set_max_message_bytes
from worker_process import (
    WorkerProcess,
    expected_outcomes,
    labelled,
    produce_all,
    read_topic,
    sum_samples,
)

from agents.devtools.produce import produce, publish_catalog
from agents.worker.snapshots import snapshot_record_key
from pipeline.core.events import Event, encode_event, parse_ts
from pipeline.serde.schemas import validator
from pipeline.serde.snapshots import FORMAT_VERSION, MAGIC
from pipeline.sim.simulate import SimulationConfig, Simulator

HOSTILE_HEADER = b"[" * 3000
SMALL_LIMIT = 65_536


def play(user: str, ts_ms: int, **fields: object) -> bytes:
    event = Event(f"poison-{user}-{ts_ms}", "play", user, ts_ms, item_id="film-00001",
                  position_s=0.0)  # fmt: skip
    return orjson.dumps({**orjson.loads(encode_event(event)), **fields})


def poison(ts_ms: int) -> dict[str, tuple[bytes, bytes]]:
    """The records of the reliability review, by name: ``(key, value)``."""
    return {
        "duration_s 1e308": (b"u-poison", play("u-poison", ts_ms, duration_s=1e308)),
        "600 KB of \\x01": (b"u-x01", b"\x01" * 600_000),
        '600 KB of "': (b"u-quote", b'"' * 600_000),
        "a 900 KB key": (b"k" * 900_000, b'{"oops'),
    }


def test_poison_records_are_dead_lettered_and_the_worker_goes_on(
    settings_factory, tmp_path: Path
) -> None:
    settings = settings_factory(
        metrics_port=free_ports(1)[0], snapshot_key="poison-test-key", snapshot_interval_s=1.0
    )
    simulator = Simulator(SimulationConfig(users=60, days=10, seed=21))
    good = list(simulator.records())
    first_ts = parse_ts(orjson.loads(good[0][1])["ts"])
    pills = poison(first_ts)
    half = len(good) // 2
    records = [*good[:half], *pills.values(), *good[half:]]
    catalog = [*simulator.catalog(), {"item_id": "x", "genres": 5}]
    catalog.append({"item_id": "y", "genres": "drama"})
    publish_catalog(settings, catalog)
    produce(settings, [(b"film-bad", b"{oops")], topic=settings.topic_catalog)  # not JSON
    hostile = MAGIC + bytes([FORMAT_VERSION]) + struct.pack(">I", 3000) + HOSTILE_HEADER
    snapshots = [
        (snapshot_record_key(settings.app_id, partition), hostile)
        for partition in range(settings.topic_partitions)
    ]
    produce(settings, snapshots, topic=settings.topic_models)
    produce_all(settings, records)
    consumed, rejected, retries = expected_outcomes(records)
    assert rejected == {"invalid_value": 1, "oversized": 2, "not_json": 1}

    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_received(len(records))
        samples = worker.samples()
        # now make the dead-letter and models topics refuse what they took before
        set_max_message_bytes(settings, settings.topic_dlq, SMALL_LIMIT)
        set_max_message_bytes(settings, settings.topic_models, 1024)
        later = poison(parse_ts(orjson.loads(good[-1][1])["ts"]))
        del later["duration_s 1e308"]
        produce_all(settings, later.values())
        worker.wait_received(len(records) + len(later))
        # a snapshot is sealed by a batch once due (every second): retries of the last
        # event make batches until one is, and the models topic refuses it
        deadline = time.monotonic() + 60
        while worker.metric("ottscore_records_refused_total", kind="snapshot") < 1:
            assert time.monotonic() < deadline, "no snapshot refused:\n" + worker.log_tail()
            produce_all(settings, [good[-1]])
            time.sleep(0.5)
        assert worker.probe("/healthz")[0] == 200
        after = worker.samples()
    finally:
        assert worker.stop() == 0

    assert labelled(samples, "ottscore_events_consumed_total", "type") == consumed
    assert labelled(samples, "ottscore_events_rejected_total", "reason") == rejected
    assert sum_samples(samples, "ottscore_events_deduplicated_total") == retries
    assert labelled(samples, "ottscore_catalog_items_rejected_total", "reason") == {
        "wrong_type": 2,
        "not_json": 1,
    }
    refused = labelled(samples, "ottscore_snapshots_refused_total", "reason")
    assert refused == {"malformed": settings.topic_partitions}
    assert labelled(after, "ottscore_records_refused_total", "kind")["dlq"] >= 1

    inputs = {(r.partition, r.offset): r for r in read_topic(settings, settings.topic_events)}
    by_value = {value: name for name, (_, value) in pills.items()}
    letters = [(r.key, orjson.loads(r.value), len(r.key or b"") + len(r.value))
               for r in read_topic(settings, settings.topic_dlq)]  # fmt: skip
    check = validator("dlq")
    seen: Counter[str] = Counter()
    for key, letter, size in letters:
        check.validate(letter)
        assert size <= settings.dlq_max_message_bytes
        original = inputs[(letter["partition"], letter["offset"])]
        name = by_value[original.value]
        seen[name] += 1
        assert letter["original_size"] == len(original.value)
        assert key == original.key[:1024]
        if seen[name] == 2:  # sent after the topic's limit fell: refused, sent again reduced
            assert size <= SMALL_LIMIT
            assert letter.get("original_omitted", False) == name.startswith("600 KB")
    assert seen == Counter(list(pills)) + Counter(list(later))
    print(
        f"\npoison: {len(records) + len(later)} records, {dict(rejected)} dead-lettered among "
        f"{sum(consumed.values())} consumed; DLQ sizes {sorted(size for *_, size in letters)}; "
        f"refused for size {labelled(after, 'ottscore_records_refused_total', 'kind')}"
    )
