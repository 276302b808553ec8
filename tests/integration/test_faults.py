"""Faults on the real broker: kill -9, a broker restart, a worker lost from the group, garbage.

Each test streams simulated traffic (with malformed records and client retries) while the
fault happens, lets the surviving or restarted worker catch up, then audits every input
record: the event-determined part of every user state equals an uninterrupted in-process
run over the same partitions (so each valid event was applied once: none lost, none twice),
the per-type event counts in the states equal an independent count of the valid new
events by event_id, every malformed record is in the dead-letter topic (by origin
partition and offset; a replay after a crash may letter it twice, never lose it), and
every churn score and list of that run was published (by kind, user and event time; a
replay may publish one twice), none other.
"""

from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson
import pytest
from conftest import free_ports
from worker_process import (
    WorkerProcess,
    consent_records,
    labelled,
    published_scores,
    read_topic,
    reference_run,
    stored_states,
    wait_committed,
)

from agents.devtools.produce import produce
from agents.worker.faults import STEPS
from agents.worker.kafka import ensure_topics
from pipeline.config import Settings
from pipeline.core.events import EVENT_TYPES, EventDecoder, Rejection, parse_ts
from pipeline.core.features import DAY_MS
from pipeline.core.processor import Processor
from pipeline.crm.consent import Consent
from pipeline.sim.simulate import SimulationConfig, Simulator

#: A killed worker's partitions move after this; the broker's minimum allowed is 6 s.
SESSION_TIMEOUT_S = 6.0


def audit(settings: Settings) -> dict[str, int]:
    """Check every input record's fate (module docstring); returns the counts it saw."""
    inputs = read_topic(settings, settings.topic_events)
    decoder = EventDecoder()
    seen: set[tuple[str, str]] = set()
    valid: dict[str, Counter[str]] = {}
    rejected: set[tuple[int, int]] = set()
    retries = 0
    for record in inputs:
        decoded = decoder.decode(record.value)
        if isinstance(decoded, Rejection):
            rejected.add((record.partition, record.offset))
        elif (decoded.user_id, decoded.event_id) in seen:
            retries += 1
        else:
            seen.add((decoded.user_id, decoded.event_id))
            valid.setdefault(decoded.user_id, Counter())[decoded.type] += 1

    stored = stored_states(settings)
    expected, expected_scores = reference_run(settings)
    processor = Processor(settings.model_copy(update={"user_cache_max": 0}))
    states = {user: processor.decode_state(user, data) for user, data in stored.items()}
    assert stored.keys() == expected.keys() == valid.keys()
    differing = [
        user
        for user in expected
        if states[user].activity() != processor.decode_state(user, expected[user]).activity()
    ]
    assert not differing, f"{len(differing)} of {len(expected)} user states differ"

    lost = twice = 0
    for user, counts in valid.items():
        for index, event_type in enumerate(EVENT_TYPES):
            applied = states[user].counts[index]
            lost += max(0, counts[event_type] - applied)
            twice += max(0, applied - counts[event_type])
    letters = [orjson.loads(r.value) for r in read_topic(settings, settings.topic_dlq)]
    lettered = {(letter["partition"], letter["offset"]) for letter in letters}
    lost_letters = len(rejected - lettered)
    assert (lost, twice, lost_letters) == (0, 0, 0)
    assert lettered == rejected

    # every churn score and list the uninterrupted run made was published, none other
    published = published_scores(settings)
    missing = expected_scores - set(published)
    unexpected = set(published) - expected_scores
    assert not missing and not unexpected, (
        f"{len(missing)} of {len(expected_scores)} scores missing, e.g. {sorted(missing)[:3]}; "
        f"{len(unexpected)} unexpected, e.g. {sorted(unexpected)[:3]}"
    )
    actions = audit_actions(settings)
    return {
        "actions": actions,
        "records": len(inputs),
        "events": len(seen),
        "retries": retries,
        "rejected": len(rejected),
        "dlq_records": len(letters),
        "users": len(states),
        "lost": lost + lost_letters,
        "applied_twice": twice,
        "scores": len(expected_scores),
        "scores_published": len(published),
    }


