"""Stored states and snapshots written by earlier releases restore under this one."""

from __future__ import annotations

import base64
import functools
import math
import runpy
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from damage import damaged, holding, written
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import Settings
from pipeline.core.empty import EMPTY
from pipeline.core.events import Event, encode_event
from pipeline.core.features import CHURN_FEATURES, CHURN_FEATURES_V1, COUNTERS
from pipeline.core.processor import Processor
from pipeline.core.state import UserState
from pipeline.core.state_codec import _SCALARS, FORMAT, StateUnreadable, decode, encode
from pipeline.models.churn import SILENCE_RATE_SCALE, LogisticChurn
from pipeline.models.exchange import Merge, PartitionShare, decode_delta, encode_delta
from pipeline.models.partition import PartitionModels
from pipeline.models.shared import Delta
from pipeline.serde.snapshots import seal, unseal
from pipeline.sim.simulate import SimulationConfig, Simulator

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
BOUNDS = {"window_ms": 600_000, "max_ids": 32}


@functools.cache
def fixture_states() -> list[dict[str, Any]]:
    lines = (FIXTURES / "states-format-2.jsonl").read_bytes().splitlines()
    return [orjson.loads(line) for line in lines]


#: Every field of a state, dumped as the fixture writer dumped the previous release's.
_WRITER = runpy.run_path(str(FIXTURES / "make_state_fixture.py"))
fields, NOT_DUMPED = _WRITER["fields"], _WRITER["NOT_DUMPED"]


def test_the_fixture_holds_positional_format_2_states_of_every_kind() -> None:
    states = fixture_states()
    assert len(states) >= 30
    raw = [orjson.loads(base64.b64decode(line["bytes"])) for line in states]
    assert all(type(value) is list and value[0] == 2 for value in raw)
    assert any(line["fields"]["pending"] for line in states)
    assert any(line["fields"]["session_start_ms"] is not None for line in states)
    assert any(line["fields"]["playing_item"] is not None for line in states)


#: Fields added since the fixtures were written, with the value an older state gets.
ADDED_SINCE_THE_FIXTURES = {"experiments": {}, "kpis": None, "artwork": None, "crm": None}


def with_last_week(expected: dict[str, Any]) -> dict[str, Any]:
    """``expected`` as read since counters layout 2.

    Each 7-day engagement counter, and each 7-day ratio of a pending prediction, is the
    28-day one it was written with.
    """
    features = expected["features"]
    expected["features"] = features | {
        name: features[name.removesuffix("_7d")] for name in COUNTERS if name not in features
    }
    if expected["pending"] is not None:
        named = dict(zip(CHURN_FEATURES_V1, expected["pending"]["features"], strict=True))
        last_week = [
            named.get(name, named.get(name.removesuffix("_7d"))) for name in CHURN_FEATURES
        ]
        expected["pending"] = expected["pending"] | {"features": last_week}
    return expected


def test_states_written_by_format_2_restore_exactly() -> None:
    for line in fixture_states():
        state = decode(line["user_id"], base64.b64decode(line["bytes"]), **BOUNDS)
        expected = {**line["fields"], **ADDED_SINCE_THE_FIXTURES, "extra": {}}
        if expected["pending"] is not None:  # re-scores during a silence came after them
            expected["pending"] = {**expected["pending"], "rescores": {}}
        assert fields(state) == with_last_week(expected), line["user_id"]


@functools.cache
def counters_1_states() -> list[dict[str, Any]]:
    lines = (FIXTURES / "states-counters-1.jsonl").read_bytes().splitlines()
    return [orjson.loads(line) for line in lines]


def test_states_written_with_counters_layout_1_restore_exactly() -> None:
    """The last release of layout 1: its last week's engagement starts as its 28 days'."""
    states = counters_1_states()
    raw = [orjson.loads(base64.b64decode(line["bytes"])) for line in states]
    assert all(value["features"]["counters"]["layout"] == 1 for value in raw)
    pending = [value["pending"] for value in raw if "pending" in value]
    assert pending and all(value["features"]["layout"] == 1 for value in pending)
    for line in states:
        state = decode(line["user_id"], base64.b64decode(line["bytes"]), **BOUNDS)
        restored = fields(state)
        expected = with_last_week(line["fields"])
        for name in NOT_DUMPED:  # covered by their own fixtures
            del restored[name], expected[name]
        assert restored == expected, line["user_id"]
        features = state.features
        assert features.clicks_7d == features.clicks
        assert features.completion_sum_7d == features.completion_sum
        again = orjson.loads(encode(state))
        assert again["features"]["counters"]["layout"] == 2
        assert decode(line["user_id"], encode(state), **BOUNDS) == state


