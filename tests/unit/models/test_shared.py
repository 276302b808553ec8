"""Knowledge shared across partitions: counts and moments merge exactly, steps add up.

Each property splits one stream of learning among partitions by user, as Kafka's
partitioner does, merges them with :class:`SharedLearning` at epochs of event time, and
compares every partition with one model that learnt the whole stream.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import Settings
from pipeline.core.features import CHURN_FEATURES, CHURN_FEATURES_V1
from pipeline.models.churn import LogisticChurn
from pipeline.models.partition import PartitionModels
from pipeline.models.reco.recommender import Recommender, Trending
from pipeline.models.shared import SharedLearning

HOUR_MS = 3_600_000
ITEMS = [f"m{i}" for i in range(12)]
GENRES = ["drama", "comedy", "crime"]


def _models(partitions: int) -> dict[int, PartitionModels]:
    catalog = {
        item_id: {"item_id": item_id, "genres": [GENRES[i % 3]] if i % 4 else []}
        for i, item_id in enumerate(ITEMS)
    }
    return {
        p: PartitionModels.create(Settings(), partition=p, catalog=catalog)
        for p in range(partitions)
    }


def _decayed(trending: Trending, item_id: str, at_ms: int) -> float:
    """An item's trending value at event time ``at_ms`` (0 when unknown)."""
    found = trending.items.find(item_id)
    if found is None or trending.t0 is None or found >= len(trending.values()):
        return 0.0
    return float(trending.values()[found]) * 2.0 ** ((trending.t0 - at_ms) / trending.half_life_ms)


def _following(reco: Recommender, item_id: str) -> dict[str, float]:
    idx = reco.items.find(item_id)
    ids = reco.items.ids
    return {ids[i]: n for i, n in reco.transitions.following(idx).items()}


