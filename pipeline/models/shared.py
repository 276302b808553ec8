"""Knowledge shared across partitions: what each partition learns, merged into every other.

A partition's models learn only from that partition's users (:mod:`pipeline.models.partition`),
so at 16 or 64 partitions each global quantity (how popular an item is, what people choose
after it, how the churn features map to risk) is learnt from a 16th or a 64th of the
traffic. :class:`SharedLearning` merges what every partition learnt into all of them at
fixed points of event time (every ``every_ms``, an *epoch*), by the kind of statistic:

- **counts are added exactly**: the trending values of each item (time-decayed, brought to
  a common reference time first), the genre counts of the choices, and the choices
  themselves (previous item, chosen item), replayed into the "chosen next" counts and the
  ring of recent choices the taste model draws its unchosen items from;
- **running moments are merged exactly** (Chan et al.'s formula): the count, mean and
  variance of each scaled feature of the churn models and of the ranker's signals. A
  partition's contribution is recovered from its moments before and after the epoch;
- **SGD parameters exchange deltas**: the weights and intercepts of the churn logistic
  regressions and of the ranker move by the sum of every other partition's change over the
  epoch (``mode="sum"``, as a parameter server applies asynchronous updates), or by its
  mean (``mode="mean"``, model averaging: every partition's step counts ``1/n``);
- **the promotion test's evidence is pooled**: each partition's paired differences of its
  champion and challenger since the last epoch are added to the others' tests of the same
  pair, which then look (:meth:`~pipeline.models.promotion.ChurnPromotion.pool`).

What stays per partition: the users' own factors and states, the taste model's item
factors (each partition's latent space starts from its own random draw: summing factors
learnt in different bases adds noise, not knowledge), the segments' centroids, the
artwork bandit's counts, and which churn model is the champion (each partition's test
decides, on the pooled evidence).

Between two epochs a partition learns from its own events at once and from the others'
at the next epoch, so a partition's models are never more than one epoch behind the
whole traffic. The points are the epochs of the stream's event time: replaying the same
records in the same order reproduces the same scores. This is the in-process run of every
partition (``ottscore evaluate --partitions N --share-every-s S``); between workers the same
deltas and folds travel over Kafka (:mod:`pipeline.models.exchange`, ``OTTSCORE_SHARE_EVERY_S``).

Examples
--------
>>> from pipeline.config import Settings
>>> from pipeline.models.partition import PartitionModels
>>> models = {p: PartitionModels.create(Settings(), partition=p, catalog={}) for p in (0, 1)}
>>> shared = SharedLearning(every_ms=3_600_000)
>>> shared.at(models, 0)            # the first epoch starts
False
>>> for i in range(30):   # partition 0's users watch a1 then a2; partition 1 knows neither
...     reco = models[0].recommender
...     reco.choose(f"u{i}", reco.items.index("a1"), previous=None, genres=None, ts_ms=i)
...     reco.choose(f"u{i}", reco.items.index("a2"), previous=reco.items.index("a1"),
...                 genres=None, ts_ms=i)
>>> shared.at(models, 3_600_000)    # the next one: partition 0's learning reaches 1
True
>>> other = models[1].recommender
>>> [other.items.ids[i] for i in other.trending.top(2)]
['a1', 'a2']
>>> {other.items.ids[i]: n for i, n in other.transitions.following(other.items.index("a1")).items()}
{'a2': 30.0}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from pipeline.core.features import CHURN_FEATURES_V1
from pipeline.experiments.stats import Moments
from pipeline.models.churn import LogisticChurn
from pipeline.models.partition import PartitionModels
from pipeline.models.promotion import pooled
from pipeline.models.reco.ranker import SignalRanker
from pipeline.serde.snapshots import stored_as

__all__ = ["Delta", "SharedLearning", "combine", "fold", "learnt_since", "start_of"]

Mode = Literal["sum", "mean"]


@stored_as("SharedMoments")
@dataclass(slots=True)
class _Moments:
    """Count, mean and sum of squared deviations of a batch of values (per column)."""

    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def between(
        cls, n0: np.ndarray, mean0: np.ndarray, var0: np.ndarray,
        n1: np.ndarray, mean1: np.ndarray, var1: np.ndarray,
    ) -> _Moments:  # fmt: skip
        """The moments of the values added between a running summary's two states.

        Inverts Chan et al.'s merge: the state after is the state before merged with the
        batch. Variances are population variances (River's, the ranker's).
        """
        nb = n1 - n0
        safe = np.where(nb > 0, nb, 1.0)
        mean = np.where(nb > 0, mean0 + (mean1 - mean0) * n1 / safe, 0.0)
        shift = mean - mean0
        m2 = var1 * n1 - var0 * n0 - shift * shift * n0 * nb / np.where(n1 > 0, n1, 1.0)
        return cls(nb, mean, np.where(nb > 0, np.maximum(m2, 0.0), 0.0))

    def merged(self, other: _Moments) -> _Moments:
        """Both batches as one (Chan et al.)."""
        n = self.n + other.n
        safe = np.where(n > 0, n, 1.0)
        shift = other.mean - self.mean
        mean = np.where(n > 0, self.mean + shift * other.n / safe, 0.0)
        m2 = self.m2 + other.m2 + shift * shift * self.n * other.n / safe
        return _Moments(n, mean, m2)

    def into(
        self, n0: np.ndarray, mean0: np.ndarray, var0: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(n, mean, var)`` of a running summary ``(n0, mean0, var0)`` with this batch added."""
        merged = _Moments(n0, mean0, var0 * n0).merged(self)
        n = merged.n
        return n, merged.mean, np.where(n > 0, merged.m2 / np.where(n > 0, n, 1.0), 0.0)


