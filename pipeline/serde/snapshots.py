"""Signed model snapshots: a pickle inside an HMAC-SHA256 envelope that is verified first.

A snapshot is what a worker publishes to the compacted models topic so that whoever owns
the partition next (the same worker after a restart, or another after a rebalance) can go
on learning where it stopped. Pickle runs code while it loads, so a snapshot is only
unpickled after its signature has been checked with the configured key: anybody who can
write to Kafka but does not hold the key cannot make a worker load anything.

Layout (all integers big-endian)::

    magic      7 bytes   b"OTTSNAP"
    version    1 byte    FORMAT_VERSION
    length     4 bytes   n, the length of the header
    header     n bytes   UTF-8 JSON: app_id, partition, created_ms, offset,
                         payload_bytes, algorithm ("hmac-sha256")
    payload    payload_bytes bytes: pickle (protocol 5) of the models
    signature  32 bytes  HMAC-SHA256(key, every byte before it); absent when unsigned

The signature is always HMAC-SHA256, whatever the header says: the header's
``algorithm`` names it for readers, it never chooses it.

Examples
--------
>>> blob = seal({"clicks": 3}, key=b"k1", app_id="ottscore", partition=2, created_ms=0)
>>> header, models = unseal(blob, key=b"k1", app_id="ottscore", partition=2)
>>> models, header.partition, header.payload_bytes == len(pickle.dumps(models, protocol=5))
({'clicks': 3}, 2, True)
>>> unseal(blob, key=b"another key", app_id="ottscore", partition=2)
Traceback (most recent call last):
...
pipeline.serde.snapshots.SnapshotRefused: bad_signature
>>> try:
...     unseal(blob, key=b"k1", app_id="ottscore", partition=3)
... except SnapshotRefused as refused:
...     print(refused)
wrong_partition: snapshot of ottscore/p2, expected ottscore/p3
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import io
import json
import pickle
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar, get_args

import orjson

__all__ = [
    "seal",
    "stored_as",
    "unseal",
    "SnapshotHeader",
    "SnapshotRefused",
    "RefusalReason",
    "REFUSAL_REASONS",
    "FORMAT_VERSION",
    "MAX_SNAPSHOT_BYTES",
]

MAGIC = b"OTTSNAP"
#: Version of the layout above; another version is refused as ``malformed``.
FORMAT_VERSION = 3  # 2: trending keeps its leaders; 3: numpy taste model and ranker
ALGORITHM = "hmac-sha256"
_PREFIX = struct.Struct(">7sBI")
_SIGNATURE_BYTES = hashlib.sha256().digest_size
#: Largest header accepted: a header is about a hundred bytes.
_MAX_HEADER_BYTES = 4096
#: Largest snapshot accepted (and published): a partition's models run to a few MiB (item
#: and user factors), above the broker's 1 MiB default; the models topic is created for it.
MAX_SNAPSHOT_BYTES = 8 * 1024 * 1024

RefusalReason = Literal["unsigned", "bad_signature", "malformed", "wrong_partition"]
#: Every reason a snapshot can be refused for (the ``reason`` label of the metric).
REFUSAL_REASONS: tuple[RefusalReason, ...] = get_args(RefusalReason)


_T = TypeVar("_T", bound=type)
#: ottscore's own classes by the name a snapshot stores them under, and back.
_CLASSES: dict[str, type] = {}
_NAMES: dict[type, str] = {}
#: Importing them registers every class a partition's models pickle (see :func:`stored_as`).
_MODELS_MODULES = ("pipeline.models.partition", "pipeline.models.exchange")


def stored_as(name: str) -> Callable[[_T], _T]:
    """Store the decorated class in snapshots under ``name``, not its module path.

    A pickle names a class by module and qualified name, so moving or renaming a module
    made every saved model unloadable. A snapshot names ottscore's classes by the stable
    name given here; the module may move and the class be renamed, the name stays. A
    snapshot written before names were stable (a ``pipeline.*`` module path) is read by
    the class's name, which is the stable name of every class released then.

    >>> @stored_as("doc.Example")
    ... class Example:
    ...     pass
    >>> blob = seal(Example(), key=b"k", app_id="a", partition=0, created_ms=0)
    >>> b"doc.Example" in blob, type(unseal(blob, key=b"k", app_id="a", partition=0)[1])
    (True, <class 'pipeline.serde.snapshots.Example'>)
    """

    def register(cls: _T) -> _T:
        if _CLASSES.setdefault(name, cls) is not cls:
            raise ValueError(f"{name!r} already names {_CLASSES[name]!r}")
        _NAMES[cls] = name
        return cls

    return register


def _stored_class(name: str) -> type:
    """The class stored as ``name`` (what a snapshot calls to get one of ours)."""
    if name not in _CLASSES:
        for module in _MODELS_MODULES:
            importlib.import_module(module)
    try:
        return _CLASSES[name]
    except KeyError:
        raise pickle.UnpicklingError(f"no class is stored as {name!r}") from None


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        name = _NAMES.get(obj) if isinstance(obj, type) else None
        if name is None:
            return NotImplemented
        return _stored_class, (name,)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.split(".", 1)[0] == "pipeline":  # ours: by stable name, wherever it lives
            return _stored_class if name == "_stored_class" else _stored_class(name)
        return super().find_class(module, name)


class SnapshotRefused(Exception):
    """A snapshot that must not be loaded, and why.

    Attributes
    ----------
    reason
        ``"unsigned"`` (no signature, or no key to check one with), ``"bad_signature"``,
        ``"malformed"`` (not a snapshot of this format, or a signed one that no longer
        loads) or ``"wrong_partition"`` (signed, but for another app id or partition).
    """

    def __init__(self, reason: RefusalReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: RefusalReason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    """What a snapshot says about itself (trustworthy once :func:`unseal` returned it)."""

    app_id: str
    partition: int
    created_ms: int
    offset: int | None
    payload_bytes: int
    algorithm: str = ALGORITHM


def seal(
    models: object,
    *,
    key: bytes,
    app_id: str,
    partition: int,
    created_ms: int,
    offset: int | None = None,
) -> bytes:
    r"""Pickle ``models`` and sign them with ``key`` for ``app_id``'s ``partition``.

    Parameters
    ----------
    models
        Any picklable object: the models of one input partition.
    key
        HMAC key; must not be empty (an empty key means snapshots are disabled).
    app_id
        The application the snapshot belongs to.
    partition
        The input partition the models learned from.
    created_ms
        Wall-clock creation time, epoch milliseconds.
    offset
        Offset of the last input record the models learned from, when known.

    Returns
    -------
    bytes
        The sealed snapshot (layout in the module docstring).

    Raises
    ------
    ValueError
        When ``key`` is empty.

    Examples
    --------
    >>> blob = seal([1, 2], key=b"k", app_id="a", partition=0, created_ms=1, offset=41)
    >>> blob[:8]
    b'OTTSNAP\x03'
    >>> header, _ = unseal(blob, key=b"k", app_id="a", partition=0)
    >>> header  # doctest: +NORMALIZE_WHITESPACE +ELLIPSIS
    SnapshotHeader(app_id='a', partition=0, created_ms=1, offset=41, payload_bytes=...,
                   algorithm='hmac-sha256')
    >>> seal([1, 2], key=b"", app_id="a", partition=0, created_ms=1)
    Traceback (most recent call last):
    ...
    ValueError: an empty snapshot key disables snapshots: nothing to seal with
    """
    if not key:
        raise ValueError("an empty snapshot key disables snapshots: nothing to seal with")
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=5).dump(models)
    payload = buffer.getvalue()
    header = SnapshotHeader(
        app_id=app_id,
        partition=partition,
        created_ms=created_ms,
        offset=offset,
        payload_bytes=len(payload),
    )
    header_bytes = json.dumps(asdict(header), separators=(",", ":")).encode()
    signed = b"".join(
        (_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes)), header_bytes, payload)
    )
    return signed + hmac.digest(key, signed, "sha256")


def unseal(
    data: bytes, *, key: bytes, app_id: str, partition: int
) -> tuple[SnapshotHeader, object]:
    r"""Verify a sealed snapshot and only then unpickle it.

    The checks run in this order, and nothing is unpickled before the signature has
    been verified (in constant time):

    1. a key is configured, else ``unsigned``;
    2. magic, version, lengths and header are well formed, else ``malformed``;
    3. a signature is present, else ``unsigned``;
    4. the signature is right for ``key``, else ``bad_signature``;
    5. the snapshot is ``app_id``'s for ``partition``, else ``wrong_partition``;
    6. the payload unpickles, else ``malformed`` (e.g. a class that no longer exists).

    Parameters
    ----------
    data
        A record value from the models topic.
    key
        The HMAC key snapshots are signed with.
    app_id, partition
        Whose models the caller is restoring.

    Returns
    -------
    tuple[SnapshotHeader, object]
        The header and the models.

    Raises
    ------
    SnapshotRefused
        With the reason of the first check that failed.

    Examples
    --------
    >>> blob = seal("m", key=b"k", app_id="a", partition=0, created_ms=1)
    >>> unseal(blob[:-32], key=b"k", app_id="a", partition=0)
    Traceback (most recent call last):
    ...
    pipeline.serde.snapshots.SnapshotRefused: unsigned: no signature
    >>> unseal(b"PK\x03\x04", key=b"k", app_id="a", partition=0)
    Traceback (most recent call last):
    ...
    pipeline.serde.snapshots.SnapshotRefused: malformed: not a snapshot
    """
    if not key:
        raise SnapshotRefused("unsigned", "no snapshot key configured to verify with")
    header, end = _parse(data)
    signature = data[end:]
    if not signature:
        raise SnapshotRefused("unsigned", "no signature")
    if len(signature) != _SIGNATURE_BYTES:
        raise SnapshotRefused("malformed", f"signature of {len(signature)} bytes")
    if not hmac.compare_digest(signature, hmac.digest(key, data[:end], "sha256")):
        raise SnapshotRefused("bad_signature")
    if (header.app_id, header.partition) != (app_id, partition):
        raise SnapshotRefused(
            "wrong_partition",
            f"snapshot of {header.app_id}/p{header.partition}, expected {app_id}/p{partition}",
        )
    try:
        models = _Unpickler(io.BytesIO(data[end - header.payload_bytes : end])).load()
    except Exception as exc:  # signed by us, but e.g. written by an incompatible version
        raise SnapshotRefused("malformed", f"signed payload does not load: {exc!r}") from exc
    return header, models


def _parse(data: bytes) -> tuple[SnapshotHeader, int]:
    """The header of ``data`` and where its payload ends; no unpickling, no trust."""
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise SnapshotRefused("malformed", f"{len(data)} bytes, more than {MAX_SNAPSHOT_BYTES}")
    if len(data) < _PREFIX.size or not data.startswith(MAGIC):
        raise SnapshotRefused("malformed", "not a snapshot")
    _, version, header_len = _PREFIX.unpack_from(data)
    if version != FORMAT_VERSION:
        raise SnapshotRefused("malformed", f"format version {version}")
    if header_len > _MAX_HEADER_BYTES or _PREFIX.size + header_len > len(data):
        raise SnapshotRefused("malformed", f"header of {header_len} bytes")
    raw = data[_PREFIX.size : _PREFIX.size + header_len]
    try:  # orjson refuses nesting deeper than 1,024 (json's recursion could overflow)
        fields = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:  # bad UTF-8 or JSON, too deep
        raise SnapshotRefused("malformed", f"header: {exc}") from None
    if type(fields) is not dict:
        raise SnapshotRefused("malformed", f"header is a JSON {type(fields).__name__}")
    try:
        header = SnapshotHeader(**fields)
    except TypeError as exc:  # missing or unknown fields
        raise SnapshotRefused("malformed", f"header: {exc}") from None
    if not (
        isinstance(header.app_id, str)
        and _is_int(header.partition)
        and _is_int(header.created_ms)
        and (header.offset is None or _is_int(header.offset))
        and _is_int(header.payload_bytes)
        and header.payload_bytes >= 0
        and header.algorithm == ALGORITHM
    ):
        raise SnapshotRefused("malformed", f"header fields {fields!r}")
    end = _PREFIX.size + header_len + header.payload_bytes
    if end > len(data):
        raise SnapshotRefused("malformed", "payload shorter than its header says")
    return header, end


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