def test_a_migrated_state_is_written_in_the_current_format_and_reads_back_equal() -> None:
    for line in fixture_states():
        state = decode(line["user_id"], base64.b64decode(line["bytes"]), **BOUNDS)
        stored = orjson.loads(encode(state))
        assert stored["format"] == FORMAT and "partition" in stored and "features" in stored
        assert decode(line["user_id"], encode(state), **BOUNDS) == state


def test_a_newer_releases_unknown_fields_are_kept_and_written_back() -> None:
    line = fixture_states()[0]
    stored = orjson.loads(
        encode(decode(line["user_id"], base64.b64decode(line["bytes"]), **BOUNDS))
    )
    newer = {**stored, "format": FORMAT + 1, "experiment_arms": {"exp-1": "b"}}
    state = decode(line["user_id"], orjson.dumps(newer), **BOUNDS)
    assert state.extra == {"experiment_arms": {"exp-1": "b"}}
    assert orjson.loads(encode(state))["experiment_arms"] == {"exp-1": "b"}


def test_a_field_missing_from_an_older_state_takes_its_default() -> None:
    state = UserState.new("u1", partition=1, **BOUNDS)
    state.reco_items, state.segment, state.counts = ["film-1"], 2, [1, 0, 0, 0]
    stored = orjson.loads(encode(state))
    del stored["reco_items"], stored["segment"], stored["counts"]
    restored = decode("u1", orjson.dumps(stored), **BOUNDS)
    assert (restored.reco_items, restored.segment, restored.counts) == ([], None, [0, 0, 0, 0])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{oops", "not_json"),
        (b'"a string"', "not_a_state"),
        (b"[1, 2, 3]", "unknown_format"),
        (b'{"partition": 0}', "unknown_format"),
        (b'{"format": 3, "partition": 0, "offset": "7"}', "wrong_type"),
        (b'{"format": 3, "partition": 0, "recent_ids": "***"}', "wrong_type"),
        (b'{"format": 3, "partition": 0, "reco_items": ["film-1", 3]}', "wrong_type"),
        (b'{"format": 3, "partition": 0, "finished": "film-1"}', "wrong_type"),
        (b'{"format": 3, "partition": 0, "watch_s": true}', "wrong_type"),
        (b'{"format": 3, "partition": 0, "current_item": 7}', "wrong_type"),
        (
            b'{"format": 3, "partition": 0, "features": {"counters": {"layout": 1, "f64": "AA"}}}',
            "wrong_type",
        ),
        (
            b'{"format": 3, "partition": 0, "features": {"counters": {"layout": 99, "f64": ""}}}',
            "unknown_format",
        ),
        (
            b'{"format": 3, "partition": 0, "features": {"genre_affinity": {"drama": "x"}}}',
            "wrong_type",
        ),
        (
            b'{"format": 3, "partition": 0, "features": {"counters": {"layout": [], "f64": ""}}}',
            "unknown_format",
        ),
        (
            b'{"format": 3, "partition": 0, "features": {"counters": '
            b'{"layout": 1, "f64": "\\u00e9"}}}',
            "wrong_type",
        ),
    ],
)
def test_a_state_no_release_wrote_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(StateUnreadable) as refused:
        decode("u1", data, **BOUNDS)
    assert refused.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300) | st.builds(orjson.dumps, st.dictionaries(
    st.sampled_from(["format", "partition", "offset", "features", "pending", "counts", "x"]),
    st.none() | st.integers(-5, 5) | st.text(max_size=4) | st.lists(st.integers(-9, 9), max_size=3),
)))  # fmt: skip
def test_any_bytes_restore_or_are_refused_never_another_exception(data: bytes) -> None:
    try:
        decode("u1", data, **BOUNDS)
    except StateUnreadable:
        pass


@functools.cache
def states_by_path() -> dict[tuple[Any, ...], list[Any]]:
    """The written states holding each path (:func:`damage.holding`)."""
    return holding(written().states)


