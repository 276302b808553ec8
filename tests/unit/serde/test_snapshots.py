"""Tests of the signed snapshot envelope: round trips, refusals, and no unpickling unverified."""

from __future__ import annotations

import dataclasses
import hmac
import json
import os
import pickle
import random
import re
import struct
import sys
import types
from contextlib import AbstractContextManager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from river import compose, linear_model, preprocessing, reco

from pipeline.config import Settings
from pipeline.core.processor import Processor
from pipeline.models.churn import LogisticChurn
from pipeline.models.partition import PartitionModels
from pipeline.models.reco.recommender import Recommender
from pipeline.serde.snapshots import (
    FORMAT_VERSION,
    MAGIC,
    MAX_SNAPSHOT_BYTES,
    REFUSAL_REASONS,
    SnapshotHeader,
    SnapshotRefused,
    seal,
    stored_as,
    unseal,
)
from pipeline.sim.simulate import SimulationConfig, Simulator

KEY = b"0123456789abcdef0123456789abcdef"
APP = "ottscore"


def trained_logreg(samples: int = 50) -> compose.Pipeline:
    """A scaled logistic regression after ``samples`` ``learn_one`` calls."""
    rng = random.Random(7)
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for _ in range(samples):
        x = {"sessions": rng.randint(0, 20), "watch_s": rng.random() * 3600}
        model.learn_one(x, x["sessions"] < 5)
    return model


def sealed(models: object = "models", *, key: bytes = KEY, partition: int = 0) -> bytes:
    return seal(models, key=key, app_id=APP, partition=partition, created_ms=1_795_400_000_000)


def resigned(data: bytes, *, drop: str = "", **changes: object) -> bytes:
    """``data`` with header field ``drop`` removed and ``changes`` made, signed again."""
    header, _ = unseal(data, key=KEY, app_id=APP, partition=0)
    payload = data[-32 - header.payload_bytes : -32]
    fields = dataclasses.asdict(header) | changes
    fields.pop(drop, None)
    raw = json.dumps(fields).encode()
    body = struct.pack(">7sBI", b"OTTSNAP", FORMAT_VERSION, len(raw)) + raw + payload
    return body + hmac.digest(KEY, body, "sha256")


def watching_unpickling() -> AbstractContextManager[mock.MagicMock]:
    """Patch ``pickle.loads`` with a spy that records calls (and still unpickles)."""
    return mock.patch.object(pickle, "loads", wraps=pickle.loads)


