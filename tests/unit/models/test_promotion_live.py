"""Promotion in the processor: a weak champion's partition switches to the challenger.

The Hoeffding tree ranks churners no better than chance on simulated traffic (AUC ~0.5,
as :mod:`pipeline.models.churn` reports) while the Poisson heuristic reaches ~0.8: run as
champion with Poisson as challenger, the tree must be replaced, the published scores must
say so in their ``model_version``, and a replay must promote at the same label.
"""

from __future__ import annotations

import functools

import orjson

from pipeline.config import Settings
from pipeline.core.processor import Output, Processor
from pipeline.offline.runner import drive
from pipeline.sim.simulate import SimulationConfig, Simulator


@functools.cache
def run(churn_model: str) -> tuple[Processor, list[str]]:
    simulator = Simulator(SimulationConfig(users=400, days=45, seed=1))
    processor = Processor(Settings(churn_model=churn_model, churn_challenger="poisson"))
    processor.load_catalog(simulator.catalog())
    versions: list[str] = []

    def keep(outputs: list[Output]) -> None:
        scores = (orjson.loads(out.value) for out in outputs if out.kind == "churn")
        versions.extend(
            score["model_version"] for score in scores if score["trigger"] == "session_end"
        )

    records = (
        (key, value, 0, offset, 0) for offset, (key, value) in enumerate(simulator.records())
    )
    drive(processor, records, outputs=keep)
    return processor, versions


def test_a_champion_no_better_than_chance_is_replaced_and_the_scores_say_so() -> None:
    processor, versions = run("tree")
    promotion = processor.models(0).promotion
    assert promotion is not None
    [(labels, former, promoted, positives)] = promotion.history
    print(f"\ntree champion replaced by {promoted} after {labels:,} labels ({positives} positives)")
    assert (former, promoted) == ("tree", "poisson")
    assert processor.tally.churn_promotions == 1
    assert list(processor.models(0).churn) == ["poisson", "tree"]
    switch = versions.index("churn-poisson-1")
    assert set(versions[:switch]) == {"churn-tree-1"}
    assert set(versions[switch:]) == {"churn-poisson-1"}
    report = processor.quality.report(churn_model="tree", reco_model="personalized")
    assert report["churn.published.auc"] > report["churn.auc"] + 0.05  # 0.523 against 0.438


def test_a_replay_promotes_at_the_same_label() -> None:
    first, versions = run("tree")
    run.cache_clear()
    again, replayed = run("tree")
    assert again.models(0).promotion.history == first.models(0).promotion.history  # type: ignore[union-attr]
    assert replayed == versions


def test_the_better_champion_stays() -> None:
    processor, versions = run("logreg")
    assert processor.tally.churn_promotions == 0 and set(versions) == {"churn-logreg-7"}
