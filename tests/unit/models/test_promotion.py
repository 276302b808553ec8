"""Automatic promotion of the churn challenger: it replaces a worse champion, not a better one.

Scores are drawn as a binormal model (each model's score a normal shifted for churners,
the two models' noises correlated 0.5, as two models of one user's features are) so each
model's true AUC is known; 5 % of the labels are positive, as in churn traffic.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
from scipy.stats import norm

from pipeline.experiments.stats import Moments
from pipeline.models.promotion import ChurnPromotion, pooled

RUNS = 200
LABELS = 20_000
PARTITIONS = 16
EPOCH_LABELS = 250  # labels of all partitions between two merges (~an hour of churn labels)


def scores_of(seed: int, champion_auc: float, challenger_auc: float) -> tuple[np.ndarray, ...]:
    """Labels, both models' scores and a partition (of 16) for each of ``LABELS``."""
    rng = np.random.default_rng(seed)
    churned = rng.random(LABELS) < 0.05
    noise = rng.normal(size=(LABELS, 2))
    champion = noise[:, 0] + churned * math.sqrt(2) * norm.ppf(champion_auc)
    correlated = 0.5 * noise[:, 0] + math.sqrt(0.75) * noise[:, 1]
    challenger = correlated + churned * math.sqrt(2) * norm.ppf(challenger_auc)
    return churned, champion, challenger, rng.integers(PARTITIONS, size=LABELS)


def promoted_at(seed: int, champion_auc: float, challenger_auc: float) -> int | None:
    """The label at which the challenger was promoted in one run, if it was."""
    churned, champion, challenger, _ = scores_of(seed, champion_auc, challenger_auc)
    promotion = ChurnPromotion()
    for n in range(LABELS):
        scores = {"champion": float(champion[n]), "challenger": float(challenger[n])}
        if promotion.observe(
            scores, bool(churned[n]), champion="champion", challenger="challenger"
        ):
            return n + 1
    return None


def promotions(champion_auc: float, challenger_auc: float) -> list[int]:
    runs = [promoted_at(seed, champion_auc, challenger_auc) for seed in range(RUNS)]
    return [n for n in runs if n is not None]


def test_a_better_champion_is_not_replaced_by_noise() -> None:
    replaced = promotions(0.80, 0.78)
    print(f"\nchampion AUC 0.80, challenger 0.78: replaced in {len(replaced)} of {RUNS} runs")
    assert len(replaced) <= 0.05 * RUNS  # 1 of 200 measured


def test_an_equal_challenger_is_promoted_at_most_alpha_of_the_time() -> None:
    replaced = promotions(0.80, 0.80)
    print(f"\nequal AUCs 0.80: replaced in {len(replaced)} of {RUNS} runs")
    assert len(replaced) <= 0.05 * RUNS  # 3 of 200 measured: the test's own level


def test_a_weakened_champion_is_replaced_within_a_few_thousand_labels() -> None:
    replaced = promotions(0.65, 0.80)
    median = int(np.median(replaced))
    print(f"\nchampion AUC 0.65, challenger 0.80: replaced in {len(replaced)} of {RUNS} runs, "
          f"median after {median:,} labels (~{median // 20} positives)")  # fmt: skip
    assert len(replaced) == RUNS
    assert median < 3_000  # 1,598 measured


def test_after_a_promotion_the_test_starts_again_the_other_way() -> None:
    rng = np.random.default_rng(3)
    promotion = ChurnPromotion(min_positives=20)
    roles = ["weak", "good"]
    for _ in range(20_000):
        churned = bool(rng.random() < 0.1)
        scores = {"weak": rng.normal(0.3 * churned), "good": rng.normal(1.5 * churned)}
        if promotion.observe(scores, churned, champion=roles[0], challenger=roles[1]):
            roles.reverse()
    assert roles == ["good", "weak"]  # promoted once, never back
    [(_, former, promoted, positives)] = promotion.history
    assert (former, promoted) == ("weak", "good") and positives >= 20
    assert promotion.positives > 1_000 and promotion.interval[1] < 0  # now proven worse


def test_predictions_without_both_scores_are_not_looked_at() -> None:
    promotion = ChurnPromotion()
    assert not promotion.observe({"a": 0.4}, True, champion="a", challenger="b")
    assert promotion.labels == 0


def test_a_stored_test_goes_on_as_the_running_one() -> None:
    rng = np.random.default_rng(5)
    labels = [
        (bool(churned), {"a": rng.normal(0.4 * churned), "b": rng.normal(0.9 * churned)})
        for churned in rng.random(30_000) < 0.05
    ]
    running = ChurnPromotion()
    for churned, scores in labels[:5_000]:
        running.observe(scores, churned, champion="a", challenger="b")
    stored = pickle.loads(pickle.dumps(running))
    for churned, scores in labels[5_000:]:
        assert stored.observe(scores, churned, champion="a", challenger="b") == running.observe(
            scores, churned, champion="a", challenger="b"
        )
    assert stored.history == running.history != []
    assert (stored.interval, stored.p_value) == (running.interval, running.p_value)


