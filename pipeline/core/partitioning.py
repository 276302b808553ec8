"""Where a keyed record lives: Kafka's default partitioner, the one ottscore uses everywhere.

murmur2 of the key, as the Java client, kafka-python and aiokafka place keyed records:
where a user's events, and so their state and models, live. The worker's producer, the
bench and ``ottscore evaluate --partitions`` all place records with :func:`partition_for`.

>>> partition_for(b"u-42", 4), partition_for(b"u-42", 16)
(1, 9)
>>> list(partitioned([(b"u-42", b"a"), (b"u-7", b"b"), (b"u-42", b"c")], 4))
[(b'u-42', b'a', 1, 0), (b'u-7', b'b', 3, 0), (b'u-42', b'c', 1, 1)]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from kafka.partitioner.default import murmur2

__all__ = ["partition_for", "partitioned"]


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of ``partitions`` that Kafka's default partitioner gives ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def partitioned(
    records: Iterable[tuple[bytes | None, bytes]], partitions: int
) -> Iterator[tuple[bytes | None, bytes, int, int]]:
    """``(key, value, partition, offset)``: ``records`` as a topic of ``partitions`` holds them.

    Each keyed record goes to :func:`partition_for` its key, an unkeyed one to partition 0;
    offsets count up within each partition, in the order of ``records``.
    """
    offsets = [0] * partitions
    for key, value in records:
        partition = partition_for(key, partitions) if key is not None else 0
        yield key, value, partition, offsets[partition]
        offsets[partition] += 1
