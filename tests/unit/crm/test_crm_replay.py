"""Triggers through the processor over 90 simulated days: replays and a crash give the same ids.

The records are read back as a consumer of ``ott.actions`` would: de-duplicated by
``trigger_id``, then checked against the caps and the opt-outs independently of the
processor's own counters.
"""

from __future__ import annotations

import copy
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from functools import cache

import orjson
import pytest

from pipeline.config import Settings
from pipeline.core.features import DAY_MS
from pipeline.core.processor import Output, Processor
from pipeline.crm.consent import CHANNELS
from pipeline.offline.runner import drive
from pipeline.serde.schemas import validator
from pipeline.sim.simulate import SimulationConfig, Simulator

#: A high band from 0.15: the champion's probabilities are calibrated (churn-logreg-4 on), and
#: on these 150 viewers no session-end score reaches the default 0.6, so ``at_risk`` (of
#: every type the caps and ids are checked for) would never fire; churn-logreg-6, better
#: calibrated, put none above 0.2.
SETTINGS = Settings(risk_medium=0.08, risk_high=0.15)
TYPE_GAP_MS = int(SETTINGS.crm_type_gap_s * 1000)


@cache
def simulation() -> tuple[list[tuple[bytes | None, bytes]], list[dict[str, object]]]:
    simulator = Simulator(SimulationConfig(users=150, days=90, seed=5, bad_rate=0.01))
    return list(simulator.records()), simulator.catalog()


def consent_records() -> list[dict[str, object]]:
    """A fifth of the users opted out of a channel, or of all; some opted back in."""
    rng = random.Random(5)
    records: list[dict[str, object]] = []
    for n in range(150):
        if rng.random() < 0.2:
            channel = rng.choice([*CHANNELS, "all"])
            records.append({"user_id": f"user-{n:06d}", "opted_out": [channel]})
    records.append({"user_id": "user-000001", "opted_out": ["email", "push"]})
    records.append({"user_id": "user-000002", "opted_out": []})
    return records


def processor() -> Processor:
    p = Processor(SETTINGS, clock=lambda: 4.1e9)
    p.load_catalog(simulation()[1])
    p.load_consent(consent_records())
    return p


def actions(outputs: Sequence[Output]) -> list[dict[str, object]]:
    return [orjson.loads(output.value) for output in outputs if output.kind == "action"]


def run(
    p: Processor, start: int = 0, stop: int | None = None, states: dict | None = None
) -> list[Output]:
    """Drive ``p`` over the records from ``start`` to ``stop``; its write-backs into ``states``."""
    records = simulation()[0]
    outputs: list[Output] = []
    stored = {} if states is None else states
    drive(
        p,
        (
            (key, value, 0, offset, 0)
            for offset, (key, value) in enumerate(records[start:stop], start)
        ),
        outputs=outputs.extend,
        states=lambda changed: stored.update((user, data) for user, _, data in changed),
    )
    return outputs


@pytest.mark.slow
def test_a_replay_gives_the_same_triggers_and_they_respect_caps_and_opt_outs() -> None:
    first, second = actions(run(processor())), actions(run(processor()))
    assert first == second
    kinds = Counter(record["type"] for record in first)
    assert set(kinds) == {"win_back", "at_risk", "continue_series", "new_for_fans"}, kinds
    ids = [record["trigger_id"] for record in first]
    assert len(ids) == len(set(ids))
    audit(first)


@pytest.mark.slow
def test_a_crash_replayed_from_the_last_commit_gives_the_same_set_of_ids() -> None:
    whole = {record["trigger_id"] for record in actions(run(processor()))}
    records = simulation()[0]
    commit, crash = len(records) // 2, len(records) // 2 + 3_000
    before = processor()
    states: dict[str, bytes] = {}
    published = run(before, stop=commit, states=states)
    models = copy.deepcopy(before._models)  # the snapshot of the commit
    published += run(before, start=commit, stop=crash)  # published, then lost by the crash
    after = processor()
    for partition, partition_models in models.items():
        after.install_models(partition, partition_models)
    for user, data in states.items():
        after.adopt(after.decode_state(user, data))
    published += run(after, start=commit)
    read_back = actions(published)
    assert len(read_back) > len({r["trigger_id"] for r in read_back})  # some were published twice
    unique = {r["trigger_id"]: r for r in read_back}
    assert set(unique) == whole
    audit(list(unique.values()))


def audit(records: list[dict[str, object]]) -> None:
    """Caps and opt-outs, read from the records alone."""
    schema = validator("action")
    opted_out: dict[str, set[str]] = {}
    for consent in consent_records():
        channels = set(consent["opted_out"])  # type: ignore[arg-type]
        opted_out[str(consent["user_id"])] = set(CHANNELS) if "all" in channels else channels
    per_day: Counter[tuple[object, int]] = Counter()
    last: dict[tuple[object, object], list[int]] = defaultdict(list)
    for record in records:
        schema.validate(record)
        at_ms = _ms(str(record["ts"]))
        per_day[record["user_id"], at_ms // DAY_MS] += 1
        last[record["user_id"], record["type"]].append(at_ms)
        assert record["channel"] not in opted_out.get(str(record["user_id"]), set()), record
    assert max(per_day.values()) <= SETTINGS.crm_daily_cap
    for times in last.values():
        times.sort()
        assert all(b - a >= TYPE_GAP_MS for a, b in zip(times, times[1:], strict=False))


def _ms(ts: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)
