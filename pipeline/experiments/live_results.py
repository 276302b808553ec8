"""Experiment results while the experiment runs: per partition, then added up, at each hour.

The workers judge an experiment exactly as ``ottscore experiment report`` does over a file
(:func:`~pipeline.experiments.report.build_report`, looking every hour): each user's
outcome (:class:`~pipeline.experiments.outcomes.UserOutcome`) over their first
``window_ms`` of event time in the experiment, the user-level value of each metric, an
always-valid test per metric and variant against control, and the sample-ratio test of
the users seen per variant. Only the order of the work differs:

- :class:`PartitionOutcomes` (one per partition, inside the KPI windows, so it counts each
  user's events in event-time order after the allowed lateness, with what the windows
  computed of them) keeps the outcome of every user in an experiment; the outcome is
  stored with the user's state. At each hour
  boundary ``T`` the partition's contribution changes by the users first seen before ``T``
  (the sample-ratio counts) and the users whose window ended by ``T`` (their values are
  final: later events do not count). :meth:`PartitionOutcomes.take` gives those changes,
  boundary by boundary, once the partition has applied every event up to the boundary.
  Sums are exact rationals (:class:`fractions.Fraction`, written as text), so the order in
  which users or partitions are added never changes a bit of the result.
- :class:`ResultsCombiner` (in the combining agent) adds up the partitions' changes at a
  boundary once **every** partition has passed it, looks (updates each test with the
  totals), and gives one result record per experiment touched at that boundary
  (``schemas/experiment_result.schema.json``). A partition's changes sent again after a
  restart are identical and replace themselves; those of a boundary already looked at are
  ignored. Looking only where something changed gives the same p-values and intervals as
  looking every hour: a look at unchanged totals changes neither a running minimum nor an
  intersection.

>>> partition = PartitionOutcomes(window_ms=3_600_000)  # users judged on their first hour
>>> held = {}  # the user's outcomes, as their state keeps them
>>> scopes = (("all",), ("experiment", "x", "b"))
>>> partition.count(held, "u1", 60_000, scopes, (1, 0, 0, 0, 1, 0))  # a click, a new session
>>> partition.count(held, "u1", 120_000, scopes, (0, 1, 0, 0, 0, 0))  # a play of its item
>>> partition.convert(held, 120_000, scopes, click=True)  # ... within 10 minutes of the click
>>> changes = partition.take(7_200_000)  # every event up to 02:00 applied
>>> [boundary for boundary, _ in changes], held["x"].clicks_played
([3600000, 7200000], 1)
>>> meta = {"x": {"variants": [["control", 0.5, True], ["b", 0.5, False]],
...               "metrics": ["click_play_conversion"]}}
>>> combiner = ResultsCombiner(partitions=1)
>>> for r in combiner.feed(0, 7_200_000, changes, meta):
...     print(r["as_of"], r["users"], r["results"][0]["users"], r["results"][0]["mean"])
1970-01-01T01:00:00.000Z {'control': 0, 'b': 1} 0 None
1970-01-01T02:00:00.000Z {'control': 0, 'b': 1} 1 1.0
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from fractions import Fraction
from typing import Any

import orjson

from pipeline.core.events import format_ts
from pipeline.experiments.outcomes import METRICS, WINDOW_MS, UserOutcome
from pipeline.experiments.stats import Moments, SampleRatioTest, SequentialTest

__all__ = [
    "HOUR_MS",
    "STEPS",
    "PartitionOutcomes",
    "ResultsCombiner",
    "ceil_hour",
    "experiment_meta",
]

#: What one event adds to a user's outcome, in the order :meth:`PartitionOutcomes.count`
#: takes it.
STEPS = ("new_session", "play_starts", "completions", "watch_ms", "clicks", "searches")

HOUR_MS = 3_600_000
#: The metrics every final user contributes to, in this order (the combiner keeps those of
#: each experiment's definition).
ALL_METRICS = tuple(METRICS)

#: Per boundary: ``{experiment: {"seen": {variant: users}, "final": {variant: {metric:
#: [count, sum, sum of squares]}}}}``, sums as exact rationals in text.
Changes = dict[str, dict[str, Any]]


def ceil_hour(ms: int) -> int:
    """The first hour boundary at or after ``ms``."""
    return -(-ms // HOUR_MS) * HOUR_MS


def experiment_meta(experiment: Any) -> dict[str, Any]:
    """What the combiner needs of a definition: variants (name, weight, control), metrics."""
    return {
        "variants": [[v.name, v.weight, v.control] for v in experiment.variants],
        "metrics": [m for m in experiment.metrics if m in METRICS] or list(METRICS),
    }


class PartitionOutcomes:
    """The experiment outcomes of one partition's users (see the module docstring).

    The KPI windows (:class:`~pipeline.kpis.windows.PartitionKpis`) call :meth:`count` with
    what each event of a user in an experiment adds (they computed it for the windows) and
    :meth:`convert` when a play converts a click or search made in experiments.
    ``outcomes`` is the user's own map, experiment id → :class:`UserOutcome`, which the
    worker stores with the user; ``lookup`` gives it back by user id when a boundary needs
    the values of a user whose window ended.
    """

    def __init__(
        self,
        *,
        window_ms: int = WINDOW_MS,
        lookup: Callable[[str], Mapping[str, UserOutcome]] | None = None,
    ) -> None:
        self.window_ms = window_ms
        #: Every boundary at or before this was given (by :meth:`take`, or before a restore).
        self.given_ms = -1
        self._lookup = lookup
        self._own: dict[str, Mapping[str, UserOutcome]] = {}
        self._seen: dict[int, dict[tuple[str, str], int]] = defaultdict(dict)
        self._final: dict[int, list[tuple[str, str]]] = defaultdict(list)

    def count(
        self,
        outcomes: MutableMapping[str, UserOutcome],
        user_id: str,
        ts: int,
        scopes: tuple[tuple[str, ...], ...],
        steps: Sequence[int],
    ) -> None:
        """Count one event of ``user_id`` at ``ts`` in each experiment of ``scopes``.

        ``steps``: what the event adds, in the order of :data:`STEPS` (a new session,
        play starts, completions, watch milliseconds, clicks, searches).
        """
        window = self.window_ms
        new_session, started, completed, watch_ms, clicks, searches = steps
        for scope in scopes:
            if scope[0] != "experiment":
                continue
            outcome = outcomes.get(scope[1])
            if outcome is None:
                outcome = outcomes[scope[1]] = UserOutcome(ts, scope[2])
                if self._lookup is None:
                    self._own[user_id] = outcomes
                self._note(user_id, scope[1], outcome)
            elif ts >= outcome.first_ms + window:
                continue  # after the user's window: not counted
            elif new_session:
                outcome.sessions += 1
            if started:
                outcome.plays += started
            if completed:
                outcome.completed += completed
            if watch_ms:
                outcome.watch_ms += watch_ms
            if clicks:
                outcome.clicks += clicks
            elif searches:
                outcome.searches += searches

    def convert(
        self,
        outcomes: Mapping[str, UserOutcome],
        ts: int,
        scopes: tuple[tuple[str, ...], ...],
        *,
        click: bool,
    ) -> None:
        """A play at ``ts`` converts a click (else a search) made in ``scopes``."""
        for scope in scopes:
            if scope[0] != "experiment":
                continue
            outcome = outcomes.get(scope[1])
            if outcome is not None and ts < outcome.first_ms + self.window_ms:
                if click:
                    outcome.clicks_played += 1
                else:
                    outcome.searches_played += 1

    def users(self) -> list[tuple[str, Mapping[str, UserOutcome]]]:
        """Offline (no ``lookup``): each user with outcomes, and their outcomes."""
        return list(self._own.items())

    def adopt(self, user_id: str, outcomes: Mapping[str, UserOutcome]) -> None:
        """Count a restored user's outcomes at the boundaries not given yet."""
        if self._lookup is None:
            self._own[user_id] = outcomes
        for experiment, outcome in outcomes.items():
            self._note(user_id, experiment, outcome)

    def restore(self, given_ms: int) -> None:
        """Before adopting users: every boundary at or before ``given_ms`` was given."""
        self.given_ms = max(self.given_ms, given_ms)

    def _note(self, user_id: str, experiment: str, outcome: UserOutcome) -> None:
        seen_at = outcome.first_ms - outcome.first_ms % HOUR_MS + HOUR_MS  # first < seen_at
        if seen_at > self.given_ms:
            counts = self._seen[seen_at]
            key = (experiment, outcome.variant)
            counts[key] = counts.get(key, 0) + 1
        final_at = ceil_hour(outcome.first_ms + self.window_ms)  # first + window <= final_at
        if final_at > self.given_ms:
            self._final[final_at].append((user_id, experiment))

    def take(self, released_ms: int) -> list[tuple[int, Changes]]:
        """The changes at each boundary up to ``released_ms`` not given yet, in time order.

        ``released_ms``: every event up to it is applied.
        """
        if released_ms <= self.given_ms:
            return []
        due = sorted({t for t in self._seen if t <= released_ms}
                     | {t for t in self._final if t <= released_ms})  # fmt: skip
        self.given_ms = released_ms
        taken = []
        for boundary in due:
            changes: Changes = {}
            for (experiment, variant), users in sorted(self._seen.pop(boundary, {}).items()):
                entry = changes.setdefault(experiment, {"seen": {}, "final": {}})
                entry["seen"][variant] = users
            finals: dict[tuple[str, str], list[list[Any]]] = {}
            for user_id, experiment in self._final.pop(boundary, []):
                outcome = self._outcomes(user_id)[experiment]
                sums = finals.get((experiment, outcome.variant))
                if sums is None:
                    sums = finals[experiment, outcome.variant] = [
                        [0, Fraction(0), Fraction(0)] for _ in ALL_METRICS
                    ]
                for total, value in zip(sums, outcome.values(ALL_METRICS), strict=True):
                    if value is not None:
                        total[0] += 1
                        total[1] += Fraction(value)
                        total[2] += Fraction(value * value)
            for (experiment, variant), sums in sorted(finals.items()):
                entry = changes.setdefault(experiment, {"seen": {}, "final": {}})
                entry["final"][variant] = {
                    name: [n, str(total), str(squares)]
                    for name, (n, total, squares) in zip(ALL_METRICS, sums, strict=True)
                }
            taken.append((boundary, changes))
        return taken

    def _outcomes(self, user_id: str) -> Mapping[str, UserOutcome]:
        if self._lookup is not None:
            return self._lookup(user_id)
        return self._own[user_id]


