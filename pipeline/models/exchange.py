"""Learning shared between workers: each partition's deltas out, the others' merge folded in.

:class:`~pipeline.models.shared.SharedLearning` merges the partitions of one process at the
same instant. Workers own different partitions, so the worker exchanges the same deltas
over Kafka (``OTTSCORE_SHARE_EVERY_S``; ``docs/quality.md`` has the measurements):

1. **Each partition publishes what it learnt.** When the event time a processor has
   reached (the latest of its partitions') enters a new epoch, each of its partitions'
   :class:`PartitionShare` takes its models' delta since the last and the processor
   publishes it (output kind ``learning``, the one-partition topic
   ``OTTSCORE_TOPIC_LEARNING``). A partition without events publishes too: its learning
   never waits for its next event.
2. **One merger combines them.** The worker that owns that topic's partition runs a
   :class:`LearningMerger`: the deltas that arrived together are merged at once and each
   partition of the events topic gets one record (key :data:`CONTROL_KEY`) with what *the
   others* learnt, in chunks of at most :data:`CHOICES_PER_RECORD` choices. Nothing waits
   for a slow or idle partition: its delta joins the merge it arrives in.
3. **Each partition folds it where it is in its log.** The processor folds the merge at
   that record's offset (:meth:`PartitionShare.fold`), so a replay of a partition's log
   reproduces its scores; the merge number and chunk say which were folded already (a
   record read again after a restart is not folded twice).

**Signed when a key is set.** With ``OTTSCORE_SNAPSHOT_KEY`` (the key the models'
snapshots are signed with) every delta and merge record carries an HMAC-SHA256 of its
bytes, bound to the application and to where the record goes (the learning topic, or the
events partition a merge is for), as the record's last JSON field ``hmac``
(:func:`sign`); records without it or with a wrong one are refused (:func:`verified`). A
merge sets model parameters outright, and the events topic is the one most producers may
write: without the signature, any of them could. Without a key, records are neither signed
nor checked.

A partition's scores depend only on its log: its events and the merges in it. When it
publishes, and what, changes what the *others* fold (which their logs then hold), never
its own models. A partition's side is stored with its models (the snapshot), so a worker
that restarts or takes a partition over goes on from the merged models, and its next delta
holds only that partition's own learning. The merger's state is stored in the worker's
table after its records are acknowledged: after a crash it writes a merge again rather
than never, and the partitions skip what they folded.

Examples
--------
>>> from pipeline.config import Settings
>>> from pipeline.models.partition import PartitionModels
>>> models = {p: PartitionModels.create(Settings(), partition=p, catalog={}) for p in (0, 1)}
>>> sides = {p: PartitionShare(every_ms=3_600_000) for p in models}
>>> merger = LearningMerger(partitions=2)
>>> [sides[p].at(models[p], 0) for p in models]   # each partition starts its epoch
[None, None]
>>> reco = models[0].recommender
>>> reco.choose("u1", reco.items.index("a1"), previous=None, genres=None, ts_ms=5)
>>> for p in models:  # the next epoch: each partition publishes its delta
...     delta = sides[p].at(models[p], 3_600_000)
...     delta.partition = p
...     merger.feed(decode_delta(encode_delta(delta)))
>>> records = merger.flush(merge=1)
>>> [(p, decode_merge(value).chunk) for p, value in records]  # partition 0 learnt alone
[(1, 0)]
>>> merge = decode_merge(records[0][1])
>>> sides[1].fold(models[1], merge)
True
>>> sides[1].fold(models[1], merge)   # read again after a restart: not folded twice
False
>>> [models[1].recommender.items.ids[i] for i in models[1].recommender.trending.top(1)]
['a1']
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson

from pipeline.experiments.stats import Moments
from pipeline.models.partition import PartitionModels
from pipeline.models.shared import (
    Delta,
    _Base,
    _Moments,
    _Step,
    combine,
    fold,
    learnt_since,
    start_of,
)
from pipeline.serde.snapshots import stored_as

__all__ = [
    "CHOICES_PER_RECORD",
    "CONTROL_KEY",
    "DELTA_MAGNITUDE_MAX",
    "DELTA_USERS_MAX",
    "LearningMerger",
    "Merge",
    "PartitionShare",
    "decode_delta",
    "decode_merge",
    "encode_delta",
    "encode_merge",
    "read_delta",
    "sign",
    "signed_merges",
    "verified",
]

CONTROL_KEY: Final = b"\x00ottscore.shared-learning"
"""Key of the merger's records in the events topic (no user id starts with a NUL byte)."""

