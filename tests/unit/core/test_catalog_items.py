"""Catalog items are untrusted input: validated as the catalog schema says, bad ones skipped."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_decoder_matches_schema import JSON_VALUES

from pipeline.config import Settings
from pipeline.core.catalog_items import CATALOG_REJECT_REASONS, CatalogItemRejected, catalog_item
from pipeline.core.processor import Processor
from pipeline.serde.schemas import validator

SCHEMA = validator("catalog")
GOOD = {"item_id": "film-1", "title": "Heat", "genres": ["Crime"], "duration_s": 10_200}

FIELD_VALUES = {
    "item_id": st.text(max_size=130) | JSON_VALUES,
    "title": st.none() | st.text(max_size=520) | JSON_VALUES,
    "genres": st.lists(st.text(max_size=66), max_size=34) | JSON_VALUES,
    "duration_s": st.none()
    | st.floats(-1, 90_000, allow_nan=False)
    | st.sampled_from([0, 86_400, 86_401, 5e-324])
    | JSON_VALUES,
    # distinct ids: the one rule of artworks beyond the schema (test_artwork_takes.py)
    "artworks": st.lists(
        st.fixed_dictionaries(
            {"artwork_id": st.text(max_size=130) | JSON_VALUES},
            optional={"tags": st.lists(st.text(max_size=66), max_size=17) | JSON_VALUES},
        )
        | JSON_VALUES,
        max_size=33,
        unique_by=lambda art: repr(art.get("artwork_id") if type(art) is dict else art),
    )
    | JSON_VALUES,
}
ITEMS = (
    st.fixed_dictionaries({}, optional=FIELD_VALUES).flatmap(
        lambda item: st.dictionaries(st.text(max_size=4), JSON_VALUES, max_size=2).map(
            lambda extra: {**extra, **item}
        )
    )
    | JSON_VALUES
)


@settings(max_examples=2_000, deadline=None)
@given(item=ITEMS)
def test_the_validator_accepts_exactly_what_the_schema_accepts(item: Any) -> None:
    try:
        record = catalog_item(item)
    except CatalogItemRejected as rejected:
        assert rejected.reason in CATALOG_REJECT_REASONS
        assert not SCHEMA.is_valid(item), rejected
    else:
        assert SCHEMA.is_valid(item)
        assert record["genres"] == [genre.lower() for genre in item.get("genres", [])]


@pytest.mark.parametrize(
    ("item", "reason", "detail"),
    [
        ({"item_id": "x", "genres": 5}, "wrong_type", "genres: expected array, got integer"),
        ({"item_id": "x", "genres": "drama"}, "wrong_type", "genres: expected array, got string"),
        ({"item_id": 7}, "wrong_type", "item_id: expected string, got integer"),
        ({"title": "no id"}, "missing_field", "item_id: required"),
        ({"item_id": "x", "duration_s": 1e308}, "invalid_value", None),
        ({"item_id": "x", "genres": [""]}, "invalid_value", None),
        (["x"], "not_object", "expected a JSON object, got array"),
        (b"\xff{", "not_json", "not a JSON value"),
    ],
)
def test_a_bad_item_is_refused_with_its_reason(item: Any, reason: str, detail: str | None) -> None:
    with pytest.raises(CatalogItemRejected) as rejected:
        catalog_item(item)
    assert rejected.value.reason == reason
    assert detail is None or rejected.value.detail == detail


def test_the_processor_skips_and_counts_bad_items_and_loads_the_others() -> None:
    processor = Processor(Settings())
    processor.load_catalog(
        [{"item_id": "x", "genres": 5}, GOOD, {"item_id": "y", "genres": "drama"}, b"{oops"]
    )
    assert list(processor.catalog) == ["film-1"]
    assert processor.catalog["film-1"]["genres"] == ["crime"]
    assert processor.tally.catalog_rejected == {"wrong_type": 2, "not_json": 1}
    assert processor.models(0).items.genres(0) == ("crime",)
