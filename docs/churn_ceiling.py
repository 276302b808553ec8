"""Where a scenario's churn positives come from, and the AUC no model of the events can pass.

Usage::

    python docs/churn_ceiling.py --users 600 --days 60 --seeds 1 2 3

A churn label is positive when the user has no event within the horizon (14 days) after
the session scored. In a simulation the truth is known: a positive is either a
**departure** (a churner leaves within the horizon) or a **silence** of a viewer who stays
(a break that, with their usual gaps on either side, passes the horizon). For each
scenario and seed this runs ``ottscore evaluate`` with its predictions file (one line per
model and session-end prediction: the champion's and the Poisson heuristic's), joins the
labels with the simulated profiles and prints:

- the positives of each kind;
- the champion's and the heuristic's AUC (all positives against all negatives), and each
  against the negatives with the departures only and with the silences only;
- the AUC of a score that knows who is a churner in decline when it scores (1 then, else
  0): what the decline that foretells most departures is worth alone;
- a ceiling: the AUC of a score that ranks every departure first without error and every
  other prediction as the better of the two models does (so the silences as that model
  ranks them). Breaks start at random times, independent of what came before, so nothing
  in the events foretells a silence beyond a viewer's rate; this is the most any model of
  the events can hope for, and generous: no model finds every departure.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson

from pipeline.config import Settings
from pipeline.core.events import parse_ts
from pipeline.models.quality import exact_auc
from pipeline.offline.evaluate import evaluate
from pipeline.sim.scenarios import SCENARIOS
from pipeline.sim.simulate import SimulationConfig, Simulator, write_catalog, write_jsonl

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--users", type=int, default=600)
parser.add_argument("--days", type=float, default=60.0)
parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
args = parser.parse_args()


def auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    scores = np.concatenate([positives, negatives])
    labels = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))])
    return exact_auc(labels, scores) if len(positives) and len(negatives) else float("nan")


settings = Settings()
horizon_ms = int(settings.churn_horizon_s * 1000)
header = (
    "| scenario | seed | positives: departures | silences | champion AUC | Poisson AUC "
    "| champion: departures | silences | Poisson: departures | silences "
    "| knows the decline | ceiling |"
)
rows = []
with tempfile.TemporaryDirectory() as work:
    for scenario in args.scenarios:
        for seed in args.seeds:
            simulator = Simulator(SimulationConfig(args.users, args.days, seed, scenario=scenario))
            events, catalog = Path(work) / "events.jsonl", Path(work) / "catalog.jsonl"
            predictions = Path(work) / "predictions.jsonl"
            write_jsonl(simulator.records(), events)
            write_catalog(simulator.catalog(), catalog)
            evaluate(
                events,
                settings=settings,
                catalog_path=catalog,
                predictions_path=predictions,
                progress=False,
            )
            by_prediction: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
            labels: dict[tuple[str, str], tuple[int, int, int]] = {}
            for line in predictions.read_bytes().splitlines():
                p = orjson.loads(line)
                key = (p["user_id"], p["predicted_at"])
                by_prediction[key][p["model"]] = p["churn_probability"]
                labels[key] = (p["label"], parse_ts(p["last_seen"]), parse_ts(p["predicted_at"]))
            profiles = {profile.user_id: profile for profile in simulator.profiles}
            kinds, champion, poisson, declining = [], [], [], []
            for key, (label, last_seen, predicted_at) in labels.items():
                profile = profiles[key[0]]
                leave = profile.leave_ms
                departs = leave is not None and last_seen <= leave < last_seen + horizon_ms
                kinds.append(0 if not label else 1 if departs else 2)
                champion.append(by_prediction[key][settings.churn_model])
                poisson.append(by_prediction[key]["poisson"])
                declining.append(
                    leave is not None and leave - profile.decline_ms <= predicted_at <= leave
                )
            kind, champ, pois = np.array(kinds), np.array(champion), np.array(poisson)
            decline = np.array(declining, dtype=float)
            neg, dep, sil = kind == 0, kind == 1, kind == 2
            both = kind > 0
            cells = {
                "departures": int(dep.sum()),
                "silences": int(sil.sum()),
                "champion": auc(champ[both], champ[neg]),
                "poisson": auc(pois[both], pois[neg]),
                "champion_dep": auc(champ[dep], champ[neg]),
                "champion_sil": auc(champ[sil], champ[neg]),
                "poisson_dep": auc(pois[dep], pois[neg]),
                "poisson_sil": auc(pois[sil], pois[neg]),
                "decline": auc(decline[both], decline[neg]),
            }
            # departures ranked first without error; the rest as the better model ranks them
            best = champ if cells["champion_sil"] >= cells["poisson_sil"] else pois
            share = float(dep.sum() / both.sum())
            silences = max(cells["champion_sil"], cells["poisson_sil"])
            cells["ceiling"] = share + (1 - share) * silences
            assert abs(auc(np.where(dep, 2.0, best)[both], best[neg]) - cells["ceiling"]) < 1e-9
            rows.append((scenario, seed, cells))
            print(scenario, seed, {k: round(v, 3) for k, v in cells.items()}, flush=True)

print()
print(header)
print("|---" * (header.count("|") - 1) + "|")
for scenario, seed, c in rows:
    print(
        f"| {scenario} | {seed} | {c['departures']} | {c['silences']} | {c['champion']:.3f} "
        f"| {c['poisson']:.3f} | {c['champion_dep']:.3f} | {c['champion_sil']:.3f} "
        f"| {c['poisson_dep']:.3f} | {c['poisson_sil']:.3f} | {c['decline']:.3f} "
        f"| {c['ceiling']:.3f} |"
    )