class _Experiment:
    """The combiner's totals and tests of one experiment."""

    def __init__(self, meta: Mapping[str, Any], *, alpha: float, horizon: int) -> None:
        self.meta = dict(meta)
        self.alpha = alpha
        self.variants = [str(v[0]) for v in meta["variants"]]
        self.control = next(str(v[0]) for v in meta["variants"] if v[2])
        self.metrics = [str(m) for m in meta["metrics"]]
        self.seen = dict.fromkeys(self.variants, 0)
        self.sums: dict[tuple[str, str], list[Any]] = {}
        self.srm = SampleRatioTest([float(v[1]) for v in meta["variants"]])
        self.tests = {
            (metric, name): SequentialTest(alpha=alpha, horizon=horizon)
            for metric in self.metrics
            for name in self.variants
            if name != self.control
        }

    def add(self, changes: Mapping[str, Any]) -> None:
        for variant, users in changes["seen"].items():
            self.seen[variant] = self.seen.get(variant, 0) + int(users)
        for variant, metrics in changes["final"].items():
            for metric, (n, total, squares) in metrics.items():
                sums = self.sums.setdefault((variant, metric), [0, Fraction(0), Fraction(0)])
                sums[0] += int(n)
                sums[1] += Fraction(total)
                sums[2] += Fraction(squares)

    def moments(self, variant: str, metric: str) -> Moments:
        n, total, squares = self.sums.get((variant, metric), (0, 0, 0))
        return Moments(n, float(total), float(squares))

    def look(self, experiment_id: str, boundary: int) -> dict[str, Any]:
        self.srm.update([self.seen.get(name, 0) for name in self.variants])
        rows = []
        for (metric, name), test in self.tests.items():
            base, arm = self.moments(self.control, metric), self.moments(name, metric)
            test.update(base, arm)
            lower, upper = test.interval
            rows.append(
                {
                    "metric": metric,
                    "variant": name,
                    "control_users": base.count,
                    "users": arm.count,
                    "control_mean": base.mean if base.count else None,
                    "mean": arm.mean if arm.count else None,
                    "p_value": test.p_value,
                    "interval": [_finite(lower), _finite(upper)],
                    "significant": lower > 0 or upper < 0,
                }
            )
        return {
            "schema_version": 1,
            "key": experiment_id,
            "experiment": experiment_id,
            "as_of": format_ts(boundary),
            "as_of_ms": boundary,
            "control": self.control,
            "alpha": self.alpha,
            "users": dict(self.seen),
            "srm_p_value": self.srm.p_value,
            "results": rows,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "seen": self.seen,
            "sums": [[v, m, n, str(t), str(s)] for (v, m), (n, t, s) in self.sums.items()],
            "srm": [self.srm.log_bayes_factor, self.srm.p_value],
            "tests": [
                [metric, name, test.lambda_, test.p_value, [_finite(b) for b in test.interval]]
                for (metric, name), test in self.tests.items()
            ],
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, alpha: float, horizon: int) -> _Experiment:
        experiment = cls(obj["meta"], alpha=alpha, horizon=horizon)
        experiment.seen.update({str(k): int(v) for k, v in obj["seen"].items()})
        for variant, metric, n, total, squares in obj["sums"]:
            experiment.sums[variant, metric] = [int(n), Fraction(total), Fraction(squares)]
        experiment.srm.log_bayes_factor, experiment.srm.p_value = obj["srm"]
        for metric, name, lambda_, p_value, (lower, upper) in obj["tests"]:
            test = experiment.tests.get((metric, name))
            if test is not None:
                test.lambda_, test.p_value = float(lambda_), float(p_value)
                test.interval = (
                    -math.inf if lower is None else float(lower),
                    math.inf if upper is None else float(upper),
                )
        return experiment


