"""Artwork policies on the closed loop: take rates, bootstrap intervals, regret, and IPS.

For each user count and seed, the closed-loop simulator (titles with 4 to 10 artworks, the
viewers' hidden taste in them: :mod:`pipeline.sim.artworks`) runs three times, once per
``OTTSCORE_ARTWORK_POLICY`` (bandit, popular, random), the same users and draws each time.
It prints, from the home screens the viewers saw and their events:

- the take rate of each policy (takes per artwork shown on a home screen);
- the bandit's relative lift over popular and over random, with a 95 % bootstrap interval
  (users resampled, the same users in both runs);
- the bandit's regret per show and its growth: cumulative regret after all shows over that
  after the first half (below 2: it learns; 1.41 for regret growing as the square root);
- the second half's share of wrong pictures per kind of viewer (device): shows of titles
  that had an artwork of the viewer's tag, given another (where regret comes from);
- from the bandit run's own log (ended shows and their propensities, as ``ottscore
  evaluate`` reports them), the IPS and self-normalised IPS estimates of ``random`` and
  ``popular``, beside the take rate ottscore measured in their own runs.

Run from the repository root (2 processes)::

    python docs/artwork_bandit.py --users 1000 2000 --days 45 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import Settings  # noqa: E402
from pipeline.core.artwork import ArtworkTrial  # noqa: E402
from pipeline.core.processor import Processor  # noqa: E402
from pipeline.models.offpolicy import ips, snips  # noqa: E402
from pipeline.sim.artworks import TAGS, take_outcomes, wrong_tag_shares  # noqa: E402
from pipeline.sim.closed_loop import ClosedLoop, ClosedLoopConfig  # noqa: E402
from pipeline.sim.list_policies import ProcessorLists  # noqa: E402

POLICIES = ("bandit", "popular", "random")


def run(users: int, days: float, seed: int, policy: str) -> dict[str, Any]:
    """One closed-loop run under ``policy``: per-user shows and takes, regret, the log."""
    config = ClosedLoopConfig(users=users, days=days, seed=seed, artworks=(4, 10))
    loop = ClosedLoop(config)
    trials: list[ArtworkTrial] = []
    processor = Processor(
        Settings(artwork_policy=policy), clock=lambda: 4.1e9, artwork_sink=trials.append
    )
    result = loop.run(ProcessorLists(processor, catalog=loop.catalog_records()))
    assert loop.artworks is not None
    user_ids = [p.user_id for p in loop.profiles]
    outcomes = take_outcomes(result, loop.artworks, user_ids)
    times = [event.ts_ms for event in result.events]
    half_ms = (min(times) + max(times)) // 2
    return {
        "shows": outcomes.shows,
        "takes": outcomes.takes,
        "growth": outcomes.regret_growth(),
        "regret_per_show": float(outcomes.regret[-1] / max(len(outcomes.regret), 1)),
        "logged": np.array([t.reward for t in trials]),
        "propensity": np.array([t.shown.propensity for t in trials]),
        "p_random": np.array([1.0 / t.shown.choices for t in trials]),
        "p_popular": np.array([t.shown.p_popular for t in trials]),
        "wrong_late": wrong_tag_shares(result, loop.artworks, user_ids, after_ms=half_ms),
        "tags": {device: TAGS[tag] for device, tag in loop.artworks.by_device.items()},
    }


def lift(a: dict[str, Any], b: dict[str, Any], rng: np.random.Generator) -> tuple[float, ...]:
    """Relative lift of ``a``'s take rate over ``b``'s, and its 95 % bootstrap interval."""

    def ratio(index: np.ndarray) -> float:
        rate_a = a["takes"][index].sum() / a["shows"][index].sum()
        rate_b = b["takes"][index].sum() / b["shows"][index].sum()
        return float(rate_a / rate_b - 1.0)

    users = len(a["shows"])
    point = ratio(np.arange(users))
    draws = [ratio(rng.integers(users, size=users)) for _ in range(1_000)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return point, float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--days", type=float, default=45.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    jobs = [(u, args.days, s, p) for u in args.users for s in args.seeds for p in POLICIES]
    with ProcessPoolExecutor(args.workers) as pool:
        results = dict(zip(jobs, pool.map(run, *zip(*jobs, strict=True)), strict=True))
    print(
        "| users | seed | take rate bandit / popular / random | bandit vs popular [95 % CI] "
        "| bandit vs random [95 % CI] | regret/show, growth "
        "| IPS random (measured) "
        "| IPS popular (measured) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for users in args.users:
        for seed in args.seeds:
            got = {p: results[(users, args.days, seed, p)] for p in POLICIES}
            rng = np.random.default_rng(seed)
            rates = [got[p]["takes"].sum() / got[p]["shows"].sum() for p in POLICIES]
            vs_popular = lift(got["bandit"], got["popular"], rng)
            vs_random = lift(got["bandit"], got["random"], rng)
            bandit = got["bandit"]
            measured = {p: float(got[p]["logged"].mean()) for p in ("popular", "random")}
            estimates = []
            for name in ("random", "popular"):
                target = bandit[f"p_{name}"]
                a = ips(bandit["logged"], bandit["propensity"], target)
                b = snips(bandit["logged"], bandit["propensity"], target)
                estimates.append(
                    f"{a.value:.4f} ± {a.se:.4f} / SN {b.value:.4f} ({measured[name]:.4f})"
                )
            print(
                f"| {users} | {seed} | {' / '.join(f'{r:.4f}' for r in rates)} "
                f"| {vs_popular[0]:+.1%} [{vs_popular[1]:+.1%}, {vs_popular[2]:+.1%}] "
                f"| {vs_random[0]:+.1%} [{vs_random[1]:+.1%}, {vs_random[2]:+.1%}] "
                f"| {bandit['regret_per_show']:.3f}, {bandit['growth']:.2f} "
                f"| {estimates[0]} | {estimates[1]} |"
            )
    print()
    print(
        "Second half of each run: per viewer device (its tag), the share of shows given "
        "another tag where the title had one of the viewer's (shows), bandit / popular"
    )
    print()
    for users in args.users:
        for seed in args.seeds:
            got = {p: results[(users, args.days, seed, p)] for p in ("bandit", "popular")}
            cells = []
            for device, (shows, share) in got["bandit"]["wrong_late"].items():
                popular = got["popular"]["wrong_late"].get(device, (0, float("nan")))[1]
                tag = got["bandit"]["tags"][device]
                cells.append(f"{device} ({tag}) {share:.2f} / {popular:.2f} ({shows:,})")
            print(f"- {users} users, seed {seed}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
