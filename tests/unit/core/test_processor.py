"""The processing core: honest prequential protocol, restart equivalence, de-duplication."""

from __future__ import annotations

import functools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import Settings
from pipeline.core.dedupe import RecentIds
from pipeline.core.events import Event
from pipeline.core.processor import Processor
from pipeline.sim.simulate import SimulationConfig, Simulator

SETTINGS = Settings(churn_challenger="poisson")
FAR_FUTURE = 4_102_444_800.0  # the wall clock only guards against future timestamps


@functools.cache
def records() -> list[tuple[bytes, bytes]]:
    sim = Simulator(SimulationConfig(users=60, days=45, seed=3, bad_rate=0.02, duplicate_rate=0.02))
    return list(sim.records())


def run(processor: Processor, batch: list[tuple[bytes, bytes]], start: int = 0) -> None:
    for offset, (key, value) in enumerate(batch, start):
        processor.process(value, key=key, partition=0, offset=offset)


class Spy:
    """Wraps a real churn model and logs, in order, what it predicts and learns."""

    def __init__(self, model, log: list) -> None:
        self.model, self.log = model, log
        self.model_version = model.model_version

    def predict_proba_one(self, x):
        self.log.append(("predict", tuple(x.values())))
        return self.model.predict_proba_one(x)

    def learn_one(self, x, y):
        self.log.append(("learn", tuple(x.values())))
        self.model.learn_one(x, y)

    def contributions(self, x, *, top):
        return self.model.contributions(x, top=top)


def test_a_churn_sample_is_predicted_first_and_learned_only_at_its_label_time() -> None:
    labelled = []
    processor = Processor(SETTINGS, clock=lambda: FAR_FUTURE, prediction_sink=labelled.append)
    log: list = []
    models = processor.models(0)
    models.churn = {name: Spy(model, log) for name, model in models.churn.items()}
    run(processor, records())

    assert labelled, "no label became known"
    for prediction in labelled:
        assert prediction.labelled_at_ms >= prediction.predicted_at_ms
    predicted: set = set()
    for verb, x in log:
        if verb == "predict":
            predicted.add(x)
        else:
            assert x in predicted, "a sample was learned before it was predicted"
    assert sum(verb == "learn" for verb, _ in log) == len(labelled)


@settings(max_examples=4, deadline=None)
@given(st.floats(min_value=0.05, max_value=0.95))
def test_restoring_states_mid_stream_gives_the_state_of_one_uninterrupted_run(
    share: float,
) -> None:
    stream = records()
    cut = int(len(stream) * share)
    whole = Processor(SETTINGS, clock=lambda: FAR_FUTURE)
    run(whole, stream)
    expected = {user: state.activity() for user, state in whole.users.items()}

    before = Processor(SETTINGS, clock=lambda: FAR_FUTURE)
    run(before, stream[:cut])
    stored = before.take_dirty()
    after = Processor(SETTINGS, clock=lambda: FAR_FUTURE)
    for user, _, data in stored:
        after.adopt(after.decode_state(user, data))
    run(after, stream[cut:], start=cut)
    run(after, stream[cut - 50 : cut], start=cut - 50)  # replayed records: already applied
    assert {user: state.activity() for user, state in after.users.items()} == expected
    replayed_valid = sum(
        isinstance(after.decoder.decode(value), Event) for _, value in stream[cut - 50 : cut]
    )
    assert after.tally.already_applied == replayed_valid


@settings(max_examples=6, deadline=None)
@given(
    commit=st.floats(min_value=0.05, max_value=0.9),
    ahead=st.integers(min_value=0, max_value=600),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_a_crash_between_state_write_back_and_commit_replays_to_the_same_states(
    commit: float, ahead: int, seed: int
) -> None:
    """A SIGKILL: states of some users were written past the committed offset."""
    stream = records()
    cut = int(len(stream) * commit)
    written = min(len(stream), cut + ahead)
    whole = Processor(SETTINGS, clock=lambda: FAR_FUTURE)
    run(whole, stream)
    expected = {user: state.activity() for user, state in whole.users.items()}

    crashed = Processor(SETTINGS, clock=lambda: FAR_FUTURE)
    run(crashed, stream[:cut])
    stored = {user: data for user, _, data in crashed.take_dirty()}  # committed batches
    run(crashed, stream[cut:written], start=cut)
    rng = random.Random(seed)
    for user, _, data in crashed.take_dirty():  # the write-back the crash interrupted
        if rng.random() < 0.5:
            stored[user] = data
    restarted = Processor(SETTINGS, clock=lambda: FAR_FUTURE)
    for user, data in stored.items():
        restarted.adopt(restarted.decode_state(user, data))
    run(restarted, stream[cut:], start=cut)  # replay from the committed offset
    assert {user: state.activity() for user, state in restarted.users.items()} == expected


@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=60))
def test_recent_ids_flag_exactly_the_repeats_within_their_bounds(ids: list[str]) -> None:
    recent = RecentIds(window_ms=600_000, max_ids=32)
    seen: list[str] = []
    for event_id in ids:
        expected = event_id in seen[-32:]
        assert recent.seen(event_id, 1_000_000) == expected
        if not expected:
            seen.append(event_id)


def test_reloading_the_catalog_adopts_changed_items_and_keeps_the_rest() -> None:
    processor = Processor(Settings())
    catalog = [
        {"item_id": "m1", "title": "Heat", "genres": ["Crime"], "duration_s": 10_200},
        {"item_id": "m2", "title": "Alien", "genres": ["Horror"], "duration_s": 7_020},
    ]
    processor.load_catalog(catalog)
    items = processor.models(0).items
    processor.load_catalog([catalog[0], {**catalog[1], "title": "Aliens", "genres": ["Action"]}])
    assert processor.models(0).items is items and len(items) == 2
    assert [items.title(0), items.title(1)] == ["Heat", "Aliens"]
    assert [items.genres(0), items.genres(1)] == [("crime",), ("action",)]
    assert processor.catalog["m2"]["genres"] == ["action"]


@settings(max_examples=25, deadline=None)
@given(
    cut=st.floats(min_value=0.0, max_value=1.0),
    part=st.integers(min_value=1, max_value=200),
    failed_at=st.integers(min_value=0, max_value=40),
)
def test_a_write_back_in_parts_that_fails_leaves_the_unwritten_users_changed(
    cut: float, part: int, failed_at: int
) -> None:
    """The worker writes the users taken at a commit in parts; a failure hands the rest back.

    Whatever part fails, every user changed before the commit is either written or
    changed again, and the next write-back gives each of those its current state.
    """
    stream = records()
    processor = Processor(SETTINGS, clock=lambda: FAR_FUTURE)
    run(processor, stream[: int(len(stream) * cut)])
    changed = set(processor.take_dirty_users())
    written: set[str] = set()
    users = sorted(changed)
    parts = [users[i : i + part] for i in range(0, len(users), part)]
    for index, chunk in enumerate(parts):
        if index == failed_at:  # as IngestWorker.write_back's finally does
            processor.keep_dirty([u for c in parts[index:] for u in c])
            break
        written |= {user for user, _, _ in processor.states_of(chunk)}
    again = processor.take_dirty()
    assert written | {user for user, _, _ in again} == changed
    assert not written & {user for user, _, _ in again}
    for user, partition, data in again:
        state = processor.users[user]
        assert (partition, data) == (state.partition, state.to_bytes())
