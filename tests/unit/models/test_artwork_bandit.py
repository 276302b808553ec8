"""The artwork bandit: what it learns, and propensities that are the policy's true probabilities."""

from __future__ import annotations

import hashlib
import math
import pickle
import struct
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.models import artwork_kernel
from pipeline.models.artwork import ALL_USERS, OWN_PRIOR, ArtworkBandit, draws, draws_of_bytes

ARTS = [("a0", ("dark",)), ("a1", ("close_up",)), ("a2", ("ensemble",)), ("a3", ("bright",))]


def trained() -> ArtworkBandit:
    """TV viewers take close-ups, phone viewers ensembles; every artwork shown alike."""
    bandit = ArtworkBandit(explore=0.05)
    for n in range(4_000):
        for device, liked in (("tv", "a1"), ("mobile", "a2")):
            artwork_id, tags = ARTS[n % 4]
            item = f"film-{n % 7}"
            bandit.show((device,), item, artwork_id, tags)
            if artwork_id == liked and n % 3 == 0:
                bandit.take((device,), item, artwork_id, tags)
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
        bandit.show(("tv",), "film", "a0", ("dark",))
    assert bandit.epsilon("tv") == pytest.approx(3 / 10_001**0.5)
    for _ in range(100_000):
        bandit.show(("tv",), "film", "a0", ("dark",))
    assert bandit.epsilon("tv") == 0.02
    assert bandit.buckets[ALL_USERS][0] == bandit.buckets["tv"][0] == 110_000


def test_an_artwork_shown_on_items_people_want_is_not_credited_with_their_appeal() -> None:
    """Dark artwork only on a hit, a close-up only on a flop, each taken at its item's rate.

    Neither multiplies its item's rate: their factors stay within 2x of each other (the hit
    is taken ten times as often; the online estimate keeps some of its first shows' bias).
    """
    bandit = ArtworkBandit(optimism=0.0)
    for n in range(6_000):
        for item, artwork, tags, every in (
            ("hit", "h", ("dark",), 5),
            ("flop", "f", ("close_up",), 50),
        ):
            bandit.show(("tv",), item, artwork, tags)
            bandit.show(("tv",), item, "plain", ())  # the item's rate, with another artwork
            if n % every == 0:
                bandit.take(("tv",), item, artwork, tags)
                bandit.take(("tv",), item, "plain", ())
    dark, close_up = bandit.estimates(("tv",), [("x", ("dark",)), ("y", ("close_up",))])
    assert 0.5 < dark / close_up < 2.0
    assert bandit.item_rate("hit") > 5 * bandit.item_rate("flop")


def test_the_draws_are_a_hash_of_user_item_and_moment_so_a_replay_picks_the_same() -> None:
    a, b = trained(), trained()
    picks = [a.choose("bandit", ("tv",), ARTS, draw=draws("u7", "film", ts)) for ts in range(500)]
    again = [b.choose("bandit", ("tv",), ARTS, draw=draws("u7", "film", ts)) for ts in range(500)]
    assert picks == again


def test_a_snapshot_restores_the_counts_as_plain_values() -> None:
    bandit = trained()
    restored = pickle.loads(pickle.dumps(bandit))
    assert restored.__getstate__() == bandit.__getstate__()
    assert bandit.__getstate__()["format"] == 2
    assert restored.estimates(("tv",), ARTS) == bandit.estimates(("tv",), ARTS)


def test_a_snapshot_of_the_first_format_restores_as_a_fresh_bandit() -> None:
    """Format 1 counted shows, not expected takes: its counts cannot be read as such."""
    bandit = ArtworkBandit.__new__(ArtworkBandit)
    bandit.__setstate__({
        "format": 1, "explore": 0.05, "explore_scale": 3.0, "prior": 5.0,
        "arms": {"*": {"a0": [10.0, 1.0]}}, "tags": {"*": {"dark": [10.0, 1.0]}},
        "buckets": {"*": [10.0, 1.0]},
    })  # fmt: skip
    assert (bandit.explore, bandit.items, bandit.arms, bandit.tags) == (0.05, {}, {}, {})
    assert bandit.choose("bandit", ("tv",), ARTS, draw=(0.9, 0.1)).choices == 4


def test_the_memo_of_the_lists_is_dropped_when_a_show_or_a_take_changes_the_counts() -> None:
    bandit = ArtworkBandit(explore=0.05, optimism=0.0)
    memo = bandit.memo()
    assert bandit.greedy(("tv",), ARTS, memo) == 0  # nothing learnt: the first of ties
    assert bandit.memo() is memo  # no change: the next list reuses it
    for _ in range(30):
        bandit.show(("tv",), "film-1", "a3", ("bright",))
        bandit.take(("tv",), "film-1", "a3", ("bright",))
    fresh = bandit.memo()
    assert fresh is not memo and bandit.greedy(("tv",), ARTS, fresh) == 3
    assert bandit.greedy(("tv",), ARTS, memo) == 0  # what the stale memo would have said
    restored = pickle.loads(pickle.dumps(bandit))
    assert restored.greedy(("tv",), ARTS, restored.memo()) == 3