@stored_as("SharedLinear")
@dataclass(slots=True)
class _Linear:
    """A scaled linear model's state: its scaler's moments per column, weights, intercept."""

    n: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    weights: np.ndarray
    intercept: float

    def plus(self, step: _Step, scale: float) -> _Linear:
        """The state with a batch's moments merged in and ``scale`` × its steps added."""
        n, mean, var = step.moments.into(self.n, self.mean, self.var)
        return _Linear(
            n,
            mean,
            var,
            self.weights + scale * step.weights,
            self.intercept + scale * step.intercept,
        )

    def fingerprint(self) -> bytes:
        """The state as bytes: equal states, equal bytes."""
        return b"".join(
            (self.n.tobytes(), self.mean.tobytes(), self.var.tobytes(), self.weights.tobytes(),
             np.float64(self.intercept).tobytes())
        )  # fmt: skip

    def moments_since(self, base: _Linear) -> _Moments:
        return _Moments.between(base.n, base.mean, base.var, self.n, self.mean, self.var)


@stored_as("SharedStep")
@dataclass(slots=True)
class _Step:
    """What a scaled linear model learnt over an epoch: its scaler's batch, its steps."""

    moments: _Moments
    weights: np.ndarray
    intercept: float

    @classmethod
    def between(cls, base: _Linear, now: _Linear) -> _Step:
        return cls(
            now.moments_since(base), now.weights - base.weights, now.intercept - base.intercept
        )

    def merged(self, other: _Step) -> _Step:
        return _Step(
            self.moments.merged(other.moments),
            self.weights + other.weights,
            self.intercept + other.intercept,
        )


@stored_as("SharedDelta")
@dataclass(slots=True)
class Delta:
    """What one partition learnt over an epoch (or what several did, :func:`combine`).

    ``trending`` holds each item's growth as its value at event time ``at_ms`` (values
    halve every ``half_life_ms``); ``partition`` and ``epoch`` name who learnt it and
    over which epoch, where known (-1 otherwise); ``promotion`` the paired differences
    of the churn promotion test, by ``(champion, challenger)``.
    """

    at_ms: int = 0
    half_life_ms: float = 3 * 86_400_000.0
    partition: int = -1
    epoch: int = -1
    trending: dict[str, float] = field(default_factory=dict)  # item id -> value at at_ms
    choices: list[tuple[str | None, str]] = field(default_factory=list)
    genres: dict[str, float] = field(default_factory=dict)
    genre_total: float = 0.0
    users: int = 0  # users the recommender learned from for the first time
    linear: dict[str, _Step] = field(default_factory=dict)  # "ranker", churn names, "inactive"
    promotion: dict[tuple[str, str], Moments] = field(default_factory=dict)

    def is_empty(self) -> bool:
        """Whether it holds nothing learnt."""
        return not (
            self.trending or self.choices or self.genres or self.genre_total or self.users
            or self.linear or self.promotion
        )  # fmt: skip

    def __setstate__(self, state: tuple[None, dict[str, object]]) -> None:
        """Restore a stored delta; one stored before a field has that field empty."""
        _, slots = state
        for name in ("promotion",):
            object.__setattr__(self, name, {})
        for name, value in slots.items():
            object.__setattr__(self, name, value)


