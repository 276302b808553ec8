"""Catalog items: the validator that enforces ``schemas/catalog.schema.json`` on untrusted input.

Items come from the compacted ``ott.catalog`` topic, which anyone allowed to write it fills,
or from a JSONL file. :func:`catalog_item` turns one parsed item into the record the models
keep (genres lower-cased, ``title`` and ``duration_s`` present) or raises
:class:`CatalogItemRejected` with a machine-readable reason, so that one bad item is skipped
and counted instead of stopping every worker that reads the topic.

Examples
--------
>>> catalog_item({"item_id": "x", "title": "Noir", "genres": ["Drama"], "duration_s": 60})
{'item_id': 'x', 'title': 'Noir', 'genres': ['drama'], 'duration_s': 60.0}
>>> catalog_item({"item_id": "x", "genres": "drama"})
Traceback (most recent call last):
...
pipeline.core.catalog_items.CatalogItemRejected: wrong_type: genres: expected array, got string
>>> catalog_item(b"{oops")
Traceback (most recent call last):
...
pipeline.core.catalog_items.CatalogItemRejected: not_json: not a JSON value
"""

from __future__ import annotations

from typing import Any, Final

# the event decoder's field checks: one definition of a valid id, text and number
from pipeline.core.events import MAX_SECONDS, _Invalid, _json_type, _number, _text

__all__ = ["CATALOG_REJECT_REASONS", "CatalogItemRejected", "catalog_item"]

CATALOG_REJECT_REASONS: Final = (
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "invalid_value",
)
"""Every :attr:`CatalogItemRejected.reason` (the label of the rejection metric)."""

MAX_GENRES: Final = 32
"""Most genres an item may list."""
MAX_ARTWORKS: Final = 32
"""Most artworks an item may list."""
MAX_TAGS: Final = 16
"""Most tags an artwork may carry."""

_ITEM_ID = _text(1, 128)
_TITLE = _text(0, 512)
_GENRE = _text(1, 64)
_DURATION = _number(minimum=0.0, maximum=MAX_SECONDS, exclusive_minimum=True)


class CatalogItemRejected(Exception):
    """A catalog item that does not validate, and why (``reason``: one of the reasons above)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def catalog_item(obj: object) -> dict[str, Any]:
    """The catalog record of one parsed item, validated against ``catalog.schema.json``.

    Parameters
    ----------
    obj
        The item as parsed from JSON; ``bytes`` stand for a value that did not parse.

    Returns
    -------
    dict
        ``{item_id, title, genres, duration_s}`` with genres lower-cased and absent
        fields ``None`` (or no genres); ``artworks`` (``[{artwork_id, tags}]``, tags
        lower-cased) when the item lists any; other fields of the item are kept.

    Raises
    ------
    CatalogItemRejected
        When the item does not validate.
    """
    if isinstance(obj, bytes | bytearray | memoryview):
        raise CatalogItemRejected("not_json", "not a JSON value")
    if type(obj) is not dict:
        raise CatalogItemRejected("not_object", f"expected a JSON object, got {_json_type(obj)}")
    if "item_id" not in obj:
        raise CatalogItemRejected("missing_field", "item_id: required")
    name = "item_id"
    extra: dict[str, Any] = {}
    try:
        item_id = _ITEM_ID(obj["item_id"])
        name = "title"
        title = obj.get("title")
        if title is not None:
            _TITLE(title)
        name = "genres"
        genres = obj.get("genres", [])
        if type(genres) is not list:
            raise _Invalid("wrong_type", f"expected array, got {_json_type(genres)}")
        if len(genres) > MAX_GENRES:
            raise _Invalid("invalid_value", f"{len(genres)} genres, at most {MAX_GENRES}")
        genres = [_GENRE(genre).lower() for genre in genres]
        name = "duration_s"
        duration = obj.get("duration_s")
        if duration is not None:
            duration = _DURATION(duration)
        name = "artworks"
        if "artworks" in obj:
            extra["artworks"] = _artworks(obj["artworks"])
    except _Invalid as exc:
        where = "" if exc.detail.startswith("[") else ": "  # artworks[2].tags: ...
        raise CatalogItemRejected(exc.reason, f"{name}{where}{exc.detail}") from None
    return {
        **obj,
        "item_id": item_id,
        "title": title,
        "genres": genres,
        "duration_s": duration,
        **extra,
    }


def _artworks(value: object) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The artworks of an item, ``[{artwork_id, tags}]``: ids distinct, tags lower-cased.

    Kept as ``(artwork_id, tags)`` tuples, as the artwork picks read them: a catalog of
    thousands of items holds no dictionary or list per artwork for the garbage collector to
    traverse (tuples of strings it stops tracking).

    >>> _artworks([{"artwork_id": "a1", "tags": ["Close-Up"]}, {"artwork_id": "a2"}])
    (('a1', ('close-up',)), ('a2', ()))
    >>> _artworks([{"artwork_id": "a1"}, {"artwork_id": "a1"}])
    Traceback (most recent call last):
    ...
    pipeline.core.events._Invalid: ('invalid_value', "[1].artwork_id: 'a1' listed twice")
    """
    if type(value) is not list:
        raise _Invalid("wrong_type", f"expected array, got {_json_type(value)}")
    if len(value) > MAX_ARTWORKS:
        raise _Invalid("invalid_value", f"{len(value)} artworks, at most {MAX_ARTWORKS}")
    artworks, seen = [], set()
    for index, artwork in enumerate(value):
        where = f"[{index}]"
        if type(artwork) is not dict:
            raise _Invalid("wrong_type", f"{where}: expected object, got {_json_type(artwork)}")
        if "artwork_id" not in artwork:
            raise _Invalid("missing_field", f"{where}.artwork_id: required")
        try:
            artwork_id = _ITEM_ID(artwork["artwork_id"])
        except _Invalid as exc:
            raise _Invalid(exc.reason, f"{where}.artwork_id: {exc.detail}") from None
        if artwork_id in seen:
            raise _Invalid("invalid_value", f"{where}.artwork_id: {artwork_id!r} listed twice")
        seen.add(artwork_id)
        tags = artwork.get("tags", [])
        if type(tags) is not list:
            raise _Invalid("wrong_type", f"{where}.tags: expected array, got {_json_type(tags)}")
        if len(tags) > MAX_TAGS:
            raise _Invalid("invalid_value", f"{where}.tags: {len(tags)} tags, at most {MAX_TAGS}")
        try:
            tags = [_GENRE(tag).lower() for tag in tags]
        except _Invalid as exc:
            raise _Invalid(exc.reason, f"{where}.tags: {exc.detail}") from None
        artworks.append((artwork_id, tuple(tags)))
    return tuple(artworks)
