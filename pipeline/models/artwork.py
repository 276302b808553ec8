"""Which artwork to show each user for a title: a contextual ε-greedy bandit, exact propensities.

An item of the catalog may list several artworks (``artworks: [{artwork_id, tags}]``).
:class:`ArtworkBandit` learns, from *takes* (a click on the item shown with that artwork,
followed by a play of at least a set time) and from the shows without one, the take rate of
each artwork in each **context**: the user's device, then their device and favourite genre
(buckets from the most general), and picks one per shown item under one of three policies:

- ``bandit``: in the user's context, the artwork of best estimated take rate, explored with
  probability ε;
- ``popular``: the same over all users (the most-popular artwork of the item), explored
  alike — the non-personalised baseline;
- ``random``: uniform.

**Estimates pool what they can.** An artwork's take rate in a context is the rate of its
*tags* there times the artwork's own *lift* over its tags among all users. Down the
context's levels (all users, the device, the device and genre), a tag's rate over every item
is shrunk (a Beta prior of weight :attr:`ArtworkBandit.prior`, in takes) toward the level
above: a user who takes to close-ups of faces does so across titles, a new title's artworks
start from what their tags earned, and a small bucket from its device's rates. The lift (the
artwork's takes over those its tags' overall rate predicts, shrunk toward 1) is learnt from
every user: how good a picture is, whoever looks.

**Exploration is ε-greedy, because its propensities are exact.** ε falls as the bucket's
shows grow, ``min(1, explore_scale / sqrt(1 + shows))``, down to a floor (``explore``) that
keeps every artwork's propensity at least ``explore / n``: the logged propensities then
support an unbiased inverse-propensity estimate of any other policy
(:mod:`pipeline.models.offpolicy`). Thompson sampling explores better, but its
propensity is an integral with no closed form (River's ``ThompsonSampling`` gives none; an
estimate by resampling biases the IPS estimate), and LinUCB is deterministic (propensity 1:
no other policy can be evaluated from its logs). ``docs/artwork_policies.py`` compares them.

**Stickiness.** A user keeps the artwork they were shown for an item for ``sticky_ms`` of
event time: it is then the greedy choice, left only when exploring.

**Deterministic.** The draws are a hash of the user, the item and the moment of the list,
not a generator's state: a replay, or a worker that takes a partition over, draws the same.

Examples
--------
>>> bandit = ArtworkBandit(explore=0.1)
>>> arts = [("a0", ("dark",)), ("a1", ("close_up",))]
>>> for _ in range(200):   # drama fans take a1, nobody takes a0
...     bandit.learn("drama", "a1", ("close_up",), 1.0)
...     bandit.learn("drama", "a0", ("dark",), 0.0)
>>> choice = bandit.choose("bandit", "drama", arts, draw=(0.5, 0.5))
>>> choice.artwork_id, round(choice.propensity, 3)
('a1', 0.925)
>>> bandit.choose("random", "drama", arts, draw=(0.5, 0.9)).propensity
0.5
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from pipeline.serde.snapshots import stored_as

__all__ = ["ARTWORK_POLICIES", "ALL_USERS", "ArtworkBandit", "ArtworkChoice", "draws"]

ARTWORK_POLICIES: Final = ("bandit", "popular", "random")
"""The values of the ``artwork_policy`` setting and experiment knob."""
ALL_USERS: Final = "*"
"""The bucket of the ``popular`` policy: every user."""

#: An artwork as the catalog lists it: its id and tags.
Artwork = tuple[str, Sequence[str]]
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class ArtworkChoice:
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


def draws(user_id: str, item_id: str, ts_ms: int) -> tuple[float, float]:
    """Two uniform draws in [0, 1) from the user, the item and the moment: replayable.

    >>> draws("u1", "film-1", 0) == draws("u1", "film-1", 0) != draws("u1", "film-1", 1)
    True
    """
    digest = hashlib.blake2b(f"{user_id}\x1f{item_id}\x1f{ts_ms}".encode(), digest_size=16)
    raw = digest.digest()
    scale = 2.0**-64
    return int.from_bytes(raw[:8], "little") * scale, int.from_bytes(raw[8:], "little") * scale


@stored_as("ArtworkBandit")
class ArtworkBandit:
    """Take counts per context bucket, artwork and tag; picks under a policy (see the module).

    Parameters
    ----------
    explore
        The floor of ε: every artwork keeps at least ``explore / n`` of being shown.
    explore_scale
        ε is ``min(1, explore_scale / sqrt(1 + shows of the bucket))`` above the floor.
    prior
        Weight of the prior an estimate is shrunk toward, in takes: worth ``prior / rate``
        shows at the overall take rate (takes are rare: a weight in shows would let a
        dozen shows without a take bury an artwork).
    """

    def __init__(
        self, *, explore: float = 0.02, explore_scale: float = 3.0, prior: float = 5.0
    ) -> None:
        if not 0.0 < explore <= 1.0:
            raise ValueError(f"explore must be in (0, 1], got {explore}")
        self.explore = explore
        self.explore_scale = explore_scale
        self.prior = prior
        #: :data:`ALL_USERS` → artwork id → [shows, takes]
        self.arms: dict[str, dict[str, list[float]]] = {}
        #: bucket → tag → [shows, takes]
        self.tags: dict[str, dict[str, list[float]]] = {}
        #: bucket → [shows, takes]
        self.buckets: dict[str, list[float]] = {}

    # --- learning ---------------------------------------------------------------------

    def learn(
        self, context: Sequence[str], artwork_id: str, tags: Sequence[str], reward: float
    ) -> None:
        """A show of ``artwork_id`` in ``context`` ended with ``reward`` (1: a take).

        ``context`` is the user's buckets, most general first (e.g. ``("tv", "tv/drama")``);
        every show also counts for :data:`ALL_USERS`.
        """
        _add(self.arms.setdefault(ALL_USERS, {}), artwork_id, reward)
        for where in (ALL_USERS, *context):
            tag_counts = self.tags.setdefault(where, {})
            for tag in tags:
                _add(tag_counts, tag, reward)
            counts = self.buckets.setdefault(where, [0.0, 0.0])
            counts[0] += 1.0
            counts[1] += reward

    # --- choosing ---------------------------------------------------------------------

    def epsilon(self, bucket: str) -> float:
        """The exploration probability in ``bucket`` now."""
        shows = self.buckets.get(bucket, (0.0, 0.0))[0]
        return max(self.explore, min(1.0, self.explore_scale / math.sqrt(1.0 + shows)))

    def estimates(self, context: Sequence[str], artworks: Sequence[Artwork]) -> list[float]:
        """The estimated take rate of each artwork in ``context`` (see the module docstring).

        Its tags' rate in the context (down the levels, all users first, each level's rate
        shrunk toward the level above) times the artwork's own lift over its tags among all
        users (takes over the takes its tags' rate predicted, shrunk toward 1).
        """
        overall = self.buckets.get(ALL_USERS, (0.0, 0.0))
        base = (overall[1] + 1.0) / (overall[0] + 2.0)
        prior = self.prior / base  # in shows: ``prior`` takes at the overall rate
        levels = [self.tags.get(where, {}) for where in (ALL_USERS, *context)]
        arms = self.arms.get(ALL_USERS, {})
        rates = []
        for artwork_id, tags in artworks:
            rate_all = rate_here = 0.0
            for tag in tags or ("",):
                rate = base
                for level, counts in enumerate(levels):
                    shows, takes = counts.get(tag, (0.0, 0.0))
                    rate = (takes + prior * rate) / (shows + prior)
                    if level == 0:
                        rate_all += rate
                rate_here += rate
            shows, takes = arms.get(artwork_id, (0.0, 0.0))
            lift = (takes + self.prior) / (shows * rate_all / max(len(tags), 1) + self.prior)
            rates.append(rate_here / max(len(tags), 1) * lift)
        return rates

    def greedy(self, context: Sequence[str], artworks: Sequence[Artwork]) -> int:
        """The index of the best-estimated artwork in ``context`` (the first of ties)."""
        rates = self.estimates(context, artworks)
        return rates.index(max(rates))

    def choose(
        self,
        policy: str,
        context: Sequence[str],
        artworks: Sequence[Artwork],
        *,
        draw: tuple[float, float],
        sticky: str | None = None,
    ) -> ArtworkChoice:
        """Pick an artwork of a shown item under ``policy``; ``draw`` from :func:`draws`.

        ``context``: the user's buckets, most general first (the ``bandit`` policy's; its ε
        is that of the first). ``sticky`` is the artwork the user was last shown for the
        item, while it sticks: the greedy choice of ``bandit`` and ``popular`` then
        (``random`` ignores it).
        """
        n = len(artworks)
        explore_draw, pick_draw = draw
        ids = [artwork_id for artwork_id, _ in artworks]
        popular_eps = self.epsilon(ALL_USERS)
        bandit_eps = self.epsilon(context[0]) if context else popular_eps
        popular_best = self.greedy((), artworks)
        bandit_best = self.greedy(context, artworks) if context else popular_best
        if policy == "random":
            index, propensity = min(int(pick_draw * n), n - 1), 1.0 / n
        else:
            eps, best = (popular_eps, popular_best) if policy == "popular" else (
                bandit_eps, bandit_best
            )  # fmt: skip
            if sticky is not None and sticky in ids:
                best = ids.index(sticky)
            index = best if explore_draw >= eps else min(int(pick_draw * n), n - 1)
            propensity = (1.0 - eps) * (index == best) + eps / n
        return ArtworkChoice(
            ids[index],
            propensity,
            n,
            (1.0 - popular_eps) * (index == popular_best) + popular_eps / n,
            (1.0 - bandit_eps) * (index == bandit_best) + bandit_eps / n,
        )

    # --- stored form ------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """Plain values, named: snapshots of later releases read them."""
        return {
            "format": _FORMAT,
            "explore": self.explore,
            "explore_scale": self.explore_scale,
            "prior": self.prior,
            "arms": self.arms,
            "tags": self.tags,
            "buckets": self.buckets,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.explore = state["explore"]
        self.explore_scale = state["explore_scale"]
        self.prior = state["prior"]
        self.arms = state["arms"]
        self.tags = state["tags"]
        self.buckets = state["buckets"]


def _add(counts: dict[str, list[float]], key: str, reward: float) -> None:
    entry = counts.get(key)
    if entry is None:
        counts[key] = [1.0, reward]
    else:
        entry[0] += 1.0
        entry[1] += reward
