"""Promotion in the processor: a weak champion's partition switches to the challenger.

The Hoeffding tree ranks churners no better than chance on simulated traffic (AUC ~0.5,
as :mod:`pipeline.models.churn` reports) while the Poisson heuristic reaches ~0.8: run as
champion with Poisson as challenger, the tree must be replaced, the published scores must
say so in their ``model_version``, and a replay must promote at the same label.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from unittest.mock import patch

import orjson
import pytest

import pipeline.offline.evaluate as evaluation
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


@functools.cache
def run_partitioned(share_mode: str) -> tuple[dict[str, float | int], list[list[tuple]]]:
    """The tree champion over 16 partitions sharing hourly; each partition's promotions."""
    simulator = Simulator(SimulationConfig(users=400, days=45, seed=1))
    processors: list[Processor] = []
    with tempfile.TemporaryDirectory() as tmp:
        events, catalog = Path(tmp, "events.jsonl"), Path(tmp, "catalog.jsonl")
        catalog.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in simulator.catalog()))
        events.write_bytes(b"".join(value + b"\n" for _, value in simulator.records()))
        with patch.object(evaluation, "Processor", side_effect=_kept(processors)):
            report = evaluation.evaluate(
                events,
                settings=Settings(churn_model="tree", churn_challenger="poisson"),
                catalog_path=catalog,
                partitions=16,
                share_every_s=3600,
                share_mode=share_mode,  # type: ignore[arg-type]
                progress=False,
            )
    [processor] = processors
    histories = []
    for partition in range(16):
        promotion = processor.models(partition).promotion
        assert promotion is not None
        histories.append(promotion.history)
    return report, histories


def _kept(processors: list[Processor]) -> Callable[..., Processor]:
    def make(*args: object, **kwargs: object) -> Processor:
        processors.append(Processor(*args, **kwargs))  # type: ignore[arg-type]
        return processors[-1]

    return make


@pytest.mark.parametrize("share_mode", ["sum", "workers"])
def test_at_16_partitions_the_pooled_test_replaces_the_weak_champion_in_every_one(
    share_mode: str,
) -> None:
    report, histories = run_partitioned(share_mode)
    assert report["churn.promotions"] == 16  # each partition once; 0 before pooling
    for history in histories:
        [(labels, former, promoted, positives)] = history
        assert (former, promoted) == ("tree", "poisson") and positives >= 50
    positives = sorted(history[0][3] for history in histories)
    labels = sorted(history[0][0] for history in histories)
    print(f"\n16 partitions ({share_mode}): every tree champion replaced by poisson, after "
          f"{positives[0]}-{positives[-1]} positives of all partitions "
          f"({labels[0]}-{labels[-1]} of the partition's own labels)")  # fmt: skip
