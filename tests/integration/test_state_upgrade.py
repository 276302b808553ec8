"""On the real broker, a worker restores every stored state it can and quarantines the rest.

The users table's changelog is seeded before the worker starts with a state written by the
previous release (format 2), a state of a newer release (an extra field), and bytes no
release wrote. The worker restores the first two (the newer field kept through a write),
sets the third aside on the quarantine topic with its reason, and processes every event.
"""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
from conftest import free_ports
from worker_process import WorkerProcess, latest_by_key, produce_all, read_topic

from agents.devtools.produce import produce
from agents.worker.kafka import create_topics, kafka_python_config
from pipeline.core.events import Event, encode_event
from pipeline.core.partitioning import partition_for
from pipeline.core.state_codec import decode, encode
from pipeline.serde.schemas import validator

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "states-format-2.jsonl"
BOUNDS = {"window_ms": 600_000, "max_ids": 32}


def test_stored_states_restore_and_an_unreadable_one_is_quarantined(
    settings_factory, tmp_path: Path
) -> None:
    settings = settings_factory(metrics_port=free_ports(1)[0])
    partitions = settings.topic_partitions
    old = orjson.loads(FIXTURE.read_bytes().splitlines()[0])
    positional = orjson.loads(base64.b64decode(old["bytes"]))  # format 2: an array
    positional[1] = partition_for(b"user-old", partitions)  # the partition its events use
    positional[2] = -1  # applied no offset of this input topic yet
    newer = orjson.loads(encode(decode("user-newer", orjson.dumps(positional), **BOUNDS)))
    newer |= {"format": 4, "partition": partition_for(b"user-newer", partitions),
              "experiment_arms": {"e1": "b"}}  # fmt: skip
    seeds = {
        b"user-old": orjson.dumps(positional),
        b"user-newer": orjson.dumps(newer),
        b"user-broken": b'{"format": 3, "partition": "zero"}',
    }
    changelog = f"{settings.app_id}-users-changelog"
    create_topics(
        kafka_python_config(settings), [changelog], partitions=partitions, compacted=[changelog]
    )
    # keyed like the input, each lands on its user's partition (murmur2, as the worker's)
    produce(settings, seeds.items(), topic=changelog)
    events = [
        Event(f"{user}-{n}", "search", user, 1_795_378_503_120 + n * 1000, query="noir")
        for user in ("user-old", "user-newer", "user-broken")
        for n in range(3)
    ]
    produce_all(settings, [(e.user_id.encode(), encode_event(e)) for e in events])

    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_received(len(events))
        unreadable = worker.metric("ottscore_states_unreadable_total")
        consumed = worker.metric("ottscore_events_consumed_total", type="search")
    finally:
        assert worker.stop() == 0  # a graceful stop writes the states back
    assert (unreadable, consumed) == (1, len(events))

    quarantined = read_topic(settings, settings.topic_state_quarantine)
    assert [r.key for r in quarantined] == [b"user-broken"]
    record = orjson.loads(quarantined[0].value)
    validator("quarantine").validate(record)
    assert (
        record["reason"] == "wrong_type"
        and base64.b64decode(record["state"]) == seeds[b"user-broken"]
    )

    states = latest_by_key(read_topic(settings, changelog))
    restored_old = decode("user-old", states[b"user-old"], **BOUNDS)
    assert restored_old.counts[2] == old["fields"]["counts"][2] + 3  # 3 searches on top
    restored_newer = orjson.loads(states[b"user-newer"])
    assert restored_newer["experiment_arms"] == {"e1": "b"}  # the newer field kept
    fresh = decode("user-broken", states[b"user-broken"], **BOUNDS)
    assert fresh.counts == [0, 0, 3, 0]  # started afresh
