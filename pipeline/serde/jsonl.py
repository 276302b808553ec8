"""Files of JSON lines: the one reader of events files, and of catalogs.

``ottscore evaluate``, ``ottscore replay`` and the tests read events files here, so they
agree on what a record is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

__all__ = ["jsonl_lines", "read_jsonl", "read_jsonl_records"]


def jsonl_lines(path: str | Path) -> Iterator[bytes]:
    r"""The records of a JSONL file of events: each line, without its line end.

    The one rule for the events files ottscore reads (``evaluate`` and ``replay`` alike):
    every line is a record, an empty line an empty record (dead-lettered as ``empty``, as
    an empty Kafka record would be, so a simulated file keeps its empty records); the line
    end after the last line starts no record.

    >>> import pathlib, tempfile
    >>> tmp = tempfile.TemporaryDirectory(); path = pathlib.Path(tmp.name) / "f.jsonl"
    >>> _ = path.write_bytes(b'{"a": 1}\r\n\n{oops\n')
    >>> list(jsonl_lines(path))
    [b'{"a": 1}', b'', b'{oops']
    >>> tmp.cleanup()
    """
    with open(path, "rb") as lines:
        for line in lines:
            yield line.rstrip(b"\r\n")


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Read the JSON objects of a JSONL file of objects, e.g. a catalog (blank lines skipped)."""
    for line in jsonl_lines(path):
        if line.strip():
            yield orjson.loads(line)


def read_jsonl_records(path: Path) -> Iterator[tuple[bytes | None, bytes]]:
    """``(user_id key, line)`` for each line of a JSONL file of events, file order.

    Lines are read as ``ottscore evaluate`` reads them (:func:`jsonl_lines`).
    """
    for value in jsonl_lines(path):
        try:
            user_id = orjson.loads(value).get("user_id")
        except (orjson.JSONDecodeError, AttributeError):
            user_id = None
        yield (user_id.encode() if isinstance(user_id, str) else None), value