Art = tuple[str, tuple[str, ...]]


def reference_best(bandit: ArtworkBandit, context: tuple[str, ...], artworks: list[Art]) -> int:
    """The greedy index as the docstring of :meth:`ArtworkBandit.greedy` says, plainly.

    Each artwork: its tags' factor plus ``optimism`` Poisson errors, times its own factor at
    the context's first level (its takes over what its tags predicted, shrunk to 1); the
    first of the highest.
    """
    level = context[0] if context else ALL_USERS
    first = bandit.tags.get(level, {})
    arms = bandit.arms.get(level, {})
    shrink = OWN_PRIOR * bandit.prior
    scores = []
    for artwork_id, tags in artworks:
        factor = bandit.tag_factor(context, tags)
        expected = sum(first.get(tag, (0.0, 0.0))[0] for tag in tags or ("",)) / max(len(tags), 1)
        factor += bandit.optimism * math.sqrt(factor / (expected + bandit.prior))
        predicted, takes = arms.get(artwork_id, (None, None))
        if predicted is not None:
            factor *= (takes + shrink) / (predicted + shrink)
        scores.append(factor)
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


TAG_POOL = ("dark", "close_up", "ensemble", "bright")
arts_strategy = st.lists(
    st.tuples(
        st.sampled_from([f"a{n}" for n in range(8)]),
        st.lists(st.sampled_from(TAG_POOL), max_size=2, unique=True).map(tuple),
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda art: art[0],
)
contexts = st.sampled_from([(), ("tv",), ("tv", "tv/drama"), ("mobile", "mobile/crime")])


@settings(max_examples=150, deadline=None)
@given(
    history=st.lists(
        st.tuples(contexts, st.sampled_from(["i1", "i2", "i3"]), arts_strategy, st.booleans()),
        max_size=40,
    ),
    lists=st.lists(arts_strategy, min_size=1, max_size=5),
    context=contexts,
    policy=st.sampled_from(["bandit", "popular", "random"]),
    draw_seeds=st.lists(st.integers(0, 10_000), min_size=5, max_size=5),
)
def test_the_picks_of_a_list_are_the_plain_greedy_choices_and_restore_alike(
    history: list[tuple[tuple[str, ...], str, list[Art], bool]],
    lists: list[list[Art]],
    context: tuple[str, ...],
    policy: str,
    draw_seeds: list[int],
) -> None:
    """The compiled picks (arrays of own factors kept as the counts change) change nothing.

    Each item's pick in a list equals the plain greedy computation, whatever the counts,
    ties included (the first of the highest), and a restored bandit (its arrays made from
    its counts) picks the same.
    """
    bandit = ArtworkBandit(explore=0.1)
    bandit.greedy(context, lists[0])  # its arrays made now: kept as the counts change
    for where, item, artworks, taken in history:
        artwork_id, tags = artworks[0]
        bandit.show(where, item, artwork_id, tags)
        if taken:
            bandit.take(where, item, artwork_id, tags)
    restored = pickle.loads(pickle.dumps(bandit))
    picks = [(arts, draws("u", f"i{n}", seed), None) for n, (arts, seed) in
             enumerate(zip(lists, draw_seeds, strict=False))]  # fmt: skip
    for each in (bandit, restored):
        chosen = each.choose_list(policy, context, picks, memo=each.memo())
        for (artworks, draw, _), choice in zip(picks, chosen, strict=True):
            popular = reference_best(each, (), artworks)
            in_context = reference_best(each, context, artworks) if context else popular
            n = len(artworks)
            explored = policy == "random" or draw[0] < each.epsilon(ALL_USERS if policy ==
                "popular" or not context else context[0])  # fmt: skip
            best = popular if policy == "popular" else in_context
            index = min(int(draw[1] * n), n - 1) if explored else best
            assert choice.artwork_id == artworks[index][0]
            assert each.greedy(context, artworks) == in_context
            assert each.greedy((), artworks) == popular
            assert choice == each.choose(policy, context, artworks, draw=draw)


@settings(max_examples=300, deadline=None)
@given(key=st.binary(max_size=64))
def test_the_compiled_draws_are_those_of_the_hash_in_python(key: bytes) -> None:
    """The kernel reads the digest's two little-endian words as ``struct`` does."""
    first, second = struct.unpack("<QQ", hashlib.blake2b(key, digest_size=16).digest())
    assert artwork_kernel.draws_of_bytes(key) == (first * 2.0**-64, second * 2.0**-64)
    assert draws_of_bytes(key) == artwork_kernel.draws_of_bytes(key)