choices = st.lists(
    st.tuples(
        st.integers(0, 9),  # user
        st.integers(0, len(ITEMS) - 1),  # chosen item
        st.one_of(st.none(), st.integers(0, len(ITEMS) - 1)),  # previous item
        st.integers(0, 5 * HOUR_MS),  # when, in the first five hours (sorted below)
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=40, deadline=None)
@given(stream=choices, partitions=st.integers(2, 4))
def test_counts_merge_exactly(
    stream: list[tuple[int, int, int | None, int]], partitions: int
) -> None:
    """Trending, "chosen next", genre and user counts of every partition equal the whole's."""
    models = _models(partitions)
    whole = _models(1)[0].recommender
    shared = SharedLearning(every_ms=HOUR_MS)
    shared.at(models, 0)
    for user, item, previous, ts_ms in sorted(stream, key=lambda c: c[3]):
        shared.at(models, ts_ms)
        choose(user, item, previous, ts_ms, models[user % partitions].recommender, whole)
    end = 6 * HOUR_MS
    assert shared.at(models, end)
    assert_counts_as_whole(models.values(), whole, end)


def choose(
    user: int, item: int, previous: int | None, ts_ms: int, *recommenders: Recommender
) -> None:
    """User ``user`` chooses ``ITEMS[item]`` after ``ITEMS[previous]``, in each recommender."""
    for reco in recommenders:
        reco.choose(
            f"u{user}",
            reco.items.index(ITEMS[item]),
            previous=None if previous is None else reco.items.index(ITEMS[previous]),
            genres=None,
            ts_ms=ts_ms,
        )


def assert_counts_as_whole(
    partitions: Iterable[PartitionModels], whole: Recommender, end: int
) -> None:
    """Trending, "chosen next", genre and user counts of each partition equal ``whole``'s."""
    for partition in partitions:
        reco = partition.recommender
        for item_id in ITEMS:
            assert math.isclose(
                _decayed(reco.trending, item_id, end),
                _decayed(whole.trending, item_id, end),
                rel_tol=1e-9,
                abs_tol=1e-12,
            )
            assert _following(reco, item_id) == _following(whole, item_id)
        assert dict(reco.genre_counts) == pytest.approx(dict(whole.genre_counts))
        assert reco.genre_total == whole.genre_total
        assert reco.users_learned == len(whole.taste.users)
        assert sorted(reco.trending.top(5)) == sorted(
            reco.items.index(whole.items.ids[i]) for i in whole.trending.top(5)
        ) or _ties(whole.trending, 5)


def _ties(trending: Trending, k: int) -> bool:
    """Whether the k-th and (k+1)-th largest values tie (then the top k may differ)."""
    values = np.sort(trending.values())[::-1]
    return len(values) > k and math.isclose(values[k - 1], values[k], rel_tol=1e-9)


rows = st.lists(
    st.tuples(
        st.integers(0, 9),
        st.lists(st.floats(-5, 5, allow_nan=False), min_size=4, max_size=4),
        st.booleans(),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(stream=rows, partitions=st.integers(2, 4), mode=st.sampled_from(["sum", "mean"]))
def test_ranker_moments_merge_exactly_and_steps_add_up(
    stream: list[tuple[int, list[float], bool]], partitions: int, mode: str
) -> None:
    """The merged scaler equals one that saw every row; the weights move by the steps."""
    models = _models(partitions)
    shared = SharedLearning(every_ms=HOUR_MS, mode=mode)  # type: ignore[arg-type]
    shared.at(models, 0)
    whole = _models(1)[0].recommender.ranker
    for user, signals, chosen in stream:
        row = np.array([signals])
        models[user % partitions].recommender.ranker.learn(row, np.array([chosen]))
        whole.learn(row, np.array([chosen]))
    steps = [m.recommender.ranker.weights.copy() for m in models.values()]
    learners = sum(1 for m in models.values() if m.recommender.ranker.count)
    shared.at(models, HOUR_MS)
    expected = sum(steps) if mode == "sum" else sum(steps) / learners
    for partition in models.values():
        ranker = partition.recommender.ranker
        assert ranker.count == whole.count
        np.testing.assert_allclose(ranker.means, whole.means, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(ranker.vars, whole.vars, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(ranker.weights, expected, rtol=1e-12, atol=1e-12)


def test_churn_scalers_merge_exactly_and_every_partition_gets_the_weights() -> None:
    """The churn model's scaler of each partition equals one fed every labelled sample."""
    rng = np.random.default_rng(3)
    models = _models(3)
    shared = SharedLearning(every_ms=HOUR_MS)
    shared.at(models, 0)
    whole = _models(1)[0].churn["logreg"]
    for user in range(90):
        x = dict(zip(CHURN_FEATURES, rng.exponential(2.0, len(CHURN_FEATURES)), strict=True))
        churned = bool(rng.random() < 0.2)
        models[user % 3].churn["logreg"].learn_one(x, churned)
        whole.learn_one(x, churned)
    steps = [dict(m.churn["logreg"].classifier._weights) for m in models.values()]
    shared.at(models, HOUR_MS)
    for partition in models.values():
        scaler = partition.churn["logreg"].scaler
        for name in CHURN_FEATURES:
            assert scaler.counts[name] == whole.scaler.counts[name] == 90
            assert math.isclose(scaler.means[name], whole.scaler.means[name], rel_tol=1e-9)
            assert math.isclose(scaler.vars[name], whole.scaler.vars[name], rel_tol=1e-7)
            weight = partition.churn["logreg"].classifier._weights.get(name, 0.0)
            assert math.isclose(weight, sum(s.get(name, 0.0) for s in steps), abs_tol=1e-12)


def test_churn_models_of_two_releases_share_only_with_their_own() -> None:
    """An upgrade: one partition restored ``churn-logreg-6``, two run ``-7``.

    Each learns from partitions that read its features, and none takes columns it does
    not read.
    """
    rng = np.random.default_rng(5)
    models = _models(3)
    old = models[0].churn["logreg"]
    assert isinstance(old, LogisticChurn)
    old.features = CHURN_FEATURES_V1  # as a restored -6 reads
    assert old.model_version == "churn-logreg-6"
    shared = SharedLearning(every_ms=HOUR_MS)
    shared.at(models, 0)
    for user in range(90):
        x = dict(zip(CHURN_FEATURES, rng.exponential(2.0, len(CHURN_FEATURES)), strict=True))
        models[user % 3].churn["logreg"].learn_one(x, bool(rng.random() < 0.2))
    shared.at(models, HOUR_MS)
    assert set(old.scaler.counts) == set(CHURN_FEATURES_V1)
    assert {old.scaler.counts[name] for name in CHURN_FEATURES_V1} == {30}
    for partition in (1, 2):
        scaler = models[partition].churn["logreg"].scaler
        assert {scaler.counts[name] for name in CHURN_FEATURES} == {60}


def test_nothing_is_merged_within_an_epoch_and_nothing_twice() -> None:
    models = _models(2)
    shared = SharedLearning(every_ms=HOUR_MS)
    shared.at(models, 0)
    reco = models[0].recommender
    reco.choose("u0", reco.items.index("m1"), previous=None, genres=None, ts_ms=10)
    assert not shared.at(models, HOUR_MS - 1)
    assert models[1].recommender.trending.total == 0
    assert shared.at(models, HOUR_MS)
    assert shared.at(models, 3 * HOUR_MS)  # a second merge adds nothing new
    assert math.isclose(
        _decayed(models[1].recommender.trending, "m1", 3 * HOUR_MS),
        _decayed(reco.trending, "m1", 3 * HOUR_MS),
        rel_tol=1e-12,
    )


def test_each_partitions_promotion_test_pools_the_others_evidence_at_the_merge() -> None:
    """Each partition's test gets the others' paired differences once, then looks."""
    models = _models(3)
    shared = SharedLearning(every_ms=HOUR_MS)
    shared.at(models, 0)
    rng = np.random.default_rng(4)
    placed = {}
    for p, partition_models in models.items():
        champion, challenger = partition_models.churn
        for i in range(40 * (p + 1)):  # a weak champion: each partition alone too few
            churned = i % 4 == 3
            scores = {champion: float(rng.random()), challenger: float(rng.random() + churned)}
            assert partition_models.learn_label(scores, churned) is None
        assert partition_models.promotion is not None
        placed[p] = partition_models.promotion.positives
    assert max(placed.values()) < 50  # min_positives: no partition could promote alone
    assert shared.at(models, HOUR_MS)
    promoted = [partition for partition, _ in shared.promoted]
    assert promoted == [0, 1, 2]  # 60 positives pooled, every partition's test promotes
    for partition_models in models.values():
        promotion = partition_models.promotion
        assert promotion is not None and promotion.fresh == {}
        [(_, former, new, positives)] = promotion.history
        assert positives == sum(placed.values()) and list(partition_models.churn)[0] == new
    assert shared.at(models, 2 * HOUR_MS) and shared.promoted == []  # nothing pooled twice