@pytest.mark.parametrize(
    ("path", "value"),
    [(("kpis", "outcomes"), [1]), (("artwork", "devices"), None), (("artwork", "sticky"), None)],
)
def test_a_written_part_of_the_wrong_shape_is_refused_naming_it(
    path: tuple[str, str], value: Any
) -> None:
    fields = states_by_path()[path][0]
    part, field = path
    broken = {**fields, part: {**fields[part], field: value}}
    with pytest.raises(StateUnreadable) as refused:
        decode("u1", orjson.dumps(broken), **BOUNDS)
    assert (refused.value.reason, str(refused.value).split(":")[1].strip()) == ("wrong_type", part)


@settings(max_examples=1500, deadline=None)
@given(data=st.data())
def test_a_written_state_damaged_anywhere_restores_or_is_refused_never_another_exception(
    data: st.DataObject,
) -> None:
    """Every part of every kind a state holds, in turn replaced by any JSON value."""
    try:
        decode("u1", orjson.dumps(damaged(data, states_by_path())), **BOUNDS)
    except StateUnreadable:
        pass


def test_a_processor_restores_the_fixture_states_and_goes_on() -> None:
    processor = Processor(Settings(churn_challenger="poisson"), clock=lambda: 4_102_444_800.0)
    for line in fixture_states():
        processor.adopt(processor.decode_state(line["user_id"], base64.b64decode(line["bytes"])))
    records = list(Simulator(SimulationConfig(users=40, days=31, seed=13)).records())
    for offset, (key, value) in enumerate(records[-500:], start=10**6):
        processor.process(value, key=key, partition=0, offset=offset)
    assert not processor.tally.rejected.get("processing_error")
    assert sum(processor.tally.consumed.values()) > 0


def test_the_snapshot_of_the_previous_release_restores() -> None:
    blob = (FIXTURES / "snapshot-format-3.bin").read_bytes()
    header, models = unseal(blob, key=b"fixture-key", app_id="ottscore", partition=0)
    assert isinstance(models, PartitionModels) and header.partition == 0
    assert len(models.items) > 0
    taste = models.recommender.taste  # each user's array and float, now a row of a block
    assert len(taste.users) == len(taste.user_rows) > 0
    assert all(taste.user_vector(user)[-1] == 1.0 for user in taste.users)
    assert any(taste.user_bias(user) != 0.0 for user in taste.users)
    assert models.promotion is None  # written before promotion: restored without a test
    processor = Processor(Settings(churn_challenger="poisson"), clock=lambda: 4_102_444_800.0)
    processor.install_models(0, models)
    assert models.promotion is not None and list(models.churn) == ["logreg", "poisson"]
    resealed = seal(models, key=b"k", app_id="ottscore", partition=0, created_ms=0)
    _, again = unseal(resealed, key=b"k", app_id="ottscore", partition=0)
    assert again.promotion is not None and again.promotion.window == models.promotion.window
    off = Processor(Settings(churn_promotion_alpha=0), clock=lambda: 4_102_444_800.0)
    off.install_models(0, again)
    assert again.promotion is None


#: The default of every scalar field, as released: a field at its default is not written,
#: so an absent field means this value to every release that reads format 3. Add a new
#: field here; never change a value.
RELEASED_DEFAULTS = {
    "offset": -1, "first_seen_ms": 0, "last_seen_ms": 0, "counts": [0, 0, 0, 0],
    "sessions": 0, "session_start_ms": None, "session_events": 0, "session_watch_s": 0.0,
    "session_searched": False, "session_played": False, "watch_s": 0.0,
    "playing_item": None, "playing_position_s": 0.0, "playing_since_ms": 0,
    "playing_duration_s": None, "current_item": None, "clicked_item": None, "finished": [],
    "risk_band": None, "segment": None, "reco_at_ms": 0, "reco_items": [],
    "trending_items": [], "experiments": {},
}  # fmt: skip


def test_the_defaults_of_the_fields_are_those_released() -> None:
    assert {name: default for name, (_, default) in _SCALARS.items()} == RELEASED_DEFAULTS
    assert all(  # an empty map is read as the shared EMPTY (equal to {})
        type(default) is type(RELEASED_DEFAULTS[name])
        or default is EMPTY == RELEASED_DEFAULTS[name]
        for name, (_, default) in _SCALARS.items()
    )


