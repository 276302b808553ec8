r"""``ottscore audience``: the audiences of a genre or a title over an events file.

The events go through the processor, as a worker would take them (one partition); the
audiences (:mod:`pipeline.core.audiences`) are read from the user states at the file's last
event time.

Examples
--------
>>> import pathlib, tempfile
>>> from pipeline.core.events import Event, encode_event
>>> tmp = tempfile.TemporaryDirectory(); path = pathlib.Path(tmp.name) / "events.jsonl"
>>> def event(n, kind, position):
...     return encode_event(Event(f"e{n}", kind, "u1", n * 60_000, item_id="m1",
...                               position_s=position, duration_s=3600.0))
>>> _ = path.write_bytes(b"\n".join([event(0, "play", 0.0), event(30, "pause", 1800.0)]))
>>> catalog = [{"item_id": "m1", "title": "Dune", "genres": ["scifi"]}]
>>> report = audience_report(path, catalog, genres=["scifi"], settings=Settings())
>>> report["sizes"], report["members"]["fans"]
({'fans': 1, 'clients': 0, 'lapsed': 0}, ['u1'])
>>> tmp.cleanup()
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.core.audiences import AudienceRules, audiences
from pipeline.core.events import EventDecoder
from pipeline.core.processor import Processor
from pipeline.offline.evaluate import read_event_file
from pipeline.offline.runner import drive

__all__ = ["audience_report", "title_genres"]


def title_genres(catalog: Iterable[Mapping[str, Any]], item_id: str) -> list[str]:
    """The genres of catalog item ``item_id``; :class:`KeyError` if the catalog lacks it."""
    for record in catalog:
        if record.get("item_id") == item_id:
            return list(record.get("genres") or [])
    raise KeyError(f"no item {item_id!r} in the catalog")


def audience_report(
    events_path: str | Path,
    catalog: Iterable[Mapping[str, Any]],
    *,
    genres: Sequence[str],
    settings: Settings,
) -> dict[str, Any]:
    """Sizes and members of the audiences of ``genres`` at the file's last event time."""
    events = read_event_file(events_path, decoder=EventDecoder.from_settings(settings))
    processor = Processor(settings)
    processor.load_catalog(catalog)
    records = (
        (key, value, 0, offset, 0)
        for offset, (key, value) in enumerate(zip(events.keys, events.records, strict=True))
    )
    drive(processor, records)
    at_ms = processor.timers.watermark(0) or 0
    rules = AudienceRules(settings.audience_active_days, settings.audience_fan_share)
    members = audiences(processor.users.values(), genres, at_ms=at_ms, rules=rules)
    return {
        "genres": list(genres),
        "at_ms": at_ms,
        "sizes": {name: len(ids) for name, ids in members.items()},
        "members": members,
    }
