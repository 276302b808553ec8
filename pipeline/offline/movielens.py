r"""MovieLens ratings as ottscore events, and the plain-River reference they are checked against.

Two layouts are read: ml-100k (``u.data``: tab-separated user, item, rating, unix time;
genres as 19 flags in ``u.item``) and ml-latest (``ratings.csv`` and ``movies.csv``).
Each rating becomes one ``play`` event that keeps the rating: user ``ml-<userId>``, item
``ml-<movieId>``, a nominal 6000 s duration watched in proportion to the rating (a 5-star
rating watched to the end), event time the rating's. Events are in event-time order;
ratings given in the same second keep their file order (a stable sort).

Examples
--------
>>> import pathlib, tempfile
>>> tmp = tempfile.TemporaryDirectory(); d = pathlib.Path(tmp.name)
>>> _ = (d / "u.data").write_text("1\t10\t4\t881250949\n2\t10\t5\t881250900\n")
>>> ratings = read_ratings(d)
>>> ratings.users.tolist(), ratings.ratings.tolist(), ratings.timestamps.tolist()
([2, 1], [5.0, 4.0], [881250900, 881250949])
>>> import_movielens(d, d / "events.jsonl")
2
>>> print((d / "events.jsonl").read_text().splitlines()[1])
{"event_id":"ml-1-10-881250949","type":"play","user_id":"ml-1","ts":"1997-12-04T15:55:49.000Z","schema_version":1,"item_id":"ml-10","position_s":4800.0,"duration_s":6000.0,"rating":4.0}
>>> tmp.cleanup()

"""

from __future__ import annotations

import csv
from array import array
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from pipeline.core.events import Event, encode_event

__all__ = [
    "MAX_RATING",
    "NOMINAL_DURATION_S",
    "Ratings",
    "import_movielens",
    "read_catalog",
    "read_ratings",
    "river_progressive_errors",
]

MAX_RATING = 5.0
"""Top of the MovieLens scale (ml-100k: 1 to 5 stars; ml-latest: 0.5 to 5)."""

NOMINAL_DURATION_S = 6000.0
"""Duration given to every film: MovieLens does not say how long a film is."""

ML_100K_GENRES = (
    "unknown", "action", "adventure", "animation", "children's", "comedy", "crime",
    "documentary", "drama", "fantasy", "film-noir", "horror", "musical", "mystery", "romance",
    "sci-fi", "thriller", "war", "western",
)  # fmt: skip
"""The 19 genre flags of ml-100k's ``u.item``, in order (``u.genre`` says the same)."""


@dataclass(frozen=True, slots=True)
class Ratings:
    """MovieLens ratings as parallel arrays, in event-time order (stable for ties)."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def pairs(self) -> Iterator[tuple[dict[Hashable, Any], float]]:
        """``({"user": "ml-<u>", "item": "ml-<i>"}, rating)``: River's reco dataset shape."""
        for user, item, rating in zip(
            self.users.tolist(), self.items.tolist(), self.ratings.tolist(), strict=True
        ):
            yield {"user": f"ml-{user}", "item": f"ml-{item}"}, rating


def _rows(directory: Path) -> Iterator[list[str]]:
    if (directory / "u.data").exists():
        with open(directory / "u.data", encoding="ascii") as lines:
            yield from (line.split("\t") for line in lines if line.strip())
    elif (directory / "ratings.csv").exists():
        with open(directory / "ratings.csv", encoding="utf-8", newline="") as lines:
            rows = csv.reader(lines)
            header = next(rows, None)
            if header != ["userId", "movieId", "rating", "timestamp"]:
                raise ValueError(f"ratings.csv: unexpected header {header}")
            yield from rows
    else:
        raise FileNotFoundError(
            f"{directory}: neither u.data (ml-100k) nor ratings.csv (ml-latest)"
        )


def read_ratings(directory: str | Path) -> Ratings:
    """Read the ratings of a MovieLens directory, sorted by time (ties keep file order).

    Raises
    ------
    FileNotFoundError
        When ``directory`` holds neither ``u.data`` nor ``ratings.csv``.

    """
    users, items, timestamps = array("q"), array("q"), array("q")
    ratings = array("d")
    for user, item, rating, timestamp in _rows(Path(directory)):
        users.append(int(user))
        items.append(int(item))
        ratings.append(float(rating))
        timestamps.append(int(timestamp))
    ts = np.frombuffer(timestamps, dtype=np.int64)
    order = np.argsort(ts, kind="stable")
    return Ratings(
        users=np.frombuffer(users, dtype=np.int64)[order],
        items=np.frombuffer(items, dtype=np.int64)[order],
        ratings=np.frombuffer(ratings, dtype=np.float64)[order],
        timestamps=ts[order],
    )