def test_a_state_read_back_shares_its_empty_maps_and_holds_lists_of_their_size() -> None:
    """No ``{}`` of its own for re-scores, newer fields or experiments (~0.2 kB a state)."""
    processor = Processor(Settings(), clock=lambda: 4_102_444_800.0)
    for offset, (key, value) in enumerate(
        Simulator(SimulationConfig(users=40, days=20, seed=2)).records()
    ):
        processor.process(value, key=key, partition=0, offset=offset)
    states = [decode(user, data, **BOUNDS) for user, _, data in processor.take_dirty()]
    assert sum(state.pending is not None and not state.pending.rescores for state in states) > 5
    for state in states:
        assert state.extra is EMPTY and state.experiments is EMPTY
        assert state.pending is None or state.pending.rescores or state.pending.rescores is EMPTY
        for items in (state.reco_items, state.trending_items, state.finished):
            assert sys.getsizeof(items) == sys.getsizeof(list(items))
    assert any(len(state.reco_items) == 10 for state in states)
    assert all(encode(state) == encode(processor.users[state.user_id]) for state in states)


def test_every_written_state_reads_back_as_written_its_names_shared() -> None:
    """Read back and written again, each state of a run with every part is the same bytes.

    KPIs, artworks (shows, sticky picks, devices), CRM, two experiments, a pending
    prediction: what reading a state back makes is what was written. The names it holds
    are the interpreter's one object of each (a state read back holds no copy of its own).
    """
    states = written().states
    assert {"kpis", "artwork", "crm", "pending"} <= set().union(*states)
    assert any(state.get("artwork", {}).get("shown") for state in states)
    for stored in states:
        data = orjson.dumps(stored)
        state = decode("u1", data, **BOUNDS)
        assert orjson.loads(encode(state)) == stored
        for name in (*state.reco_items, *state.finished, state.current_item or ""):
            assert sys.intern(str(name)) is name
        for shown in state.artwork.shown if state.artwork else ():
            assert sys.intern(str(shown.item_id)) is shown.item_id


def test_fields_at_their_defaults_are_not_written_and_read_back_as_they_were() -> None:
    state = UserState.new("u1", partition=1, **BOUNDS)
    stored = orjson.loads(encode(state))
    assert set(stored) == {"format", "partition", "features", "recent_ids"}
    assert decode("u1", encode(state), **BOUNDS) == state
    # a value equal to its default but not the same is written: -0.0
    state.session_watch_s, state.watch_s, state.sessions = -0.0, 1e-300, 3
    stored = orjson.loads(encode(state))
    assert (stored["session_watch_s"], stored["watch_s"], stored["sessions"]) == (-0.0, 1e-300, 3)
    restored = decode("u1", encode(state), **BOUNDS)
    assert str(restored.session_watch_s) == "-0.0" and restored == state


def test_a_churn_model_of_the_previous_release_scores_without_the_poisson_offset() -> None:
    """Its weights were learnt without the offset: restored, it scores as it did."""
    blob = (FIXTURES / "snapshot-format-3.bin").read_bytes()
    _, models = unseal(blob, key=b"fixture-key", app_id="ottscore", partition=0)
    logreg = models.churn["logreg"]
    assert isinstance(logreg, LogisticChurn) and logreg.hazard == 0.0
    assert logreg.model_version == "churn-logreg-3"
    x = dict.fromkeys(CHURN_FEATURES, 1.0) | {"sessions_7d": 0.5}
    scaled = logreg._scaled(x, learn=False)
    raw = logreg.classifier._weights.dot(scaled) + logreg.classifier.intercept
    assert logreg.predict_proba_one(x) == pytest.approx(1.0 / (1.0 + math.exp(-raw)), rel=1e-12)


def test_a_competing_risks_model_of_the_previous_release_keeps_the_heuristic_s_rate() -> None:
    """``churn-logreg-5`` restored: its silence risk is the heuristic's, not the seen rate."""
    blob = (FIXTURES / "snapshot-logreg-5.bin").read_bytes()
    _, models = unseal(blob, key=b"fixture-key", app_id="ottscore", partition=0)
    logreg = models.churn["logreg"]
    assert isinstance(logreg, LogisticChurn) and logreg.competing and not logreg.seen_rate
    assert logreg.model_version == "churn-logreg-5"
    x = dict.fromkeys(CHURN_FEATURES, 1.0) | {"sessions_7d": 0.5}  # seen a day

    def expected(silence: float, model: LogisticChurn) -> float:
        scaled = model._scaled(x, learn=False)
        raw = model.classifier._weights.dot(scaled) + model.classifier.intercept
        return 1.0 - (1.0 - silence) * (1.0 - 1.0 / (1.0 + math.exp(-raw)))

    heuristic = math.exp(-0.5 / 7.0 * 14.0)
    assert logreg.predict_proba_one(x) == pytest.approx(expected(heuristic, logreg), rel=1e-12)
    before = logreg.classifier.intercept
    logreg.learn_one(x, True)
    assert logreg.classifier.intercept > before
    assert logreg.predict_proba_one(x) == pytest.approx(expected(heuristic, logreg), rel=1e-12)
    fresh = LogisticChurn()  # the rate over the day seen, read as seen a week
    assert fresh.seen_rate and fresh.model_version == "churn-logreg-7"
    seen = math.exp(-SILENCE_RATE_SCALE * 0.5 / 7.0 / 0.5 * 14.0)
    assert fresh.predict_proba_one(x) == pytest.approx(expected(seen, fresh), rel=1e-9)
    assert expected(seen, fresh) < expected(heuristic, fresh)


