"""The worker's RocksDB store: every database of a worker in one memory budget (real RocksDB)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import faust
import faust.stores

from agents.worker.stores import SharedMemoryOptions, Store, rocksdb_options, store_url
from pipeline.config import Settings

MIB = 2**20


def _options(**settings: int) -> SharedMemoryOptions:
    return SharedMemoryOptions(**rocksdb_options(Settings(**settings)), use_rocksdict=True)


def test_the_databases_of_a_worker_share_one_block_cache(tmp_path: Path) -> None:
    """Reading one partition's database fills the cache that every database reports."""
    options = _options(rocksdb_block_cache_mb=2, rocksdb_memtables_mb=8)
    databases = [options.open(tmp_path / str(p)) for p in range(4)]
    try:
        values = {f"user-{n}".encode(): os.urandom(300) for n in range(20_000)}
        first = databases[0]
        for key, value in values.items():
            first[key] = value
        first.flush()
        assert all(first[key] == value for key, value in values.items())
        usage = [db.property_int_value("rocksdb.block-cache-usage") for db in databases]
        capacity = {db.property_int_value("rocksdb.block-cache-capacity") for db in databases}
        assert capacity == {2 * MIB}  # the worker's, not 2 MiB a database
        assert len(set(usage)) == 1 and usage[0] > MIB, usage  # one cache, filled by one
    finally:
        for db in databases:
            db.close()


def test_the_memtables_of_a_worker_are_flushed_past_their_budget(tmp_path: Path) -> None:
    """12 MB spread over 8 databases, each below its own memtable size: flushed to 2 MiB.

    Without the budget nothing would be flushed (each database holds ~1.5 MB of a 4 MiB
    memtable). The flushes run in RocksDB's background threads, so their end is awaited.
    """
    options = _options(rocksdb_block_cache_mb=1, rocksdb_memtables_mb=2, rocksdb_write_buffer_mb=4)
    databases = [options.open(tmp_path / str(p)) for p in range(8)]
    try:
        for n in range(40_000):
            databases[n % 8][f"user-{n}".encode()] = os.urandom(300)

        def held() -> int:
            return sum(db.property_int_value("rocksdb.cur-size-all-mem-tables") for db in databases)

        # the budget, and each database's memtable holds one arena block (1/8 of 4 MiB)
        bound = 2 * MIB + 8 * (4 * MIB // 8)
        deadline = time.monotonic() + 30.0
        while held() > bound and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held() <= bound < 12 * MIB, held()
    finally:
        for db in databases:
            db.close()


def test_the_worker_runs_it_for_rocksdb_urls_only() -> None:
    assert faust.stores.by_url(store_url("rocksdb://")) is Store
    assert store_url("memory://") == "memory://"
    app = faust.App("ottscore-store-test", store=store_url("rocksdb://"))
    table = app.Table("users", options={"memtables_size": 3 * MIB, "block_cache_size": MIB})
    store = table._new_store()
    assert isinstance(store, Store)
    assert store.rocksdb_options.memtables_size == 3 * MIB
    assert store.rocksdb_options.block_cache_size == MIB
