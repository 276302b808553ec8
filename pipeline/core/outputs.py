"""The output kinds of the core: the one place a new kind of published record is added.

Each kind names the :class:`~pipeline.config.Settings` field of its topic and the schema
its records follow (``schemas/<schema>.schema.json``). The worker's topics, its metrics
and the bench read this registry; the record builders live in :mod:`pipeline.core.records`.

>>> [kind.name for kind in OUTPUTS.values() if kind.scored]
['churn', 'personalization', 'signal', 'action']
>>> from pipeline.config import Settings
>>> OUTPUTS["dlq"].topic(Settings())
'ott.events.dlq'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.config import Settings

__all__ = ["OUTPUTS", "SCORED_KINDS", "Output"]


@dataclass(frozen=True, slots=True)
class Output:
    """A kind of record the processor emits."""

    name: str
    #: The field of :class:`~pipeline.config.Settings` that names its topic.
    topic_setting: str
    #: ``schemas/<schema>.schema.json`` describes its records.
    schema: str
    #: A score for a user (counted in ``ottscore_scores_published_total``), not a dead letter.
    scored: bool = True

    def topic(self, settings: Settings) -> str:
        """The topic its records go to under ``settings``."""
        return str(getattr(settings, self.topic_setting))


OUTPUTS = {
    output.name: output
    for output in (
        Output("dlq", "topic_dlq", "dlq", scored=False),
        Output("churn", "topic_scores_churn", "churn"),
        Output("personalization", "topic_scores_personalization", "personalization"),
        Output("signal", "topic_signals", "signal"),
        Output("action", "topic_actions", "action"),
        Output("kpi_partial", "topic_kpi_partials", "kpi_partial", scored=False),
        Output("learning", "topic_learning", "learning", scored=False),
    )
}

#: The kinds that are scores, as in ``ottscore_scores_published_total{kind}``.
SCORED_KINDS = tuple(name for name, output in OUTPUTS.items() if output.scored)
