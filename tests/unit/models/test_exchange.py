"""Learning shared between workers: deltas out, the others' merge in, each folded once.

The properties drive each partition's side (:class:`PartitionShare`) with its own events,
pass every delta and merge through their wire format and the :class:`LearningMerger`, fold
each merge at once into its partition, and compare every partition, once all have passed
the last epoch, with one model that learnt the whole stream (as ``test_shared`` does for
the merge of one process).
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pytest
from damage import damaged, holding
from hypothesis import given, settings
from hypothesis import strategies as st
from test_shared import HOUR_MS, ITEMS, _models, assert_counts_as_whole, choices, choose

from pipeline.config import Settings
from pipeline.core.partitioning import partition_for
from pipeline.core.processor import Processor
from pipeline.models.exchange import (
    CHOICES_PER_RECORD,
    CONTROL_KEY,
    DELTA_USERS_MAX,
    LearningMerger,
    PartitionShare,
    decode_delta,
    decode_merge,
    encode_delta,
    read_delta,
    sign,
    signed_merges,
)
from pipeline.models.partition import PartitionModels
from pipeline.models.shared import Delta
from pipeline.serde.schemas import validator
from pipeline.serde.snapshots import seal, unseal
from pipeline.sim.simulate import SimulationConfig, Simulator


class Exchange:
    """Partitions, their sides and one merger; merges folded as soon as they are written."""

    def __init__(self, partitions: int) -> None:
        self.models = _models(partitions)
        self.sides = {p: PartitionShare(every_ms=HOUR_MS) for p in self.models}
        self.merger = LearningMerger(partitions=partitions)
        self.written: list[tuple[int, bytes]] = []

    def at(self, partition: int, ts_ms: int) -> None:
        """``partition`` reaches ``ts_ms``: its delta, if any, is merged and folded at once."""
        delta = self.sides[partition].at(self.models[partition], ts_ms)
        if delta is None:
            return
        delta.partition = partition
        self.merger.feed(decode_delta(encode_delta(delta)))
        records = self.merger.flush(merge=self.merger.merges + 1)
        self.written += records
        for target, value in records:
            self.sides[target].fold(self.models[target], decode_merge(value))

    def everyone_at(self, ts_ms: int) -> None:
        for partition in self.models:
            self.at(partition, ts_ms)


@settings(max_examples=40, deadline=None)
@given(stream=choices, partitions=st.integers(2, 4))
def test_every_partition_counts_what_the_whole_stream_chose(
    stream: Sequence[tuple[int, int, int | None, int]], partitions: int
) -> None:
    """Trending, "chosen next", genre and user counts of every partition equal the whole's."""
    exchange = Exchange(partitions)
    whole = _models(1)[0].recommender
    exchange.everyone_at(0)
    for user, item, previous, ts_ms in sorted(stream, key=lambda c: c[3]):
        partition = user % partitions
        exchange.at(partition, ts_ms)
        choose(user, item, previous, ts_ms, exchange.models[partition].recommender, whole)
    end = 6 * HOUR_MS
    exchange.everyone_at(end)
    assert not exchange.merger.pending  # every delta merged
    assert_counts_as_whole(exchange.models.values(), whole, end)


