"""Fuzz the decoder: 11,000 drawn inputs, each rejected with a known reason, none raising.

Inputs: invalid events from the schema property tests (mutated fields, dropped fields,
values across the limits), the same events with their bytes truncated, spliced with
bytes that are not UTF-8, nested past any sane depth or padded past the size limit, and
arbitrary bytes. A drawn input that happens to be valid (a mutation may keep an event
valid) is not counted; the test asserts at least 10,000 invalid ones were decoded.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_decoder_matches_schema import SCHEMA, invalid_events, valid_events

from pipeline.core.events import REJECT_REASONS, Event, EventDecoder, Rejection

DECODER = EventDecoder()  # the worker's limits: 16 KiB, one day of clock skew
EXAMPLES = 11_000
MAX_BYTES = 16_384  # the worker's default OTTSCORE_MAX_EVENT_BYTES
decoded: dict[str, int] = {"invalid": 0}


def schema_valid(raw: bytes) -> bool:
    """The schema's verdict on ``raw`` (independent of the decoder)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return SCHEMA.is_valid(obj)


@st.composite
def malformed(draw: st.DrawFn) -> bytes:
    """Draw one input, most of them malformed (see the module docstring)."""
    shape = draw(st.sampled_from(["mutated", "truncated", "not_utf8", "nested", "padded", "bytes"]))
    if shape == "mutated":
        return orjson.dumps(draw(invalid_events()))
    if shape == "bytes":
        return draw(st.binary(max_size=400))
    raw = orjson.dumps(draw(valid_events()))
    if shape == "truncated":
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if shape == "not_utf8":
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])) + raw[at:]
    if shape == "nested":
        depth = draw(st.integers(1100, 5000))  # past orjson's limit of 1,024 levels
        obj: Any = orjson.loads(raw)
        return raw[:-1] + b',"deep":' + b"[" * depth + b"]" * depth + b"}" if obj else raw
    return raw[:-1] + b',"pad":"' + b"x" * draw(st.integers(16_384, 40_000)) + b'"}'


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(raw=malformed())
def test_malformed_inputs_are_rejected_with_a_reason(raw: bytes) -> None:
    result = DECODER.decode(raw)
    assert isinstance(result, Event | Rejection)
    if len(raw) <= MAX_BYTES and schema_valid(raw):
        return  # a mutation that kept the event valid: not a malformed input
    assert isinstance(result, Rejection), raw[:200]
    assert result.reason in REJECT_REASONS and result.detail
    decoded["invalid"] += 1


@pytest.mark.slow
def test_at_least_ten_thousand_malformed_inputs_were_decoded() -> None:
    """Runs after the fuzz test above (file order): it must have seen 10,000 invalid inputs."""
    assert decoded["invalid"] >= 10_000, decoded
    print(f"\nfuzz: {decoded['invalid']} malformed inputs, 100 % rejected with a reason")