@stored_as("SharedBase")
@dataclass(slots=True)
class _Base:
    """A partition's state at the start of the epoch, to tell what it learnt since."""

    trending: np.ndarray
    trending_t0: int | None
    genres: dict[str, float]
    genre_total: float
    users: int
    linear: dict[str, _Linear]


class SharedLearning:
    """Merge every partition's learning into all of them, each ``every_ms`` of event time.

    :meth:`at` is called with the stream's event times, in the order of the records (the
    processor calls it as its watermark moves); at the first time of each new epoch every
    partition's learning over the epoch that ended is taken and each partition gets the
    others' (see the module docstring).
    """

    def __init__(self, *, every_ms: int, mode: Mode = "sum") -> None:
        if every_ms <= 0:
            raise ValueError(f"every_ms must be positive, not {every_ms}")
        self.every_ms = every_ms
        self.mode = mode
        self.epoch: int | None = None
        self.shares = 0  # epochs merged
        self.promoted: list[tuple[int, str]] = []  # (partition, new champion) at the last merge
        self._bases: dict[int, _Base] = {}

    def at(self, models: Mapping[int, PartitionModels], ts_ms: int) -> bool:
        """Event time ``ts_ms`` reached: merge the partitions' learning if an epoch ended.

        Returns whether it merged. The first call starts the first epoch.
        """
        epoch = ts_ms // self.every_ms
        if self.epoch is not None and epoch <= self.epoch:
            return False
        first = self.epoch is None
        self.epoch = epoch
        if first:
            for partition, partition_models in models.items():
                self._bases[partition] = start_of(partition_models)
            return False
        self.share(models, at_ms=epoch * self.every_ms)
        return True

    def share(self, models: Mapping[int, PartitionModels], *, at_ms: int) -> None:
        """Merge now: every partition of ``models`` gets what the others learnt since the last.

        A partition not seen before (no start of epoch known) contributes nothing this
        time and starts its epoch now. The promotions the pooled evidence made are in
        :attr:`promoted`.
        """
        self.promoted = []
        bases = self._bases
        deltas = {p: learnt_since(m, bases[p], at_ms) for p, m in models.items() if p in bases}
        total = combine(deltas.values(), at_ms=at_ms)
        trending, genres, genre_total = total.trending, total.genres, total.genre_total
        learners = Counter(name for delta in deltas.values() for name in delta.linear)
        # the state each start of an epoch moves to (after a merge every partition starts
        # from the same one, so it is computed once)
        targets: dict[tuple[str, bytes], _Linear] = {}
        for partition, partition_models in models.items():
            own = deltas.get(partition)
            if own is None:
                bases[partition] = start_of(partition_models)
                continue
            _fold_counts(partition_models, own, deltas, trending, genres, genre_total, at_ms)
            partition_models.recommender.users_elsewhere += total.users - own.users
            promoted = _pool_promotion(partition_models, deltas, partition)
            if promoted is not None:
                self.promoted.append((partition, promoted))
            linear = dict(bases[partition].linear)
            for name, model in _linear_models(partition_models).items():
                start = linear.get(name)
                if start is None:
                    linear[name] = _state(model)
                    continue
                step = total.linear.get(name)
                if step is None:
                    continue
                key = (name, start.fingerprint())
                target = targets.get(key)
                if target is None:
                    scale = 1.0 if self.mode == "sum" else 1.0 / learners[name]
                    target = targets[key] = start.plus(step, scale)
                _write(model, target)
                linear[name] = target
            bases[partition] = start_of(partition_models, linear)
        self.shares += 1


def _pool_promotion(
    models: PartitionModels, deltas: Mapping[int, Delta], partition: int
) -> str | None:
    """Add the other partitions' evidence of ``partition``'s promotion test to it."""
    if models.promotion is None:
        return None
    champion, challenger = models.churn
    pair = (champion, challenger)
    others = [
        delta.promotion[pair]
        for p, delta in deltas.items()
        if p != partition and pair in delta.promotion
    ]
    if not others:
        return None
    return models.pool_promotion({pair: pooled(others)})