rows = st.lists(
    st.tuples(
        st.integers(0, 9),  # user
        st.integers(0, 5 * HOUR_MS),  # when
        st.lists(st.floats(-5, 5, allow_nan=False), min_size=4, max_size=4),
        st.booleans(),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(stream=rows, partitions=st.integers(2, 4))
def test_every_partition_scales_as_the_whole_and_gets_every_step(
    stream: Sequence[tuple[int, int, list[float], bool]], partitions: int
) -> None:
    """The merged scaler equals one that saw every row; the weights move by all the steps."""
    exchange = Exchange(partitions)
    whole = _models(1)[0].recommender.ranker
    exchange.everyone_at(0)
    steps = np.zeros(4)
    for user, ts_ms, signals, chosen in sorted(stream, key=lambda r: r[1]):
        partition = user % partitions
        exchange.at(partition, ts_ms)
        ranker = exchange.models[partition].recommender.ranker
        before = ranker.weights.copy()
        row = np.array([signals])
        ranker.learn(row, np.array([chosen]))
        steps += ranker.weights - before
        whole.learn(row, np.array([chosen]))
    exchange.everyone_at(6 * HOUR_MS)
    for partition in exchange.models.values():
        ranker = partition.recommender.ranker
        assert ranker.count == whole.count
        np.testing.assert_allclose(ranker.means, whole.means, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(ranker.vars, whole.vars, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(ranker.weights, steps, rtol=1e-9, atol=1e-12)


def _choose(models: PartitionModels, user: str, item: str, ts_ms: int) -> None:
    reco = models.recommender
    reco.choose(user, reco.items.index(item), previous=None, genres=None, ts_ms=ts_ms)


def test_what_a_partition_learns_before_a_fold_is_published_as_its_own() -> None:
    """Learning between an epoch's start and a fold goes out with the epoch, the fold's never."""
    exchange = Exchange(2)
    exchange.everyone_at(0)
    _choose(exchange.models[0], "u0", "m1", 10)
    exchange.at(1, HOUR_MS)  # partition 1 publishes epoch 0 (nothing)
    _choose(exchange.models[1], "u1", "m2", HOUR_MS + 5)  # learnt before the fold
    exchange.at(0, HOUR_MS + 10)  # partition 0 publishes: partition 1 folds it
    assert [p for p, _ in exchange.written] == [1]  # partition 1 learnt nothing in epoch 0
    side = exchange.sides[1]
    delta = side.at(exchange.models[1], 2 * HOUR_MS)
    assert delta is not None
    assert [c for _, c in delta.choices] == ["m2"]  # its own choice, not partition 0's m1
    assert set(delta.trending) == {"m2"}
    assert delta.users == 1


def test_a_merge_is_folded_once_also_after_a_snapshot() -> None:
    exchange = Exchange(2)
    exchange.everyone_at(0)
    _choose(exchange.models[0], "u0", "m1", 10)
    exchange.everyone_at(HOUR_MS)
    [(target, value)] = exchange.written
    models, side = exchange.models[target], exchange.sides[target]
    models.shared = side
    blob = seal(models, key=b"k", app_id="a", partition=target, created_ms=0)
    _, restored = unseal(blob, key=b"k", app_id="a", partition=target)
    assert isinstance(restored, PartitionModels) and restored.shared is not None
    total = restored.recommender.trending.total
    assert not restored.shared.fold(restored, decode_merge(value))  # read again: skipped
    assert restored.recommender.trending.total == total > 0


def test_the_merger_merges_what_arrived_and_drops_a_delta_published_again() -> None:
    merger = LearningMerger(partitions=3)

    def delta(partition: int, epoch: int, item: str) -> Delta:
        at_ms = (epoch + 1) * HOUR_MS
        return Delta(at_ms=at_ms, partition=partition, epoch=epoch, trending={item: 1.0})

    assert merger.flush(merge=1) == []
    merger.feed(delta(0, 0, "a"))
    merger.feed(delta(0, 1, "b"))  # partitions 1 and 2 have published nothing: no waiting
    written = merger.flush(merge=merger.merges + 1)
    assert [p for p, _ in written] == [1, 2] and merger.merges == 1
    assert decode_merge(written[0][1]).delta.trending == pytest.approx(
        {"a": 2 ** (-1 / 72), "b": 1.0}  # valued at the later delta's time (half-life 3 days)
    )
    merger.feed(delta(1, 0, "z"))  # late: partition 1's epoch 0 joins the next merge
    merger.feed(delta(1, 0, "z"))  # published again (a restart): dropped
    merger.feed(delta(0, 1, "b"))
    assert merger.dropped == 2
    written = merger.flush(merge=merger.merges + 1)
    assert {p: decode_merge(v).delta.trending for p, v in written} == {
        0: {"z": 1.0}, 2: {"z": 1.0}
    }  # fmt: skip
    merger.feed(delta(2, 4, "y"))
    again = LearningMerger.from_stored(merger.to_bytes(), partitions=3)
    assert again.to_bytes() == merger.to_bytes()
    assert again.flush(merge=9) == merger.flush(merge=9)


def test_many_choices_come_in_chunks_folded_in_order() -> None:
    merger = LearningMerger(partitions=2)
    many = [(None, f"m{i % 12}") for i in range(CHOICES_PER_RECORD + 5)]
    merger.feed(Delta(at_ms=HOUR_MS, partition=0, epoch=0, choices=many, users=3))
    merger.feed(Delta(at_ms=HOUR_MS, partition=1, epoch=0))
    written = merger.flush(merge=merger.merges + 1)
    chunks = [decode_merge(value) for _, value in written]
    assert [(m.chunk, m.chunks) for m in chunks] == [(0, 2), (1, 2)]
    assert [c for m in chunks for c in m.delta.choices] == many
    assert chunks[1].delta.users == 0 and chunks[0].delta.users == 3
    models = _models(2)[1]
    side = PartitionShare(every_ms=HOUR_MS)
    assert side.fold(models, chunks[0]) and side.fold(models, chunks[1])
    assert not side.fold(models, chunks[0])


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"", "empty"),
        (b"{oops", "not JSON"),
        (b'{"schema_version": 2}', "schema_version"),
        (b'{"schema_version": 1, "merge": 1}', "missing field"),
        (
            b'{"schema_version":1,"merge":1,"chunk":0,"chunks":1,"epoch":0,"delta":{'
            b'"schema_version":1,"partition":-1,"epoch":-1,"at_ms":0,"half_life_ms":1.0,'
            b'"trending":{"m1":"x"},"choices":[],"genres":{},"genre_total":0,"users":0,'
            b'"linear":{}}}',
            "finite number",
        ),
    ],
)
def test_a_bad_merge_record_is_dead_lettered_with_its_reason(value: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        decode_merge(value)
    processor = Processor(Settings(share_every_s=3600))
    processor.process(value, key=CONTROL_KEY, partition=0, offset=0)
    [dlq] = processor.take_outbox()
    assert dlq.kind == "dlq" and b"bad_learning_record" in dlq.value
    assert processor.tally.rejected["bad_learning_record"] == processor.tally.received == 1


def learnt_delta(rng: np.random.Generator) -> Delta:
    """The delta of one partition's first epoch.

    50 choices, 50 steps of its ranker and 50 labels of its churn promotion test.
    """
    models = _models(1)[0]
    side = PartitionShare(every_ms=HOUR_MS)
    side.at(models, 0)
    champion, challenger = models.churn
    for i in range(50):
        _choose(models, f"u{i % 7}", ITEMS[i % 5], i * 1000)
        models.recommender.ranker.learn(rng.normal(size=(1, 4)), np.array([i % 3 == 0]))
        scores = {champion: float(rng.random()), challenger: float(rng.random())}
        assert models.learn_label(scores, i % 5 == 4) is None
    delta = side.at(models, HOUR_MS)
    assert delta is not None and delta.linear and delta.trending and delta.promotion
    return delta


def test_deltas_round_trip_exactly() -> None:
    delta = learnt_delta(np.random.default_rng(1))
    back = decode_delta(encode_delta(delta))
    assert pickle.dumps(back.trending) == pickle.dumps(delta.trending)
    assert back.choices == delta.choices
    for name, step in delta.linear.items():
        other = back.linear[name]
        for a, b in zip(
            (step.moments.n, step.moments.mean, step.moments.m2, step.weights),
            (other.moments.n, other.moments.mean, other.moments.m2, other.weights),
            strict=True,
        ):
            assert a.tobytes() == b.tobytes()
        assert step.intercept == other.intercept
    assert back.promotion == delta.promotion and len(back.promotion) == 1
    validator("learning").validate(orjson.loads(encode_delta(delta)))


def _loop(
    partitions: int, events: Sequence[tuple[bytes, bytes]], settings: Settings
) -> tuple[dict[int, list[tuple[bytes, bytes]]], dict[tuple[str, bytes], list[bytes]], Processor]:
    """Run ``events`` through one processor of every partition and a merger, as the workers do.

    The merges are appended to each partition's log as they are written (before its next
    event). Returns each partition's log (events and merges, in offset order), the outputs
    by key in order, and the processor.
    """
    processor = Processor(settings)
    merger = LearningMerger(partitions=partitions)
    secret = settings.snapshot_key.get_secret_value().encode()  # signed as the worker signs
    logs: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(partitions)}
    outputs: dict[tuple[str, bytes], list[bytes]] = {}

    def append(partition: int, key: bytes, value: bytes) -> None:
        logs[partition].append((key, value))
        processor.process(value, key=key, partition=partition, offset=len(logs[partition]) - 1)
        for output in processor.take_outbox():
            outputs.setdefault((output.kind, output.key), []).append(output.value)
            if output.kind == "learning":
                merger.feed(read_delta(output.value, key=secret, app_id=settings.app_id))
        merges = merger.flush(merge=merger.merges + 1)
        for target, record in signed_merges(merges, key=secret, app_id=settings.app_id):
            append(target, CONTROL_KEY, record)

    for key, value in events:
        append(partition_for(key, partitions), key, value)
    return logs, outputs, processor


def test_the_worker_loop_folds_the_others_learning_and_a_replay_gives_the_same_scores() -> None:
    """Through the processor: deltas out, merges in the log, every score reproduced by a replay."""
    simulator = Simulator(SimulationConfig(users=120, days=6, seed=4))
    events = [(key, value) for key, value in simulator.records()]
    settings = Settings(share_every_s=3600)
    logs, outputs, processor = _loop(4, events, settings)
    tally = processor.tally
    published = [len(outputs.get(("learning", str(p).encode()), [])) for p in range(4)]
    assert min(published) > 24  # every partition, less the hours it learnt nothing in
    assert sum(published) == tally.learning_published
    assert (
        tally.learning_records["folded"]
        == sum(key == CONTROL_KEY for log in logs.values() for key, _ in log)
        > 0
    )
    assert tally.received == (
        sum(tally.consumed.values()) + tally.deduplicated + sum(tally.rejected.values())
        + tally.already_applied + sum(tally.learning_records.values())
    )  # fmt: skip

    replay = Processor(settings)
    replayed: dict[tuple[str, bytes], list[bytes]] = {}
    for partition, log in logs.items():
        for offset, (key, value) in enumerate(log):
            replay.process(value, key=key, partition=partition, offset=offset)
        for output in replay.take_outbox():
            replayed.setdefault((output.kind, output.key), []).append(output.value)
    # the merges sit in the log: a replay of each partition folds them alike; what a
    # partition publishes depends on when the others' events made it publish, not its scores
    assert {k: v for k, v in replayed.items() if k[0] != "learning"} == {
        k: v for k, v in outputs.items() if k[0] != "learning"
    }

    alone = Processor(Settings())  # the same events without the merges: other lists
    lists: dict[bytes, list[bytes]] = {}
    for partition, log in logs.items():
        for offset, (key, value) in enumerate(log):
            if key != CONTROL_KEY:
                alone.process(value, key=key, partition=partition, offset=offset)
        for output in alone.take_outbox():
            if output.kind == "personalization":
                lists.setdefault(output.key, []).append(output.value)
    shared = {key: outputs[("personalization", key)] for key in lists}
    assert sum(lists[key] != shared[key] for key in lists) > len(lists) // 2


def test_with_a_key_only_merges_signed_for_the_partition_are_folded() -> None:
    """Signed deltas and merges score as unsigned ones; a forged or misdirected merge is refused.

    Whoever may write the events topic could otherwise set any partition's model
    parameters with one record.
    """
    simulator = Simulator(SimulationConfig(users=60, days=3, seed=5))
    events = list(simulator.records())
    plain = Settings(share_every_s=3600)
    keyed = Settings(share_every_s=3600, snapshot_key="models-key")
    _, unsigned, _ = _loop(4, events, plain)
    logs, signed, processor = _loop(4, events, keyed)
    assert {k: v for k, v in signed.items() if k[0] != "learning"} == {
        k: v for k, v in unsigned.items() if k[0] != "learning"
    }
    learning = [
        value for (kind, _), values in signed.items() if kind == "learning" for value in values
    ]
    assert learning and all(b'"hmac":"' in value for value in learning)
    merges = [(p, value) for p, log in logs.items() for key, value in log if key == CONTROL_KEY]
    assert processor.tally.learning_records["folded"] == len(merges) > 0
    for schema, values in (("learning", learning), ("learning_merge", [v for _, v in merges])):
        for value in values:  # the signature is a field of each record's schema
            validator(schema).validate(orjson.loads(value))

    refused = Processor(keyed)
    target, value = merges[-1]
    unsigned_merge = value[: value.rindex(b',"hmac":"')] + b"}"
    elsewhere = (target + 1) % 4
    forged = sign(unsigned_merge, key=b"another key", app_id=keyed.app_id, partition=target)
    for offset, (partition, record) in enumerate(
        [(target, unsigned_merge), (elsewhere, value), (target, forged)]
    ):
        refused.process(record, key=CONTROL_KEY, partition=partition, offset=offset)
    letters = [orjson.loads(out.value) for out in refused.take_outbox()]
    assert [(letter["reason"], letter["detail"]) for letter in letters] == [
        ("bad_learning_record", "unsigned"),
        ("bad_learning_record", "bad signature"),
        ("bad_learning_record", "bad signature"),
    ]
    assert not refused.tally.learning_records
    refused.process(value, key=CONTROL_KEY, partition=target, offset=3)
    assert refused.tally.learning_records["folded"] == 1


@settings(max_examples=30, deadline=None)
@given(
    learnt=st.lists(
        st.tuples(
            st.integers(0, 5),  # partition
            st.dictionaries(st.sampled_from(ITEMS), st.floats(0.1, 9.0), max_size=4),
            st.lists(st.sampled_from(ITEMS), max_size=4),  # choices
            st.integers(0, 3),  # users
            st.lists(st.floats(-1, 1), min_size=3, max_size=3),  # a step's weights
        ),
        min_size=1,
        max_size=10,
    )
)
def test_each_partition_gets_exactly_the_merge_of_the_others(
    learnt: Sequence[tuple[int, dict[str, float], list[str], int, list[float]]],
) -> None:
    """The merger's prefix and suffix merges give each partition the others' learning."""
    from pipeline.models.shared import _Moments, _Step

    merger = LearningMerger(partitions=6)
    deltas = []
    for partition, trending, chosen, users, weights in learnt:
        step = _Step(
            _Moments(np.full(3, 2.0), np.array(weights), np.ones(3)), np.array(weights), 0.5
        )
        deltas.append(
            Delta(
                at_ms=HOUR_MS,
                partition=partition,
                epoch=0,
                trending=trending,
                choices=[(None, c) for c in chosen],
                users=users,
                linear={"ranker": step},
            )  # fmt: skip
        )
    records = merger._records(1, 0, deltas)
    got = {p: decode_merge(value).delta for p, value in records}
    for partition in range(6):
        others = sorted((d for d in deltas if d.partition != partition), key=lambda d: d.partition)
        if not others:
            assert partition not in got
            continue
        merge = got[partition]
        assert merge.trending == pytest.approx(
            {k: sum(d.trending.get(k, 0.0) for d in others) for d in others for k in d.trending}
        )
        assert merge.choices == [c for d in others for c in d.choices]
        assert merge.users == sum(d.users for d in others)
        step = merge.linear["ranker"]
        np.testing.assert_allclose(step.weights, sum(d.linear["ranker"].weights for d in others))
        assert step.intercept == pytest.approx(0.5 * len(others))
        np.testing.assert_allclose(step.moments.n, np.full(3, 2.0 * len(others)))


@functools.cache
def published_deltas() -> list[Any]:
    """The deltas of three partitions that chose items and trained their rankers."""
    rng = np.random.default_rng(1)
    deltas = []
    for partition in range(3):
        delta = learnt_delta(rng)
        delta.partition = partition
        deltas.append(orjson.loads(encode_delta(delta)))
    return deltas


@functools.cache
def third_by_path() -> dict[tuple[Any, ...], list[Any]]:
    """The third partition's delta, by each path it holds (:func:`damage.holding`)."""
    return holding(published_deltas()[2:])


def merged_with(third: Delta) -> list[Any]:
    """The merge records of the first two deltas and ``third``, as the partitions read them."""
    merger = LearningMerger(partitions=3)
    for delta in published_deltas()[:2]:
        merger.feed(decode_delta(orjson.dumps(delta)))
    merger.feed(third)
    return [decode_merge(value) for _, value in merger.flush(merge=1)]


@settings(max_examples=1000, deadline=None)
@given(data=st.data())
def test_a_delta_damaged_anywhere_is_refused_or_merged_into_merges_every_partition_takes(
    data: st.DataObject,
) -> None:
    """A delta the merger takes never makes a merge the partitions refuse (all would lose it)."""
    third = damaged(data, third_by_path())
    third["partition"] = 2  # the partition the merger waits for
    try:
        delta = decode_delta(orjson.dumps(third))
    except ValueError:
        return  # refused, logged and skipped by the merging agent
    assert len(merged_with(delta)) == 3


def test_a_delta_with_more_new_users_than_a_merge_can_write_is_refused() -> None:
    """More new users than a merge can sum in 64 bits is refused; up to the bound, merged."""
    third = published_deltas()[2] | {"users": DELTA_USERS_MAX}
    assert len(merged_with(decode_delta(orjson.dumps(third)))) == 3
    for users in (DELTA_USERS_MAX + 1, 2**62, -(2**62)):
        with pytest.raises(ValueError, match="users: .* beyond what a partition publishes"):
            decode_delta(orjson.dumps(third | {"users": users}))


def test_a_delta_beyond_what_a_partition_publishes_is_refused_and_the_others_merge() -> None:
    diverged = published_deltas()[2]
    name = next(iter(diverged["linear"]))
    step = diverged["linear"][name]
    # merged as it was, the means' difference squared overflows: every partition refused
    # the merge ("None is not a finite number") and lost the others' learning with it
    diverged = {**diverged, "linear": {name: {**step, "mean": [1e200] * len(step["mean"])}}}
    with pytest.raises(ValueError, match=f"linear.{name}: 1e\\+200 is beyond"):
        decode_delta(orjson.dumps(diverged))
    merges = merged_with(decode_delta(orjson.dumps(published_deltas()[2])))
    assert len(merges) == 3  # each partition takes its merge


def test_a_delta_of_a_release_before_pooled_promotion_is_read_without_evidence() -> None:
    record = orjson.loads(encode_delta(learnt_delta(np.random.default_rng(2))))
    del record["promotion"]
    delta = decode_delta(orjson.dumps(record))
    assert delta.promotion == {} and delta.linear and delta.choices


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"count": -1}, "cannot sum to"),
        ({"count": 2, "total": 2.5}, "cannot sum to"),
        ({"count": 2, "total": 0.5, "total_sq": 2.5}, "cannot sum to"),
        ({"count": 2, "total": 0.5, "total_sq": -0.1}, "cannot sum to"),
        ({"count": DELTA_USERS_MAX + 1, "total": 0.0, "total_sq": 0.0}, "positives are beyond"),
        ({"champion": 7}, "names its champion and challenger"),
        ({"total": "x"}, "finite number"),
    ],
)
def test_bad_promotion_evidence_is_refused_with_its_reason(
    change: dict[str, Any], why: str
) -> None:
    record = orjson.loads(encode_delta(learnt_delta(np.random.default_rng(3))))
    [entry] = record["promotion"]
    with pytest.raises(ValueError, match=why):
        decode_delta(orjson.dumps(record | {"promotion": [entry | change]}))
    with pytest.raises(ValueError, match="twice"):
        decode_delta(orjson.dumps(record | {"promotion": [entry, entry]}))


def test_the_others_evidence_reaches_each_partitions_test_through_the_merge() -> None:
    deltas = [decode_delta(orjson.dumps(d)) for d in published_deltas()]
    pair = next(iter(deltas[0].promotion))
    merger = LearningMerger(partitions=3)
    for delta in deltas:
        merger.feed(delta)
    merges = {p: decode_merge(value) for p, value in merger.flush(merge=1)}
    for p, merge in merges.items():
        others = [d.promotion[pair] for d in deltas if d.partition != p]
        assert merge.delta.promotion[pair].count == sum(m.count for m in others)
        assert merge.delta.promotion[pair].total == pytest.approx(sum(m.total for m in others))
        models = _models(1)[0]
        side = PartitionShare(every_ms=HOUR_MS)
        side.at(models, 0)
        assert models.promotion is not None and list(models.churn) == list(pair)
        side.fold(models, merge)
        assert models.promotion.positives == sum(m.count for m in others)
        assert models.promotion.fresh == {}  # what the others gave is not published again