def audit_actions(settings: Settings) -> int:
    """The CRM triggers read back from their topic: caps and opt-outs hold; returns how many.

    De-duplicated by ``trigger_id`` (a replay may publish one twice), as a consumer does.
    """
    unique = {}
    for record in read_topic(settings, settings.topic_actions):
        action = orjson.loads(record.value)
        unique[action["trigger_id"]] = action
    consent = Consent()
    consent.load(consent_records(settings))
    per_day: Counter[tuple[str, int]] = Counter()
    times: dict[tuple[str, str], list[int]] = {}
    for action in unique.values():
        at_ms = parse_ts(action["ts"])
        per_day[action["user_id"], at_ms // DAY_MS] += 1
        times.setdefault((action["user_id"], action["type"]), []).append(at_ms)
        assert consent.allows(action["user_id"], action["channel"]), action
    assert not per_day or max(per_day.values()) <= settings.crm_daily_cap
    gap_ms = settings.crm_type_gap_s * 1000
    for made in times.values():
        made.sort()
        assert all(b - a >= gap_ms for a, b in zip(made, made[1:], strict=False)), made
    return len(unique)


def publish_consent(settings: Settings, users: int, seed: int) -> None:
    """Opt-outs for a fifth of the users, and a record that is not JSON."""
    rng = random.Random(seed)
    records: list[tuple[bytes | None, bytes]] = [(b"bad", b"{not json")]
    for n in range(users):
        if rng.random() < 0.2:
            user = f"user-{n:06d}"
            channels = [rng.choice(["email", "push", "in_app", "all"])]
            records.append((user.encode(), orjson.dumps({"user_id": user, "opted_out": channels})))
    produce(settings, records, topic=settings.topic_consent)


def feed(settings: Settings, records: Iterable, rate: float) -> threading.Thread:
    feeder = threading.Thread(target=produce, args=(settings, records), kwargs={"rate": rate})
    feeder.start()
    return feeder


def held_back(
    records: list, start: int, until: threading.Event, released: threading.Event, timeout_s: float
) -> Iterator:
    """``records``, holding those from ``start`` on until ``until`` is set (or ``timeout_s``).

    ``released`` is set as the held records are let go.
    """
    yield from records[:start]
    until.wait(timeout_s)
    released.set()
    yield from records[start:]


def stream(seed: int, users: int = 300, days: float = 21) -> list[tuple[bytes | None, bytes]]:
    config = SimulationConfig(users=users, days=days, seed=seed, bad_rate=0.01, duplicate_rate=0.01)
    return list(Simulator(config).records())


STORES = pytest.mark.parametrize("store", ["memory://", "rocksdb://"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("store", "cache_max"), [("memory://", 0), ("rocksdb://", 0), ("rocksdb://", 40)]
)
def test_kill_9_five_times_loses_nothing(
    settings_factory, tmp_path: Path, store: str, cache_max: int
) -> None:
    settings = settings_factory(
        store=store,
        user_cache_max=cache_max,
        metrics_port=free_ports(1)[0],
        batch_max_events=200,
        kafka_session_timeout_s=SESSION_TIMEOUT_S,
        snapshot_key="kill-test-key",
        snapshot_interval_s=2.0,
        kafka_commit_interval_s=0.5,  # lives of 0.1-2 s commit, so later ones restore
    )
    ensure_topics(settings)
    publish_consent(settings, users=300, seed=21)
    records = stream(seed=21)
    feeder = feed(settings, records, rate=2500)
    rng = random.Random(21)
    trials = []
    try:
        for trial in range(5):
            worker = WorkerProcess(settings, tmp_path / f"worker-{trial}.log").start()
            try:
                target = rng.randint(300, 4000)  # records into this life, then SIGKILL
                worker.wait_received(target, timeout_s=120)
                trials.append(int(worker.metric("ottscore_records_received_total")))
            finally:
                assert worker.stop(signal.SIGKILL) == -signal.SIGKILL
        last = WorkerProcess(settings, tmp_path / "worker-last.log").start()
        try:
            feeder.join()
            wait_committed(settings, timeout_s=180)
            resumed = last.metric("ottscore_scores_published_total", kind="personalization")
        finally:
            assert last.stop(signal.SIGTERM) == 0
    finally:
        feeder.join()
    counts = audit(settings)
    assert resumed > 0, "the restarted worker published no scores"
    assert counts["actions"] > 0, "no CRM trigger to audit"
    restored = [restored_states(tmp_path / f"worker-{life}.log") for life in range(1, 5)]
    restored.append(restored_states(tmp_path / "worker-last.log"))
    assert sum(restored) > 0, "no life restored a stored state: the test saw no restore"
    print(
        f"\nkill -9 ({store}, cache {cache_max or 'unbounded'}): {len(trials)} trials "
        f"(records read per life {trials}, states restored per restart {restored}), {counts}"
    )


def restored_states(log: Path) -> int:
    """How many stored user states a worker adopted, by its log, over its partitions."""
    return sum(int(n) for n in re.findall(r"restored (\d+) user states", log.read_text()))


def test_a_bounded_cache_evicts_reads_back_and_restarts_as_an_uninterrupted_run(
    settings_factory, tmp_path: Path
) -> None:
    """30 of 150 users held, on RocksDB, a stop and a restart half-way: as one run holding all.

    Every state and every score equal those of one uninterrupted in-process run.
    """
    settings = settings_factory(
        store="rocksdb://",
        metrics_port=free_ports(1)[0],
        batch_max_events=200,
        user_cache_max=30,
        rocksdb_write_buffer_mb=3,  # RocksDB's memory as the settings say (its OPTIONS file)
    )
    ensure_topics(settings)
    publish_consent(settings, users=150, seed=27)
    records = stream(seed=27, users=150, days=14)
    half = len(records) // 2
    lives = []
    for life, part in enumerate([records[:half], records[half:]]):
        worker = WorkerProcess(settings, tmp_path / f"worker-{life}.log").start()
        try:
            ready(worker)
            feed(settings, part, rate=500).join()  # commits, write-backs and evictions between
            worker.wait_received(len(part), timeout_s=120)
            wait_committed(settings, timeout_s=180)
            worker.wait_until(
                lambda w=worker: w.metric("ottscore_users_cached") <= 30,
                timeout_s=30,
                what="evicting the stored states beyond the cache",
            )
            lives.append(
                {
                    "evicted": worker.metric("ottscore_user_states_evicted_total"),
                    "read_back": worker.metric("ottscore_user_states_read_back_total"),
                    "cached": worker.metric("ottscore_users_cached"),
                    "parked": worker.metric("ottscore_timers_parked"),
                    "memtables": worker.metric("ottscore_rocksdb_memtables_bytes"),
                }
            )
        finally:
            assert worker.stop(signal.SIGTERM) == 0
    counts = audit(settings)
    assert counts["lost"] == counts["applied_twice"] == 0
    assert counts["users"] > 4 * 30
    for life in lives:  # users went and came back, again and again
        assert life["evicted"] > counts["users"] and life["read_back"] > counts["users"], lives
        assert life["parked"] > 0, lives  # evicted users' timers waited in the store
        assert life["memtables"] > 0, lives  # the databases on the worker's memory budget
    buffers = {
        line.strip()
        for options in settings.data_dir.rglob("users-*.db/OPTIONS-*")
        for line in options.read_text().splitlines()
        if line.strip().startswith("write_buffer_size=")
    }
    assert buffers == {f"write_buffer_size={3 * 2**20}"}, buffers
    print(f"\nbounded cache (30 of 150 users), stop and restart: {lives}, {counts}")


@pytest.mark.slow
@STORES
def test_broker_restart_mid_stream_loses_nothing(
    local_kafka_factory, tmp_path: Path, store: str
) -> None:
    kafka = local_kafka_factory()
    kafka.start()
    settings = Settings(
        kafka_bootstrap_servers=kafka.bootstrap,
        app_id="ottscore-broker-restart",
        store=store,
        data_dir=tmp_path / "data",
        metrics_port=free_ports(1)[0],
        worker_web_port=free_ports(1)[0],
        batch_max_events=200,
    )
    ensure_topics(settings)
    records = stream(seed=22, users=200, days=14)
    half = len(records) // 2
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        produce(settings, records[:half])
        worker.wait_received(half // 2)
        kafka.stop()  # mid-stream: the worker still has records to process
        time.sleep(3)
        kafka.start()
        produce(settings, records[half:])
        wait_committed(settings, timeout_s=180)
        assert worker.process is not None and worker.process.poll() is None
        assert worker.probe("/readyz")[0] == 200
    finally:
        assert worker.stop(signal.SIGTERM) == 0
    counts = audit(settings)
    print(f"\nbroker restart ({store}): 1 restart mid-stream, {counts}")


@pytest.mark.slow
@STORES
def test_partitions_of_a_killed_worker_move_to_the_other(
    settings_factory, tmp_path: Path, store: str
) -> None:
    ports = free_ports(2)
    base = settings_factory(
        store=store,
        batch_max_events=200,
        kafka_session_timeout_s=SESSION_TIMEOUT_S,
        lag_interval_s=0.5,
    )
    first = WorkerProcess(base.model_copy(update={"metrics_port": ports[0]}), tmp_path / "a.log")
    second = WorkerProcess(
        base.model_copy(
            update={
                "metrics_port": ports[1],
                "worker_web_port": free_ports(1)[0],
                "data_dir": tmp_path / "b-data",
            }
        ),
        tmp_path / "b.log",
    )
    records = stream(seed=23)
    feeder = feed(base, records, rate=2500)
    try:
        first.start()
        second.start()

        def owned(worker: WorkerProcess) -> int:
            """Input partitions the worker exports a lag for: the ones it owns."""
            try:
                samples = worker.samples()
            except OSError:  # not serving yet
                return 0
            return sum(1 for name, _ in samples if name == "ottscore_consumer_lag_records")

        first.wait_until(
            lambda: owned(first) + owned(second) == 4 and owned(second) > 0,
            timeout_s=90,
            what="waiting for the two workers to share the partitions",
        )
        before = owned(second)
        second.wait_received(2000)
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        second.wait_until(
            lambda: owned(second) == 4,
            timeout_s=60,
            what="waiting for the survivor to own every partition",
        )
        feeder.join()
        wait_committed(base, timeout_s=180)
    finally:
        feeder.join()
        first.stop(signal.SIGKILL)
        assert second.stop(signal.SIGTERM) == 0
    counts = audit(base)
    print(f"\nfailover ({store}): survivor owned {before} then 4 partitions, {counts}")


@pytest.mark.slow
def test_a_paused_broker_fails_healthz_and_the_worker_recovers_without_loss(
    local_kafka_factory, tmp_path: Path
) -> None:
    """SIGSTOP the broker for longer than the commit deadline, then SIGCONT it.

    Commits are abandoned after ``kafka_commit_timeout_s`` and tried again; once records
    have waited ``commit_stale_s`` for a commit, ``/healthz`` answers 503 (an orchestrator
    restarts such a worker). After the broker resumes, the worker commits, answers 200
    again, and every record is accounted for.
    """
    kafka = local_kafka_factory()
    kafka.start()
    settings = Settings(
        kafka_bootstrap_servers=kafka.bootstrap,
        app_id="ottscore-broker-pause",
        store="memory://",
        data_dir=tmp_path / "data",
        metrics_port=free_ports(1)[0],
        worker_web_port=free_ports(1)[0],
        batch_max_events=200,
        kafka_commit_timeout_s=3.0,
        commit_stale_s=8.0,
    )
    ensure_topics(settings)
    records = stream(seed=24, users=200, days=14)
    half = len(records) // 2
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    pid = kafka.status().pid
    assert pid is not None
    try:
        produce(settings, records[:half])
        worker.wait_received(half // 2)
        os.killpg(pid, signal.SIGSTOP)  # mid-stream: processed records wait for a commit
        paused = time.monotonic()
        try:
            worker.wait_until(
                lambda: worker.probe("/healthz")[0] == 503,
                timeout_s=60,
                what="waiting for /healthz to fail while the broker is paused",
            )
            failed_after = time.monotonic() - paused
            status, body = worker.probe("/healthz")
        finally:
            os.killpg(pid, signal.SIGCONT)
        assert status == 503 and body["reason"].startswith("no commit for"), body
        worker.wait_until(
            lambda: worker.probe("/healthz")[0] == 200,
            timeout_s=120,
            what="waiting for /healthz to recover after the broker resumed",
        )
        produce(settings, records[half:])
        wait_committed(settings, timeout_s=180)
        worker.wait_until(
            lambda: (
                not labelled(
                    worker.samples(), "ottscore_consumer_committed_lag_records", "partition"
                )
            ),
            timeout_s=60,
            what="waiting for the committed lag to fall to zero",
        )
        timeouts = worker.metric("ottscore_commit_timeouts_total")
        assert worker.process is not None and worker.process.poll() is None
    finally:
        assert worker.stop(signal.SIGTERM) == 0
    assert timeouts >= 1
    counts = audit(settings)
    print(
        f"\nbroker paused: /healthz 503 after {failed_after:.1f} s (commit timeout 3 s, stale "
        f"after 8 s), {timeouts:.0f} commits abandoned, then recovered: {counts}"
    )


def ready(worker: WorkerProcess) -> None:
    def answers_ready() -> bool:
        try:
            return worker.probe("/readyz")[0] == 200
        except OSError:  # not serving yet
            return False

    worker.wait_until(answers_ready, timeout_s=90, what="waiting for readiness")


#: When each step is reached in a stream fed at 1,500 records/s: batch steps every few tens
#: of milliseconds, commit steps every 2.8 s (one changelog acknowledgement per partition).
CRASH_AFTER = {"batch_processed": 30, "outputs_handed": 30, "changelog_acknowledged": 6}


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_of_the_batch_and_commit_sequence_loses_nothing_on_rocksdb(
    step: str, settings_factory, tmp_path: Path
) -> None:
    """SIGKILL the worker at ``step`` mid-stream, restart it on the same RocksDB files.

    Whatever the step, the store never runs ahead of what Kafka holds: every event is
    applied once, every malformed record dead-lettered, every score published.
    """
    settings = settings_factory(
        store="rocksdb://",
        metrics_port=free_ports(1)[0],
        batch_max_events=200,
        kafka_session_timeout_s=SESSION_TIMEOUT_S,
        snapshot_key="crash-test-key",
        snapshot_interval_s=2.0,
    )
    times = CRASH_AFTER.get(step, 2)
    records = stream(seed=25, users=150, days=14)
    crashing = WorkerProcess(
        settings.model_copy(update={"fault_crash_at": f"{step}:{times}"}),
        tmp_path / "crashing.log",
    ).start()
    ready(crashing)  # the stream starts once the worker reads
    # The last tenth waits for the crash: it comes mid-stream however slowly the worker
    # reaches its step (a loaded machine delays the commits, and sending takes 6.6 s).
    crashed, released = threading.Event(), threading.Event()
    tail = len(records) * 9 // 10
    feeder = feed(settings, held_back(records, tail, crashed, released, timeout_s=60), rate=1500)
    try:
        assert crashing.process is not None
        assert crashing.process.wait(timeout=120) == -signal.SIGKILL, crashing.log_tail()
        assert not released.is_set(), "the crash came after the whole stream was sent"
        crashed.set()
        assert f"fault injection: SIGKILL at {step}" in crashing.log_path.read_text()
        restarted = WorkerProcess(settings, tmp_path / "restarted.log").start()
        try:
            ready(restarted)
            feeder.join()
            wait_committed(settings, timeout_s=180)
        finally:
            assert restarted.stop(signal.SIGTERM) == 0
    finally:
        crashed.set()
        feeder.join()
    counts = audit(settings)
    assert counts["lost"] == counts["applied_twice"] == 0
    print(f"\ncrash at {step} (time {times}), rocksdb: {counts}")