def read_catalog(directory: str | Path) -> Iterator[dict[str, Any]]:
    """Catalog records ``{item_id, title, genres, duration_s}`` from ``u.item`` or ``movies.csv``.

    Genres are lower-cased; ml-latest's ``(no genres listed)`` is an empty list.
    """
    directory = Path(directory)
    if (directory / "u.item").exists():
        with open(directory / "u.item", encoding="latin-1") as lines:
            for line in filter(str.strip, lines):
                fields = line.rstrip("\n").split("|")
                flags = fields[5:]
                genres = [g for g, flag in zip(ML_100K_GENRES, flags, strict=True) if flag == "1"]
                yield _item(fields[0], fields[1], genres)
    elif (directory / "movies.csv").exists():
        with open(directory / "movies.csv", encoding="utf-8", newline="") as lines:
            for row in csv.DictReader(lines):
                genres = row["genres"].split("|") if row["genres"] != "(no genres listed)" else []
                yield _item(row["movieId"], row["title"], [g.lower() for g in genres])
    else:
        raise FileNotFoundError(f"{directory}: neither u.item (ml-100k) nor movies.csv (ml-latest)")


def _item(movie_id: str, title: str, genres: list[str]) -> dict[str, Any]:
    return {
        "item_id": f"ml-{movie_id}",
        "title": title,
        "genres": genres,
        "duration_s": NOMINAL_DURATION_S,
    }


def import_movielens(
    directory: str | Path, out_path: str | Path, *, catalog_out: str | Path | None = None
) -> int:
    """Write the ratings of ``directory`` as ``play`` events to ``out_path``, one JSON a line.

    Parameters
    ----------
    directory
        An ml-100k or ml-latest directory.
    out_path
        The events file (JSONL), in event-time order.
    catalog_out
        Where to write the catalog (JSONL), if wanted.

    Returns
    -------
    int
        The number of events written.

    """
    ratings = read_ratings(directory)
    with open(out_path, "wb") as out:
        for user, item, rating, timestamp in zip(
            ratings.users.tolist(),
            ratings.items.tolist(),
            ratings.ratings.tolist(),
            ratings.timestamps.tolist(),
            strict=True,
        ):
            event = Event(
                event_id=f"ml-{user}-{item}-{timestamp}",
                type="play",
                user_id=f"ml-{user}",
                ts_ms=timestamp * 1000,
                item_id=f"ml-{item}",
                position_s=rating / MAX_RATING * NOMINAL_DURATION_S,
                duration_s=NOMINAL_DURATION_S,
                rating=rating,
            )
            out.write(encode_event(event) + b"\n")
    if catalog_out is not None:
        with open(catalog_out, "wb") as out:
            for record in read_catalog(directory):
                out.write(orjson.dumps(record) + b"\n")
    return len(ratings)


def river_progressive_errors(ratings: Ratings, model: Any) -> dict[str, float]:
    """MAE and RMSE of a River recommender under ``evaluate.progressive_val_score``.

    The reference that ottscore's explicit mode is checked against: ``model`` (e.g. a
    ``river.reco.BiasedMF``) predicts each rating before learning it, in ``ratings``'
    order. River's regression metrics take a regressor, so the recommender is adapted to
    one that reads ``user`` and ``item`` from ``x``.

    Examples
    --------
    >>> from river import reco
    >>> r = Ratings(*map(np.asarray, ([1, 2, 1], [7, 7, 8], [4.0, 2.0, 5.0], [1, 2, 3])))
    >>> errors = river_progressive_errors(r, reco.BiasedMF(seed=1))
    >>> sorted(errors), errors["mae"] <= errors["rmse"]
    (['mae', 'rmse'], True)

    """
    from river import base, evaluate, metrics

    class RankerAsRegressor(base.Regressor):
        def learn_one(self, x: dict[Hashable, Any], y: float) -> None:
            model.learn_one(x["user"], x["item"], y)

        def predict_one(self, x: dict[Hashable, Any]) -> float:
            return float(model.predict_one(x["user"], x["item"]))

    metric = metrics.MAE() + metrics.RMSE()
    evaluate.progressive_val_score(ratings.pairs(), RankerAsRegressor(), metric)
    mae, rmse = metric
    return {"mae": mae.get(), "rmse": rmse.get()}
