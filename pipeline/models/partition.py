"""The models of one partition, and the catalog they share.

Models live with the partition they learn from: when a partition moves to another
worker, its :class:`PartitionModels` move with it (as a signed snapshot), so every user
is always scored by the models that learned from their own events.

Examples
--------
>>> from pipeline.config import Settings
>>> models = PartitionModels.create(Settings(churn_challenger="tree"), partition=0,
...                                 catalog={"m1": {"item_id": "m1", "genres": ["drama"]}})
>>> list(models.churn), len(models.items), models.ratings is None
(['logreg', 'tree'], 1, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.config import Settings
from pipeline.models.artwork import ArtworkBandit
from pipeline.models.churn import ChurnModel, InactiveChurn, make_churn_model
from pipeline.models.promotion import ChurnPromotion
from pipeline.models.reco.items import ItemIndex
from pipeline.models.reco.recommender import SIGNALS, RatingModel, Recommender
from pipeline.models.segments import Segmenter
from pipeline.serde.snapshots import stored_as

if TYPE_CHECKING:
    from pipeline.experiments.stats import Moments
    from pipeline.models.exchange import PartitionShare

__all__ = ["PartitionModels"]


@stored_as("PartitionModels")
@dataclass(slots=True)
class PartitionModels:
    """The models of one partition.

    Churn champion (first) and challenger, recommender, segments and, in explicit mode,
    the rating model; the test that promotes the challenger (``None`` when there is none
    or promotion is off); the model that re-scores silent users (``None`` when no
    re-scores are set); the artwork bandit.
    """

    items: ItemIndex
    churn: dict[str, ChurnModel]
    recommender: Recommender
    segmenter: Segmenter
    ratings: RatingModel | None
    promotion: ChurnPromotion | None = None
    inactive: InactiveChurn | None = None
    artwork: ArtworkBandit | None = None
    #: The partition's side of the learning shared between workers (None when it is off).
    shared: PartitionShare | None = None

    @classmethod
    def create(
        cls, settings: Settings, *, partition: int, catalog: Mapping[str, Mapping[str, Any]]
    ) -> PartitionModels:
        """Fresh models for ``partition``, seeded by it, knowing the ``catalog`` items."""
        items = ItemIndex()
        for record in catalog.values():
            items.add_catalog_item(record)
        names = [settings.churn_model]
        challenger = settings.churn_challenger
        if challenger != "none" and challenger != settings.churn_model:
            names.append(challenger)
        recommender = Recommender(items, seed=partition)
        recommender.left_out = [SIGNALS.index(name) for name in settings.reco_ablate]
        models = cls(
            items=items,
            churn={
                name: make_churn_model(name, horizon_days=settings.churn_horizon_days)
                for name in names
            },
            recommender=recommender,
            segmenter=Segmenter(n_segments=settings.segments, seed=partition),
            ratings=RatingModel() if settings.reco_mode == "explicit" else None,
        )
        models.configure(settings)
        return models

    def configure(self, settings: Settings) -> None:
        """Follow ``settings`` where restored models may predate them: the promotion test.

        Models restored from a snapshot keep their test, inactivity model and artwork
        bandit, unless these are now off; models of a release before them start them.
        """
        if settings.churn_promotion_alpha == 0 or len(self.churn) != 2:
            self.promotion = None
        elif self.promotion is None:
            self.promotion = ChurnPromotion(alpha=settings.churn_promotion_alpha)
        if not settings.churn_rescore_days:
            self.inactive = None
        elif self.inactive is None:
            self.inactive = InactiveChurn()
        if self.artwork is None:
            self.artwork = ArtworkBandit(explore=settings.artwork_explore)
        else:
            self.artwork.explore = settings.artwork_explore

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        """Restore a snapshot; one of a release before a field has ``None`` in it."""
        _, slots = state
        for name, value in slots.items():
            object.__setattr__(self, name, value)
        for name in ("promotion", "inactive", "artwork", "shared"):
            if name not in slots:
                object.__setattr__(self, name, None)

    def learn_label(self, scores: Mapping[str, float], churned: bool) -> str | None:
        """Look at a labelled prediction; the new champion's name if it promoted one."""
        promotion = self.promotion
        if promotion is None:  # none unless there are two models (configure)
            return None
        champion, challenger = self.churn
        if not promotion.observe(scores, churned, champion=champion, challenger=challenger):
            return None
        return self._promote()

    def pool_promotion(self, others: Mapping[tuple[str, str], Moments]) -> str | None:
        """Add other partitions' evidence to the promotion test; the new champion if it promoted.

        ``others``: their paired differences by ``(champion, challenger)``
        (:meth:`ChurnPromotion.pool`).
        """
        promotion = self.promotion
        if promotion is None or not others:
            return None
        champion, challenger = self.churn
        if not promotion.pool(others, champion=champion, challenger=challenger):
            return None
        return self._promote()

    def _promote(self) -> str:
        champion, challenger = self.churn
        self.churn = {challenger: self.churn[challenger], champion: self.churn[champion]}
        return challenger

    @property
    def champion(self) -> tuple[str, ChurnModel]:
        """Name and model of the churn champion."""
        return next(iter(self.churn.items()))
