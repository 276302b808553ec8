"""The artwork bandit: what it learns, and propensities that are the policy's true probabilities."""

from __future__ import annotations

import pickle
from collections import Counter

import pytest

from pipeline.models.artwork import ALL_USERS, ArtworkBandit, draws

ARTS = [("a0", ("dark",)), ("a1", ("close_up",)), ("a2", ("ensemble",)), ("a3", ("bright",))]


def trained() -> ArtworkBandit:
    """TV viewers take close-ups, phone viewers ensembles; every artwork shown alike."""
    bandit = ArtworkBandit(explore=0.05)
    for n in range(4_000):
        for device, liked in (("tv", "a1"), ("mobile", "a2")):
            artwork_id, tags = ARTS[n % 4]
            bandit.learn((device,), artwork_id, tags, float(artwork_id == liked and n % 3 == 0))
    return bandit


def test_each_context_gets_the_artwork_its_users_take_and_popular_the_overall_best() -> None:
    bandit = trained()
    assert bandit.greedy(("tv",), ARTS) == 1
    assert bandit.greedy(("mobile",), ARTS) == 2
    assert bandit.greedy((), ARTS) in (1, 2)  # all users: one of the two liked ones
    # a new title whose artworks share the tags starts from what the tags earned
    new = [("b0", ("ensemble",)), ("b1", ("close_up",))]
    assert bandit.greedy(("tv",), new) == 1 and bandit.greedy(("mobile",), new) == 0


@pytest.mark.parametrize("policy", ["bandit", "popular", "random"])
@pytest.mark.parametrize("sticky", [None, "a3"])
def test_the_propensity_is_the_frequency_with_which_the_policy_picks_the_artwork(
    policy: str, sticky: str | None
) -> None:
    bandit = trained()
    picks: Counter[str] = Counter()
    logged: dict[str, float] = {}
    runs = 40_000
    for ts in range(runs):
        choice = bandit.choose(policy, ("mobile",), ARTS, draw=draws("u", "i", ts), sticky=sticky)
        picks[choice.artwork_id] += 1
        logged.setdefault(choice.artwork_id, choice.propensity)
        assert choice.choices == 4
        if sticky is None and policy != "random":
            want = choice.p_bandit if policy == "bandit" else choice.p_popular
            assert choice.propensity == pytest.approx(want)
    assert sum(logged.values()) == pytest.approx(1.0)
    for artwork_id, count in picks.items():
        p = logged[artwork_id]
        assert abs(count / runs - p) < 4 * (p * (1 - p) / runs) ** 0.5 + 1e-9, (artwork_id, p)
    if policy == "random":
        assert set(logged.values()) == {0.25}
    else:  # every artwork keeps at least explore / n
        assert min(logged.values()) >= bandit.explore / 4


def test_exploration_shrinks_with_the_shows_down_to_its_floor() -> None:
    bandit = ArtworkBandit(explore=0.02)
    assert bandit.epsilon("tv") == 1.0
    for _ in range(10_000):
        bandit.learn(("tv",), "a0", ("dark",), 0.0)
    assert bandit.epsilon("tv") == pytest.approx(3 / 10_001**0.5)
    for _ in range(100_000):
        bandit.learn(("tv",), "a0", ("dark",), 0.0)
    assert bandit.epsilon("tv") == 0.02
    assert bandit.buckets[ALL_USERS][0] == bandit.buckets["tv"][0] == 110_000


def test_the_draws_are_a_hash_of_user_item_and_moment_so_a_replay_picks_the_same() -> None:
    a, b = trained(), trained()
    picks = [a.choose("bandit", ("tv",), ARTS, draw=draws("u7", "film", ts)) for ts in range(500)]
    again = [b.choose("bandit", ("tv",), ARTS, draw=draws("u7", "film", ts)) for ts in range(500)]
    assert picks == again


def test_a_snapshot_restores_the_counts_as_plain_values() -> None:
    bandit = trained()
    restored = pickle.loads(pickle.dumps(bandit))
    assert restored.__getstate__() == bandit.__getstate__()
    assert bandit.__getstate__()["format"] == 1
    assert restored.estimates(("tv",), ARTS) == bandit.estimates(("tv",), ARTS)
