"""A win-back holdout on the closed loop: the lift of the message on 7-day return.

The closed-loop simulator's viewers answer messages (:mod:`pipeline.sim.home_screen`: a
``win_back`` that reaches a viewer who has not left brings them back with some chance).
The core runs an experiment whose ``holdout`` arm sets ``crm_holdout: ["win_back"]``: its
users' win-backs are published as ``withheld`` and never reach them. From what the core
published (``ott.actions`` records) and the events the viewers made, each user counts once,
from their first win-back, as returned when they have an event within 7 days after it
(:func:`pipeline.crm.holdout_lift`, always-valid statistics looked at daily).

It also checks, from the records alone, the caps (at most ``OTTSCORE_CRM_DAILY_CAP`` a
user-day, never one type twice within ``OTTSCORE_CRM_TYPE_GAP_S``) and that no trigger id
repeats.

Run from the repository root (one process per seed)::

    python docs/crm_holdout.py --users 3000 --days 90 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import Settings  # noqa: E402
from pipeline.core.events import format_ts, parse_ts  # noqa: E402
from pipeline.core.features import DAY_MS  # noqa: E402
from pipeline.core.processor import Processor  # noqa: E402
from pipeline.crm.lift import holdout_lift  # noqa: E402
from pipeline.sim.closed_loop import ClosedLoop, ClosedLoopConfig  # noqa: E402
from pipeline.sim.list_policies import ProcessorLists  # noqa: E402


def experiment(start_ms: int) -> dict[str, Any]:
    """Half the users held out of win-back messages."""
    return {
        "schema_version": 1,
        "id": "winback-holdout",
        "salt": "winback-holdout-1",
        "start": format_ts(start_ms),
        "metrics": ["watch_seconds_per_user"],
        "variants": [
            {"name": "holdout", "weight": 0.5, "control": True,
             "knobs": {"crm_holdout": ["win_back"]}},
            {"name": "send", "weight": 0.5},
        ],
    }  # fmt: skip


def run(users: int, days: float, seed: int) -> dict[str, Any]:
    config = ClosedLoopConfig(users=users, days=days, seed=seed)
    loop = ClosedLoop(config)
    processor = Processor(Settings(), clock=lambda: 4.1e9)
    processor.load_experiments([experiment(config.start_ms)])
    policy = ProcessorLists(processor, catalog=loop.catalog_records())
    result = loop.run(policy)
    actions = policy.actions
    lift = holdout_lift(
        actions, ((e.user_id, e.ts_ms) for e in result.events), end_ms=config.end_ms
    )
    per_day = Counter((a["user_id"], parse_ts(a["ts"]) // DAY_MS) for a in actions)
    times: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
    for action in actions:
        times[action["user_id"], action["type"]].append(parse_ts(action["ts"]))
    gap_ms = int(Settings().crm_type_gap_s * 1000)
    type_gaps = 0
    for ts in times.values():
        ts.sort()
        type_gaps += sum(b - a < gap_ms for a, b in zip(ts, ts[1:], strict=False))
    return {
        "seed": seed,
        "users": users,
        "actions": Counter(f"{a['type']}/{a['status']}" for a in actions),
        "cap_violations": sum(n > Settings().crm_daily_cap for n in per_day.values()) + type_gaps,
        "duplicate_ids": len(actions) - len({a["trigger_id"] for a in actions}),
        "comebacks": len(result.comebacks),
        "lift": lift,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--days", type=float, default=90)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    with ProcessPoolExecutor(max_workers=2) as pool:
        n = len(args.seeds)
        results = list(pool.map(run, [args.users] * n, [args.days] * n, args.seeds))
    for r in results:
        lift = r["lift"]
        low, high = lift.interval
        rates = lift.rates
        print(
            f"seed {r['seed']} users {r['users']}: {dict(sorted(r['actions'].items()))}; "
            f"cap violations {r['cap_violations']}, duplicate ids {r['duplicate_ids']}, "
            f"viewers won back {r['comebacks']}"
        )
        print(
            f"  win-back 7-day return: withheld {lift.returned[0]}/{lift.users[0]} = "
            f"{rates[0]:.3f}, sent {lift.returned[1]}/{lift.users[1]} = {rates[1]:.3f}; "
            f"lift {lift.difference:+.3f} ({lift.relative:+.0%}), always-valid 95 % interval "
            f"[{low:+.3f}, {high:+.3f}], p {lift.p_value:.2g} after {lift.looks} daily looks"
        )


if __name__ == "__main__":
    main()
