"""Fault injection: kill the worker at a named step of its batch and commit sequence.

Set ``OTTSCORE_FAULT_CRASH_AT`` to ``STEP:N`` and the worker sends itself SIGKILL the
``N``-th time it reaches ``STEP``; the fault tests use it to prove that a crash at any step
loses nothing and applies nothing twice. Empty (the default) disables it. The steps, in
the order a record's effects go through them:

``batch_processed``
    a fetched batch went through the processor; its outputs are not handed over yet;
``outputs_handed``
    the batch's outputs are handed to the producer, not acknowledged;
``write_back_taken``
    a commit took the changed users, before serialising them;
``changelog_handed``
    their states are handed to the producer for the changelog (after the outputs);
``changelog_acknowledged``
    the changelog holds them, the local store does not yet;
``store_written``
    the local store holds them and the changelog offset it is at;
``outputs_flushed``
    everything handed over is acknowledged, the input offsets are not committed;
``offsets_committed``
    the input offsets are committed.

>>> faults = FaultInjection.parse("store_written:2")
>>> faults.reach("store_written")   # the first time: nothing happens
>>> FaultInjection.parse("").reach("store_written")
>>> FaultInjection.parse("nowhere:1")
Traceback (most recent call last):
...
ValueError: unknown fault step 'nowhere': not one of STEPS
"""

from __future__ import annotations

import logging
import os
import signal
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["STEPS", "FaultInjection"]

log = logging.getLogger(__name__)

STEPS = (
    "batch_processed",
    "outputs_handed",
    "write_back_taken",
    "changelog_handed",
    "changelog_acknowledged",
    "store_written",
    "outputs_flushed",
    "offsets_committed",
)


@dataclass(slots=True)
class FaultInjection:
    """Where to crash (``step``, the ``times``-th time), and how often each step was reached."""

    step: str | None = None
    times: int = 0
    reached: Counter[str] = field(default_factory=Counter)

    @classmethod
    def parse(cls, spec: str) -> FaultInjection:
        """Read ``STEP:N`` (or nothing, for no fault)."""
        if not spec:
            return cls()
        step, _, times = spec.partition(":")
        if step not in STEPS:
            raise ValueError(f"unknown fault step {step!r}: not one of STEPS")
        return cls(step, int(times or 1))

    def reach(self, step: str) -> None:
        """Note that ``step`` is reached; SIGKILL this process when it is the planned fault."""
        if step != self.step:
            return
        self.reached[step] += 1
        if self.reached[step] == self.times:
            log.warning("fault injection: SIGKILL at %s (time %d)", step, self.times)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)
