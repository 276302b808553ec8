"""Experiments in the processor: sticky assignment, knobs that change what is published, tags."""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

import orjson

from pipeline.config import Settings
from pipeline.core.events import format_ts, parse_ts
from pipeline.core.personalize import RECO_MODEL_VERSION, TRENDING_VERSION
from pipeline.core.processor import Output, Processor
from pipeline.core.state_codec import decode, encode
from pipeline.experiments.assignment import assign
from pipeline.experiments.live import LiveExperiments
from pipeline.offline.runner import drive
from pipeline.serde.schemas import validator
from pipeline.sim.simulate import SimulationConfig, Simulator

SETTINGS = Settings()


@functools.cache
def simulation() -> tuple[list[tuple[bytes, bytes]], list[dict[str, Any]]]:
    simulator = Simulator(SimulationConfig(users=300, days=12, seed=5))
    return list(simulator.records()), simulator.catalog()


def definition(experiment_id: str = "rail", **changes: Any) -> dict[str, Any]:
    records, _ = simulation()
    start = orjson.loads(records[len(records) // 4][1])["ts"]
    return {
        "schema_version": 1,
        "id": experiment_id,
        "salt": f"{experiment_id}-salt",
        "start": start,
        "metrics": ["click_play_conversion"],
        "variants": [
            {"name": "control", "weight": 0.5, "control": True},
            {"name": "trending", "weight": 0.5, "knobs": {"list_source": "trending"}},
        ],
    } | changes


def run(*definitions: object) -> tuple[Processor, list[Output]]:
    records, catalog = simulation()
    processor = Processor(SETTINGS)
    processor.load_catalog(catalog)
    processor.load_experiments(definitions)
    outputs: list[Output] = []
    drive(
        processor,
        ((key, value, 0, offset, 0) for offset, (key, value) in enumerate(records)),
        outputs=outputs.extend,
    )
    return processor, outputs


def published(outputs: list[Output], kind: str) -> list[dict[str, Any]]:
    return [orjson.loads(out.value) for out in outputs if out.kind == kind]


def test_each_arm_publishes_its_list_and_every_record_names_the_arm() -> None:
    processor, outputs = run(definition())
    start = parse_ts(definition()["start"])
    lists = published(outputs, "personalization")
    arms: Counter[tuple[str, str]] = Counter()
    for record in lists:
        ts = parse_ts(record["ts"])
        state = processor.users[record["user_id"]]
        if ts < start:
            assert "experiments" not in record
            continue
        variant = state.experiments["rail"]
        assert record["experiments"] == {"rail": variant}
        expected = TRENDING_VERSION if variant == "trending" else RECO_MODEL_VERSION
        assert record["model_version"] == expected
        arms[variant, record["model_version"]] += 1
    assert arms["control", RECO_MODEL_VERSION] > 100 and arms["trending", TRENDING_VERSION] > 100
    tagged = 0
    for record in published(outputs, "churn"):  # a session may end unassigned: no tag then
        if "experiments" in record:
            assert parse_ts(record["ts"]) >= start
            held = processor.users[record["user_id"]].experiments
            assert record["experiments"] == {"rail": held["rail"]}
            tagged += 1
    assert tagged > 50
    check = {kind: validator(kind) for kind in ("personalization", "churn", "signal")}
    for out in outputs:
        if out.kind in check:
            check[out.kind].validate(orjson.loads(out.value))
    print(f"\nlists after the start by arm and source: {dict(arms)}")


def test_the_trending_arm_shows_the_trending_list_the_model_is_still_scored_on_its_own() -> None:
    processor, outputs = run(definition())
    for record in published(outputs, "personalization"):
        if record.get("experiments") == {"rail": "trending"}:
            state = processor.users[record["user_id"]]
            assert all(item["reason"].startswith("trending") for item in record["items"])
            if parse_ts(record["ts"]) == state.reco_at_ms:  # the user's latest list
                assert [item["item_id"] for item in record["items"]] == state.trending_items
    # what the model is scored on (the hit-rate) stays its own list, not the one shown
    trending_arm = [s for s in processor.users.values() if s.experiments.get("rail") == "trending"]
    assert sum(s.reco_items != s.trending_items for s in trending_arm if s.reco_items) > 50


def test_list_size_and_churn_thresholds_follow_the_arm() -> None:
    knobs = {"list_size": 3, "churn_thresholds": {"medium": 0.001, "high": 0.002}}
    variants = [
        {"name": "control", "weight": 0.5, "control": True},
        {"name": "small", "weight": 0.5, "knobs": knobs},
    ]
    _, outputs = run(definition(variants=variants))
    sizes: Counter[tuple[str, int]] = Counter()
    for record in published(outputs, "personalization"):
        arm = record.get("experiments", {}).get("rail")
        sizes[arm or "none", len(record["items"])] += 1
        if arm == "small":
            assert len(record["items"]) <= 3
    assert sizes["small", 3] > 50 and any(n == 10 for arm, n in sizes if arm == "control")
    bands: Counter[tuple[str | None, str]] = Counter()
    for record in published(outputs, "churn"):
        arm, p = record.get("experiments", {}).get("rail"), record["churn_probability"]
        bands[arm, record["risk_band"]] += 1
        medium, high = (0.001, 0.002) if arm == "small" else (0.3, 0.6)
        assert record["risk_band"] == ("high" if p >= high else "medium" if p >= medium else "low")
    assert bands["small", "high"] > bands["control", "high"]
    assert bands["small", "high"] > 0 and bands["control", "low"] > 0


def test_assignment_is_the_hash_of_salt_and_user_sticky_through_a_state_round_trip() -> None:
    processor, _ = run(definition())
    experiment = processor.experiments.registry["rail"]
    assigned = {user: s.experiments["rail"] for user, s in processor.users.items() if s.experiments}
    assert len(assigned) > 100
    assert all(assign(experiment, user) == variant for user, variant in assigned.items())
    for user in list(assigned)[:20]:
        state = processor.users[user]
        restored = decode(user, encode(state), window_ms=600_000, max_ids=32)
        assert restored.experiments == state.experiments


def test_a_stopped_experiment_shapes_nothing_after_its_stop() -> None:
    records, _ = simulation()
    stop = orjson.loads(records[len(records) // 2][1])["ts"]
    _, outputs = run(definition(stop=stop))
    after = [r for r in published(outputs, "personalization") if r["ts"] >= stop]
    assert after and all("experiments" not in record for record in after)
    assert all(record["model_version"] == RECO_MODEL_VERSION for record in after)


def test_new_users_only_admits_users_first_seen_after_the_start() -> None:
    processor, _ = run(definition(population={"new_users": True}))
    start = parse_ts(definition()["start"])
    inside = {u: s for u, s in processor.users.items() if s.experiments.get("rail")}
    outside = {u: s for u, s in processor.users.items() if s.experiments.get("rail") == ""}
    assert inside and outside
    assert all(s.first_seen_ms >= start for s in inside.values())
    assert all(s.first_seen_ms < start for s in outside.values())


def test_refused_definitions_are_counted_and_the_good_ones_run() -> None:
    bad_weights = definition("bad", variants=[{"name": "a", "weight": 0.7, "control": True},
                                              {"name": "b", "weight": 0.7}])  # fmt: skip
    changed = definition(metrics=["return_7d"])  # the id of a registered one, other contents
    processor, outputs = run(b"{oops", bad_weights, definition(), changed, definition())
    assert processor.tally.experiments_refused == {
        "not_json": 1,
        "weights_sum": 1,
        "duplicate_id": 1,
    }
    assert any("experiments" in r for r in published(outputs, "personalization"))


def test_without_experiments_nothing_changes() -> None:
    _, with_none = run()
    _, with_one_not_started = run(definition(start=format_ts(4_000_000_000_000)))
    assert [o.value for o in with_none] == [o.value for o in with_one_not_started]


def test_a_look_at_the_arms_at_a_later_time_does_not_skip_an_assignment() -> None:
    """Assignments and arms are remembered per span between starts and stops, apart.

    A session-end timer looks a user's arms up at a later event time than their last event;
    the user's next event, after an experiment started, must still assign them to it.
    """
    start = parse_ts(definition()["start"])
    live = LiveExperiments()
    live.load([definition("early"), definition("late", start=format_ts(start + 60_000))])
    held: dict[str, str] = {}
    place = {"first_seen_ms": start, "segment": None, "device": None}
    live.assign(held, "u-1", ts_ms=start + 1_000, **place)
    assert set(held) == {"early"}
    assert set(live.arms(held, start + 120_000)) == {"early"}  # "late" runs, not held yet
    scopes = live.assign(held, "u-1", ts_ms=start + 130_000, **place)
    assert set(held) == {"early", "late"}
    assert set(live.arms(held, start + 130_000)) == {"early", "late"}
    assert scopes[1:] == tuple(("experiment", e, v) for e, v in sorted(held.items()))


def test_the_artwork_knobs_follow_the_arm_policy_and_context() -> None:
    records, catalog = simulation()
    with_art = [
        item | {"artworks": [{"artwork_id": f"{item['item_id']}-{tag}", "tags": [tag]}
                             for tag in ("close_up", "ensemble", "dark")]}
        for item in catalog
    ]  # fmt: skip
    variants = [
        {"name": "control", "weight": 1 / 3, "control": True},
        {"name": "genre", "weight": 1 / 3, "knobs": {"artwork_context": "device_genre"}},
        {"name": "random", "weight": 1 / 3, "knobs": {"artwork_policy": "random"}},
    ]
    trials: list[Any] = []
    processor = Processor(SETTINGS, artwork_sink=trials.append)
    processor.load_catalog(with_art)
    first = orjson.loads(records[0][1])["ts"]  # every list is made under the experiment
    processor.load_experiments([definition(variants=variants, start=first)])
    drive(processor, ((k, v, 0, offset, 0) for offset, (k, v) in enumerate(records)))
    seen: Counter[tuple[str, int, str]] = Counter()
    for trial in trials:
        arm = processor.users[trial.user_id].experiments["rail"]
        seen[arm, len(trial.shown.context), trial.shown.policy] += 1
    print(f"\nshows by arm, context levels and policy: {dict(seen)}")
    assert seen["genre", 2, "bandit"] > 50  # the device, then the device and genre
    assert seen["control", 1, "bandit"] > 50 and seen["random", 1, "random"] > 50
    assert set(seen) == {("genre", 2, "bandit"), ("control", 1, "bandit"), ("random", 1, "random")}
