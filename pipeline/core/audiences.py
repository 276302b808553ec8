"""Audiences of a genre or a title: fans, clients and lapsed members, from the user states.

A launch is planned by audience. For a title's genres (or one genre), each member is in
at most one:

``fans``
    active (an event within ``active_days`` of event time) and with a high affinity: at
    least ``fan_share`` of their recent watch time in those genres;
``clients``
    active with a lower affinity: the subscribers who need convincing;
``lapsed``
    silent for ``active_days`` or more (lapsing, or churned) with a high affinity: the
    reachable prospects. People who never subscribed are not in the event stream.

The affinity is the user's ``genre_affinity`` (watch seconds per genre, shared among an
item's genres, decayed with a 28-day half-life, :mod:`pipeline.core.features`) as a share
of all of it: every genre of a user decays by the same factor, so the share needs no
decay to the moment it is read. Activity is judged at an event time ``at_ms`` (the last
event of a file, or a worker's watermark), never the wall clock.

Examples
--------
>>> from pipeline.core.state import UserState
>>> fan = UserState.new("u1", partition=0, window_ms=1, max_ids=1)
>>> fan.features.genre_affinity.update({"scifi": 600.0, "drama": 200.0})
>>> fan.last_seen_ms = 10 * DAY_MS
>>> audience_of(fan, ("scifi",), at_ms=12 * DAY_MS, rules=AudienceRules())
'fans'
>>> audience_of(fan, ("scifi",), at_ms=20 * DAY_MS, rules=AudienceRules())
'lapsed'
>>> audience_of(fan, ("comedy",), at_ms=12 * DAY_MS, rules=AudienceRules())
'clients'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pipeline.core.features import DAY_MS
from pipeline.core.state import UserState

__all__ = ["AUDIENCES", "Audience", "AudienceRules", "audience_of", "audiences", "sizes_by_genre"]

Audience = Literal["fans", "clients", "lapsed"]
AUDIENCES: tuple[Audience, ...] = ("fans", "clients", "lapsed")


@dataclass(frozen=True, slots=True)
class AudienceRules:
    """Where the audiences part: days without an event, and the share of watch time."""

    active_days: float = 7.0
    fan_share: float = 0.25

    def audience(self, state: UserState, share: float, *, at_ms: int) -> Audience | None:
        """The audience of a user with ``share`` of their watch time in the genres."""
        fan = share >= self.fan_share
        if at_ms - state.last_seen_ms < self.active_days * DAY_MS:
            return "fans" if fan else "clients"
        return "lapsed" if fan else None


def affinity_share(state: UserState, genres: Sequence[str]) -> float:
    """Share of the user's recent watch time in ``genres`` (0 without any watch time)."""
    affinity = state.features.genre_affinity
    total = sum(affinity.values())
    if total <= 0.0:
        return 0.0
    return sum(affinity.get(genre, 0.0) for genre in set(genres)) / total


def audience_of(
    state: UserState, genres: Sequence[str], *, at_ms: int, rules: AudienceRules
) -> Audience | None:
    """The audience of ``genres`` the user is in at event time ``at_ms``, if any."""
    return rules.audience(state, affinity_share(state, genres), at_ms=at_ms)


def audiences(
    states: Iterable[UserState], genres: Sequence[str], *, at_ms: int, rules: AudienceRules
) -> dict[Audience, list[str]]:
    """The user ids of each audience of ``genres``, sorted."""
    members: dict[Audience, list[str]] = {name: [] for name in AUDIENCES}
    for state in states:
        audience = audience_of(state, genres, at_ms=at_ms, rules=rules)
        if audience is not None:
            members[audience].append(state.user_id)
    for ids in members.values():
        ids.sort()
    return members


def sizes_by_genre(
    states: Iterable[UserState], genres: Iterable[str], *, at_ms: int, rules: AudienceRules
) -> dict[tuple[str, Audience], int]:
    """How many users each audience of each genre holds: counts only, no user id."""
    names = list(genres)
    sizes: dict[tuple[str, Audience], int] = {(g, a): 0 for g in names for a in AUDIENCES}
    for state in states:
        affinity: Mapping[str, float] = state.features.genre_affinity
        total = sum(affinity.values())  # once per user, not per genre
        for genre in names:
            share = affinity.get(genre, 0.0) / total if total > 0.0 else 0.0
            audience = rules.audience(state, share, at_ms=at_ms)
            if audience is not None:
                sizes[genre, audience] += 1
    return sizes
