"""Churn and list quality over a matrix of simulator scenarios, seeds and partition counts.

Usage::

    python docs/quality_matrix.py --users 600 --days 60 --seeds 1 2 3 --partitions 1 16
    python docs/quality_matrix.py --partitions 1 16 64 --share-every-s 3600

Each cell simulates the scenario (``pipeline/sim/scenarios.py``) and runs ``ottscore
evaluate`` over it at each partition count (records placed as Kafka's partitioner does),
the partitions' learning merged each ``--share-every-s`` of event time when given.
Prints one row per cell: the published churn AUC and its ECE, the Poisson heuristic's
AUC, the 7-day re-score's AUC beside the same users' session-end score, hit-rate@10 and
trending's, the promotions of the challenger (after one, the published scores are the
heuristic's); then the worst cell of each column (the highest ECE and promotions, the
lowest of the rest). ``--promotion-alpha 0`` measures the
champion alone.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from pipeline.config import Settings
from pipeline.offline.evaluate import evaluate
from pipeline.sim.scenarios import SCENARIOS
from pipeline.sim.simulate import SimulationConfig, Simulator, write_catalog, write_jsonl

COLUMNS = {
    "churn AUC": "churn.published.auc",
    "poisson AUC": "churn.poisson.auc",
    "ECE": "churn.published.ece",
    "silent 7d: rescore": "churn.inactive_7d.auc",
    "session end": "churn.session_end_7d.auc",
    "hit@10": "reco.hit_rate_at_10",
    "trending": "reco.trending_hit_rate_at_10",
    "promotions": "churn.promotions",
}

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--users", type=int, default=600)
parser.add_argument("--days", type=float, default=60.0)
parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
parser.add_argument("--partitions", type=int, nargs="+", default=[1])
parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
parser.add_argument(
    "--share-every-s", type=float, default=0.0, help="as ottscore evaluate's (0: no sharing)"
)
parser.add_argument("--share-mode", choices=["sum", "mean", "workers"], default="sum")
parser.add_argument(
    "--promotion-alpha",
    type=float,
    default=Settings().churn_promotion_alpha,
    help="as OTTSCORE_CHURN_PROMOTION_ALPHA; 0 keeps the champion (its own quality)",
)
args = parser.parse_args()


def cell(value: float | None) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.3f}"


rows = []
with tempfile.TemporaryDirectory() as work:
    for scenario in args.scenarios:
        for seed in args.seeds:
            config = SimulationConfig(args.users, args.days, seed, scenario=scenario)
            simulator = Simulator(config)
            events, catalog = Path(work) / "events.jsonl", Path(work) / "catalog.jsonl"
            write_jsonl(simulator.records(), events)
            write_catalog(simulator.catalog(), catalog)
            for partitions in args.partitions:
                report = evaluate(
                    events,
                    settings=Settings(churn_promotion_alpha=args.promotion_alpha),
                    catalog_path=catalog,
                    partitions=partitions,
                    share_every_s=args.share_every_s,
                    share_mode=args.share_mode,
                    progress=False,
                )
                rows.append((scenario, seed, partitions, [report.get(k) for k in COLUMNS.values()]))
                cells = " ".join(cell(v) for v in rows[-1][3])
                print(f"{scenario:<10} seed {seed} partitions {partitions:>2}: {cells}", flush=True)

print()
print("| scenario | seed | partitions | " + " | ".join(COLUMNS) + " |")
print("|---|---|---|" + "---|" * len(COLUMNS))
for scenario, seed, partitions, values in rows:
    cells = " | ".join(cell(v) for v in values)
    print(f"| {scenario} | {seed} | {partitions} | {cells} |")
HIGHER_IS_WORSE = {"ECE", "promotions"}
worst = [
    (max if name in HIGHER_IS_WORSE else min)(v[3][i] for v in rows if v[3][i] is not None)
    for i, name in enumerate(COLUMNS)
]
print("| worst | | | " + " | ".join(cell(v) for v in worst) + " |")
