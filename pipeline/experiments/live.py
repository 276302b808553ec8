"""Experiments as the processor runs them: who is in which variant, and what that changes.

:class:`LiveExperiments` holds the definitions a worker has read (from ``ott.experiments``
or a file), assigns each user once per experiment, at the user's first event while the
experiment runs, and keeps the assignment in the user's state (``UserState.experiments``):
sticky across restarts, replays and rebalances, and decided by the definition and the user
alone (:func:`~pipeline.experiments.assignment.assign`), so a replay assigns the same.
A user outside the experiment's population at that moment is recorded as outside it
(``""``) and stays outside. :meth:`LiveExperiments.arms` then says which variants shape a
record published at an event time (experiments that have stopped shape nothing), and
:meth:`LiveExperiments.knobs` what they change.

Examples
--------
>>> from pipeline.experiments.definition import parse_definition
>>> live = LiveExperiments()
>>> live.load([{
...     "schema_version": 1, "id": "rail", "salt": "rail-2026-12",
...     "start": "2026-12-01T00:00:00Z", "stop": "2026-12-08T00:00:00Z",
...     "metrics": ["click_play_conversion"],
...     "variants": [{"name": "control", "weight": 0.5, "control": True},
...                  {"name": "trending", "weight": 0.5,
...                   "knobs": {"list_source": "trending", "list_size": 5}}]}])
>>> held = {}
>>> for user in ("u-1", "u-6"):
...     held[user] = {}
...     scopes = live.assign(held[user], user, ts_ms=1_796_100_000_000, first_seen_ms=0,
...                          segment=None, device=None)
>>> held, live.arms(held["u-6"], 1_796_100_000_000), scopes[1]
({'u-1': {'rail': 'control'}, 'u-6': {'rail': 'trending'}}, {'rail': 'trending'}, \
('experiment', 'rail', 'trending'))
>>> live.knobs({"rail": "trending"}).list_source, live.knobs({}).list_size
('trending', None)
>>> live.arms(held["u-6"], 1_796_700_000_000)  # stopped: shapes nothing
{}
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import fields, replace

from pipeline.experiments.assignment import assign
from pipeline.experiments.definition import (
    DefinitionRefused,
    Experiment,
    Knobs,
    parse_definition,
)
from pipeline.experiments.registry import ExperimentRegistry
from pipeline.kpis.windows import ONLY_ALL, Scopes, scopes_of

__all__ = ["OUTSIDE", "LiveExperiments"]

#: Most users whose arms are remembered at once (then all are forgotten and looked up again).
_MEMO_MAX = 1_000_000

log = logging.getLogger(__name__)

#: The assignment of a user who was outside an experiment's population when first seen in it.
OUTSIDE = ""


class LiveExperiments:
    """The experiments a worker runs, and the knobs of each of their variants."""

    def __init__(self) -> None:
        self.registry = ExperimentRegistry()
        #: Definitions refused since the last :meth:`take_refused`, by reason.
        self.refused: Counter[str] = Counter()
        self._knobs: dict[tuple[str, str], Knobs] = {}
        self._merged: dict[tuple[tuple[str, str], ...], Knobs] = {}
        self._running: tuple[Experiment, ...] = ()
        #: Whether a variant sets ``reco_debounce_s`` (else a user's arms matter to a list
        #: only once it is due, and are not looked up at every event).
        self.sets_debounce = False
        # every start and stop: between two, the same experiments run
        self._bounds: list[int] = []
        # per user's assignments (by identity): (them, their count, the span, arms, scopes)
        self._memo: dict[int, tuple[Mapping[str, str], int, int, dict[str, str], Scopes]] = {}
        # per user's assignments (by identity): (them, their count, the span they were made
        # in, the scopes then)
        self._assigned: dict[int, tuple[Mapping[str, str], int, int, Scopes]] = {}
        # per remembered arms (by identity): (them, their knobs)
        self._knobs_of: dict[int, tuple[Mapping[str, str], Knobs]] = {}

    def __bool__(self) -> bool:
        """Whether any experiment is defined (the processor's fast path skips them all)."""
        return bool(self._running)

    def load(self, definitions: Iterable[object]) -> None:
        """Adopt definitions read from the experiments topic or a file.

        A definition that does not parse or that the registry refuses is skipped, counted in
        :attr:`refused` with its reason and logged; the ones after it are still read.
        """
        for raw in definitions:
            try:
                experiment = parse_definition(raw)
                self.registry.register(experiment)
            except DefinitionRefused as refused:
                self.refused[refused.reason] += 1
                log.warning("experiment definition refused: %s (%.200r)", refused, raw)
                continue
            for variant in experiment.variants:
                self._knobs[experiment.id, variant.name] = variant.knobs
        self._running = tuple(sorted(self.registry, key=lambda experiment: experiment.id))
        self._merged.clear()
        self._memo.clear()
        self._assigned.clear()
        self._knobs_of.clear()
        self._bounds = sorted(
            {e.start_ms for e in self._running}
            | {e.stop_ms for e in self._running if e.stop_ms is not None}
        )
        self.sets_debounce = any(
            knobs.reco_debounce_s is not None for knobs in self._knobs.values()
        )

    def assign(
        self,
        held: MutableMapping[str, str],
        user_id: str,
        *,
        ts_ms: int,
        first_seen_ms: int,
        segment: int | None,
        device: str | None,
    ) -> Scopes:
        """Assign ``user_id`` to each experiment running at ``ts_ms`` it has no place in yet.

        ``held`` is the user's stored assignments (experiment id → variant, or
        :data:`OUTSIDE`). A user is new to an experiment when first seen at or after its
        start. Returns the KPI scopes of the user's event at ``ts_ms``: all, and each arm.
        """
        span = bisect.bisect_right(self._bounds, ts_ms)
        done = self._assigned.get(id(held))
        if done is not None and done[0] is held and done[1] == len(held) and done[2] == span:
            return done[3]  # assigned in this span already: every running experiment is held
        for experiment in self._running:
            if experiment.id in held or not experiment.active_at(ts_ms):
                continue
            admitted = experiment.population.admits(
                segment=segment, device=device, new_user=first_seen_ms >= experiment.start_ms
            )
            held[experiment.id] = assign(experiment, user_id) if admitted else OUTSIDE
        scopes = self._arms(held, ts_ms)[4] if held else ONLY_ALL
        if len(self._assigned) >= _MEMO_MAX:
            self._assigned.clear()
        self._assigned[id(held)] = (held, len(held), span, scopes)
        return scopes

    def arms(self, held: Mapping[str, str], ts_ms: int) -> dict[str, str]:
        """The variants of ``held`` whose experiments run at ``ts_ms`` (the user's arms).

        The same dict is given again while neither ``held`` nor the running experiments
        change: read it, do not change it.
        """
        if not held:
            return {}
        return self._arms(held, ts_ms)[3]

    def _arms(
        self, held: Mapping[str, str], ts_ms: int
    ) -> tuple[Mapping[str, str], int, int, dict[str, str], Scopes]:
        span = bisect.bisect_right(self._bounds, ts_ms)
        memo = self._memo.get(id(held))
        if memo is not None and memo[0] is held and memo[1] == len(held) and memo[2] == span:
            return memo
        registry = self.registry
        arms = {
            experiment_id: variant
            for experiment_id, variant in held.items()
            if variant != OUTSIDE
            and experiment_id in registry
            and registry[experiment_id].active_at(ts_ms)
        }
        if len(self._memo) >= _MEMO_MAX:
            self._memo.clear()
        memo = self._memo[id(held)] = (held, len(held), span, arms, scopes_of(arms))
        if len(self._knobs_of) >= _MEMO_MAX:
            self._knobs_of.clear()
        self._knobs_of[id(arms)] = (arms, self.knobs(arms))
        return memo

    def knobs(self, arms: Mapping[str, str]) -> Knobs:
        """What ``arms`` change, merged; where two set one knob, the first experiment by id wins."""
        known = self._knobs_of.get(id(arms))
        if known is not None and known[0] is arms:  # remembered arms (:meth:`arms`)
            return known[1]
        key = tuple(sorted(arms.items()))
        merged = self._merged.get(key)
        if merged is None:
            merged = self._merged[key] = self._merge(arms)
        return merged

    def _merge(self, arms: Mapping[str, str]) -> Knobs:
        merged = Knobs()
        for experiment_id in sorted(arms):
            knobs = self._knobs.get((experiment_id, arms[experiment_id]))
            if knobs is None:
                continue
            unset = {
                each.name: getattr(knobs, each.name)
                for each in fields(Knobs)
                if getattr(merged, each.name) is None and getattr(knobs, each.name) is not None
            }
            if unset:
                merged = replace(merged, **unset)
        return merged

    def take_refused(self) -> Counter[str]:
        """The refusals counted since the last call."""
        refused, self.refused = self.refused, Counter()
        return refused