CHOICES_PER_RECORD: Final = 20_000
"""The most choices one merge record carries (~0.6 MB of JSON); more go in further chunks."""

WIRE_VERSION: Final = 1

DELTAS: Final = -1
"""Where a delta goes, for :func:`sign`: the learning topic (a merge: its events partition)."""

_SIGNATURE_HEAD: Final = b',"hmac":"'  # then 64 hex digits and '"}': the record's last field
_SIGNED_TAIL: Final = len(_SIGNATURE_HEAD) + 64 + 2


def sign(record: bytes, *, key: bytes, app_id: str, partition: int) -> bytes:
    """``record`` (a JSON object) with its HMAC-SHA256 as last field ``hmac``.

    The signature covers the record's bytes, ``app_id`` and ``partition`` (the events
    partition of a merge, :data:`DELTAS` for a delta), so a record signed for one
    partition or application is refused by another.

    >>> signed = sign(b'{"a":1}', key=b"k", app_id="ott", partition=3)
    >>> signed[:17]
    b'{"a":1,"hmac":"a9'
    >>> verified(signed, key=b"k", app_id="ott", partition=3)
    b'{"a":1}'
    >>> verified(signed, key=b"k", app_id="ott", partition=4)
    Traceback (most recent call last):
    ...
    ValueError: bad signature
    >>> verified(b'{"a":1}', key=b"k", app_id="ott", partition=3)
    Traceback (most recent call last):
    ...
    ValueError: unsigned
    """
    if not record.endswith(b"}") or record == b"{}":
        raise ValueError("only a non-empty JSON object can be signed")
    digest = _digest(record, key=key, app_id=app_id, partition=partition)
    return b"".join((record[:-1], _SIGNATURE_HEAD, digest.encode(), b'"}'))


def verified(record: bytes | None, *, key: bytes, app_id: str, partition: int) -> bytes:
    """The record :func:`sign` signed, once its signature is checked (in constant time).

    ``ValueError`` ``unsigned`` or ``bad signature`` otherwise.
    """
    data = record or b""
    head = len(data) - _SIGNED_TAIL
    if head < 1 or data[head : head + len(_SIGNATURE_HEAD)] != _SIGNATURE_HEAD:
        raise ValueError("unsigned")
    body = data[:head] + b"}"
    expected = _digest(body, key=key, app_id=app_id, partition=partition).encode()
    if not data.endswith(b'"}') or not hmac.compare_digest(data[-66:-2], expected):
        raise ValueError("bad signature")
    return body


def read_delta(record: bytes | None, *, key: bytes, app_id: str) -> Delta:
    """A delta read from the learning topic: checked first when there is a ``key``."""
    return decode_delta(
        verified(record, key=key, app_id=app_id, partition=DELTAS) if key else record
    )


def signed_merges(
    records: Iterable[tuple[int, bytes]], *, key: bytes, app_id: str
) -> list[tuple[int, bytes]]:
    """The merger's ``(partition, record)``, each signed for its partition when there is a key."""
    if not key:
        return list(records)
    return [(p, sign(record, key=key, app_id=app_id, partition=p)) for p, record in records]


def _digest(record: bytes, *, key: bytes, app_id: str, partition: int) -> str:
    bound = b"\x00".join((app_id.encode(), str(partition).encode(), record))
    return hmac.digest(key, bound, "sha256").hex()


