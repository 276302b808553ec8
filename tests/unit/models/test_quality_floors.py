"""Quality floors: a model that is broken must fail a test, not only look worse in a report.

One seeded simulation (400 viewers, 60 days, ~115,000 records) runs through the processor
as one partition. The floors sit below what the models reach on it (printed) and above
what a broken model reaches: churn features fed as zeros or risk signals never emitted each
fail here (checked by breaking them), and so do a champion whose weights learn nothing
(it ranks by its silence risk, a Poisson probability) and one whose silence risk reads the
heuristic's rate instead of the rate over the days a viewer was seen. Dropping the taste
signal from the ranking does not: on this traffic the lists reach nearly the same
hit-rate without it (0.469 against 0.479). Here viewers choose by popularity times genre
taste, which the popularity and genre signals carry already; ranked by taste alone the
lists hit 0.22 (trending 0.15).
"""

from __future__ import annotations

import functools
from collections import Counter

from pipeline.config import Settings
from pipeline.core.processor import Output, Processor
from pipeline.offline.runner import drive
from pipeline.sim.simulate import SimulationConfig, Simulator


@functools.cache
def run() -> tuple[dict[str, float], Counter[str]]:
    simulator = Simulator(SimulationConfig(users=400, days=60, seed=1))
    processor = Processor(Settings())
    processor.load_catalog(simulator.catalog())
    kinds: Counter[str] = Counter()

    def count(outputs: list[Output]) -> None:
        kinds.update(out.kind for out in outputs)

    records = (
        (key, value, 0, offset, 0) for offset, (key, value) in enumerate(simulator.records())
    )
    drive(processor, records, outputs=count)
    report = processor.quality.report(churn_model="logreg", reco_model="personalized")
    print(f"\nquality floors run: {report}, outputs {dict(kinds)}")
    return report, kinds


def test_the_churn_models_rank_churners_first() -> None:
    report, _ = run()
    assert report["churn.auc"] >= 0.80  # 0.855 measured; zeroed features give ~0.5
    assert report["churn.poisson.auc"] >= 0.78  # 0.806 measured
    # weights that learn nothing leave the champion its silence risk's ranking (0.823);
    # what it learns of departures adds 0.03. With the heuristic's rate as its silence
    # risk (churn-logreg-5) it reached 0.841, and an ECE of 0.0091
    assert report["churn.auc"] >= report["churn.poisson.auc"] + 0.04
    assert report["churn.ece"] <= 0.007  # 0.0038 measured; 0.0132 learning nothing


def test_the_personalised_lists_beat_trending_by_far() -> None:
    report, _ = run()
    assert report["reco.hit_rate_at_10"] >= 0.40  # 0.479 measured
    assert report["reco.hit_rate_at_10"] >= 2.5 * report["reco.trending_hit_rate_at_10"]


def test_a_week_of_silence_is_judged_better_by_the_rescore_than_by_the_last_session() -> None:
    report, _ = run()  # the same users silent 7 days, the same labels
    assert report["churn.inactive_7d.auc"] >= report["churn.session_end_7d.auc"] + 0.03
    # 0.774 against 0.715 measured


def test_risk_transitions_are_signalled() -> None:
    _, kinds = run()
    assert kinds["signal"] >= 5 and kinds["churn"] >= 5000  # 94 and 10,675 measured
