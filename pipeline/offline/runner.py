"""The one driver of :class:`~pipeline.core.processor.Processor` outside the worker.

``ottscore evaluate``, the bench (the in-process core and the kafka-python baseline) and
the tests' reference runs process records as the worker does: a batch of records, then the
batch's outputs taken, and the changed user states taken (serialised) at each write-back.
They all run :func:`drive`, so what they measure and compare is the same loop.

>>> from pipeline.config import Settings
>>> from pipeline.core.processor import Processor
>>> from pipeline.sim.simulate import SimulationConfig, Simulator
>>> simulator = Simulator(SimulationConfig(users=20, days=3, seed=1))
>>> records = [(key, value, 0, offset, 0) for offset, (key, value)
...            in enumerate(simulator.records())]
>>> outputs, states = [], []
>>> run = drive(Processor(Settings()), records, outputs=outputs.extend, states=states.extend)
>>> run.records == len(records), len(states) == len({key for key, *_ in records})
(True, True)
>>> {out.kind for out in outputs} >= {"churn", "personalization"}
True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from pipeline.core.events import Event, EventDecoder
from pipeline.core.processor import Output, Processor

__all__ = ["BATCH", "InputRecord", "Run", "drive", "unique_events"]

#: Records per batch: the worker's default (``OTTSCORE_BATCH_MAX_EVENTS``).
BATCH = 2000

#: ``(key, value, partition, offset, timestamp_ms)`` of an input record.
InputRecord = tuple[bytes | None, bytes | None, int, int, int]


@dataclass(frozen=True, slots=True)
class Run:
    """What :func:`drive` did: records processed and seconds spent in the core."""

    records: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        """Records per second of core time."""
        return self.records / self.seconds if self.seconds else 0.0


def drive(
    processor: Processor,
    records: Iterable[InputRecord],
    *,
    batch: int = BATCH,
    topic: str = "",
    write_back_every: int = 0,
    outputs: Callable[[Sequence[Output]], Any] | None = None,
    states: Callable[[Sequence[tuple[str, int, bytes]]], Any] | None = None,
    progress: Callable[[int], Any] | None = None,
) -> Run:
    """Process ``records`` a batch at a time; hand each batch's outputs to ``outputs``.

    The changed user states are taken, serialised, every ``write_back_every`` records
    (0: never in between) and once at the end (when there is a ``states`` or a
    ``write_back_every``), as the worker's write-back at a commit, and go to ``states``.
    ``progress`` gets the number of records of each batch. Only the core's work is timed
    (processing, taking outputs and states), not the callbacks.
    """
    process = processor.process
    source = iter(records)
    count = since_write_back = 0
    seconds = 0.0
    while chunk := list(islice(source, batch)):
        started = time.perf_counter()
        for key, value, partition, offset, timestamp_ms in chunk:
            process(
                value,
                key=key,
                partition=partition,
                offset=offset,
                timestamp_ms=timestamp_ms,
                topic=topic,
            )
        taken = processor.take_outbox()
        since_write_back += len(chunk)
        dirty = None
        if write_back_every and since_write_back >= write_back_every:
            dirty, since_write_back = processor.take_dirty(), 0
        seconds += time.perf_counter() - started
        count += len(chunk)
        if outputs is not None:
            outputs(taken)
        if dirty is not None and states is not None:
            states(dirty)
        if progress is not None:
            progress(len(chunk))
    if write_back_every or states is not None:  # the write-back of the last commit
        started = time.perf_counter()
        dirty = processor.take_dirty()
        seconds += time.perf_counter() - started
        if states is not None:
            states(dirty)
    return Run(count, seconds)


def unique_events(records: Iterable[bytes], decoder: EventDecoder) -> Iterator[Event]:
    """The valid events of ``records``, each event id of a user once.

    A client retry repeats an event id and the workers de-duplicate it, so the offline
    measures (experiment reports, KPI windows) count it once too.
    """
    seen: set[tuple[str, str]] = set()
    for record in records:
        event = decoder.decode(record)
        if isinstance(event, Event) and (event.user_id, event.event_id) not in seen:
            seen.add((event.user_id, event.event_id))
            yield event