def _finite(bound: float) -> float | None:
    return bound if math.isfinite(bound) else None


class ResultsCombiner:
    """Adds up the partitions' outcome changes and looks once every partition has passed.

    :meth:`feed` takes one partition's record: how far it has applied its events and its
    changes per boundary (:meth:`PartitionOutcomes.take`), with the definitions' ``meta``
    (:func:`experiment_meta`). The state (:meth:`to_bytes`) is what the agent stores.
    ``alpha`` is the level of the confidence sequences, ``horizon`` the users per arm where
    the tests are most powerful (:class:`~pipeline.experiments.stats.SequentialTest`).
    """

    def __init__(self, partitions: int, *, alpha: float = 0.05, horizon: int = 10_000) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, not {partitions}")
        self.partitions = partitions
        self.alpha = alpha
        self.horizon = horizon
        self.released: dict[int, int] = {}
        #: Every boundary at or before this was looked at.
        self.looked_ms = -1
        self._pending: dict[int, dict[int, Changes]] = {}  # boundary → partition → changes
        self._experiments: dict[str, _Experiment] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        # changes of experiments whose definition no record has brought yet
        self._waiting: dict[str, list[dict[str, Any]]] = {}

    def feed(
        self,
        partition: int,
        released_ms: int,
        changes: list[tuple[int, Changes]] | list[list[Any]],
        meta: Mapping[str, Mapping[str, Any]],
    ) -> list[dict[str, Any]]:
        """Take one partition's record; the result records of the boundaries now complete."""
        if partition < 0:
            raise ValueError(f"partition {partition}")
        if partition >= self.partitions:
            self.partitions = partition + 1
        for experiment_id, definition in meta.items():
            self._meta[experiment_id] = dict(definition)
        for boundary, at in changes:
            if int(boundary) > self.looked_ms:
                self._pending.setdefault(int(boundary), {})[partition] = at
        self.released[partition] = max(released_ms, self.released.get(partition, released_ms))
        if len(self.released) < self.partitions:
            return []
        final = min(self.released.values())
        records = []
        for boundary in sorted(b for b in self._pending if b <= final):
            touched: set[str] = set()
            for _, at in sorted(self._pending.pop(boundary).items()):
                for experiment_id, change in at.items():
                    experiment = self._experiment(experiment_id)
                    if experiment is None:  # no definition seen yet: added once one comes
                        self._waiting.setdefault(experiment_id, []).append(change)
                        continue
                    experiment.add(change)
                    touched.add(experiment_id)
            records += [self._experiments[e].look(e, boundary) for e in sorted(touched)]
        self.looked_ms = max(self.looked_ms, final)
        return records

    def _experiment(self, experiment_id: str) -> _Experiment | None:
        experiment = self._experiments.get(experiment_id)
        if experiment is None:
            meta = self._meta.get(experiment_id)
            if meta is None:
                return None  # no definition seen: nothing to judge against
            experiment = self._experiments[experiment_id] = _Experiment(
                meta, alpha=self.alpha, horizon=self.horizon
            )
            for change in self._waiting.pop(experiment_id, []):
                experiment.add(change)
        return experiment

    # --- stored form ------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The combiner's state (format 1, read by later releases)."""
        return orjson.dumps(
            {
                "format": 1,
                "partitions": self.partitions,
                "alpha": self.alpha,
                "horizon": self.horizon,
                "released": [[p, ms] for p, ms in sorted(self.released.items())],
                "looked_ms": self.looked_ms,
                "pending": [
                    [boundary, [[p, at] for p, at in parts.items()]]
                    for boundary, parts in self._pending.items()
                ],
                "meta": self._meta,
                "waiting": self._waiting,
                "experiments": {k: e.to_json() for k, e in self._experiments.items()},
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, partitions: int) -> ResultsCombiner:
        """A stored state, for ``partitions`` partitions now."""
        obj = orjson.loads(data)
        if obj.get("format") != 1:
            raise ValueError(f"experiment results state of format {obj.get('format')!r}")
        combiner = cls(max(partitions, 1), alpha=obj["alpha"], horizon=obj["horizon"])
        combiner.released = {int(p): int(ms) for p, ms in obj["released"] if int(p) < partitions}
        combiner.looked_ms = int(obj["looked_ms"])
        for boundary, parts in obj["pending"]:
            combiner._pending[int(boundary)] = {int(p): at for p, at in parts}
        combiner._meta = dict(obj["meta"])
        combiner._waiting = dict(obj.get("waiting", {}))  # absent before it was kept
        combiner._experiments = {
            k: _Experiment.from_json(e, alpha=combiner.alpha, horizon=combiner.horizon)
            for k, e in obj["experiments"].items()
        }
        return combiner