@stored_as("PartitionShare")
class PartitionShare:
    """A partition's side of the exchange: its epoch, its start, the merges folded.

    :meth:`at` gives the partition's delta when the event time reaches a new epoch (the
    processor's latest, whichever partition's event brought it); :meth:`fold` adds the
    others' merge. What the partition learnt between its last delta and a fold is kept
    aside (``pending``) and published with its next delta, so a delta never carries what
    came from the others.
    """

    def __init__(self, *, every_ms: int) -> None:
        if every_ms <= 0:
            raise ValueError(f"every_ms must be positive, not {every_ms}")
        self.every_ms = every_ms
        self.epoch: int | None = None
        self.base: _Base | None = None
        self.pending: Delta | None = None
        self.folded: tuple[int, int] = (-1, -1)  # (merge, chunk) folded last

    def start(self, models: PartitionModels) -> None:
        """Start telling what ``models`` learn from now on (before the first epoch's end)."""
        self.base, self.pending = start_of(models), None

    def at(self, models: PartitionModels, ts_ms: int) -> Delta | None:
        """Event time ``ts_ms`` reached: the partition's delta, if it entered a new epoch.

        The delta's ``epoch`` is the last it covers, the one before ``ts_ms``'s; its
        ``partition`` is for the caller to set. Without a start (:meth:`start`), the
        first call starts.
        """
        epoch = ts_ms // self.every_ms
        if self.epoch is not None and epoch <= self.epoch:
            return None
        self.epoch = epoch
        base, pending = self.base, self.pending
        if base is None:
            self.start(models)
            return None
        at_ms = epoch * self.every_ms
        learnt = learnt_since(models, base, at_ms)
        delta = learnt if pending is None else combine([pending, learnt], at_ms=at_ms)
        delta.epoch = epoch - 1
        self.start(models)
        return delta

    def fold(self, models: PartitionModels, merge: Merge) -> bool:
        """Fold the others' learning of ``merge`` into ``models``; False if it was already."""
        if (merge.merge, merge.chunk) <= self.folded:
            return False
        self.folded = (merge.merge, merge.chunk)
        base = self.base
        if base is not None:  # what this partition learnt since its start, kept aside
            learnt = learnt_since(models, base, merge.delta.at_ms)
            pending = self.pending
            self.pending = (
                learnt if pending is None else combine([pending, learnt], at_ms=learnt.at_ms)
            )
        fold(models, merge.delta)
        if base is not None:
            self.base = start_of(models)
        return True


@dataclass(slots=True)
class Merge:
    """One record of the merger: chunk ``chunk`` of ``chunks`` of merge number ``merge``.

    ``delta`` is what the other partitions learnt by ``epoch``; chunks after the first
    carry only more of its choices.
    """

    merge: int
    chunk: int
    chunks: int
    epoch: int
    delta: Delta


