"""Artworks for the closed loop: several per title, and hidden preferences of who takes to which.

:class:`ArtworkWorld` gives each title of a :class:`~pipeline.sim.synthetic_catalog.Catalog`
``4`` to ``10`` artworks (a range of the config), each showing one of :data:`TAGS` (what the
picture shows: a close-up, the ensemble, an action scene ...). The viewers' reaction to an
artwork is hidden from ottscore:

- each device has a **preferred tag** (a different one each: what reads well on a phone is
  not what does on a TV), drawn from the seed; a viewer's is their preferred device's;
- an artwork showing the viewer's tag has an **appeal** of 1; any other has its own appeal,
  drawn once from U(0.3, 0.6): the most-popular artwork of a title is the one most of its
  viewers prefer, or the best-drawn one;
- the home screen's chance that a viewer clicks a slot is multiplied by the appeal of the
  artwork it is shown with (an item shown without artwork keeps its chance).

So the best artwork depends on who looks: a policy that learns each kind of viewer's taste
in pictures (the device of their events is what ottscore sees of it; a viewer uses another
device in 15 % of their sessions) beats the most-popular artwork, which beats a random one.

:func:`take_outcomes` measures what a run's artworks achieved, from the home screens seen and
the events: shows, takes (a click carrying the shown artwork, then a play of at least
``take_play_s`` within ``take_window_s``), and the regret against the best artwork of each
show for its viewer.

Examples
--------
>>> from pipeline.sim.closed_loop import ClosedLoop, ClosedLoopConfig
>>> loop = ClosedLoop(ClosedLoopConfig(users=20, days=7, seed=2, artworks=(4, 10)))
>>> record = loop.catalog_records()[0]
>>> 4 <= len(record["artworks"]) <= 10, sorted(record["artworks"][0])
(True, ['artwork_id', 'tags'])
>>> world = loop.artworks
>>> best = max(world.appeal(0, art["artwork_id"]) for art in record["artworks"])
>>> 0.3 <= best <= 1.0, world.appeal(0, None)
(True, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipeline.sim.audience import DEVICES, UserProfile
from pipeline.sim.home_screen import FOR_YOU
from pipeline.sim.synthetic_catalog import Catalog

if TYPE_CHECKING:  # the closed loop imports this module
    from pipeline.sim.closed_loop import ClosedLoopRun

__all__ = ["TAGS", "ArtworkWorld", "TakeOutcomes", "take_outcomes", "wrong_tag_shares"]

TAGS: tuple[str, ...] = (
    "close_up", "ensemble", "action", "landscape", "dark", "bright", "text", "character",
)  # fmt: skip
"""What an artwork shows."""

_OTHER_APPEAL = (0.3, 0.6)


class ArtworkWorld:
    """The artworks of each title and the viewers' hidden taste in them (module docstring).

    Parameters
    ----------
    catalog, profiles
        The closed loop's catalog and users.
    counts
        The range of artworks per title, inclusive.
    seed
        The seed of the draws (their own stream: the catalog and the viewers are unchanged).
    """

    def __init__(
        self,
        catalog: Catalog,
        profiles: Sequence[UserProfile],
        *,
        counts: tuple[int, int],
        seed: int,
    ) -> None:
        low, high = counts
        if not 1 <= low <= high:
            raise ValueError(f"artwork counts must be 1 <= low <= high, got {counts}")
        rng = np.random.default_rng([seed, 0xA7_7A0E])
        #: Each device's preferred tag (index in :data:`TAGS`).
        self.by_device = dict(zip(DEVICES, rng.permutation(len(TAGS)).tolist(), strict=False))
        #: Each viewer's preferred device, and its tag, in profile order.
        self.device_of = [profile.device for profile in profiles]
        self._tag_of = [self.by_device[device] for device in self.device_of]
        #: Each title's artworks: ``(artwork_id, tag index, appeal to viewers not preferring it)``.
        self.of_title: list[list[tuple[str, int, float]]] = []
        self._art: dict[str, tuple[int, float, int]] = {}  # id → (tag, appeal, title)
        for index, title in enumerate(catalog.titles):
            n = int(rng.integers(low, high + 1))
            tags = rng.permutation(len(TAGS))[: min(n, len(TAGS))].tolist()
            tags += rng.integers(len(TAGS), size=n - len(tags)).tolist()
            appeal = rng.uniform(*_OTHER_APPEAL, size=n)
            slug = catalog.items[title.items[0]].item_id
            arts = [(f"{slug}-a{j}", int(tags[j]), float(appeal[j])) for j in range(n)]
            self.of_title.append(arts)
            for artwork_id, tag, value in arts:
                self._art[artwork_id] = (tag, value, index)
        self._title_of = {item.item_id: item.title_index for item in catalog.items}

    def records(self, catalog: Catalog) -> list[dict[str, object]]:
        """The catalog's records, each listing its title's artworks."""
        records = []
        for item in catalog.items:
            record = item.to_record()
            record["artworks"] = [
                {"artwork_id": artwork_id, "tags": [TAGS[tag]]}
                for artwork_id, tag, _ in self.of_title[item.title_index]
            ]
            records.append(record)
        return records

    def appeal(self, viewer: int, artwork_id: str | None) -> float:
        """The appeal of ``artwork_id`` to viewer number ``viewer`` (1 without an artwork)."""
        if artwork_id is None:
            return 1.0
        found = self._art.get(artwork_id)
        if found is None:
            return 1.0
        tag, value, _ = found
        return 1.0 if tag == self._tag_of[viewer] else value

    def offers_tag_of(self, viewer: int, item_id: str) -> bool:
        """Whether ``item_id``'s title has an artwork of viewer ``viewer``'s tag."""
        title = self._title_of.get(item_id)
        tag = self._tag_of[viewer]
        return title is not None and any(t == tag for _, t, _ in self.of_title[title])

    def best_appeal(self, viewer: int, item_id: str) -> float:
        """The appeal of the best artwork of ``item_id``'s title to viewer ``viewer``."""
        title = self._title_of.get(item_id)
        if title is None:
            return 1.0
        return max(self.appeal(viewer, artwork_id) for artwork_id, _, _ in self.of_title[title])


