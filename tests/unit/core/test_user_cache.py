"""A bounded user cache changes nothing a processor publishes or stores, only what it holds.

The same records go through a processor that holds every state and through processors
whose cache holds a few: outputs and stored states must be equal byte for byte, with
states evicted and read back many times over (KPI windows, experiments, artworks, CRM
triggers, churn labels and re-scores, timers of evicted users).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from agents.devtools.throughput import with_artworks
from pipeline.config import Settings
from pipeline.core.partitioning import partitioned
from pipeline.core.processor import Output, Processor
from pipeline.offline.runner import drive
from pipeline.sim.simulate import SimulationConfig, Simulator

#: Risk bands low enough that the CRM triggers fire on these viewers.
SETTINGS = Settings(risk_medium=0.1, risk_high=0.2)
PARTITIONS = 3


@functools.cache
def simulation() -> tuple[list[tuple[bytes | None, bytes, int, int, int]], list[dict[str, Any]]]:
    simulator = Simulator(
        SimulationConfig(users=90, days=40, seed=11, bad_rate=0.01, duplicate_rate=0.02)
    )
    records = [
        (key, value, partition, offset, 0)
        for key, value, partition, offset in partitioned(simulator.records(), PARTITIONS)
    ]
    return records, with_artworks(simulator.catalog())


def reader(store: dict[tuple[int, str], bytes]) -> Callable[[str, int], bytes | None]:
    """A processor's ``load_state`` from a store keyed by partition and user, as RocksDB's."""

    def load(user_id: str, partition: int) -> bytes | None:
        return store.get((partition, user_id))

    return load


def experiment() -> dict[str, Any]:
    records, _ = simulation()
    return {
        "schema_version": 1,
        "id": "rail",
        "salt": "rail-salt",
        "start": orjson.loads(records[len(records) // 5][1])["ts"],
        "metrics": ["click_play_conversion"],
        "variants": [
            {"name": "control", "weight": 0.5, "control": True},
            {"name": "trending", "weight": 0.5, "knobs": {"list_source": "trending"}},
        ],
    }


def run(
    cache_max: int, write_back_every: int
) -> tuple[Processor, list[Output], dict[tuple[int, str], bytes], int]:
    """Outputs, the store after every write-back, and the most states held after one."""
    records, catalog = simulation()
    store: dict[tuple[int, str], bytes] = {}
    settings = SETTINGS.model_copy(update={"user_cache_max": cache_max})
    processor = Processor(settings, clock=lambda: 4.1e9, load_state=reader(store))
    processor.load_catalog(catalog)
    processor.load_experiments([experiment()])
    outputs: list[Output] = []
    held = [0]

    def write(states: list[tuple[str, int, bytes]]) -> None:
        store.update(((partition, user_id), data) for user_id, partition, data in states)
        held[0] = max(held[0], len(processor.users))

    drive(
        processor,
        records,
        outputs=outputs.extend,
        states=write,
        write_back_every=write_back_every,
    )
    return processor, outputs, store, held[0]


@functools.cache
def reference() -> tuple[list[tuple[str, bytes | None, bytes]], dict[tuple[int, str], bytes]]:
    _, outputs, store, _ = run(0, 500)
    return [(out.kind, out.key, out.value) for out in outputs], store


@pytest.mark.parametrize(("cache_max", "write_back_every"), [(5, 500), (1, 37), (30, 2000)])
def test_a_bounded_cache_publishes_and_stores_what_an_unbounded_one_does(
    cache_max: int, write_back_every: int
) -> None:
    outputs, store = reference()
    processor, bounded, bounded_store, held = run(cache_max, write_back_every)
    kinds = {kind for kind, _, _ in outputs}
    assert {"churn", "personalization", "signal", "action", "kpi_partial", "dlq"} <= kinds
    assert [(out.kind, out.key, out.value) for out in bounded] == outputs
    assert bounded_store == store
    tally = processor.tally
    assert tally.states_evicted > len(store)  # users went and came back, many of them
    assert tally.states_read_back > len(store)
    assert tally.timers_woken > 0  # users read back when their parked timers neared
    assert held <= cache_max  # after each write-back, every user beyond the bound went


def holding_two(store: dict[tuple[int, str], bytes]) -> Processor:
    """A processor holding at most 2 states, after the first 400 records (nothing stored)."""
    records, catalog = simulation()
    settings = SETTINGS.model_copy(update={"user_cache_max": 2})
    processor = Processor(settings, clock=lambda: 4.1e9, load_state=reader(store))
    processor.load_catalog(catalog)
    drive(processor, records[:400])
    return processor


def test_only_stored_states_are_evicted_and_parked_timers_read_them_back() -> None:
    store: dict[tuple[int, str], bytes] = {}
    processor = holding_two(store)
    assert processor.evict() == 0  # nothing stored: every user stays
    users = processor.take_dirty_users()
    states = processor.states_of(users)
    assert processor.evict() == 0  # on its way to the store, not there yet
    store.update(((partition, user_id), data) for user_id, partition, data in states)
    processor.stored(users)
    assert processor.evict() == len(users) - 2
    assert len(processor.users) == 2
    assert processor.timers.parked > 0  # the evicted users' timers wait in the store
    read_back = processor.tally.states_read_back
    drive(processor, simulation()[0][400:])
    assert processor.tally.states_read_back > read_back


def test_states_taken_for_writing_stay_until_written() -> None:
    """A write-back in parts (the worker's) never loses the users it has not written yet.

    Between two parts the worker handles batches, and each batch evicts: a user taken
    for writing but not serialised yet is neither changed (no longer dirty) nor on its
    way to the store, yet the store does not hold its change.
    """
    store: dict[tuple[int, str], bytes] = {}
    processor = holding_two(store)
    users = processor.take_dirty_users()
    assert len(users) > 4
    first, unwritten, rest = users[:2], users[2:4], users[4:]
    store.update(((p, user_id), data) for user_id, p, data in processor.states_of(first))
    processor.stored(first)
    processor.evict()  # a batch between two parts
    assert {user_id for user_id, _, _ in processor.states_of(rest)} == set(rest)
    processor.keep_dirty(unwritten)  # a write-back cancelled before them
    processor.evict()
    assert set(unwritten) <= set(processor.users)
    assert set(unwritten) <= set(processor.take_dirty_users())


def test_a_bounded_cache_needs_a_store() -> None:
    with pytest.raises(ValueError, match="load_state"):
        Processor(Settings(user_cache_max=10))
