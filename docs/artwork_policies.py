"""Artwork policies compared on one environment: ottscore's bandit against River's policies.

The environment is the closed loop's hidden artwork taste (:mod:`pipeline.sim.artworks`:
titles with 4 to 10 artworks, each viewer preferring their device's tag), without the rest
of the loop: each round draws a viewer and a title, the policy picks an artwork from the
viewer's device, and a take comes with probability ``base × appeal``. Every policy pools the
same way, by tag: River's policies pick a *tag* among those the title's artworks show (one
policy per device; ``LinUCBDisjoint`` one for all, the device one-hot in its context), then
the title's first artwork of that tag; ottscore's picks the artwork itself.

It prints each policy's take rate, regret per round (the appeal lost against the viewer's
best artwork), regret growth (after all rounds over after the first half), the microseconds
per pick and update, and whether the policy gives the propensity of its pick (which the
off-policy estimates of ``ottscore evaluate`` need).

Run from the repository root::

    python docs/artwork_policies.py --rounds 100000 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from river import bandit, proba

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.models.artwork import ArtworkBandit  # noqa: E402
from pipeline.sim.artworks import TAGS  # noqa: E402
from pipeline.sim.closed_loop import ClosedLoop, ClosedLoopConfig  # noqa: E402

Pick = Callable[[str, list[tuple[str, tuple[str, ...]]], tuple[float, float]], str]
Learn = Callable[[str, str, str, tuple[str, ...], float], None]


def ottscore_policy() -> tuple[Pick, Learn, bool]:
    model = ArtworkBandit()

    def pick(
        device: str, arts: list[tuple[str, tuple[str, ...]]], draw: tuple[float, float]
    ) -> str:
        return model.choose("bandit", (device,), arts, draw=draw).artwork_id

    def learn(device: str, item: str, artwork: str, tags: tuple[str, ...], reward: float) -> None:
        model.show((device,), item, artwork, tags)
        if reward:
            model.take((device,), item, artwork, tags)

    return pick, learn, True


def river_per_device(
    make: Callable[[int], bandit.base.Policy], seed: int
) -> tuple[Pick, Learn, bool]:
    policies: dict[str, bandit.base.Policy] = {}

    def pick(
        device: str, arts: list[tuple[str, tuple[str, ...]]], draw: tuple[float, float]
    ) -> str:
        policy = policies.setdefault(device, make(seed))
        tag = policy.pull(sorted({tags[0] for _, tags in arts}))
        return next(artwork for artwork, tags in arts if tags[0] == tag)

    def learn(device: str, item: str, artwork: str, tags: tuple[str, ...], reward: float) -> None:
        policies[device].update(tags[0], reward)

    return pick, learn, False


def river_linucb(seed: int) -> tuple[Pick, Learn, bool]:
    policy = bandit.LinUCBDisjoint(alpha=0.5, seed=seed)

    def pick(
        device: str, arts: list[tuple[str, tuple[str, ...]]], draw: tuple[float, float]
    ) -> str:
        tag = policy.pull(sorted({tags[0] for _, tags in arts}), context={device: 1.0})
        return next(artwork for artwork, tags in arts if tags[0] == tag)

    def learn(device: str, item: str, artwork: str, tags: tuple[str, ...], reward: float) -> None:
        policy.update(tags[0], {device: 1.0}, reward)

    return pick, learn, False


def run(name: str, rounds: int, seed: int, users: int = 1_000, base: float = 0.05) -> tuple:
    loop = ClosedLoop(ClosedLoopConfig(users=users, days=30, seed=seed, artworks=(4, 10)))
    world = loop.artworks
    assert world is not None
    policies: dict[str, Callable[[], tuple[Pick, Learn, bool]]] = {
        "ottscore ε-greedy (UCB greedy)": ottscore_policy,
        "River ThompsonSampling (Beta)": lambda: river_per_device(
            lambda s: bandit.ThompsonSampling(reward_obj=proba.Beta(), seed=s), seed
        ),
        "River EpsilonGreedy(0.05)": lambda: river_per_device(
            lambda s: bandit.EpsilonGreedy(epsilon=0.05, seed=s), seed
        ),
        "River LinUCBDisjoint": lambda: river_linucb(seed),
    }
    pick, learn, propensities = policies[name]()
    rng = np.random.default_rng(seed)
    regret = np.zeros(rounds)
    takes = 0.0
    started = time.perf_counter()
    for step in range(rounds):
        viewer = int(rng.integers(users))
        device = loop.profiles[viewer].device
        title = int(rng.integers(len(world.of_title)))
        arts = [(a, (TAGS[tag],)) for a, tag, _ in world.of_title[title]]
        chosen = pick(device, arts, (float(rng.random()), float(rng.random())))
        appeal = world.appeal(viewer, chosen)
        regret[step] = max(world.appeal(viewer, a) for a, _ in arts) - appeal
        reward = float(rng.random() < base * appeal)
        takes += reward
        learn(device, f"t{title}", chosen, dict(arts)[chosen], reward)
    elapsed = time.perf_counter() - started
    total = np.cumsum(regret)
    growth = total[-1] / total[rounds // 2 - 1]
    return takes / rounds, total[-1] / rounds, growth, elapsed / rounds * 1e6, propensities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    names = [
        "ottscore ε-greedy (UCB greedy)",
        "River ThompsonSampling (Beta)",
        "River EpsilonGreedy(0.05)",
        "River LinUCBDisjoint",
    ]
    print("| policy | take rate | regret / round | regret growth | µs / round | propensity |")
    print("|---|---|---|---|---|---|")
    for name in names:
        rows = np.array([run(name, args.rounds, seed)[:4] for seed in args.seeds])
        rate, regret, growth, micros = np.median(rows, axis=0)
        exact = run(name, 10, args.seeds[0])[4]
        print(
            f"| {name} | {rate:.4f} | {regret:.3f} | {growth:.2f} | {micros:.0f} "
            f"| {'exact' if exact else 'none'} |"
        )


if __name__ == "__main__":
    main()
