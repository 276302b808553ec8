"""Compare ottscore's explicit mode with plain River ``BiasedMF`` on a MovieLens directory.

Usage::

    python docs/movielens_parity.py path/to/ml-latest-small

Both run prequentially (predict each rating, then learn it) over the ratings in time
order, with the same ``BiasedMF`` set-up
(:func:`pipeline.models.reco.recommender.explicit_mf_params`):
ottscore through ``evaluate`` on the imported events and catalog (its rating model also
learns through the items' genres: :class:`~pipeline.models.reco.recommender.RatingModel`),
River under ``evaluate.progressive_val_score``. Prints the two MAE/RMSE pairs and their
ratio.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from river import reco

from pipeline.config import Settings
from pipeline.models.reco.recommender import explicit_mf_params
from pipeline.offline.evaluate import evaluate
from pipeline.offline.movielens import import_movielens, read_ratings, river_progressive_errors

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("directory", type=Path, help="ml-100k (u.data) or ml-latest (ratings.csv)")
args = parser.parse_args()

with tempfile.TemporaryDirectory() as work:
    events, catalog = Path(work) / "events.jsonl", Path(work) / "catalog.jsonl"
    count = import_movielens(args.directory, events, catalog_out=catalog)
    report = evaluate(events, settings=Settings(reco_mode="explicit"), catalog_path=catalog)
river = river_progressive_errors(
    read_ratings(args.directory), reco.BiasedMF(**explicit_mf_params())
)

print(f"{count} ratings from {args.directory}")
print(f"{'':<22}{'MAE':>8}{'RMSE':>8}")
print(f"{'ottscore evaluate':<22}{report['reco.mae']:>8.4f}{report['reco.rmse']:>8.4f}")
print(f"{'River progressive':<22}{river['mae']:>8.4f}{river['rmse']:>8.4f}")
print(f"{'ottscore / River':<22}{report['reco.mae'] / river['mae']:>8.4f}"
      f"{report['reco.rmse'] / river['rmse']:>8.4f}")  # fmt: skip
