"""Each signal of the ranker earns its place: hit-rate@10 with each left out, per scenario.

Usage::

    python docs/ranker_ablation.py --users 400 --days 45 --seeds 1 2 3

For each scenario (``pipeline/sim/scenarios.py``) and seed, ``ottscore evaluate`` runs the
simulation with all four signals, then with each left out (``OTTSCORE_RECO_ABLATE``: the
ranker never sees it vary, so it gets no weight). Prints the mean hit-rate@10 over the
seeds per scenario and variant, trending's, and each signal's contribution (all signals
minus without it).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from pipeline.config import Settings
from pipeline.offline.evaluate import evaluate
from pipeline.sim.scenarios import SCENARIOS
from pipeline.sim.simulate import SimulationConfig, Simulator, write_catalog, write_jsonl

SIGNALS = ("popularity", "genre", "sequel", "taste")
VARIANTS = {"all signals": (), **{f"no {s}": (s,) for s in SIGNALS}}

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--users", type=int, default=400)
parser.add_argument("--days", type=float, default=45.0)
parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
parser.add_argument(
    "--scenarios", nargs="+", default=["baseline", "breaks", "returners", "all"],
    choices=list(SCENARIOS),
)  # fmt: skip
args = parser.parse_args()

hits: dict[tuple[str, str], list[float]] = {}
trending: dict[str, list[float]] = {}
with tempfile.TemporaryDirectory() as work:
    for scenario in args.scenarios:
        for seed in args.seeds:
            simulator = Simulator(SimulationConfig(args.users, args.days, seed, scenario=scenario))
            events, catalog = Path(work) / "events.jsonl", Path(work) / "catalog.jsonl"
            write_jsonl(simulator.records(), events)
            write_catalog(simulator.catalog(), catalog)
            for variant, left_out in VARIANTS.items():
                report = evaluate(
                    events,
                    settings=Settings(reco_ablate=left_out),
                    catalog_path=catalog,
                    progress=False,
                )
                hits.setdefault((scenario, variant), []).append(report["reco.hit_rate_at_10"])
                if not left_out:
                    trending.setdefault(scenario, []).append(report["reco.trending_hit_rate_at_10"])
                print(f"{scenario} seed {seed} {variant}: {report['reco.hit_rate_at_10']:.4f}",
                      flush=True)  # fmt: skip

print()
print("| scenario | " + " | ".join(VARIANTS) + " | trending |")
print("|---|" + "---|" * (len(VARIANTS) + 1))
for scenario in args.scenarios:
    means = [statistics.mean(hits[scenario, v]) for v in VARIANTS]
    cells = " | ".join(f"{m:.4f}" for m in means)
    print(f"| {scenario} | {cells} | {statistics.mean(trending[scenario]):.4f} |")
print()
print("| scenario | " + " | ".join(f"{s} adds" for s in SIGNALS) + " |")
print("|---|" + "---|" * len(SIGNALS))
for scenario in args.scenarios:
    full = statistics.mean(hits[scenario, "all signals"])
    adds = [full - statistics.mean(hits[scenario, f"no {s}"]) for s in SIGNALS]
    print(f"| {scenario} | " + " | ".join(f"{a:+.4f}" for a in adds) + " |")
