"""Dead-letter records fit their topic, whatever the rejected record holds."""

from __future__ import annotations

import base64
import hashlib

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.records import (
    DLQ_RECORD_OVERHEAD,
    MAX_DLQ_KEY_BYTES,
    dlq_record,
    reduced_dlq_record,
)
from pipeline.serde.schemas import validator

DLQ = validator("dlq")
MIB = 1_048_576


def letter(raw: bytes | None, key: bytes | None, max_bytes: int) -> tuple[bytes | None, dict]:
    out_key, value = dlq_record(
        "oversized", "too long", raw, key=key, topic="ott.events", partition=3, offset=41,
        received_at_ms=1_795_378_503_120, max_bytes=max_bytes,
    )  # fmt: skip
    assert len(out_key or b"") + len(value) <= max_bytes
    record = orjson.loads(value)
    DLQ.validate(record)
    return out_key, record


def original_bytes(record: dict) -> bytes:
    if record["original_encoding"] == "base64":
        return base64.b64decode(record["original"])
    return record["original"].encode()


# the records that crash-looped a worker: each escapes to several times its size
POISON = {
    "600 KB of \\x01 (6x as JSON)": (b"\x01" * 600_000, b"u-1"),
    '600 KB of " (2x as JSON)': (b'"' * 600_000, b"u-1"),
    "600 KB not UTF-8 (4/3 as base64)": (b"\xff" * 600_000, b"u-1"),
    "a 900 KB key": (b'{"oops', b"k" * 900_000),
    "1 MB of 4-byte characters": ("🎬".encode() * 250_000, None),
}


def test_each_record_that_crashed_a_worker_fits_a_1_mib_dead_letter_topic() -> None:
    for name, (raw, key) in POISON.items():
        out_key, record = letter(raw, key, MIB - DLQ_RECORD_OVERHEAD)
        kept = original_bytes(record)
        assert raw.startswith(kept) and len(kept) >= min(len(raw), 100_000), name
        assert record["original_size"] == len(raw)
        assert record["original_sha256"] == hashlib.sha256(raw).hexdigest()
        assert record.get("original_truncated", False) == (len(kept) < len(raw)), name
        if key is not None and len(key) > MAX_DLQ_KEY_BYTES:
            assert out_key == key[:MAX_DLQ_KEY_BYTES] and record["key_size"] == len(key)
            assert record["key_truncated"] and record["key"] == out_key.decode()
        else:
            assert out_key == key and "key_truncated" not in record


def test_a_small_record_is_carried_whole_with_its_key() -> None:
    out_key, record = letter(b'{"oops', b"u-1", MIB)
    assert (out_key, record["original"], record["key"]) == (b"u-1", '{"oops', "u-1")
    assert "original_truncated" not in record


@settings(max_examples=300, deadline=None)
@given(
    raw=st.none() | st.binary(max_size=20_000) | st.text(max_size=5_000).map(str.encode),
    key=st.none() | st.binary(max_size=3_000),
    max_bytes=st.integers(4_096, 40_000),
)
def test_any_record_and_key_give_a_valid_dead_letter_within_the_bound(
    raw: bytes | None, key: bytes | None, max_bytes: int
) -> None:
    out_key, record = letter(raw, key, max_bytes)
    kept = original_bytes(record)
    assert (raw or b"").startswith(kept)
    if record.get("original_truncated"):
        # cut only as far as needed: the next character (6 bytes escaped at most) or base64
        # quantum (4) would not have fitted
        assert len(kept) < len(raw or b"")
        assert len(out_key or b"") + len(orjson.dumps(record)) > max_bytes - 6


def test_the_reduced_form_keeps_reason_origin_and_digest_but_not_the_original() -> None:
    out_key, value = dlq_record(
        "not_json", "invalid JSON", b"{oops" * 1000, key=b"u-1", topic="ott.events",
        partition=3, offset=41, received_at_ms=0,
    )  # fmt: skip
    reduced = orjson.loads(reduced_dlq_record(value))
    DLQ.validate(reduced)
    full = orjson.loads(value)
    assert reduced["original"] == "" and reduced["original_omitted"]
    for field in ("reason", "detail", "topic", "partition", "offset", "key", "original_size"):
        assert reduced[field] == full[field]
    assert reduced["original_sha256"] == hashlib.sha256(b"{oops" * 1000).hexdigest()
