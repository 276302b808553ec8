"""Explicit mode matches plain River: same BiasedMF set-up, same order, same errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from river import reco

from pipeline.config import Settings
from pipeline.models.reco.recommender import explicit_mf_params
from pipeline.offline.evaluate import evaluate
from pipeline.offline.movielens import import_movielens, read_ratings, river_progressive_errors


def write_u_data(directory: Path, *, ratings: int = 3_000, seed: int = 5) -> None:
    """ml-100k ``u.data``: ratings 1 to 5 from user and item biases and 3 latent tastes."""
    rng = np.random.default_rng(seed)
    users, items = 150, 120
    user_taste, item_taste = rng.normal(0, 0.6, (users, 3)), rng.normal(0, 0.6, (items, 3))
    user_bias, item_bias = rng.normal(0, 0.4, users), rng.normal(0, 0.6, items)
    pairs = rng.choice(users * items, size=ratings, replace=False)
    u, i = pairs // items, pairs % items
    raw = 3.5 + user_bias[u] + item_bias[i] + np.einsum("nk,nk->n", user_taste[u], item_taste[i])
    stars = np.clip(np.rint(raw + rng.normal(0, 0.5, ratings)), 1, 5).astype(int)
    times = 880_000_000 + np.cumsum(rng.integers(0, 600, ratings))  # zero steps: ties
    rows = rng.permutation(ratings)  # the file is not in time order; the import sorts it
    (directory / "u.data").write_text(
        "".join(f"{u[r] + 1}\t{i[r] + 1}\t{stars[r]}\t{times[r]}\n" for r in rows)
    )


def test_explicit_mode_errors_match_river_biased_mf_under_progressive_validation(
    tmp_path: Path,
) -> None:
    write_u_data(tmp_path)
    import_movielens(tmp_path, tmp_path / "events.jsonl")
    report = evaluate(
        tmp_path / "events.jsonl",
        settings=Settings(reco_mode="explicit"),
        progress=False,
    )
    river = river_progressive_errors(read_ratings(tmp_path), reco.BiasedMF(**explicit_mf_params()))
    assert report["events"] == 3_000
    assert report["reco.mae"] == pytest.approx(river["mae"], abs=0.005)
    assert report["reco.rmse"] == pytest.approx(river["rmse"], abs=0.005)