class LearningMerger:
    """Every partition's deltas in; for each partition, the merge of the others' out.

    :meth:`feed` takes the deltas in the order of the learning topic; :meth:`flush`
    merges those fed since the last flush and returns the records to write, as
    ``(events partition, value)``: each partition gets what the others learnt. The worker
    flushes after each batch it reads (at most ``OTTSCORE_SHARE_MERGE_WITHIN_S`` apart),
    so a partition's learning reaches the others within seconds whatever the others are
    doing: nothing waits for a slow or idle partition. A delta of an epoch its partition
    published before (again, after a restart) is dropped.
    """

    def __init__(self, *, partitions: int) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, not {partitions}")
        self.partitions = partitions
        self.seen: dict[int, int] = {}  # partition -> the last epoch it published
        self.pending: list[Delta] = []  # fed since the last flush
        self.merges = 0  # merges written
        self.dropped = 0  # deltas published again, dropped

    def feed(self, delta: Delta) -> None:
        """Take one partition's delta (``ValueError`` for a partition it does not know)."""
        partition, epoch = delta.partition, delta.epoch
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} is not one of {self.partitions}")
        if epoch <= self.seen.get(partition, -1):
            self.dropped += 1
            return
        self.seen[partition] = epoch
        self.pending.append(delta)

    def flush(self, *, merge: int) -> list[tuple[int, bytes]]:
        """The records of merge number ``merge``: the deltas fed since the last flush.

        ``merge`` must be greater than every number before it (the worker gives the
        learning topic's offset after the last delta): a partition folds a merge only if
        its number is greater than the last it folded.
        """
        if not self.pending:
            return []
        pending, self.pending = self.pending, []
        return self._records(merge, max(delta.epoch for delta in pending), pending)

    def _records(self, merge: int, epoch: int, deltas: list[Delta]) -> list[tuple[int, bytes]]:
        """Each partition's merge of the others' ``deltas``, in partition order.

        With the merges of the partitions before and after each (prefix and suffix), so
        that an epoch costs a number of merges linear in the partitions, not quadratic.
        """
        at_ms = max(delta.at_ms for delta in deltas)
        learnt: dict[int, list[Delta]] = {}
        for delta in deltas:
            if not delta.is_empty():
                learnt.setdefault(delta.partition, []).append(delta)
        order = sorted(learnt)
        if not order:
            return []
        self.merges += 1
        own = [combine(learnt[p], at_ms=at_ms) for p in order]
        before: list[Delta | None] = [None]  # before[i]: the merge of own[:i]
        for delta in own[:-1]:
            last = before[-1]
            before.append(delta if last is None else combine([last, delta], at_ms=at_ms))
        after: list[Delta | None] = [None]  # after[j]: the merge of own[len - j:]
        for delta in reversed(own[1:]):
            last = after[-1]
            after.append(delta if last is None else combine([delta, last], at_ms=at_ms))
        after.reverse()  # now after[i]: the merge of own[i + 1:]
        index = {p: i for i, p in enumerate(order)}
        records = []
        for partition in range(self.partitions):
            i = index.get(partition)
            parts = (
                [d for d in (before[-1], own[-1]) if d is not None]
                if i is None
                else [d for d in (before[i], after[i]) if d is not None]
            )
            if parts:
                merged = combine(parts, at_ms=at_ms)
                records += [(partition, r) for r in encode_merge(merge, epoch, merged)]
        return records

    def to_bytes(self) -> bytes:
        """The merger's state, for :meth:`from_stored` after a restart."""
        return orjson.dumps(
            {
                "schema_version": WIRE_VERSION,
                "partitions": self.partitions,
                "seen": [[p, e] for p, e in sorted(self.seen.items())],
                "pending": [_delta_json(d) for d in self.pending],
                "merges": self.merges,
                "dropped": self.dropped,
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )

    @classmethod
    def from_stored(cls, data: bytes | None, *, partitions: int) -> LearningMerger:
        """The merger stored as ``data`` (a new one when None), for ``partitions`` partitions.

        Partitions added to the events topic since join.
        """
        merger = cls(partitions=partitions)
        if data is None:
            return merger
        stored = orjson.loads(data)
        merger.partitions = max(partitions, int(stored["partitions"]))
        merger.seen = {int(p): int(e) for p, e in stored["seen"]}
        merger.pending = [_delta_of(d) for d in stored["pending"]]
        merger.merges = int(stored["merges"])
        merger.dropped = int(stored["dropped"])
        return merger


# --- the wire format ---------------------------------------------------------------------


def encode_delta(delta: Delta) -> bytes:
    """A partition's delta as the JSON record of ``schemas/learning.schema.json``."""
    return orjson.dumps(_delta_json(delta), option=orjson.OPT_SERIALIZE_NUMPY)


#: The largest magnitude of a number in a delta a partition publishes. The merge squares
#: differences of means and multiplies them by counts (:func:`~pipeline.models.shared.combine`):
#: with every number of every delta within this, a merge of a thousand partitions stays
#: finite (~4e303 at most), while the sums of a few billion events of any feature are far
#: below it. A delta beyond it is refused: merged, one partition's diverged model would
#: overflow the merge of all of them to infinity, and every partition would refuse that
#: merge.
DELTA_MAGNITUDE_MAX: Final = 1e100
#: The largest count of users new to a partition in one delta (``users``, an integer of
#: JSON), and of the positives of its promotion test's evidence. The merge adds the
#: partitions' counts and writes the sum as a 64-bit integer:
#: within this bound, millions of partitions' sum still fits, while no partition meets a
#: trillion new users in an epoch. Beyond it, one delta made the merge unwritable
#: (``Integer exceeds 64-bit range``) and every partition lost the epoch.
DELTA_USERS_MAX: Final = 2**40


def decode_delta(data: bytes | None) -> Delta:
    """The delta of :func:`encode_delta`; ``ValueError`` (saying why) when it is not one.

    >>> decode_delta(b'{"schema_version": 1, "partition": 0, "epoch": 1, "at_ms": 0,'
    ...              b' "half_life_ms": 1.0, "trending": {"m1": 1e300}, "choices": [],'
    ...              b' "genres": {}, "genre_total": 0, "users": 0, "linear": {}}')
    Traceback (most recent call last):
    ...
    ValueError: trending: 1e+300 is beyond what a partition publishes (|x| <= 1e+100)
    """
    delta = _delta_of(_loads(data))
    numbers = {
        "trending": np.fromiter(delta.trending.values(), float, len(delta.trending)),
        "genres": np.fromiter(delta.genres.values(), float, len(delta.genres)),
        "genre_total": np.array([delta.genre_total]),
    }
    if abs(delta.users) > DELTA_USERS_MAX:
        raise ValueError(
            f"users: {delta.users} is beyond what a partition publishes (|x| <= 2**40)"
        )
    for (champion, challenger), evidence in delta.promotion.items():
        if evidence.count > DELTA_USERS_MAX:  # the merge sums them as 64-bit integers too
            raise ValueError(
                f"promotion of {challenger} over {champion}: {evidence.count} positives are "
                "beyond what a partition publishes (<= 2**40)"
            )
    for name, step in delta.linear.items():
        moments = step.moments
        columns = (moments.n, moments.mean, moments.m2, step.weights, [step.intercept])
        numbers[f"linear.{name}"] = np.concatenate(columns)
    for name, values in numbers.items():
        beyond = np.abs(values) > DELTA_MAGNITUDE_MAX
        if beyond.any():
            raise ValueError(
                f"{name}: {float(values[beyond][0])!r} is beyond what a partition publishes "
                f"(|x| <= {DELTA_MAGNITUDE_MAX!r})"
            )
    return delta


def encode_merge(merge: int, epoch: int, delta: Delta) -> list[bytes]:
    """The records of one partition's merge: its choices in chunks (the first has the rest)."""
    choices = delta.choices
    chunks = max(1, math.ceil(len(choices) / CHOICES_PER_RECORD))
    records = []
    for chunk in range(chunks):
        part = choices[chunk * CHOICES_PER_RECORD : (chunk + 1) * CHOICES_PER_RECORD]
        if chunk == 0:
            body = Delta(**{name: getattr(delta, name) for name in Delta.__slots__})
            body.choices = part
        else:
            body = Delta(at_ms=delta.at_ms, half_life_ms=delta.half_life_ms, choices=part)
        record = {"merge": merge, "chunk": chunk, "chunks": chunks, "epoch": epoch}
        records.append(
            orjson.dumps(
                {"schema_version": WIRE_VERSION, **record, "delta": _delta_json(body)},
                option=orjson.OPT_SERIALIZE_NUMPY,
            )
        )
    return records


def decode_merge(data: bytes | None) -> Merge:
    """One merge record (:func:`encode_merge`); ``ValueError`` (saying why) when it is not one."""
    record = _loads(data)
    try:
        merge = Merge(
            _int(record["merge"]),
            _int(record["chunk"]),
            _int(record["chunks"]),
            _int(record["epoch"]),
            _delta_of(record["delta"]),
        )
    except KeyError as missing:
        raise ValueError(f"missing field {missing}") from None
    if not 0 <= merge.chunk < merge.chunks or merge.merge < 1:
        raise ValueError(f"chunk {merge.chunk} of {merge.chunks} of merge {merge.merge}")
    return merge


def _loads(data: bytes | None) -> dict[str, Any]:
    if not data:
        raise ValueError("empty")
    try:
        record = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise ValueError("not an object")
    if record.get("schema_version") != WIRE_VERSION:
        raise ValueError(f"unsupported schema_version {record.get('schema_version')!r}")
    return record


def _delta_json(delta: Delta) -> dict[str, Any]:
    return {
        "schema_version": WIRE_VERSION,
        "partition": delta.partition,
        "epoch": delta.epoch,
        "at_ms": delta.at_ms,
        "half_life_ms": delta.half_life_ms,
        "trending": delta.trending,
        "choices": delta.choices,
        "genres": delta.genres,
        "genre_total": delta.genre_total,
        "users": delta.users,
        "linear": {
            name: {
                "n": step.moments.n,
                "mean": step.moments.mean,
                "m2": step.moments.m2,
                "weights": step.weights,
                "intercept": step.intercept,
            }
            for name, step in delta.linear.items()
        },
        **(
            {
                "promotion": [
                    {
                        "champion": champion,
                        "challenger": challenger,
                        "count": moments.count,
                        "total": moments.total,
                        "total_sq": moments.total_sq,
                    }
                    for (champion, challenger), moments in delta.promotion.items()
                ]
            }
            if delta.promotion
            else {}
        ),
    }


def _delta_of(record: Any) -> Delta:
    """A :class:`Delta` from its JSON form, every field checked."""
    if not isinstance(record, dict):
        raise ValueError("delta is not an object")
    try:
        delta = Delta(
            at_ms=_int(record["at_ms"]),
            half_life_ms=_number(record["half_life_ms"]),
            partition=_int(record["partition"]),
            epoch=_int(record["epoch"]),
            trending=_counts(record["trending"], "trending"),
            choices=[_choice(c) for c in _list(record["choices"], "choices")],
            genres=_counts(record["genres"], "genres"),
            genre_total=_number(record["genre_total"]),
            users=_int(record["users"]),
            linear={name: _step(step) for name, step in _mapping(record["linear"]).items()},
            promotion=_promotion(record.get("promotion", [])),  # absent before 2026-12
        )
    except KeyError as missing:
        raise ValueError(f"missing field {missing}") from None
    if delta.half_life_ms <= 0:
        raise ValueError(f"half_life_ms {delta.half_life_ms} is not positive")
    return delta


def _step(record: Any) -> _Step:
    step = _mapping(record)
    columns = [_vector(step[name]) for name in ("n", "mean", "m2", "weights")]
    if len({len(column) for column in columns}) != 1:
        raise ValueError("a linear step's columns differ in length")
    n, mean, m2, weights = columns
    return _Step(_Moments(n, mean, m2), weights, _number(step["intercept"]))


def _promotion(value: Any) -> dict[tuple[str, str], Moments]:
    """The promotion test's paired differences, each a placement difference in [-1, 1]."""
    found: dict[tuple[str, str], Moments] = {}
    for entry in _list(value, "promotion"):
        test = _mapping(entry, "a promotion entry")
        champion, challenger = test["champion"], test["challenger"]
        if not isinstance(champion, str) or not isinstance(challenger, str):
            raise ValueError("a promotion entry names its champion and challenger")
        count = _int(test["count"])
        total, total_sq = _number(test["total"]), _number(test["total_sq"])
        if (champion, challenger) in found:
            raise ValueError(f"promotion of {challenger} over {champion} twice")
        # each difference lies in [-1, 1] (some float rounding allowed)
        slack = count * (1.0 + 1e-9)
        if count < 0 or abs(total) > slack or not 0 <= total_sq <= slack:
            raise ValueError(
                f"promotion of {challenger} over {champion}: {count} differences in [-1, 1] "
                f"cannot sum to {total!r} with squares summing to {total_sq!r}"
            )
        found[champion, challenger] = Moments(count, total, total_sq)
    return found


def _vector(value: Any) -> np.ndarray:
    values = [_number(v) for v in _list(value, "column")]
    return np.array(values, dtype=float)


def _choice(value: Any) -> tuple[str | None, str]:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"a choice is [previous, chosen], not {value!r:.80}")
    previous, chosen = value
    if not isinstance(chosen, str) or not (previous is None or isinstance(previous, str)):
        raise ValueError(f"a choice names items, not {value!r:.80}")
    return previous, chosen


def _counts(value: Any, what: str) -> dict[str, float]:
    return {str(k): _number(v) for k, v in _mapping(value, what).items()}


def _mapping(value: Any, what: str = "linear") -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not an object")
    return value


def _list(value: Any, what: str) -> Iterable[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{what} is not a list")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{value!r:.40} is not a finite number")
    return float(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r:.40} is not an integer")
    return value