def test_a_model_of_churn_logreg_6_reads_the_features_it_learnt() -> None:
    """Restored, ``-6`` scores and learns on its nineteen features; a new model reads 22."""
    blob = (FIXTURES / "snapshot-logreg-6.bin").read_bytes()
    _, models = unseal(blob, key=b"fixture-key", app_id="ottscore", partition=0)
    logreg = models.churn["logreg"]
    assert isinstance(logreg, LogisticChurn) and logreg.seen_rate
    assert logreg.model_version == "churn-logreg-6"
    assert logreg.features == CHURN_FEATURES_V1 and set(logreg.scaler.means) == set(
        CHURN_FEATURES_V1
    )
    x = dict.fromkeys(CHURN_FEATURES, 1.0) | {"sessions_7d": 0.5, "tenure_days": 30.0}
    eroded = x | {"completion_ratio_7d": 0.0, "search_without_play_7d": 5.0}
    before = logreg.predict_proba_one(x)
    assert before > 0.0 and logreg.predict_proba_one(eroded) == before
    for _ in range(20):
        logreg.learn_one(eroded, True)
    assert set(logreg.scaler.means) == set(CHURN_FEATURES_V1)
    assert set(logreg.classifier.weights) <= set(CHURN_FEATURES_V1)
    assert logreg.predict_proba_one(eroded) == logreg.predict_proba_one(x) > before
    fresh = LogisticChurn()
    assert fresh.model_version == "churn-logreg-7" and fresh.features == CHURN_FEATURES
    for _ in range(20):
        fresh.learn_one(eroded, True)
        fresh.learn_one(x, False)
    assert fresh.classifier.weights["search_without_play_7d"] > 0.0
    assert fresh.predict_proba_one(eroded) > fresh.predict_proba_one(x)
    resealed = seal(models, key=b"k", app_id="ottscore", partition=0, created_ms=0)
    _, again = unseal(resealed, key=b"k", app_id="ottscore", partition=0)
    assert again.churn["logreg"].model_version == "churn-logreg-6"
    _, newer = unseal(
        seal(PartitionModels.create(Settings(), partition=0, catalog={}), key=b"k",
             app_id="ottscore", partition=0, created_ms=0),
        key=b"k", app_id="ottscore", partition=0,
    )  # fmt: skip
    assert newer.churn["logreg"].model_version == "churn-logreg-7"
    assert newer.churn["logreg"].features is CHURN_FEATURES


def test_a_processor_goes_on_from_the_last_release_of_counters_layout_1() -> None:
    """Its states and its ``churn-logreg-6`` snapshot restore, score and publish as ``-6``."""
    processor = Processor(Settings(churn_challenger="poisson"), clock=lambda: 4_102_444_800.0)
    blob = (FIXTURES / "snapshot-logreg-6.bin").read_bytes()
    _, models = unseal(blob, key=b"fixture-key", app_id="ottscore", partition=0)
    processor.install_models(0, models)
    for line in counters_1_states():
        processor.adopt(processor.decode_state(line["user_id"], base64.b64decode(line["bytes"])))
    records = list(Simulator(SimulationConfig(users=40, days=31, seed=13)).records())
    for offset, (key, value) in enumerate(records[-2000:], start=10**6):
        processor.process(value, key=key, partition=0, offset=offset)
    outputs = processor.take_outbox()
    assert not processor.tally.rejected.get("processing_error")
    versions = {
        orjson.loads(output.value)["model_version"] for output in outputs if output.kind == "churn"
    }
    assert versions == {"churn-logreg-6", "churn-inactive-1"}  # at session ends, re-scores


