"""Every count the core keeps reaches a Prometheus series: none is counted and dropped."""

from __future__ import annotations

from collections import Counter
from dataclasses import fields

import pytest
from prometheus_client import CollectorRegistry

from agents.worker.metrics import Metrics
from pipeline.core.tally import Tally


def exported_total(metrics: Metrics) -> float:
    return sum(
        sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )


@pytest.mark.parametrize("name", [f.name for f in fields(Tally)])
def test_each_count_of_a_batch_moves_a_counter(name: str) -> None:
    tally = Tally()
    value = getattr(tally, name)
    if isinstance(value, Counter):
        value[("a", "b") if name in ("actions", "actions_suppressed") else "a"] = 3
    else:
        setattr(tally, name, 3)
    metrics = Metrics(CollectorRegistry())
    before = exported_total(metrics)
    metrics.add(tally)
    assert exported_total(metrics) == before + 3
