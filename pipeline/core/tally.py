"""What the core did, in plain integers: the hot path counts here, the worker exports it.

>>> t = Tally()
>>> t.received += 2; t.consumed["play"] += 1; t.deduplicated += 1
>>> t.received == sum(t.consumed.values()) + t.deduplicated
True
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["LEARNING_OUTCOMES", "Tally"]

#: What became of a merge record of shared learning read from the input.
LEARNING_OUTCOMES = ("folded", "already_folded", "ignored")


@dataclass(slots=True)
class Tally:
    """What one batch did, in plain integers."""

    received: int = 0
    consumed: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    deduplicated: int = 0
    already_applied: int = 0
    published: Counter[str] = field(default_factory=Counter)
    sessions_closed: int = 0
    timer_errors: int = 0
    #: Churn challengers promoted to champion (:mod:`pipeline.models.promotion`).
    churn_promotions: int = 0
    #: Churn scores of silent users (``OTTSCORE_CHURN_RESCORE_DAYS``).
    churn_rescores: int = 0
    #: Events older than their partition's KPI watermark by more than the lateness.
    kpi_late: int = 0
    #: Artwork shows ended, and those taken, per policy (:mod:`pipeline.core.artwork`).
    artwork_shows: Counter[str] = field(default_factory=Counter)
    artwork_takes: Counter[str] = field(default_factory=Counter)
    #: CRM triggers published by ``(type, status)``, and suppressed by ``(type, reason)``.
    actions: Counter[tuple[str, str]] = field(default_factory=Counter)
    actions_suppressed: Counter[tuple[str, str]] = field(default_factory=Counter)
    catalog_rejected: Counter[str] = field(default_factory=Counter)
    consent_refused: Counter[str] = field(default_factory=Counter)
    experiments_refused: Counter[str] = field(default_factory=Counter)
    #: Deltas of shared learning published (:mod:`pipeline.models.exchange`).
    learning_published: int = 0
    #: Merge records of shared learning read from the input, by outcome: ``folded``,
    #: ``already_folded`` (read again after a restart) or ``ignored`` (sharing is off).
    learning_records: Counter[str] = field(default_factory=Counter)
    #: User states evicted from the bounded cache, and read back from the store.
    states_evicted: int = 0
    states_read_back: int = 0
    #: Users read back when the watermark reached their parked timers.
    timers_woken: int = 0

    def clear(self) -> None:
        """Zero every count."""
        self.received = self.deduplicated = self.already_applied = self.sessions_closed = 0
        self.timer_errors = self.churn_promotions = self.churn_rescores = 0
        self.kpi_late = self.learning_published = 0
        self.states_evicted = self.states_read_back = self.timers_woken = 0
        self.learning_records.clear()
        self.catalog_rejected.clear()
        self.experiments_refused.clear()
        self.artwork_shows.clear()
        self.artwork_takes.clear()
        self.actions.clear()
        self.actions_suppressed.clear()
        self.consent_refused.clear()
        self.consumed.clear()
        self.rejected.clear()
        self.published.clear()