def _linear_models(models: PartitionModels) -> dict[str, LogisticChurn | SignalRanker]:
    """The scaled linear models of a partition, by a name the same in every partition.

    A churn model that reads more than the features of ``churn-logreg-6`` is named with
    their count (``logreg@22``): what it learnt is shared only with models that read the
    same, so partitions (or workers) of a release before and after an upgrade each go on
    with their own.
    """
    found: dict[str, LogisticChurn | SignalRanker] = {"ranker": models.recommender.ranker}
    for name, model in models.churn.items():
        if isinstance(model, LogisticChurn):
            if len(model.features) == len(CHURN_FEATURES_V1):
                found[name] = model
            else:
                found[f"{name}@{len(model.features)}"] = model
    if models.inactive is not None:
        found["inactive"] = models.inactive
    return found


def _state(model: LogisticChurn | SignalRanker) -> _Linear:
    if isinstance(model, SignalRanker):
        k = len(model.means)
        return _Linear(
            np.full(k, float(model.count)), model.means.copy(), model.vars.copy(),
            model.weights.copy(), model.intercept,
        )  # fmt: skip
    keys = model.features
    scaler, classifier = model.scaler, model.classifier
    weights = classifier._weights
    return _Linear(
        np.array([float(scaler.counts.get(k, 0)) for k in keys]),
        np.array([scaler.means.get(k, 0.0) for k in keys]),
        np.array([scaler.vars.get(k, 0.0) for k in keys]),
        np.array([weights.get(k, 0.0) for k in keys]),
        classifier.intercept,
    )


def _write(model: LogisticChurn | SignalRanker, target: _Linear) -> None:
    """Set a linear model's moments, weights and intercept to ``target``'s."""
    if isinstance(model, SignalRanker):
        count = int(target.n[0]) if len(target.n) else 0
        model.restore(count, target.mean, target.var, target.weights, target.intercept)
        return
    keys = model.features
    scaler, classifier = model.scaler, model.classifier
    learnt = [i for i, n in enumerate(target.n.tolist()) if n]
    counts = np.rint(target.n).astype(np.int64).tolist()
    means, vars_ = target.mean.tolist(), target.var.tolist()
    dict.update(scaler.counts, ((keys[i], counts[i]) for i in learnt))  # set, not Counter's add
    scaler.means.update((keys[i], means[i]) for i in learnt)
    scaler.vars.update((keys[i], vars_[i]) for i in learnt)
    weights = classifier._weights
    known = set(weights.keys())
    for key, weight in zip(keys, target.weights.tolist(), strict=True):
        if weight or key in known:
            weights[key] = weight
    classifier.intercept = target.intercept


def start_of(models: PartitionModels, linear: dict[str, _Linear] | None = None) -> _Base:
    """A partition's state now, to tell later what it learnt since (:func:`learnt_since`).

    ``linear``: its linear models' states, when known. Starts the recommender's journal of
    choices afresh, and the promotion test's record of what it gives the others.
    """
    reco = models.recommender
    reco.start_journal().clear()
    if models.promotion is not None:
        models.promotion.clear_fresh()
    trending = reco.trending
    return _Base(
        trending.values().copy(),
        trending.t0,
        dict(reco.genre_counts),
        reco.genre_total,
        len(reco.taste.users),
        linear
        if linear is not None
        else {name: _state(model) for name, model in _linear_models(models).items()},
    )


def learnt_since(models: PartitionModels, base: _Base, at_ms: int) -> Delta:
    """What a partition learnt since ``base`` (:func:`start_of`), trending valued at ``at_ms``."""
    reco = models.recommender
    ids = reco.items.ids
    trending = reco.trending
    delta = Delta(at_ms=at_ms, half_life_ms=trending.half_life_ms)
    if trending.t0 is not None:
        values = trending.values()
        before = np.zeros(len(values))
        before[: len(base.trending)] = base.trending
        if base.trending_t0 is not None and base.trending_t0 != trending.t0:
            before *= 2.0 ** ((base.trending_t0 - trending.t0) / trending.half_life_ms)
        grown = values - before
        scale = 2.0 ** ((trending.t0 - at_ms) / trending.half_life_ms)
        for i in np.flatnonzero(grown > 0).tolist():
            delta.trending[ids[i]] = float(grown[i]) * scale
    for previous, chosen in reco.start_journal():
        delta.choices.append((None if previous is None else ids[previous], ids[chosen]))
    for genre, count in reco.genre_counts.items():
        grew = count - base.genres.get(genre, 0.0)
        if grew:
            delta.genres[genre] = grew
    delta.genre_total = reco.genre_total - base.genre_total
    delta.users = len(reco.taste.users) - base.users
    for name, model in _linear_models(models).items():
        start = base.linear.get(name)
        if start is not None and _count(model) != start.n[0]:  # it learnt
            delta.linear[name] = _Step.between(start, _state(model))
    if models.promotion is not None:
        delta.promotion = dict(models.promotion.fresh)
    return delta


