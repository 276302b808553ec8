"""Consent records from an untrusted topic: refused with a reason, never a crash."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import Settings
from pipeline.core.processor import Processor
from pipeline.crm.consent import CHANNELS, CONSENT_REFUSE_REASONS, ConsentRefused, consent_record

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
RECORD = st.fixed_dictionaries(
    {"user_id": st.text(min_size=1, max_size=8) | JSON},
    optional={"opted_out": st.lists(st.sampled_from([*CHANNELS, "all", "fax"]) | JSON, max_size=4)},
)


@settings(max_examples=300, deadline=None)
@given(obj=JSON | RECORD | st.binary(max_size=16))
def test_any_value_is_read_or_refused_with_a_known_reason(obj) -> None:
    try:
        user_id, channels = consent_record(obj)
    except ConsentRefused as refused:
        assert refused.reason in CONSENT_REFUSE_REASONS
    else:
        assert isinstance(obj, dict) and user_id == obj["user_id"]
        assert channels <= set(CHANNELS)


def test_the_processor_counts_refused_records_and_keeps_the_valid_ones() -> None:
    p = Processor(Settings(), clock=lambda: 4.1e9)
    p.load_consent(
        [
            b"{not json",
            ["u1"],
            {"opted_out": ["email"]},
            {"user_id": "u1", "opted_out": ["fax"]},
            {"user_id": "u1", "opted_out": "email"},
            {"user_id": "u2", "opted_out": ["push"]},
        ]
    )
    assert dict(p.tally.consent_refused) == {
        "not_json": 1, "not_object": 1, "missing_field": 1, "invalid_value": 1, "wrong_type": 1
    }  # fmt: skip
    assert not p.consent.allows("u2", "push") and p.consent.allows("u1", "email")
    assert sorted(CONSENT_REFUSE_REASONS) == sorted(p.tally.consent_refused)
