"""Output records: the JSON that ottscore publishes, one builder per record type.

Each builder returns the encoded value (orjson bytes) of a record that validates against
its schema in ``schemas/`` (``dlq``, ``churn``, ``signal``, ``personalization``).

Examples
--------
>>> import orjson
>>> rec = orjson.loads(dlq_record("not_json", "expected value", b"{oops", key=b"u1",
...                               topic="ott.events", partition=2, offset=41,
...                               received_at_ms=1_764_000_000_000))
>>> rec["reason"], rec["original"], rec["original_encoding"], rec["received_at"]
('not_json', '{oops', 'text', '2025-11-24T16:00:00.000Z')
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import orjson

from pipeline.events import format_ts

__all__ = [
    "SCHEMA_VERSION",
    "dlq_record",
    "churn_record",
    "personalization_record",
    "signal_record",
    "risk_band",
]

SCHEMA_VERSION = 1

#: Largest original payload copied into a dead-letter record; larger ones are truncated
#: (and say so), so that the record itself stays below Kafka's default 1 MiB limit.
MAX_DLQ_ORIGINAL_BYTES = 512 * 1024


def dlq_record(
    reason: str,
    detail: str,
    raw: bytes | None,
    *,
    key: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    received_at_ms: int,
) -> bytes:
    """A dead-letter record carrying the original bytes (as text if UTF-8, else base64)."""
    original = raw or b""
    truncated = len(original) > MAX_DLQ_ORIGINAL_BYTES
    if truncated:
        original = original[:MAX_DLQ_ORIGINAL_BYTES]
    try:
        text, encoding = original.decode("utf-8"), "text"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(original).decode("ascii"), "base64"
    record: dict[str, Any] = {
        "reason": reason,
        "detail": detail,
        "original": text,
        "original_encoding": encoding,
        "original_size": len(raw or b""),
        "key": None if key is None else key.decode("utf-8", "replace"),
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "received_at": format_ts(received_at_ms),
        "schema_version": SCHEMA_VERSION,
    }
    if truncated:
        record["original_truncated"] = True
    return orjson.dumps(record)


def risk_band(probability: float, *, medium: float, high: float) -> str:
    """The risk band of a churn probability.

    >>> risk_band(0.1, medium=0.3, high=0.6), risk_band(0.45, medium=0.3, high=0.6)
    ('low', 'medium')
    """
    if probability >= high:
        return "high"
    return "medium" if probability >= medium else "low"


def churn_record(
    user_id: str,
    ts_ms: int,
    *,
    probability: float,
    band: str,
    model_version: str,
    top_features: Sequence[tuple[str, float, float]] = (),
    session: dict[str, Any] | None = None,
    segment: int | None = None,
) -> bytes:
    """A churn risk record for ``user_id`` at event time ``ts_ms``."""
    record: dict[str, Any] = {
        "user_id": user_id,
        "ts": format_ts(ts_ms),
        "churn_probability": probability,
        "risk_band": band,
        "model_version": model_version,
        "schema_version": SCHEMA_VERSION,
        "top_features": [
            {"name": name, "value": value, "contribution": contribution}
            for name, value, contribution in top_features
        ],
    }
    if session is not None:
        record["session"] = session
    if segment is not None:
        record["segment"] = segment
    return orjson.dumps(record)


def signal_record(
    user_id: str,
    ts_ms: int,
    *,
    signal: str,
    probability: float,
    band: str,
    previous_band: str,
    model_version: str,
) -> bytes:
    """A risk transition (``became_at_risk`` or ``recovered``) of ``user_id``."""
    return orjson.dumps(
        {
            "user_id": user_id,
            "ts": format_ts(ts_ms),
            "signal": signal,
            "churn_probability": probability,
            "risk_band": band,
            "previous_band": previous_band,
            "model_version": model_version,
            "schema_version": SCHEMA_VERSION,
        }
    )


def personalization_record(
    user_id: str,
    ts_ms: int,
    *,
    items: Sequence[tuple[str, float, str]],
    model_version: str,
    segment: int | None,
    cold_start: bool,
) -> bytes:
    """A top-K list ``[(item_id, score, reason), ...]`` for ``user_id`` at event time ``ts_ms``."""
    record: dict[str, Any] = {
        "user_id": user_id,
        "ts": format_ts(ts_ms),
        "items": [
            {"item_id": item_id, "score": score, "reason": reason}
            for item_id, score, reason in items
        ],
        "model_version": model_version,
        "schema_version": SCHEMA_VERSION,
        "cold_start": cold_start,
    }
    if segment is not None:
        record["segment"] = segment
    return orjson.dumps(record)
