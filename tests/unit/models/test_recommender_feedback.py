"""What the recommender learns besides the choice: the list passed over, the genres' lift."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from pipeline.models.reco.items import ItemIndex
from pipeline.models.reco.recommender import Recommender


def catalog(n: int = 40) -> ItemIndex:
    items = ItemIndex()
    for i in range(n):
        genres = ["drama"] if i % 4 else ["horror"]
        items.add_catalog_item({"item_id": f"m{i}", "title": f"t{i}", "genres": genres})
    return items


def test_the_items_of_a_list_passed_over_lower_their_taste_for_the_user() -> None:
    passed_over, never_shown = 7, 9
    scores = {}
    for shown in ([], [passed_over]):
        reco = Recommender(catalog(), seed=3)
        for n in range(30):
            reco.choose("u", n % 5, previous=None, genres=None, ts_ms=n, shown=shown)
        taste = reco.taste.scores("u", len(reco.items))
        scores[bool(shown)] = taste[passed_over] - taste[never_shown]
    assert scores[True] < scores[False] - 0.1


def test_the_genre_signal_is_the_users_share_over_the_partitions() -> None:
    reco = Recommender(catalog(), seed=1)
    affinity = {"drama": 0.6, "horror": 0.4}
    before = dict(zip(reco.items.genre_names, reco._affinity(affinity), strict=True))
    assert before["drama"] == pytest.approx(0.6)
    for n in range(40):  # the partition chooses drama nine times in ten
        reco.choose(f"u{n}", 1 if n % 10 else 0, previous=None, genres=None, ts_ms=n)
    after = dict(zip(reco.items.genre_names, reco._affinity(affinity), strict=True))
    assert after["horror"] > 0.8 and sum(after.values()) == pytest.approx(1.0)


def test_a_recommender_stored_before_the_genre_counts_restores_and_learns() -> None:
    reco = Recommender(catalog(), seed=2)
    reco.choose("u", 1, previous=None, genres={"drama": 1.0}, ts_ms=0)
    state = reco.__dict__.copy()
    for added in ("_recent", "_recent_count", "_genre_counts", "_genre_total"):
        del state[added]
    old = Recommender.__new__(Recommender)
    old.__setstate__(state)
    restored = pickle.loads(pickle.dumps(old))
    restored.choose("u", 2, previous=1, genres={"drama": 1.0}, ts_ms=1, shown=[3, 4])
    assert len(restored.recommend("u", k=3, previous=2, genres={"drama": 1.0})) == 3


def test_the_cached_lift_follows_every_choice() -> None:
    reco = Recommender(catalog(), seed=4)
    affinity = {"drama": 0.5, "horror": 0.5}
    for n in range(12):
        reco.choose(f"u{n % 3}", n % 4, previous=None, genres=None, ts_ms=n)
        cached = reco._affinity(affinity)
        reco._lift_cache = None
        assert reco._affinity(affinity).tolist() == pytest.approx(cached.tolist())


def test_half_the_unchosen_items_come_from_the_last_choices_once_there_are_some() -> None:
    reco = Recommender(catalog(), seed=5)
    drawn = np.array([0.1, 0.6, 0.3, 0.9])
    uniform = (drawn * len(reco.items)).astype(np.intp)
    assert reco._recent_draws(uniform, drawn).tolist() == uniform.tolist()  # none made yet
    for n in range(8):
        reco.choose(f"u{n}", 30 + n % 2, previous=None, genres=None, ts_ms=n)
    sampled = reco._recent_draws(uniform, drawn)
    assert set(sampled[:2].tolist()) <= {30, 31} and sampled[2:].tolist() == uniform[2:].tolist()


def test_taste_alone_tells_two_audiences_of_one_genre_and_one_popularity_apart() -> None:
    """Each half of the users chooses from its own half of the items, all of one genre.

    Popularity and genre are the same for both halves and no choice follows another
    (no sequel), so only the taste signal can put a user's own half first: without it
    the lists would hold about five of ten.
    """
    items = ItemIndex()
    for i in range(40):
        items.add_catalog_item({"item_id": f"m{i}", "title": f"t{i}", "genres": ["drama"]})
    reco = Recommender(items, seed=5)
    rng = np.random.default_rng(5)
    for n in range(3_000):
        user = int(rng.integers(40))
        own = 20 * (user % 2)  # even users choose items 0-19, odd users items 20-39
        reco.choose(f"u{user}", own + int(rng.integers(20)), previous=None,
                    genres={"drama": 1.0}, ts_ms=n * 60_000)  # fmt: skip
    own_share = []
    for user in range(40):
        ranked = reco.recommend(f"u{user}", k=10, previous=None, genres={"drama": 1.0})
        own = range(20) if user % 2 == 0 else range(20, 40)
        own_share.append(sum(items.index(r.item_id) in own for r in ranked) / 10)
    print(f"\nown half in the top 10: {np.mean(own_share):.2f}")
    assert np.mean(own_share) >= 0.9


def test_a_signal_left_out_gets_no_weight_and_the_lists_do_without_it() -> None:
    """The ablation switch: taste left out, the two audiences are no longer told apart."""
    items = ItemIndex()
    for i in range(40):
        items.add_catalog_item({"item_id": f"m{i}", "title": f"t{i}", "genres": ["drama"]})
    reco = Recommender(items, seed=5)
    reco.left_out = [3]  # taste
    rng = np.random.default_rng(5)
    for n in range(3_000):
        user = int(rng.integers(40))
        reco.choose(f"u{user}", 20 * (user % 2) + int(rng.integers(20)), previous=None,
                    genres={"drama": 1.0}, ts_ms=n * 60_000)  # fmt: skip
    coefficients, _ = reco.ranker.linear()
    assert coefficients[3] == 0.0 and coefficients[0] != 0.0
    own = [
        sum(items.index(r.item_id) in (range(20) if u % 2 == 0 else range(20, 40))
            for r in reco.recommend(f"u{u}", k=10, previous=None, genres={"drama": 1.0})) / 10
        for u in range(40)
    ]  # fmt: skip
    assert 0.35 <= np.mean(own) <= 0.65  # chance: taste alone told them apart (0.98)