class MakesDirectoryWhenUnpickled:
    """A hostile payload: unpickling it calls ``os.mkdir(path)``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.path),)


class Vanishing:
    """A class that a later version of the code no longer has."""


BLOB = sealed(trained_logreg(samples=5))


def test_round_trip_of_a_logistic_regression_preserves_predictions_and_learning() -> None:
    model = trained_logreg()
    header, restored = unseal(sealed(model, partition=3), key=KEY, app_id=APP, partition=3)
    probes = [{"sessions": s, "watch_s": w} for s in (0, 4, 12) for w in (0.0, 900.0, 7200.0)]

    def predictions(m: compose.Pipeline) -> list[dict[bool, float]]:
        return [m.predict_proba_one(x) for x in probes]

    assert predictions(restored) == predictions(model)
    for x in probes:  # the restored model goes on learning exactly as the original does
        model.learn_one(x, True)
        restored.learn_one(x, True)
    assert predictions(restored) == predictions(model)
    assert (header.app_id, header.partition, header.offset) == (APP, 3, None)


def test_round_trip_of_a_biased_mf_preserves_its_predictions() -> None:
    rng = random.Random(3)
    model = reco.BiasedMF(n_factors=8, seed=1)
    for _ in range(500):
        model.learn_one(f"u{rng.randrange(30)}", f"i{rng.randrange(100)}", rng.random())
    _, restored = unseal(sealed(model), key=KEY, app_id=APP, partition=0)
    pairs = [(f"u{u}", f"i{i}") for u in range(0, 30, 7) for i in range(0, 100, 13)]
    assert [restored.predict_one(u, i) for u, i in pairs] == [
        model.predict_one(u, i) for u, i in pairs
    ]


def test_header_records_who_when_and_up_to_which_offset() -> None:
    blob = seal({}, key=KEY, app_id=APP, partition=2, created_ms=1234, offset=99)
    header, _ = unseal(blob, key=KEY, app_id=APP, partition=2)
    assert header == SnapshotHeader(
        app_id=APP,
        partition=2,
        created_ms=1234,
        offset=99,
        payload_bytes=len(pickle.dumps({}, protocol=5)),
        algorithm="hmac-sha256",
    )


def test_seal_refuses_an_empty_key() -> None:
    with pytest.raises(ValueError, match="disables snapshots"):
        sealed(key=b"")


def test_refusal_reasons_are_the_four_documented_ones() -> None:
    assert set(REFUSAL_REASONS) == {"unsigned", "bad_signature", "malformed", "wrong_partition"}


REFUSALS = {
    "signature stripped": (lambda: BLOB[:-32], KEY, APP, 0, "unsigned"),
    "no key configured": (lambda: BLOB, b"", APP, 0, "unsigned"),
    "signed with another key": (lambda: BLOB, b"another key", APP, 0, "bad_signature"),
    "header changed, not re-signed": (
        lambda: BLOB.replace(b'"partition":0', b'"partition":1'),
        KEY,
        APP,
        1,
        "bad_signature",
    ),
    "empty": (lambda: b"", KEY, APP, 0, "malformed"),
    "a bare pickle": (lambda: pickle.dumps("models"), KEY, APP, 0, "malformed"),
    "other format version": (
        lambda: BLOB[:7] + bytes([FORMAT_VERSION + 1]) + BLOB[8:],
        KEY,
        APP,
        0,
        "malformed",
    ),
    "cut in the header": (lambda: BLOB[:20], KEY, APP, 0, "malformed"),
    "bytes after the signature": (lambda: BLOB + b"\0", KEY, APP, 0, "malformed"),
    "header declares no algorithm": (
        lambda: resigned(BLOB, algorithm="none"),
        KEY,
        APP,
        0,
        "malformed",
    ),
    "header lacks a field": (lambda: resigned(BLOB, drop="offset"), KEY, APP, 0, "malformed"),
    "header nested 3,000 deep": (lambda: with_header(b"[" * 3000), KEY, APP, 0, "malformed"),
    "header an array": (lambda: with_header(b"[1, 2]"), KEY, APP, 0, "malformed"),
    "header not UTF-8": (lambda: with_header(b'{"app_id": "\xff"}'), KEY, APP, 0, "malformed"),
    "larger than any snapshot": (
        lambda: BLOB + b"\0" * MAX_SNAPSHOT_BYTES,
        KEY,
        APP,
        0,
        "malformed",
    ),
    "another partition's": (lambda: BLOB, KEY, APP, 1, "wrong_partition"),
    "another app's": (lambda: BLOB, KEY, "other-app", 0, "wrong_partition"),
    "signed by us for another partition": (
        lambda: resigned(BLOB, partition=1),
        KEY,
        APP,
        0,
        "wrong_partition",
    ),
}


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
def test_unseal_refuses_with_its_reason_and_without_unpickling(case: tuple) -> None:
    make, key, app_id, partition, reason = case
    data = make()
    with watching_unpickling() as loads, pytest.raises(SnapshotRefused) as refused:
        unseal(data, key=key, app_id=app_id, partition=partition)
    assert refused.value.reason == reason
    loads.assert_not_called()


@given(bit=st.integers(0, len(BLOB) * 8 - 1))
def test_any_bit_flip_anywhere_is_refused_without_unpickling(bit: int) -> None:
    data = bytearray(BLOB)
    data[bit // 8] ^= 1 << (bit % 8)
    with watching_unpickling() as loads, pytest.raises(SnapshotRefused):
        unseal(bytes(data), key=KEY, app_id=APP, partition=0)
    loads.assert_not_called()


def with_header(header: bytes, payload: bytes = b"") -> bytes:
    """A record laid out as a snapshot around ``header`` (whatever it holds), unsigned."""
    return MAGIC + bytes([FORMAT_VERSION]) + struct.pack(">I", len(header)) + header + payload


@given(header=st.binary(max_size=4096) | st.text(max_size=200).map(str.encode))
def test_any_header_is_refused_with_a_reason_never_another_exception(header: bytes) -> None:
    with watching_unpickling() as loads, pytest.raises(SnapshotRefused):
        unseal(with_header(header) + b"\0" * 32, key=KEY, app_id=APP, partition=0)
    loads.assert_not_called()


@given(length=st.integers(0, len(BLOB) - 1))
def test_any_truncation_is_refused_without_unpickling(length: int) -> None:
    with watching_unpickling() as loads, pytest.raises(SnapshotRefused):
        unseal(BLOB[:length], key=KEY, app_id=APP, partition=0)
    loads.assert_not_called()


@pytest.mark.parametrize(
    ("signed_with", "strip_signature", "partition", "reason"),
    [
        (b"the attacker's key", False, 0, "bad_signature"),
        (b"the attacker's key", True, 0, "unsigned"),
        (KEY, False, 1, "wrong_partition"),
    ],
)
def test_a_hostile_payload_is_not_run_unless_signed_with_our_key_for_this_partition(
    tmp_path: Path, signed_with: bytes, strip_signature: bool, partition: int, reason: str
) -> None:
    marker = tmp_path / "pwned"
    data = sealed(MakesDirectoryWhenUnpickled(marker), key=signed_with)
    if strip_signature:
        data = data[:-32]
    with pytest.raises(SnapshotRefused) as refused:
        unseal(data, key=KEY, app_id=APP, partition=partition)
    assert refused.value.reason == reason
    assert not marker.exists()


def test_the_hostile_payload_does_run_when_signed_with_our_key(tmp_path: Path) -> None:
    """The control of the test above: its payload is live, so its refusals mean something."""
    marker = tmp_path / "pwned"
    unseal(sealed(MakesDirectoryWhenUnpickled(marker)), key=KEY, app_id=APP, partition=0)
    assert marker.is_dir()


def test_a_signed_snapshot_that_no_longer_loads_is_refused_as_malformed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = sealed(Vanishing())
    monkeypatch.delattr(sys.modules[Vanishing.__module__], "Vanishing")
    with pytest.raises(SnapshotRefused) as refused:
        unseal(data, key=KEY, app_id=APP, partition=0)
    assert refused.value.reason == "malformed"


def same(a: object, b: object, path: str = "models") -> None:
    """Assert ``a`` and ``b`` hold equal values all the way down (arrays, slots, dicts)."""
    assert type(a) is type(b), path
    if isinstance(a, np.ndarray):
        assert np.array_equal(a, b, equal_nan=True), path
    elif isinstance(a, np.random.Generator):
        same(a.bit_generator.state, b.bit_generator.state, path)  # type: ignore[attr-defined]
    elif isinstance(a, dict):
        assert list(a) == list(b), path  # type: ignore[call-overload]
        for key in a:
            same(a[key], b[key], f"{path}[{key!r}]")  # type: ignore[index]
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path  # type: ignore[arg-type]
        for i, (x, y) in enumerate(zip(a, b, strict=True)):  # type: ignore[call-overload]
            same(x, y, f"{path}[{i}]")
    elif hasattr(a, "__dict__") or hasattr(type(a), "__slots__"):
        names = [n for cls in type(a).__mro__ for n in getattr(cls, "__slots__", ())]
        fields = {n: getattr(a, n) for n in names if hasattr(a, n)} | getattr(a, "__dict__", {})
        assert fields, path
        transient = getattr(type(a), "TRANSIENT", ())  # caches a restore starts afresh
        for name, value in fields.items():
            if name in transient:
                continue
            same(value, getattr(b, name), f"{path}.{name}")
    else:
        assert a == b or (a != a and b != b), path  # NaN equals NaN here


def trained_partition_models() -> PartitionModels:
    simulator = Simulator(SimulationConfig(users=40, days=15, seed=3))
    processor = Processor(Settings())
    processor.load_catalog(simulator.catalog())
    for offset, (key, value) in enumerate(simulator.records()):
        processor.process(value, key=key, partition=0, offset=offset)
    return processor.models(0)


def test_a_snapshot_names_our_classes_by_stable_name_never_by_module_path() -> None:
    """Moving a module must not throw saved models away: no module of ours is in the pickle."""
    models = trained_partition_models()
    blob = sealed(models)
    modules = {name for name in re.findall(rb"pipeline(?:\.\w+)+", blob)}
    assert modules == {b"pipeline.serde.snapshots"}  # the one resolver of stable names
    _, restored = unseal(blob, key=KEY, app_id=APP, partition=0)
    same(restored, models)


def test_a_snapshot_written_under_old_module_paths_restores_by_class_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Releases before stable names pickled ``<module path>.<class>``; the modules moved since."""
    models = trained_partition_models()
    gone = types.ModuleType("pipeline.gone")
    monkeypatch.setitem(sys.modules, "pipeline.gone", gone)
    for cls in (PartitionModels, LogisticChurn, Recommender):
        setattr(gone, cls.__name__, cls)
        monkeypatch.setattr(cls, "__module__", "pipeline.gone")
    old_style = pickle.dumps(models, protocol=5)  # by module path, as releases before did
    monkeypatch.undo()
    assert b"pipeline.gone" in old_style and "pipeline.gone" not in sys.modules
    header, _ = unseal(sealed(models), key=KEY, app_id=APP, partition=0)
    fields = dataclasses.asdict(header) | {"payload_bytes": len(old_style)}
    raw = json.dumps(fields).encode()
    body = struct.pack(">7sBI", MAGIC, FORMAT_VERSION, len(raw)) + raw + old_style
    _, restored = unseal(body + hmac.digest(KEY, body, "sha256"), key=KEY, app_id=APP, partition=0)
    same(restored, models)


def test_one_stable_name_names_one_class() -> None:
    with pytest.raises(ValueError, match="already names"):
        stored_as("PartitionModels")(type("Impostor", (), {}))
