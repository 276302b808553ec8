"""The published JSON Schemas (``schemas/``) loaded into a registry, for validating records.

The schemas are the contract clients read; the hot path enforces the input contract with
:class:`pipeline.core.events.EventDecoder` instead, and tests hold the two to the same verdict.
``jsonschema`` (with its ``format`` extra for date-time checks) validates what is rare and
untrusted at run time, such as experiment definitions; it is imported only when a
validator is asked for.

Examples
--------
>>> check = validator("event")
>>> check.is_valid({"event_id": "e-1", "type": "search", "user_id": "u-1",
...                 "ts": "2026-11-22T20:15:03.120Z", "schema_version": 1, "query": "noir"})
True
>>> check.is_valid({"event_id": "e-1", "type": "search", "user_id": "u-1",
...                 "ts": "2026-02-30T20:15:03Z", "schema_version": 1, "query": "noir"})
False

"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from referencing import Registry

__all__ = ["SCHEMAS_DIR", "SCHEMA_BASE_URI", "load_schemas", "registry", "validator"]

_IN_REPOSITORY = Path(__file__).resolve().parents[2] / "schemas"
#: Directory of the ``*.schema.json`` files: the repository's ``schemas/``, or where an
#: installed package put them (``[tool.setuptools.data-files]`` in ``pyproject.toml``).
SCHEMAS_DIR = (
    _IN_REPOSITORY
    if _IN_REPOSITORY.is_dir()
    else Path(sys.prefix) / "share" / "ottscore" / "schemas"
)

SCHEMA_BASE_URI = "https://ottscore.dev/schemas/"
"""Base of every schema's ``$id``: ``SCHEMA_BASE_URI + "<name>.schema.json"``."""


def load_schemas() -> dict[str, dict[str, Any]]:
    """Read every schema in :data:`SCHEMAS_DIR`.

    Returns
    -------
    dict
        Schema documents keyed by name: the file name without ``.schema.json``
        (``"event"``, ``"play"``, ``"churn"``, ...).

    """
    return {
        path.name.removesuffix(".schema.json"): json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(SCHEMAS_DIR.glob("*.schema.json"))
    }


@functools.cache
def registry() -> Registry:
    """Hold all schemas as draft 2020-12 resources, so that ``$ref`` between files resolve.

    Returns
    -------
    referencing.Registry
        Registry holding every schema under its ``$id``.

    """
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    return Registry().with_resources(
        (schema["$id"], DRAFT202012.create_resource(schema)) for schema in load_schemas().values()
    )


def validator(name: str) -> Draft202012Validator:
    """Build a validator for one schema that also asserts formats (``date-time``).

    Parameters
    ----------
    name
        Schema name: the file name without ``.schema.json``, e.g. ``"event"`` or ``"churn"``.

    Returns
    -------
    jsonschema.Draft202012Validator
        Validator bound to the registry of all schemas, with the draft's format checker.

    Raises
    ------
    RuntimeError
        When ``jsonschema`` cannot check ``date-time`` (``rfc3339-validator`` is missing), since
        the validator would then accept any string as a timestamp.

    """
    from jsonschema import Draft202012Validator

    format_checker = Draft202012Validator.FORMAT_CHECKER
    if "date-time" not in format_checker.checkers:
        raise RuntimeError("jsonschema cannot check date-time: install jsonschema[format]")
    schemas = registry()
    return Draft202012Validator(
        schemas.contents(f"{SCHEMA_BASE_URI}{name}.schema.json"),
        registry=schemas,
        format_checker=format_checker,
    )
