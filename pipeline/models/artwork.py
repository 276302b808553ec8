"""Which artwork to show each user for a title: a contextual ε-greedy bandit, exact propensities.

An item of the catalog may list several artworks (``artworks: [{artwork_id, tags}]``).
:class:`ArtworkBandit` learns, from *takes* (a click on the item shown with that artwork,
followed by a play of at least a set time) and from the shows without one, the take rate of
each artwork in each **context**: the user's device, and optionally their device and
favourite genre (buckets from the most general: ``pipeline.core.artwork.context_of``), and
picks one per shown item under one of three policies:

- ``bandit``: in the user's context, the artwork of best estimated take rate, explored with
  probability ε;
- ``popular``: the same over all users (the most-popular artwork of the item), explored
  alike — the non-personalised baseline;
- ``random``: uniform.

**Estimates compare like with like, and pool what they can.** How often a show is taken
depends first on its item (a title the user wants is clicked whatever its picture); the
artwork multiplies that. So each show's *expected* takes are its item's take rate (over every
user and artwork), and an artwork is scored by the factor by which it multiplies them: the
factor of its *tags* in the context (takes over expected takes) times its own factor for
the device (its takes over what its tags' factors predicted). Down the context's levels
(all users, the device, the device and genre if on), a tag's factor is shrunk (a prior of weight
:attr:`ArtworkBandit.prior`, in takes)
toward the level above: a user who takes to close-ups of faces does so across titles, a new
title's artworks start from what their tags earned, and a small bucket from its device's.

**Exploration is ε-greedy, because its propensities are exact.** ε falls as the bucket's
shows grow, ``min(1, explore_scale / sqrt(1 + shows))``, down to a floor (``explore``) that
keeps every artwork's propensity at least ``explore / n``: the logged propensities then
support an unbiased inverse-propensity estimate of any other policy
(:mod:`pipeline.models.offpolicy`). Thompson sampling explores better, but its
propensity is an integral with no closed form (River's ``ThompsonSampling`` gives none; an
estimate by resampling biases the IPS estimate), and LinUCB is deterministic (propensity 1:
no other policy can be evaluated from its logs). ``docs/artwork_policies.py`` compares them.

**Stickiness.** A user keeps the artwork the policy chose as its best for an item for
``sticky_ms`` of event time: it is then the greedy choice. Exploring shows another artwork
in that one list and leaves what sticks as it is.

**Deterministic.** The draws are a hash of the user, the item and the moment of the list,
not a generator's state: a replay, or a worker that takes a partition over, draws the same.

Examples
--------
>>> bandit = ArtworkBandit(explore=0.1)
>>> arts = [("a0", ("dark",)), ("a1", ("close_up",))]
>>> for n in range(200):   # on TVs, a third of a1's shows are taken, none of a0's
...     bandit.show(("tv",), "film", "a1", ("close_up",))
...     bandit.show(("tv",), "film", "a0", ("dark",))
...     if n % 3 == 0:
...         bandit.take(("tv",), "film", "a1", ("close_up",))
>>> choice = bandit.choose("bandit", ("tv",), arts, draw=(0.5, 0.5))
>>> choice.artwork_id, round(choice.propensity, 3), choice.explored
('a1', 0.925, False)
>>> bandit.choose("random", ("tv",), arts, draw=(0.5, 0.9)).propensity
0.5
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from pipeline.models import artwork_kernel
from pipeline.serde.snapshots import stored_as

__all__ = [
    "ARTWORK_POLICIES",
    "ALL_USERS",
    "ArtworkBandit",
    "ArtworkChoice",
    "draws",
    "draws_of_bytes",
]

ARTWORK_POLICIES: Final = ("bandit", "popular", "random")
"""The values of the ``artwork_policy`` setting and experiment knob."""
ALL_USERS: Final = "*"
"""The bucket of the ``popular`` policy: every user."""

#: An artwork as the catalog lists it: its id and tags.
Artwork = tuple[str, Sequence[str]]
_FORMAT = 2
#: How many times :attr:`ArtworkBandit.prior` an artwork's own factor is shrunk by: it sees
#: one artwork's shows, a tag's factor those of every artwork of the tag.
OWN_PRIOR = 5.0


class ArtworkChoice(NamedTuple):
    """The artwork picked for one shown item, and what each policy would have picked.

    ``propensity`` is the probability with which the policy that picked it did so;
    ``p_popular`` and ``p_bandit`` the probabilities of the same artwork under the
    ``popular`` and ``bandit`` policies at that moment (without stickiness), for
    off-policy estimates; under ``random`` it is ``1 / choices``.
    """

    artwork_id: str
    propensity: float
    choices: int
    p_popular: float
    p_bandit: float
    #: Picked by exploring (uniformly), not as the policy's best (``random``: always).
    explored: bool = True


def draws(user_id: str, item_id: str, ts_ms: int) -> tuple[float, float]:
    """Two uniform draws in [0, 1) from the user, the item and the moment: replayable.

    >>> draws("u1", "film-1", 0) == draws("u1", "film-1", 0) != draws("u1", "film-1", 1)
    True
    """
    return draws_of_bytes(f"{user_id}\x1f{item_id}\x1f{ts_ms}".encode())


#: :func:`draws` of ``f"{user_id}\x1f{item_id}\x1f{ts_ms}".encode()``, built by the caller: the
#: two little-endian 64-bit words of its BLAKE2b digest (16 bytes), scaled to [0, 1).
draws_of_bytes = artwork_kernel.draws_of_bytes


@stored_as("ArtworkBandit")
class ArtworkBandit:
    """Take counts per context, tag, artwork and item; picks under a policy (see the module).

    Parameters
    ----------
    explore
        The floor of ε: every artwork keeps at least ``explore / n`` of being shown.
    explore_scale
        ε is ``min(1, explore_scale / sqrt(1 + shows of the bucket))`` above the floor.
    prior
        Weight of the prior an estimate is shrunk toward, in takes (takes are rare: a weight
        in shows would let a dozen shows without a take bury an artwork).
    optimism
        Standard errors added to an estimate to pick the best (:meth:`greedy`).
    """

    #: Caches of values of the counts, not stored: a restored bandit starts them afresh.
    TRANSIENT = ("_counted", "_memo", "_scorer")

    def __init__(
        self,
        *,
        explore: float = 0.02,
        explore_scale: float = 3.0,
        prior: float = 5.0,
        optimism: float = 1.0,
    ) -> None:
        if not 0.0 < explore <= 1.0:
            raise ValueError(f"explore must be in (0, 1], got {explore}")
        self.explore = explore
        self.optimism = optimism
        self.explore_scale = explore_scale
        self.prior = prior
        #: item id → [sum of the factors of the artworks it was shown with, takes]
        self.items: dict[str, list[float]] = {}
        #: all users, and the context's first level → artwork id → [takes its tags' factors
        #: predicted, takes]
        self.arms: dict[str, dict[str, list[float]]] = {}
        #: bucket → tag → [expected takes, takes]
        self.tags: dict[str, dict[str, list[float]]] = {}
        #: bucket → [shows, takes]
        self.buckets: dict[str, list[float]] = {}
        self._counted = 0  # changes of the counts: shows and takes
        self._memo: tuple[tuple[int, float, float], dict[Any, Any]] = ((-1, 0.0, 0.0), {})
        #: the arrays the compiled picks read (:class:`~pipeline.models.artwork_kernel.Scorer`)
        self._scorer: artwork_kernel.Scorer | None = None

    def memo(self) -> dict[Any, Any]:
        """A memo for :meth:`choose`: values of the counts, kept until they change.

        Lists are picked far more often than shows open (a show opens per listed item at a
        session's start): ε and the tags' upper bounds in each context computed for one list
        serve the next lists too, until a show or a take changes the counts.
        """
        key = (self._counted, self.explore, self.optimism)
        if self._memo[0] != key:
            self._memo = (key, {})
        return self._memo[1]

    # --- learning ---------------------------------------------------------------------

    def item_rate(self, item_id: str) -> float:
        """The take rate of ``item_id`` with an artwork of factor 1 (shrunk to the mean).

        Its takes over the sum of the factors of the artworks it was shown with: an item
        shown with its best artwork is not credited with what the artwork did.
        """
        overall = self.buckets.get(ALL_USERS, (0.0, 0.0))
        base = (overall[1] + 1.0) / (overall[0] + 2.0)
        factors, takes = self.items.get(item_id, (0.0, 0.0))
        return (takes + self.prior) / (factors + self.prior / base)

    def show(
        self, context: Sequence[str], item_id: str, artwork_id: str, tags: Sequence[str]
    ) -> None:
        """A show of ``item_id`` with ``artwork_id`` opened in ``context``.

        It counts at once, before its outcome (takes come sooner than misses, which wait
        for the window: counting shows at their end would inflate every estimate). Its
        expected takes are its item's take rate now (:meth:`item_rate`): the tags and the
        artwork are credited with the takes beyond what their items would have had anyway
        (an artwork shown on popular items is not better for it), and the artwork with the
        takes beyond what its tags' factor in that context predicted (an artwork shown to
        the users its tag suits is not better for it); the item is credited with its shows
        weighed by the factor of the artwork they had. ``context`` is the user's
        buckets, most general first (e.g. ``("tv", "tv/drama")``); every show also counts
        for :data:`ALL_USERS`.
        """
        self._counted += 1
        expected = self.item_rate(item_id)
        own_levels = (ALL_USERS, context[0]) if context else (ALL_USERS,)
        factor = 1.0
        for level, where in enumerate(own_levels):
            by_tags = self.tag_factor(context[:level], tags)
            arms = self.arms.setdefault(where, {})
            if level == len(own_levels) - 1:
                factor = by_tags * self._own(arms, artwork_id)
            _add(arms, artwork_id, expected * by_tags, 0.0)
            self._own_changed(where, arms, artwork_id)
        _add(self.items, item_id, factor, 0.0)
        for where in (ALL_USERS, *context):
            tag_counts = self.tags.setdefault(where, {})
            for tag in tags:
                _add(tag_counts, tag, expected, 0.0)
            self._tags_changed(where, tag_counts, tags)
            self.buckets.setdefault(where, [0.0, 0.0])[0] += 1.0

    def take(
        self, context: Sequence[str], item_id: str, artwork_id: str, tags: Sequence[str]
    ) -> None:
        """A show :meth:`show` counted was taken."""
        self._counted += 1
        _add(self.items, item_id, 0.0, 1.0)
        for where in (ALL_USERS, context[0]) if context else (ALL_USERS,):
            arms = self.arms.setdefault(where, {})
            _add(arms, artwork_id, 0.0, 1.0)
            self._own_changed(where, arms, artwork_id)
        for where in (ALL_USERS, *context):
            tag_counts = self.tags.setdefault(where, {})
            for tag in tags:
                _add(tag_counts, tag, 0.0, 1.0)
            self._tags_changed(where, tag_counts, tags)
            self.buckets.setdefault(where, [0.0, 0.0])[1] += 1.0

    def _own_changed(self, where: str, arms: dict[str, list[float]], artwork_id: str) -> None:
        """Tell the compiled picks' arrays, if made, the artwork's new own factor there."""
        if self._scorer is not None:
            self._scorer.set_own(where, artwork_id, self._own(arms, artwork_id))

    def _tags_changed(
        self, where: str, tag_counts: dict[str, list[float]], tags: Sequence[str]
    ) -> None:
        """Tell the compiled picks' arrays, if made, the new counts of ``tags`` there."""
        if self._scorer is not None and tags:
            self._scorer.set_tags(where, tag_counts, tuple(tags))

    # --- choosing ---------------------------------------------------------------------

    def epsilon(self, bucket: str) -> float:
        """The exploration probability in ``bucket`` now."""
        shows = self.buckets.get(bucket, (0.0, 0.0))[0]
        return max(self.explore, min(1.0, self.explore_scale / math.sqrt(1.0 + shows)))

    def tag_factor(
        self, context: Sequence[str], tags: Sequence[str], memo: dict[Any, float] | None = None
    ) -> float:
        """How much an artwork with ``tags`` multiplies its item's take rate in ``context``.

        Takes over expected takes of each tag, down the levels (all users first, each
        level's factor shrunk toward the level above, the first toward 1); the mean over
        the tags. ``memo`` keeps each tag's factor for the next calls while the counts do
        not change (the items of one list).
        """
        prior = self.prior
        total = 0.0
        key = tuple(context)
        for tag in tags or ("",):
            found = memo.get((key, tag)) if memo is not None else None
            if found is None:
                factor = 1.0
                for where in (ALL_USERS, *context):
                    expected, takes = self.tags.get(where, {}).get(tag, (0.0, 0.0))
                    factor = (takes + prior * factor) / (expected + prior)
                if memo is not None:
                    memo[(key, tag)] = factor
                found = factor
            total += found
        return total / max(len(tags), 1)

    def estimates(
        self,
        context: Sequence[str],
        artworks: Sequence[Artwork],
        memo: dict[Any, float] | None = None,
    ) -> list[float]:
        """How much each artwork multiplies its item's take rate in ``context``.

        Its tags' factor there (:meth:`tag_factor`) times its own at the context's first
        level (the device): its takes over what its tags' factors predicted (shrunk toward 1).
        The own factor tells apart artworks of the same tags, or of none.
        """
        arms = self.arms.get(context[0] if context else ALL_USERS, {})
        return [
            self.tag_factor(context, tags, memo) * self._own(arms, artwork_id)
            for artwork_id, tags in artworks
        ]

    def _own(self, arms: dict[str, list[float]], artwork_id: str) -> float:
        """The artwork's own factor: its takes over what its tags predicted, shrunk to 1."""
        found = arms.get(artwork_id)
        if found is None:
            return 1.0
        shrink = OWN_PRIOR * self.prior
        return (found[1] + shrink) / (found[0] + shrink)

    def greedy(
        self,
        context: Sequence[str],
        artworks: Sequence[Artwork],
        memo: dict[Any, Any] | None = None,
    ) -> int:
        """The index of the artwork of highest upper confidence bound in ``context``.

        Its tags' factor plus ``optimism`` standard errors of it at the context's first
        level (a Poisson error: ``sqrt(factor / expected takes)``), times its own factor: a
        tag that was unlucky early is tried again until its shows tell, instead of staying
        buried under the floor of ε (the first of ties). ``memo``: :meth:`memo`, or a dict
        of one call's own. Computed by :mod:`pipeline.models.artwork_kernel`.
        """
        memo = {} if memo is None else memo
        return artwork_kernel.best(self, tuple(context), _as_tuple(artworks), memo)

    def choose(
        self,
        policy: str,
        context: Sequence[str],
        artworks: Sequence[Artwork],
        *,
        draw: tuple[float, float],
        sticky: str | None = None,
        memo: dict[Any, Any] | None = None,
    ) -> ArtworkChoice:
        """Pick an artwork of a shown item under ``policy``; ``draw`` from :func:`draws`.

        ``context``: the user's buckets, most general first (the ``bandit`` policy's; its ε
        is that of the first). ``sticky`` is the artwork the user was last shown for the
        item, while it sticks: the greedy choice of ``bandit`` and ``popular`` then
        (``random`` ignores it). ``memo``: shared by the picks of one list (see
        :meth:`tag_factor`).
        """
        return self.choose_list(policy, context, [(artworks, draw, sticky)], memo=memo)[0]

    def choose_list(
        self,
        policy: str,
        context: Sequence[str],
        picks: Sequence[tuple[Sequence[Artwork], tuple[float, float], str | None]],
        *,
        memo: dict[Any, Any] | None = None,
    ) -> list[ArtworkChoice]:
        """:meth:`choose` for each item of one list: its artworks, its draw, its sticky one.

        The picks of one list share the context, its ε and what ``memo`` keeps. Computed by
        :mod:`pipeline.models.artwork_kernel`, the arithmetic of :meth:`greedy` compiled.
        """
        memo = {} if memo is None else memo
        picks = [(_as_tuple(artworks), draw, sticky) for artworks, draw, sticky in picks]
        return artwork_kernel.choose_list(  # type: ignore[no-any-return]
            self, policy, tuple(context), picks, memo, ArtworkChoice
        )

    def _epsilons(self, context: tuple[str, ...], memo: dict[Any, Any]) -> tuple[float, float]:
        """ε of ``popular`` and of ``bandit`` in ``context`` (kept in ``memo``)."""
        epsilons = memo.get(("ε", context))
        if epsilons is None:
            popular_eps = self.epsilon(ALL_USERS)
            epsilons = memo["ε", context] = (
                popular_eps, self.epsilon(context[0]) if context else popular_eps
            )  # fmt: skip
        return epsilons  # type: ignore[no-any-return]

    # --- stored form ------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """Plain values, named: snapshots of later releases read them."""
        return {
            "format": _FORMAT,
            "explore": self.explore,
            "explore_scale": self.explore_scale,
            "prior": self.prior,
            "optimism": self.optimism,
            "items": self.items,
            "arms": self.arms,
            "tags": self.tags,
            "buckets": self.buckets,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a snapshot; one of format 1 (shows, not expected takes) starts afresh."""
        self.explore = state["explore"]
        self.explore_scale = state["explore_scale"]
        self.prior = state["prior"]
        self.optimism = state.get("optimism", 0.0)
        fresh = state["format"] < 2
        self.items = {} if fresh else state["items"]
        self.arms = {} if fresh else state["arms"]
        self.tags = {} if fresh else state["tags"]
        self.buckets = {} if fresh else state["buckets"]
        self._counted = 0
        self._memo = ((-1, 0.0, 0.0), {})
        self._scorer = None


def _add(counts: dict[str, list[float]], key: str, first: float, second: float) -> None:
    entry = counts.get(key)
    if entry is None:
        counts[key] = [first, second]
    else:
        entry[0] += first
        entry[1] += second


def _as_tuple(artworks: Sequence[Artwork]) -> tuple[Artwork, ...]:
    """``artworks`` as the tuple the kernel reads: the same object when it is one.

    The catalog's are: the kernel keeps what it derives from one by its identity.
    """
    return artworks if type(artworks) is tuple else tuple(artworks)
