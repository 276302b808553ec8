"""Named scenarios: audiences whose behaviours make churn and taste harder to read.

Quality is measured over the matrix of these and of seeds, never one simulation:

``baseline``
    The default audience (:mod:`pipeline.sim.audience`): weekly rhythms, devices, series
    watched episode by episode and new releases that trend (:mod:`~pipeline.sim.viewing`),
    short vacations, slumps of loyal viewers, churners whose engagement erodes for two to
    five weeks (fewer and shorter sessions, more searches without a play, less finished).
``breaks``
    Breaks every ~25 days of 4 to 12 days: long silences shorter than the churn horizon,
    that are not churn.
``sudden``
    60 % of the churners leave without declining first.
``returners``
    40 % of the churners come back 15 to 45 days after leaving, in their old habits.
``all``
    Every behaviour of a real audience at once: the baseline's, breaks and returners.
    Not ``sudden``: a stress case, where nothing in the events foretells most departures,
    so no model can rank those churners; it bounds what any model can do.

>>> sorted(SCENARIOS)
['all', 'baseline', 'breaks', 'returners', 'sudden']
>>> SCENARIOS["all"].return_share, SCENARIOS["all"].sudden_share
(0.4, 0.0)
"""

from __future__ import annotations

from pipeline.sim.audience import Behaviours

__all__ = ["SCENARIOS"]

_BREAKS = {"break_every_days": 25.0, "break_days": (4.0, 12.0)}

SCENARIOS: dict[str, Behaviours] = {
    "baseline": Behaviours(),
    "breaks": Behaviours(**_BREAKS),  # type: ignore[arg-type]
    "sudden": Behaviours(sudden_share=0.6),
    "returners": Behaviours(return_share=0.4),
    "all": Behaviours(**_BREAKS, return_share=0.4),  # type: ignore[arg-type]
}
"""Every scenario by name."""
