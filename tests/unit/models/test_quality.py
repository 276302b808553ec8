"""Prequential quality: exact AUC, log loss, rolling windows, series and the report."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import metrics

from pipeline.core.events import parse_ts
from pipeline.models.quality import (
    LabelledPrediction,
    Prequential,
    exact_auc,
    expected_calibration_error,
    log_loss,
    reliability,
)


def brute_force_auc(labels: list[int], scores: list[float]) -> float:
    positives = [s for y, s in zip(labels, scores, strict=True) if y]
    negatives = [s for y, s in zip(labels, scores, strict=True) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def imbalanced_low_probabilities(n: int = 5_000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Churn-like data: 5 % positives, every probability under 0.1, positives a bit higher."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.05).astype(int)
    scores = np.clip(rng.normal(0.03 + 0.02 * labels, 0.015), 0.0, 0.099)
    return labels, scores


scored = st.lists(
    st.tuples(
        st.integers(0, 1),
        st.one_of(st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.floats(0, 1, allow_nan=False)),
    ),
    min_size=2,
    max_size=60,
).filter(lambda pairs: len({y for y, _ in pairs}) == 2)


@settings(max_examples=200, deadline=None)
@given(scored)
def test_exact_auc_matches_brute_force_pairwise_count(pairs: list[tuple[int, float]]) -> None:
    labels, scores = [y for y, _ in pairs], [s for _, s in pairs]
    assert exact_auc(labels, scores) == pytest.approx(brute_force_auc(labels, scores), abs=1e-12)


def test_exact_auc_is_nan_with_one_class() -> None:
    assert math.isnan(exact_auc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(exact_auc([], []))


def test_exact_auc_rejects_labels_and_scores_of_different_length() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        exact_auc([0, 1], [0.5])


def test_exact_auc_differs_from_river_default_rocauc_on_imbalanced_low_probabilities() -> None:
    labels, scores = imbalanced_low_probabilities()
    river_auc = metrics.ROCAUC()
    for y, p in zip(labels, scores, strict=True):
        river_auc.update(bool(y), {True: float(p), False: 1.0 - float(p)})
    exact = exact_auc(labels, scores)
    sample = np.random.default_rng(0).choice(labels.size, 800, replace=False)
    assert exact_auc(labels[sample], scores[sample]) == pytest.approx(
        brute_force_auc(labels[sample].tolist(), scores[sample].tolist())
    )
    assert exact > 0.75
    assert abs(river_auc.get() - exact) > 0.2


def test_log_loss_clips_and_matches_river() -> None:
    labels, scores = imbalanced_low_probabilities(500)
    river_loss = metrics.LogLoss()
    for y, p in zip(labels, scores, strict=True):
        river_loss.update(bool(y), float(p))
    assert log_loss(labels, scores) == pytest.approx(river_loss.get(), rel=1e-9)
    assert log_loss([1, 0], [0.0, 1.0]) == pytest.approx(-math.log(1e-15), rel=1e-4)
    assert math.isnan(log_loss([], []))


def test_report_names_champions_unqualified_and_other_variants_by_name() -> None:
    q = Prequential()
    for i, (p, y) in enumerate([(0.9, 1), (0.2, 0), (0.4, 1), (0.1, 0)]):
        q.churn("logreg", p, y, ts_ms=i)
        q.churn("poisson", 1 - p, y, ts_ms=i)
    for i in range(4):
        q.next_item("mf", i < 3, ts_ms=i)
        q.next_item("trending", i == 0, ts_ms=i)
        q.next_item("popular", False, ts_ms=i)
    report = q.report(churn_model="logreg", reco_model="mf")
    assert report == {
        "churn.samples": 4,
        "churn.positives": 2,
        "churn.auc": 1.0,
        "churn.logloss": pytest.approx(log_loss([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.1])),
        "churn.ece": 0.25,  # four bins of one: the mean of |p - y|
        "churn.poisson.auc": 0.0,
        "churn.poisson.ece": 0.75,
        "churn.poisson.logloss": pytest.approx(log_loss([1, 0, 1, 0], [0.1, 0.8, 0.6, 0.9])),
        "reco.hit_rate_at_10": 0.75,
        "reco.trending_hit_rate_at_10": 0.25,
        "reco.next_items": 4,
        "reco.popular.hit_rate_at_10": 0.0,
    }


def test_report_before_any_outcome_is_nan_not_an_error() -> None:
    report = Prequential().report(churn_model="logreg", reco_model="mf")
    assert report["churn.samples"] == report["reco.next_items"] == 0
    assert math.isnan(report["churn.auc"]) and math.isnan(report["reco.hit_rate_at_10"])
    assert "reco.mae" not in report


def test_rating_errors_match_river_mae_and_rmse() -> None:
    rng = np.random.default_rng(1)
    q, mae, rmse = Prequential(window=50), metrics.MAE(), metrics.RMSE()
    for i in range(2_000):
        predicted, actual = float(rng.uniform(1, 5)), float(rng.integers(1, 6))
        q.rating("mf", predicted, actual, ts_ms=i)
        mae.update(actual, predicted)
        rmse.update(actual, predicted)
    report = q.report(churn_model="logreg", reco_model="mf")
    assert report["reco.mae"] == pytest.approx(mae.get())
    assert report["reco.rmse"] == pytest.approx(rmse.get())


def test_rolling_covers_only_the_last_window_outcomes() -> None:
    q = Prequential(window=100)
    for i in range(1_500):  # first 1400: perfectly ranked; last 100: perfectly wrong
        wrong = i >= 1_400
        label = i % 2
        q.churn("logreg", float(label != wrong), label, ts_ms=i)
        q.next_item("mf", not wrong, ts_ms=i)
        q.rating("mf", 3.0 + wrong, 3.0, ts_ms=i)
    rolling = q.rolling()
    assert rolling[("churn_auc", "logreg")] == 0.0
    assert rolling[("churn_logloss", "logreg")] == pytest.approx(-math.log(1e-15), rel=1e-4)
    assert rolling[("hit_rate_at_10", "mf")] == 0.0
    assert rolling[("mae", "mf")] == rolling[("rmse", "mf")] == 1.0
    report = q.report(churn_model="logreg", reco_model="mf")
    assert report["churn.auc"] == pytest.approx(
        brute_force_auc(
            [i % 2 for i in range(1_500)], [float((i % 2) != (i >= 1_400)) for i in range(1_500)]
        )
    )
    assert report["reco.hit_rate_at_10"] == pytest.approx(1_400 / 1_500)


def test_series_is_time_stamped_and_bounded() -> None:
    q = Prequential(window=1_000, checkpoint_every=10, max_points=64)
    for i in range(100_000):
        q.churn("logreg", (i % 7) / 7, int(i % 7 > 3), ts_ms=1_000 * i)
        q.next_item("trending", i % 4 == 0, ts_ms=1_000 * i)
    series = q.series()
    assert set(series) == {("churn_auc", "logreg"), ("hit_rate_at_10", "trending")}
    times, values = series[("hit_rate_at_10", "trending")]
    assert 32 <= len(times) < 64
    assert np.all(np.diff(times) > 0) and np.all(np.diff(np.diff(times)) == 0)
    assert times[-1] > 90_000_000
    assert values == pytest.approx(0.25, abs=0.01)
    assert series[("churn_auc", "logreg")][1] == pytest.approx(1.0)


def test_labelled_prediction_json_carries_rfc3339_event_times() -> None:
    line = LabelledPrediction("u-9", 1_000, 0.125, 0, 61_000, "poisson", 500).to_json()
    record = orjson.loads(line)
    assert record == {
        "user_id": "u-9",
        "predicted_at": "1970-01-01T00:00:01.000Z",
        "churn_probability": 0.125,
        "label": 0,
        "labelled_at": "1970-01-01T00:01:01.000Z",
        "model": "poisson",
        "last_seen": "1970-01-01T00:00:00.500Z",
    }
    assert parse_ts(record["labelled_at"]) - parse_ts(record["predicted_at"]) == 60_000


def test_calibration_error_is_small_for_honest_probabilities_and_large_for_inflated_ones() -> None:
    rng = np.random.default_rng(8)
    probabilities = rng.beta(0.5, 20.0, 50_000)  # churn-like: most near 0
    labels = rng.random(50_000) < probabilities
    honest = expected_calibration_error(labels, probabilities)
    inflated = expected_calibration_error(labels, np.minimum(3 * probabilities, 1.0))
    assert honest < 0.003 and inflated > 0.04
    mean, rate, counts = reliability(labels, probabilities)
    assert counts.sum() == 50_000 and np.all(np.diff(mean) > 0)
    np.testing.assert_allclose(rate, mean, atol=0.01)


def test_tied_probabilities_stay_in_one_bin() -> None:
    mean, rate, counts = reliability([0, 1, 0, 0, 1, 1], [0.2, 0.2, 0.2, 0.2, 0.9, 0.9], bins=3)
    assert counts.tolist() == [4, 2] and rate.tolist() == [0.25, 1.0]


def test_a_worker_s_prequential_keeps_the_last_pairs_and_the_same_rolling_figures() -> None:
    """Bounded to the rolling window, churn pairs do not grow with labels; figures agree."""
    rng = np.random.default_rng(3)
    whole, bounded = Prequential(window=100), Prequential(window=100, whole_run=False)
    for i in range(1_000):
        label = int(rng.random() < 0.2)
        probability = float(np.clip(0.2 + 0.3 * label + rng.normal(0.0, 0.3), 0.0, 1.0))
        whole.churn("logreg", probability, label, ts_ms=i)
        bounded.churn("logreg", probability, label, ts_ms=i)
        assert bounded.rolling() == whole.rolling()
    assert bounded._churn["logreg"].labels.size <= 200 < whole._churn["logreg"].labels.size
    series = whole.series()
    assert {k: [v.tolist() for v in pair] for k, pair in bounded.series().items()} == {
        k: [v.tolist() for v in pair] for k, pair in series.items()
    }
    assert bounded.report(churn_model="logreg", reco_model="mf")["churn.samples"] == 1_000
