"""Behavioural segments (online k-means) and genre audiences (fans and clients).

:class:`Segmenter` clusters users' churn feature vectors, scaled, with River's online
``KMeans`` at each session end. Cluster numbers of k-means are arbitrary and differ
between partitions, so the published ``segment`` is the cluster's *rank by engagement*
(its centre's scaled ``sessions_28d``): segment 0 is the least engaged behaviour,
segment ``k-1`` the most, on every partition.

:func:`audience` splits users for a genre the way the market leader frames it: **fans**
spend a large share of their watch time on the genre; **clients** are active
subscribers who spend little or none on it (the audience to win over).

Examples
--------
>>> seg = Segmenter(n_segments=2, seed=1)
>>> for i in range(200):
...     seg.learn_one({"sessions_28d": 20.0 + i % 3, "watch_hours_7d": 9.0})
...     seg.learn_one({"sessions_28d": 0.5, "watch_hours_7d": 0.1 * (i % 3)})
>>> seg.predict_one({"sessions_28d": 21.0, "watch_hours_7d": 9.0})
1
>>> audience({"ana": {"drama": 90.0, "crime": 10.0}, "bo": {"comedy": 50.0}}, "drama")
{'fans': ['ana'], 'clients': ['bo']}
"""

from __future__ import annotations

from collections.abc import Mapping

from river import cluster, preprocessing

from pipeline.serde.snapshots import stored_as

__all__ = ["Segmenter", "audience"]

_ENGAGEMENT = "sessions_28d"


@stored_as("Segmenter")
class Segmenter:
    """Online k-means over scaled features; segments ranked by engagement."""

    def __init__(self, *, n_segments: int, seed: int = 0) -> None:
        self.scaler = preprocessing.StandardScaler()
        self.kmeans = cluster.KMeans(n_clusters=n_segments, halflife=0.05, sigma=1.0, seed=seed)

    def learn_one(self, x: Mapping[str, float]) -> None:
        """Move the scaler and the nearest centroid towards ``x``."""
        self.scaler.learn_one(dict(x))
        self.kmeans.learn_one(self._scaled(x))

    def learn_predict_one(self, x: Mapping[str, float]) -> int:
        """Learn ``x``, then its segment (as :meth:`predict_one` would give it), in one pass.

        The centre that moves is the nearest, and moving towards ``x`` keeps it nearest.
        """
        self.scaler.learn_one(dict(x))
        scaled = self._scaled(x)
        return self._rank(self.kmeans.learn_predict_one(scaled))

    def predict_one(self, x: Mapping[str, float]) -> int:
        """The segment of ``x``: the engagement rank of its nearest centre."""
        return self._rank(self.kmeans.predict_one(self._scaled(x)))

    def _scaled(self, x: Mapping[str, float]) -> dict[str, float]:
        scaled = self.scaler.transform_one(dict(x))
        # River's centres draw a random start for each feature when they first meet it, in
        # the order of a set of names, which varies with the interpreter's hash seed: give
        # every feature its start in the order of ``x``, so segments repeat from run to run.
        for centre in self.kmeans.centers.values():
            if len(centre) < len(scaled):
                for name in scaled:
                    centre[name]  # noqa: B018 - the defaultdict draws the start here
        return scaled

    def _rank(self, nearest: int) -> int:
        engagement = {c: centre.get(_ENGAGEMENT, 0.0) for c, centre in self.kmeans.centers.items()}
        return sorted(engagement, key=engagement.__getitem__).index(nearest)


def audience(
    affinities: Mapping[str, Mapping[str, float]],
    genre: str,
    *,
    fan_share: float = 0.3,
    client_share: float = 0.05,
) -> dict[str, list[str]]:
    """Fans (share of watch time on ``genre`` ≥ ``fan_share``) and clients (< ``client_share``).

    ``affinities`` maps each active user to their watch time per genre; users in between
    the two thresholds are in neither list.
    """
    fans: list[str] = []
    clients: list[str] = []
    for user_id, per_genre in affinities.items():
        total = sum(per_genre.values())
        share = per_genre.get(genre, 0.0) / total if total else 0.0
        if share >= fan_share:
            fans.append(user_id)
        elif share < client_share:
            clients.append(user_id)
    return {"fans": sorted(fans), "clients": sorted(clients)}
