"""The worker's RocksDB store: one memory budget for all of a worker's databases.

Faust opens a RocksDB database for each partition of each table, and gives each its own
block cache and its own memtables: a worker's memory for RocksDB grew with the partitions
it owns (with Faust's defaults, 2 GiB of block cache and three 64 MiB memtables *each*). This
store is Faust's, with the databases of a process sharing

- one block cache of ``block_cache_size`` bytes (``OTTSCORE_ROCKSDB_BLOCK_CACHE_MB``), and
- one write buffer manager of ``memtables_size`` bytes (``OTTSCORE_ROCKSDB_MEMTABLES_MB``):
  past it RocksDB flushes memtables to disk, whichever database they belong to,

as RocksDB's documentation recommends for many databases in one process. Each memtable is
still ``write_buffer_size`` bytes at most (``OTTSCORE_ROCKSDB_WRITE_BUFFER_MB``).

It is registered as Faust's ``ottscore-rocksdb://`` store (the ``faust.stores`` entry point
in ``pyproject.toml``); the worker runs it where the settings say ``rocksdb://``
(:func:`store_url`). Files, layout and contents are those of Faust's RocksDB store: a
worker of an earlier release reads them, and this one reads theirs.

Examples
--------
>>> store_url("rocksdb://"), store_url("memory://")
('ottscore-rocksdb://', 'memory://')
>>> a = SharedMemoryOptions(block_cache_size=2**20, memtables_size=2**21, use_rocksdict=True)
>>> b = SharedMemoryOptions(block_cache_size=2**20, memtables_size=2**21, use_rocksdict=True)
>>> a.shared() is b.shared()   # the same cache and manager for every database of the process
True
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import rocksdict
from faust.stores import rocksdb as faust_rocksdb

from pipeline.config import Settings

__all__ = ["SCHEME", "SharedMemoryOptions", "Store", "rocksdb_options", "store_url"]

SCHEME = "ottscore-rocksdb"


def rocksdb_options(settings: Settings) -> dict[str, int]:
    """The options of the worker's tables for :class:`SharedMemoryOptions`, in bytes."""
    return {
        "block_cache_size": settings.rocksdb_block_cache_mb * 2**20,
        "memtables_size": settings.rocksdb_memtables_mb * 2**20,
        "write_buffer_size": settings.rocksdb_write_buffer_mb * 2**20,
    }


def store_url(url: str) -> str:
    """The store the worker opens for the settings' ``url``: ``rocksdb://`` runs this one."""
    scheme, sep, rest = url.partition("://")
    return f"{SCHEME}{sep}{rest}" if scheme == "rocksdb" and sep else url


class Shared(NamedTuple):
    """What all databases of the process with the same budget share."""

    cache: rocksdict.Cache
    write_buffers: rocksdict.WriteBufferManager


@functools.cache
def _shared(block_cache_size: int, memtables_size: int) -> Shared:
    return Shared(
        rocksdict.Cache(block_cache_size),
        rocksdict.WriteBufferManager(memtables_size, False),  # flush past it, never stall
    )


class SharedMemoryOptions(faust_rocksdb.RocksDBOptions):
    """Faust's RocksDB options, with the block cache and memtable budget of the process.

    ``memtables_size`` 0: no budget for the memtables together (Faust's behaviour).
    """

    def __init__(self, *, memtables_size: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.memtables_size = memtables_size

    def shared(self) -> Shared:
        """The cache and write buffer manager of every database opened with this budget."""
        return _shared(self.block_cache_size, self.memtables_size)

    def as_options(self) -> Any:
        """Faust's options for a database, on the process's cache and memtable budget."""
        options = super().as_options()
        if not self.use_rocksdict:  # python-rocksdb: Faust's options, a cache per database
            return options
        shared = self.shared()
        table = rocksdict.BlockBasedOptions()  # as Faust's, but for the cache
        table.set_bloom_filter(self.bloom_filter_size, block_based=True)
        table.set_block_cache(shared.cache)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        if self.memtables_size:
            options.set_write_buffer_manager(shared.write_buffers)
        return options


class Store(faust_rocksdb.Store):
    """Faust's RocksDB store on :class:`SharedMemoryOptions`."""

    def __init__(self, *args: Any, options: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        options = dict(options or {})
        memtables_size = options.pop("memtables_size", 0)  # not for Faust's own options
        super().__init__(*args, options=options, **kwargs)
        self.rocksdb_options = SharedMemoryOptions(
            **self.options, memtables_size=memtables_size, use_rocksdict=self.use_rocksdict
        )