@dataclass(frozen=True, slots=True)
class TakeOutcomes:
    """What the artworks of a run achieved, per user and over time.

    ``shows[u]`` and ``takes[u]``: slots of the home screens user ``u`` saw with an artwork,
    and the takes among them; ``regret``: the cumulative regret after each show, in time order,
    against the best artwork for the viewer (the appeal lost).
    """

    shows: np.ndarray
    takes: np.ndarray
    regret: np.ndarray

    @property
    def take_rate(self) -> float:
        """Takes per show, over every user."""
        return float(self.takes.sum() / max(self.shows.sum(), 1))

    def regret_growth(self) -> float:
        """Cumulative regret after all shows over that after the first half of them."""
        regret = self.regret
        total = len(regret)
        if total < 2:
            return float("nan")
        return float(regret[-1] / max(regret[total // 2 - 1], 1e-12))


def take_outcomes(
    run: ClosedLoopRun,
    world: ArtworkWorld,
    user_ids: Sequence[str],
    *,
    take_play_s: float = 60.0,
    take_window_s: float = 3_600.0,
) -> TakeOutcomes:
    """Shows, takes and regret of a :class:`~pipeline.sim.closed_loop.ClosedLoopRun`.

    A take is a click carrying an artwork on the row (``for_you``) followed, within
    ``take_window_s``, by ``take_play_s`` of playback of the item (position gained between a
    ``play`` and the ``pause`` after it).
    """
    row = {user_id: index for index, user_id in enumerate(user_ids)}
    shows = np.zeros(len(user_ids))
    takes = np.zeros(len(user_ids))
    steps: list[tuple[int, float]] = []
    for user_id, impressions in run.impressions.items():
        viewer = row[user_id]
        for impression in impressions:
            if impression.surface != FOR_YOU:
                continue
            for item_id, artwork_id in zip(
                impression.item_ids, impression.artwork_ids, strict=False
            ):
                if artwork_id is None:
                    continue
                shows[viewer] += 1
                lost = world.best_appeal(viewer, item_id) - world.appeal(viewer, artwork_id)
                steps.append((impression.ts_ms, lost))
    window_ms = take_window_s * 1000
    clicked: dict[str, tuple[str, int, float]] = {}  # user → (item, click ms, played s)
    playing: dict[str, tuple[str, float]] = {}  # user → (item, position at play)
    for event in run.events:
        user = event.user_id
        if event.type == "click":
            if event.surface == FOR_YOU and event.artwork_id is not None:
                clicked[user] = (event.item_id or "", event.ts_ms, 0.0)
            else:
                clicked.pop(user, None)
        elif event.type == "play":
            playing[user] = (event.item_id or "", event.position_s or 0.0)
        elif event.type == "pause":
            started = playing.pop(user, None)
            pending = clicked.get(user)
            if started is None or pending is None or started[0] != event.item_id:
                continue
            item_id, click_ms, played = pending
            if item_id != event.item_id or event.ts_ms - click_ms > window_ms:
                continue
            played += max(0.0, (event.position_s or 0.0) - started[1])
            if played >= take_play_s:
                takes[row[user]] += 1
                del clicked[user]
            else:
                clicked[user] = (item_id, click_ms, played)
    steps.sort(key=lambda step: step[0])
    return TakeOutcomes(shows, takes, np.cumsum([lost for _, lost in steps]))


def wrong_tag_shares(
    run: ClosedLoopRun, world: ArtworkWorld, user_ids: Sequence[str], *, after_ms: int = 0
) -> dict[str, tuple[int, float]]:
    """Per viewer device: shows that could have had the viewer's tag, and the share without it.

    Counts the artworks shown on the row (``for_you``) at ``after_ms`` or later, of titles
    with an artwork of the viewer's tag; of those, the share shown with another artwork.
    Where the regret of a policy comes from: a share that stays high late in a run is a
    kind of viewer whose taste the policy has not learnt.
    """
    row = {user_id: index for index, user_id in enumerate(user_ids)}
    shows: dict[str, int] = {}
    wrong: dict[str, int] = {}
    for user_id, impressions in run.impressions.items():
        viewer = row[user_id]
        device = world.device_of[viewer]
        for impression in impressions:
            if impression.surface != FOR_YOU or impression.ts_ms < after_ms:
                continue
            for item_id, artwork_id in zip(
                impression.item_ids, impression.artwork_ids, strict=False
            ):
                if artwork_id is None or not world.offers_tag_of(viewer, item_id):
                    continue
                shows[device] = shows.get(device, 0) + 1
                wrong[device] = wrong.get(device, 0) + (world.appeal(viewer, artwork_id) < 1.0)
    return {device: (shows[device], wrong[device] / shows[device]) for device in sorted(shows)}
