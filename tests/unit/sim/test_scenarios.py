"""Simulator scenarios: each behaviour shows in the events, and the baseline is unchanged."""

from __future__ import annotations

import functools
import hashlib
from collections import defaultdict

import numpy as np
import pytest

from pipeline.sim.audience import DAY_MS
from pipeline.sim.simulate import SimulationConfig, Simulator

#: The records of 300 viewers over 60 days, seed 5, before scenarios existed.
BASELINE_SHA256 = "d02509b76773a221"


@functools.cache
def sessions_of(scenario: str) -> tuple[Simulator, dict[str, list[int]]]:
    """Each viewer's event times, in order."""
    simulator = Simulator(SimulationConfig(users=400, days=90, seed=2, scenario=scenario))
    times: dict[str, list[int]] = defaultdict(list)
    for event in simulator.events():
        times[event.user_id].append(event.ts_ms)
    return simulator, times


def test_the_baseline_draws_the_same_bytes_as_before_scenarios() -> None:
    digest = hashlib.sha256()
    for key, value in Simulator(SimulationConfig(users=300, days=60, seed=5)).records():
        digest.update(key)
        digest.update(value)
    assert digest.hexdigest()[:16] == BASELINE_SHA256


def test_returners_come_back_after_leaving_and_others_never_do() -> None:
    simulator, times = sessions_of("returners")
    back = {p.user_id: p.return_ms for p in simulator.profiles if p.return_ms is not None}
    assert len(back) >= 0.15 * len(simulator.truth.leave_ms)
    for user, leave_ms in simulator.truth.leave_ms.items():
        after = [t for t in times.get(user, []) if t >= leave_ms]
        if user in back:
            assert all(t >= back[user] for t in after)
        else:
            assert not after
    assert sum(any(t >= back[u] for t in times.get(u, [])) for u in back) >= 0.8 * len(back)


def test_sudden_churners_keep_their_pace_until_they_leave() -> None:
    def late_share(scenario: str) -> float:
        """Churners' events in the 3 weeks before leaving, per event in the 3 weeks before."""
        simulator, times = sessions_of(scenario)
        late = early = 0
        for user, leave_ms in simulator.truth.leave_ms.items():
            user_times = np.array(times.get(user, []))
            late += np.count_nonzero(
                (user_times >= leave_ms - 21 * DAY_MS) & (user_times < leave_ms)
            )
            early += np.count_nonzero(
                (user_times >= leave_ms - 42 * DAY_MS) & (user_times < leave_ms - 21 * DAY_MS)
            )
        return late / early

    assert late_share("sudden") > late_share("baseline") + 0.2


def test_breaks_leave_long_silences_that_are_not_churn() -> None:
    def long_gaps(scenario: str) -> int:
        simulator, times = sessions_of(scenario)
        loyal = set(times) - simulator.truth.churners
        return sum(int(np.count_nonzero(np.diff(times[u]) > 7 * DAY_MS)) for u in loyal)

    assert long_gaps("breaks") > 2 * long_gaps("baseline")


def test_an_unknown_scenario_is_refused() -> None:
    with pytest.raises(ValueError, match="scenario 'nope'"):
        SimulationConfig(users=1, days=1, seed=0, scenario="nope")