def partitioned_promotions(
    seed: int, champion_auc: float, challenger_auc: float, *, pool: bool
) -> list[int | None]:
    """The label (of all partitions') at which each of 16 partitions promoted, if it did.

    Each partition tests on its own labels; with ``pool``, at every merge each partition
    adds the others' differences since the last (as shared learning does) and looks.
    """
    churned, champion, challenger, partition_of = scores_of(seed, champion_auc, challenger_auc)
    tests = [ChurnPromotion() for _ in range(PARTITIONS)]
    promoted: list[int | None] = [None] * PARTITIONS
    pair = ("champion", "challenger")
    for n in range(LABELS):
        p = int(partition_of[n])
        if promoted[p] is None and tests[p].observe(
            {"champion": float(champion[n]), "challenger": float(challenger[n])},
            bool(churned[n]),
            champion="champion",
            challenger="challenger",
        ):
            promoted[p] = n + 1
        if pool and (n + 1) % EPOCH_LABELS == 0:
            fresh = [test.fresh.get(pair) for test in tests]
            for p, test in enumerate(tests):
                others = [m for q, m in enumerate(fresh) if q != p and m is not None]
                if (
                    promoted[p] is None
                    and others
                    and test.pool(
                        {pair: pooled(others)}, champion="champion", challenger="challenger"
                    )
                ):
                    promoted[p] = n + 1
            for test in tests:
                test.clear_fresh()
    return promoted


def test_at_16_partitions_pooled_evidence_replaces_a_weakened_champion_everywhere() -> None:
    runs = 50
    alone = [partitioned_promotions(s, 0.65, 0.80, pool=False) for s in range(runs)]
    shared = [partitioned_promotions(s, 0.65, 0.80, pool=True) for s in range(runs)]
    replaced_alone = sum(n is not None for run in alone for n in run)
    replaced = [n for run in shared for n in run if n is not None]
    median = int(np.median(replaced))
    print(f"\n16 partitions, champion AUC 0.65, challenger 0.80, {runs} runs: alone "
          f"{replaced_alone} of {runs * PARTITIONS} partitions replaced, pooled "
          f"{len(replaced)}, median after {median:,} labels of all partitions")  # fmt: skip
    assert replaced_alone < 0.5 * runs * PARTITIONS  # ~62 positives each: too few
    assert len(replaced) == runs * PARTITIONS
    assert median < 4_000  # as one partition's test of all the labels (1,599)


def test_at_16_partitions_pooled_evidence_does_not_replace_a_better_champion() -> None:
    shared = [partitioned_promotions(s, 0.80, 0.78, pool=True) for s in range(RUNS)]
    replaced = sum(n is not None for run in shared for n in run)
    anywhere = sum(any(n is not None for n in run) for run in shared)
    print(f"\n16 partitions, champion AUC 0.80, challenger 0.78, pooled: {replaced} of "
          f"{RUNS * PARTITIONS} partitions replaced, in {anywhere} of {RUNS} runs")  # fmt: skip
    assert replaced <= 0.05 * RUNS * PARTITIONS
    assert anywhere <= 0.05 * RUNS


def test_pooling_adds_only_the_evidence_of_the_test_it_runs() -> None:
    promotion = ChurnPromotion(min_positives=2)
    strong = Moments(count=1_000, total=300.0, total_sq=190.0)  # mean 0.3, sd ~0.32
    assert not promotion.pool({("b", "a"): strong}, champion="a", challenger="b")
    assert promotion.positives == 0
    assert promotion.pool({("a", "b"): strong}, champion="a", challenger="b")
    assert promotion.history == [(0, "a", "b", 1_000)]
    assert promotion.fresh == {}  # what others gave is never given on


def test_fresh_holds_the_own_differences_until_a_delta_takes_them() -> None:
    rng = np.random.default_rng(11)
    promotion = ChurnPromotion(min_positives=10**9)  # never promotes: never starts again
    placed = Moments(0, 0.0, 0.0)
    for churned in rng.random(2_000) < 0.2:
        promotion.observe(
            {"a": rng.normal(0.5 * churned), "b": rng.normal(churned)},
            bool(churned),
            champion="a",
            challenger="b",
        )
        placed = promotion._differences
    assert promotion.fresh[("a", "b")] == placed  # one partition: its own are all there are
    promotion.clear_fresh()
    assert promotion.fresh == {} and promotion.positives == placed.count


def test_a_test_stored_before_pooling_is_read_with_nothing_to_give() -> None:
    running = ChurnPromotion()
    running.observe({"a": 0.1, "b": 0.2}, False, champion="a", challenger="b")
    running.observe({"a": 0.3, "b": 0.4}, True, champion="a", challenger="b")
    state = running.__getstate__()
    state["format"] = 1
    del state["fresh"]
    restored = ChurnPromotion.__new__(ChurnPromotion)
    restored.__setstate__(state)
    assert restored.fresh == {} and restored.positives == 1 and restored.labels == 2
    assert pickle.loads(pickle.dumps(running)).fresh == running.fresh != {}