def _count(model: LogisticChurn | SignalRanker) -> float:
    """How many samples a linear model's scaler has seen (of its first feature)."""
    if isinstance(model, SignalRanker):
        return float(model.count)
    return float(model.scaler.counts.get(model.features[0], 0))


def _fold_counts(
    models: PartitionModels,
    own: Delta,
    deltas: Mapping[int, Delta],
    trending: Mapping[str, float],
    genres: Mapping[str, float],
    genre_total: float,
    at_ms: int,
) -> None:
    """Add the other partitions' counts (all of them less ``own``) to a partition's."""
    reco = models.recommender
    items = reco.items
    mine = own.trending
    grown = {
        items.index(item_id): value - mine.get(item_id, 0.0)
        for item_id, value in trending.items()
        if value > mine.get(item_id, 0.0)
    }
    if grown:
        reco.trending.merge(grown, at_ms)
    index = items.index
    reco.replay_choices(
        [
            (None if previous is None else index(previous), index(chosen))
            for delta in deltas.values()
            if delta is not own
            for previous, chosen in delta.choices
        ]
    )
    others = {g: c - own.genres.get(g, 0.0) for g, c in genres.items()}
    total = genre_total - own.genre_total
    if total or any(others.values()):
        reco.merge_genre_counts(others, total)


def combine(deltas: Iterable[Delta], *, at_ms: int) -> Delta:
    """What ``deltas`` learnt together, in their order, trending valued at ``at_ms``.

    Counts add (trending values brought to ``at_ms`` first), choices follow one another,
    moments merge exactly, steps add, and so do the promotion test's differences.

    >>> a = Delta(at_ms=0, trending={"m1": 1.0}, choices=[(None, "m1")], users=1)
    >>> b = Delta(at_ms=3 * 86_400_000, trending={"m1": 1.0, "m2": 4.0}, choices=[("m1", "m2")])
    >>> both = combine([a, b], at_ms=3 * 86_400_000)
    >>> both.trending, both.choices, both.users
    ({'m1': 1.5, 'm2': 4.0}, [(None, 'm1'), ('m1', 'm2')], 1)
    """
    total = Delta(at_ms=at_ms)
    trending, genres, steps = total.trending, total.genres, total.linear
    for delta in deltas:
        total.half_life_ms = delta.half_life_ms
        if delta.at_ms == at_ms:
            for item_id, value in delta.trending.items():
                trending[item_id] = trending.get(item_id, 0.0) + value
        else:
            scale = 2.0 ** ((delta.at_ms - at_ms) / delta.half_life_ms)
            for item_id, value in delta.trending.items():
                trending[item_id] = trending.get(item_id, 0.0) + value * scale
        total.choices.extend(delta.choices)
        for genre, count in delta.genres.items():
            genres[genre] = genres.get(genre, 0.0) + count
        total.genre_total += delta.genre_total
        total.users += delta.users
        for name, step in delta.linear.items():
            merged = steps.get(name)
            steps[name] = step if merged is None else merged.merged(step)
        for pair, moments in delta.promotion.items():
            known = total.promotion.get(pair)
            total.promotion[pair] = moments if known is None else pooled([known, moments])
    return total


def fold(models: PartitionModels, others: Delta) -> None:
    """Add what other partitions learnt (``others``, :func:`combine`) to a partition's models.

    As :meth:`SharedLearning.share` adds them: counts added, choices replayed, moments
    merged, steps added (summed, never averaged), the promotion test's evidence pooled
    (a promotion it makes shows in the test's ``history``).
    """
    reco = models.recommender
    index = reco.items.index
    if others.trending:
        reco.trending.merge(
            {index(item_id): value for item_id, value in others.trending.items()}, others.at_ms
        )
    if others.choices:
        reco.replay_choices(
            [(None if p is None else index(p), index(c)) for p, c in others.choices]
        )
    if others.genre_total or others.genres:
        reco.merge_genre_counts(others.genres, others.genre_total)
    reco.users_elsewhere += others.users
    for name, model in _linear_models(models).items():
        step = others.linear.get(name)
        if step is not None:
            _write(model, _state(model).plus(step, 1.0))
    models.pool_promotion(others.promotion)
