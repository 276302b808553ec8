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
from typing import Any

from pipeline.config import Settings
from pipeline.models.churn import ChurnModel, make_churn_model
from pipeline.models.reco.items import ItemIndex
from pipeline.models.reco.recommender import RatingModel, Recommender
from pipeline.models.segments import Segmenter
from pipeline.serde.snapshots import stored_as

__all__ = ["PartitionModels"]


@stored_as("PartitionModels")
@dataclass(slots=True)
class PartitionModels:
    """The models of one partition.

    Churn champion (first) and challenger, recommender, segments and, in explicit mode,
    the rating model.
    """

    items: ItemIndex
    churn: dict[str, ChurnModel]
    recommender: Recommender
    segmenter: Segmenter
    ratings: RatingModel | None

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
        return cls(
            items=items,
            churn={
                name: make_churn_model(name, horizon_days=settings.churn_horizon_days)
                for name in names
            },
            recommender=Recommender(items, seed=partition),
            segmenter=Segmenter(n_segments=settings.segments, seed=partition),
            ratings=RatingModel() if settings.reco_mode == "explicit" else None,
        )

    @property
    def champion(self) -> tuple[str, ChurnModel]:
        """Name and model of the churn champion."""
        return next(iter(self.churn.items()))