def test_a_churn_model_on_top_of_the_poisson_hazard_scores_as_it_did() -> None:
    """``churn-logreg-4`` restored: ``logit(poisson) + w · x + b``, and it learns so."""
    blob = (FIXTURES / "snapshot-shared-first.bin").read_bytes()
    _, models = unseal(blob, key=b"fixture-key", app_id="ottscore", partition=0)
    logreg = models.churn["logreg"]
    assert isinstance(logreg, LogisticChurn) and not logreg.competing and logreg.hazard == 1.0
    assert logreg.model_version == "churn-logreg-4"
    x = dict.fromkeys(CHURN_FEATURES, 1.0) | {"sessions_7d": 0.5}
    poisson = math.exp(-0.5 / 7.0 * 14.0)

    def expected() -> float:
        scaled = logreg._scaled(x, learn=False)
        raw = logreg.classifier._weights.dot(scaled) + logreg.classifier.intercept
        return 1.0 / (1.0 + math.exp(-(raw + math.log(poisson / (1.0 - poisson)))))

    assert logreg.predict_proba_one(x) == pytest.approx(expected(), rel=1e-12)
    before = logreg.classifier.intercept
    logreg.learn_one(x, True)  # River's log loss: a churned label raises the intercept
    assert logreg.classifier.intercept > before
    assert logreg.predict_proba_one(x) == pytest.approx(expected(), rel=1e-12)


def test_a_snapshot_of_the_first_release_that_shares_learning_restores_and_goes_on() -> None:
    """Its side of the exchange comes back: the epoch, the start, the merges folded."""
    blob = (FIXTURES / "snapshot-shared-first.bin").read_bytes()
    header, models = unseal(blob, key=b"fixture-key", app_id="ottscore", partition=0)
    side = models.shared
    assert isinstance(side, PartitionShare) and side.every_ms == 3_600_000
    assert side.epoch is not None and side.base is not None and side.folded > (0, 0)
    processor = Processor(Settings(share_every_s=3600), clock=lambda: 4_102_444_800.0)
    processor.install_models(0, models)
    again = Merge(side.folded[0], 0, 1, side.epoch, Delta(at_ms=side.epoch * side.every_ms))
    assert not side.fold(models, again)  # folded before the snapshot: skipped
    hour = (side.epoch + 1) * side.every_ms  # the next epoch: its delta is published
    event = Event("e-next", "play", "u-next", hour + 1, item_id="m-next", position_s=0.0)
    processor.process(encode_event(event), key=b"u-next", partition=0, offset=header.offset + 1)
    kinds = [output.kind for output in processor.take_outbox()]
    assert "learning" in kinds and processor.tally.learning_published == 1
    assert models.shared is side and side.epoch == hour // side.every_ms


def test_learning_kept_aside_before_pooled_promotion_restores_and_is_published() -> None:
    """A delta stored by the release before the promotion evidence travelled has none."""
    blob = (FIXTURES / "snapshot-shared-pending.bin").read_bytes()
    header, models = unseal(blob, key=b"fixture-key", app_id="ottscore", partition=0)
    side = models.shared
    assert isinstance(side, PartitionShare) and isinstance(side.pending, Delta)
    assert side.pending.promotion == {} and side.epoch is not None
    assert models.promotion is not None and models.promotion.fresh == {}
    processor = Processor(Settings(share_every_s=3600), clock=lambda: 4_102_444_800.0)
    processor.install_models(0, models)
    event = Event("e-next", "play", "u-next", header.created_ms, item_id="m-next", position_s=0.0)
    processor.process(encode_event(event), key=b"u-next", partition=0, offset=header.offset + 1)
    assert processor.tally.published["personalization"] == 1
    delta = side.at(models, (side.epoch + 1) * side.every_ms)  # kept aside and new, together
    assert delta is not None and side.pending is None and delta.promotion == {}
    assert decode_delta(encode_delta(delta)).trending == delta.trending


def test_a_snapshot_before_shared_learning_starts_its_side_when_sharing_is_on() -> None:
    blob = (FIXTURES / "snapshot-format-3.bin").read_bytes()
    header, models = unseal(blob, key=b"fixture-key", app_id="ottscore", partition=0)
    assert models.shared is None
    processor = Processor(Settings(share_every_s=3600), clock=lambda: 4_102_444_800.0)
    processor.install_models(0, models)
    event = Event("e-next", "play", "u-next", 1_795_378_503_120, item_id="m-next", position_s=0.0)
    processor.process(encode_event(event), key=b"u-next", partition=0, offset=header.offset + 1)
    assert isinstance(models.shared, PartitionShare) and models.shared.base is not None
