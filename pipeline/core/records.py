"""Output records: the JSON that ottscore publishes, one builder per record type.

Each builder returns the encoded value (orjson bytes) of a record that validates against
its schema in ``schemas/`` (``dlq``, ``churn``, ``signal``, ``personalization``).

Examples
--------
>>> import orjson
>>> key, value = dlq_record("not_json", "expected value", b"{oops", key=b"u1",
...                         topic="ott.events", partition=2, offset=41,
...                         received_at_ms=1_764_000_000_000)
>>> rec = orjson.loads(value)
>>> rec["reason"], rec["original"], rec["original_encoding"], rec["received_at"]
('not_json', '{oops', 'text', '2025-11-24T16:00:00.000Z')
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from pipeline.core.events import format_ts

__all__ = [
    "SCHEMA_VERSION",
    "dlq_record",
    "quarantine_record",
    "reduced_dlq_record",
    "churn_record",
    "personalization_record",
    "signal_record",
    "risk_band",
]

SCHEMA_VERSION = 1

#: Longest key copied into a dead-letter record (as its Kafka key and its ``key`` field);
#: a longer one is cut, and the record says so (``key_truncated``, ``key_size``).
MAX_DLQ_KEY_BYTES = 1024

#: Room left in the dead-letter topic's ``max.message.bytes`` for what Kafka adds around a
#: record's key and value (the batch header is 61 bytes, a record's own fields ~20).
DLQ_RECORD_OVERHEAD = 1024


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
    max_bytes: int = 1_048_576 - DLQ_RECORD_OVERHEAD,
) -> tuple[bytes | None, bytes]:
    r"""A dead-letter record ``(key, value)`` whose key and value take at most ``max_bytes``.

    The value carries the original bytes (as text if UTF-8, else base64) and their SHA-256.
    The bound holds for the record as encoded: a key over :data:`MAX_DLQ_KEY_BYTES` is cut,
    and an original whose escaped JSON would not fit is cut to the longest prefix that does
    (``original_truncated``; ``original_size`` keeps the whole size). JSON escaping can
    make the text six times longer than its bytes (``\x01`` is ``\u0001``), hence the
    measure on the encoded form.

    >>> key, value = dlq_record("oversized", "too long", b"\x01" * 5000, key=b"k" * 2000,
    ...                         topic="ott.events", partition=0, offset=7,
    ...                         received_at_ms=0, max_bytes=4096)
    >>> rec = orjson.loads(value)
    >>> len(key), len(key) + len(value) <= 4096, rec["key_size"], rec["original_truncated"]
    (1024, True, 2000, True)
    >>> 0 < len(rec["original"]) < 5000, rec["original_size"]
    (True, 5000)
    """
    original = raw or b""
    cut_key = key if key is None or len(key) <= MAX_DLQ_KEY_BYTES else key[:MAX_DLQ_KEY_BYTES]
    try:
        text, encoding = original.decode("utf-8"), "text"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(original).decode("ascii"), "base64"
    record: dict[str, Any] = {
        "reason": reason,
        "detail": detail,
        "original": text,
        "original_encoding": encoding,
        "original_size": len(original),
        "original_sha256": hashlib.sha256(original).hexdigest(),
        "key": None if cut_key is None else cut_key.decode("utf-8", "replace"),
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "received_at": format_ts(received_at_ms),
        "schema_version": SCHEMA_VERSION,
    }
    if cut_key is not key:
        record["key_truncated"] = True
        record["key_size"] = len(key or b"")
    budget = max_bytes - len(cut_key or b"")
    value = orjson.dumps(record)
    if len(value) <= budget:
        return cut_key, value
    record["original"] = ""
    record["original_truncated"] = True
    room = budget - len(orjson.dumps(record))
    if encoding == "base64":
        record["original"] = base64.b64encode(original[: max(0, room) // 4 * 3]).decode("ascii")
    else:
        record["original"] = text[: _longest_prefix(text, room)]
    return cut_key, orjson.dumps(record)


def _longest_prefix(text: str, room: int) -> int:
    """The most characters of ``text`` whose JSON string escape takes at most ``room`` bytes."""
    low, high = 0, max(0, min(len(text), room))  # a character escapes to 1 byte or more
    while low < high:
        middle = (low + high + 1) // 2
        if len(orjson.dumps(text[:middle])) - 2 <= room:
            low = middle
        else:
            high = middle - 1
    return low


def reduced_dlq_record(value: bytes) -> bytes:
    """The dead-letter record ``value`` without its original bytes (``original_omitted``).

    What the worker sends instead when the topic refuses a dead-letter record for its size
    (the topic's limit was lowered after ottscore read it): the reason, the origin and the
    original's size and SHA-256 still say what was rejected and where to find it.

    >>> _, value = dlq_record("not_json", "bad", b"{oops", key=b"u1", topic="t",
    ...                       partition=0, offset=1, received_at_ms=0)
    >>> rec = orjson.loads(reduced_dlq_record(value))
    >>> rec["original"], rec["original_omitted"], rec["original_size"], rec["offset"]
    ('', True, 5, 1)
    """
    record = orjson.loads(value)
    record.update(original="", original_encoding="text", original_truncated=True,
                  original_omitted=True)  # fmt: skip
    return orjson.dumps(record)


def quarantine_record(
    reason: str,
    detail: str,
    *,
    key: bytes,
    value: bytes,
    app_id: str,
    partition: int,
    quarantined_at_ms: int,
) -> bytes:
    """A stored user state that no release can read, set aside with the reason.

    >>> rec = orjson.loads(quarantine_record("not_json", "unexpected character", key=b"u1",
    ...     value=b"{oops", app_id="ottscore", partition=2, quarantined_at_ms=0))
    >>> rec["reason"], rec["key"], base64.b64decode(rec["state"]), rec["partition"]
    ('not_json', 'u1', b'{oops', 2)
    """
    return orjson.dumps(
        {
            "reason": reason,
            "detail": detail,
            "key": key.decode("utf-8", "replace"),
            "state": base64.b64encode(value).decode("ascii"),
            "app_id": app_id,
            "partition": partition,
            "quarantined_at": format_ts(quarantined_at_ms),
            "schema_version": SCHEMA_VERSION,
        }
    )


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
    experiments: Mapping[str, str] | None = None,
    trigger: str | None = None,
) -> bytes:
    """A churn risk record for ``user_id`` at event time ``ts_ms``.

    ``experiments`` (experiment id → variant) names the variants that shaped it;
    ``trigger`` what made the score (``session_end``, or ``inactive_<days>d``).
    """
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
    if experiments:
        record["experiments"] = experiments
    if trigger is not None:
        record["trigger"] = trigger
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
    experiments: Mapping[str, str] | None = None,
    trigger: str | None = None,
) -> bytes:
    """A risk transition (``became_at_risk`` or ``recovered``) of ``user_id``.

    ``trigger`` names the score that moved it, as in :func:`churn_record`.
    """
    record: dict[str, Any] = {
        "user_id": user_id,
        "ts": format_ts(ts_ms),
        "signal": signal,
        "churn_probability": probability,
        "risk_band": band,
        "previous_band": previous_band,
        "model_version": model_version,
        "schema_version": SCHEMA_VERSION,
    }
    if experiments:
        record["experiments"] = experiments
    if trigger is not None:
        record["trigger"] = trigger
    return orjson.dumps(record)


def personalization_record(
    user_id: str,
    ts_ms: int,
    *,
    items: Sequence[tuple[str, float, str]],
    model_version: str,
    segment: int | None,
    cold_start: bool,
    experiments: Mapping[str, str] | None = None,
    artworks: Sequence[tuple[str, float] | None] = (),
) -> bytes:
    """A top-K list ``[(item_id, score, reason), ...]`` for ``user_id`` at event time ``ts_ms``.

    ``artworks`` gives each item, in order, the ``(artwork_id, propensity)`` it is shown with
    (None, or none at all: the item has no artwork).
    """
    listed = [
        {"item_id": item_id, "score": score, "reason": reason} for item_id, score, reason in items
    ]
    for entry, artwork in zip(listed, artworks, strict=False):
        if artwork is not None:
            entry["artwork_id"], entry["propensity"] = artwork
    record: dict[str, Any] = {
        "user_id": user_id,
        "ts": format_ts(ts_ms),
        "items": listed,
        "model_version": model_version,
        "schema_version": SCHEMA_VERSION,
        "cold_start": cold_start,
    }
    if segment is not None:
        record["segment"] = segment
    if experiments:
        record["experiments"] = experiments
    return orjson.dumps(record)


def action_record(
    user_id: str,
    ts_ms: int,
    *,
    trigger_id: str,
    kind: str,
    status: str,
    channel: str,
    score: float,
    reasons: Sequence[str],
    expires_ms: int,
    item_id: str | None = None,
    experiments: Mapping[str, str] | None = None,
) -> bytes:
    """A CRM trigger for ``user_id`` at event time ``ts_ms`` (``schemas/action.schema.json``).

    ``status`` is ``sent``, or ``withheld`` by a holdout; ``trigger_id`` is its idempotency
    key (:func:`pipeline.crm.triggers.trigger_id`).
    """
    record: dict[str, Any] = {
        "trigger_id": trigger_id,
        "user_id": user_id,
        "type": kind,
        "status": status,
        "ts": format_ts(ts_ms),
        "expires_at": format_ts(expires_ms),
        "channel": channel,
        "score": score,
        "reasons": list(reasons),
        "schema_version": SCHEMA_VERSION,
    }
    if item_id is not None:
        record["item_id"] = item_id
    if experiments:
        record["experiments"] = experiments
    return orjson.dumps(record)


def kpi_partial_record(
    partition: int,
    *,
    released_ms: int,
    follow_ms: int,
    closed: Sequence[Any],
    outcomes: Sequence[tuple[int, Any]] = (),
    experiments: Mapping[str, Any] | None = None,
) -> bytes:
    """A partition's KPI windows closed since its last record, and how far it has closed.

    ``closed`` holds :class:`~pipeline.kpis.windows.WindowCounts` and
    :class:`~pipeline.kpis.windows.ReturnCounts`; ``released_ms`` is the event time up to
    which the partition applied its events: every window whose end plus ``follow_ms`` is at
    or before it is closed, and every 7-day return whose week ended by it
    (``schemas/kpi_partial.schema.json``; :class:`pipeline.kpis.combine.KpiCombiner` adds
    the partitions up). ``outcomes`` are the partition's experiment outcome changes per hour
    boundary up to ``released_ms``, ``experiments`` the definitions they need
    (:class:`pipeline.experiments.live_results.ResultsCombiner` adds them up); both are
    left out when empty.
    """
    windows, returns = [], []
    for part in closed:
        scope = list(part.scope)
        if hasattr(part, "size"):
            windows.append(
                {
                    "window": part.size,
                    "start_ms": part.start_ms,
                    "scope": scope,
                    "active_users": part.active_users,
                    "sessions": part.sessions,
                    "play_starts": part.play_starts,
                    "clicks": part.clicks,
                    "click_plays": part.click_plays,
                    "searches": part.searches,
                    "search_plays": part.search_plays,
                    "completions": part.completions,
                    "watch_s": part.watch_s,
                }  # fmt: skip
            )
        else:
            returns.append(
                {
                    "start_ms": part.start_ms,
                    "scope": scope,
                    "active_users": part.active_users,
                    "returned": part.returned,
                }  # fmt: skip
            )
    return orjson.dumps(
        {
            "partition": partition,
            "released_ms": released_ms,
            "follow_ms": follow_ms,
            "windows": windows,
            "returns": returns,
            **({"outcomes": outcomes, "experiments": experiments or {}} if outcomes else {}),
            "schema_version": 1,
        }
    )
