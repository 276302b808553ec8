"""Deterministic assignment of users to variants, compatible with GrowthBook's SDKs.

The primitives follow GrowthBook's cross-SDK specification (the ``hash``,
``getBucketRange``, ``chooseVariation`` and ``inNamespace`` cases of its SDK test suite,
which the tests run): a user's place in an experiment is a hash of the experiment's salt and
the user id, mapped onto the variants' bucket ranges. The same user therefore always gets the
same variant (sticky without storing anything), and two experiments with different salts
assign independently of each other. :func:`assign` applies them to an :class:`Experiment`
with hash version 2, so a GrowthBook experiment with the same seed, weights, full coverage
and ``hashVersion: 2`` puts every user in the same variant.

Strings are hashed by code point, as GrowthBook's Python SDK does. Its JavaScript SDK hashes
UTF-16 code units, so the two differ for ids with characters outside the Basic Multilingual
Plane (such as emoji); ASCII ids hash the same everywhere.

Examples
--------
>>> growthbook_hash("seed", "a", 2)
0.0505
>>> ranges = bucket_ranges(3, weights=[0.2, 0.3, 0.5])
>>> ranges
[(0, 0.2), (0.2, 0.5), (0.5, 1.0)]
>>> choose_variation(0.3, ranges)
1

"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pipeline.experiments.definition import Experiment

__all__ = [
    "HASH_VERSION",
    "assign",
    "bucket_ranges",
    "choose_variation",
    "fnv1a32",
    "growthbook_hash",
    "in_namespace",
]

HASH_VERSION: Final = 2
"""The GrowthBook hash version :func:`assign` uses (version 1 is biased for some seeds)."""

_FNV_OFFSET: Final = 0x811C9DC5
_FNV_PRIME: Final = 0x01000193
_UINT32: Final = 0xFFFFFFFF


def fnv1a32(text: str) -> int:
    """FNV-1a 32-bit hash of a string, one code point at a time.

    Parameters
    ----------
    text
        Any string.

    Returns
    -------
    int
        The hash, from 0 to 2**32 - 1.

    Examples
    --------
    >>> fnv1a32(""), fnv1a32("a")
    (2166136261, 3826002220)

    """
    value = _FNV_OFFSET
    for char in text:
        value = ((value ^ ord(char)) * _FNV_PRIME) & _UINT32
    return value


def growthbook_hash(seed: str, value: str, version: int) -> float | None:
    """GrowthBook's ``hash``: a number in [0, 1) from a seed and a value.

    Version 1 is ``(fnv1a32(value + seed) % 1000) / 1000``; version 2 is
    ``(fnv1a32(str(fnv1a32(seed + value))) % 10000) / 10000``.

    Parameters
    ----------
    seed
        The experiment's seed (ottscore: its salt).
    value
        The hashed attribute (ottscore: the user id).
    version
        1 or 2.

    Returns
    -------
    float or None
        The hash, a multiple of 1/1000 (version 1) or 1/10000 (version 2); ``None`` for an
        unknown version, as in GrowthBook.

    Examples
    --------
    >>> growthbook_hash("", "a", 1), growthbook_hash("seed", "a", 2)
    (0.22, 0.0505)
    >>> growthbook_hash("abc", "def", 99) is None
    True

    """
    hasher = _HASHES.get(version)
    return None if hasher is None else hasher(seed, value)


def _hash_v1(seed: str, value: str) -> float:
    return (fnv1a32(value + seed) % 1_000) / 1_000


def _hash_v2(seed: str, value: str) -> float:
    return (fnv1a32(str(fnv1a32(seed + value))) % 10_000) / 10_000


_HASHES: Final[dict[int, Callable[[str, str], float]]] = {1: _hash_v1, 2: _hash_v2}


def bucket_ranges(
    n_variations: int, coverage: float = 1.0, weights: Sequence[float] | None = None
) -> list[tuple[float, float]]:
    """GrowthBook's ``getBucketRanges``: the range of hashes that selects each variation.

    Ranges are laid end to end in the order of the weights; with a coverage below 1 each
    range keeps only its first ``coverage`` share, and the hashes in the gaps select nothing.

    Parameters
    ----------
    n_variations
        Number of variations.
    coverage
        Share of users included, clamped to [0, 1].
    weights
        Share of each variation; equal shares when missing, of another length than
        ``n_variations``, or summing to less than 0.99 or more than 1.01.

    Returns
    -------
    list of (float, float)
        ``(start, end)`` of each variation; a hash ``n`` selects it when ``start <= n < end``.

    Examples
    --------
    >>> bucket_ranges(2, 0.5)
    [(0, 0.25), (0.5, 0.75)]
    >>> bucket_ranges(2, 1.0, [0.7, 0.6])
    [(0, 0.5), (0.5, 1.0)]

    """
    coverage = min(max(coverage, 0), 1)
    if weights is None or len(weights) != n_variations or not 0.99 <= sum(weights) <= 1.01:
        weights = [1 / n_variations] * n_variations
    ranges = []
    cumulative: float = 0
    for weight in weights:
        start = cumulative
        cumulative += weight
        ranges.append((start, start + coverage * weight))
    return ranges


def choose_variation(n: float, ranges: Sequence[tuple[float, float]]) -> int:
    """GrowthBook's ``chooseVariation``: the index of the first range holding the hash.

    Parameters
    ----------
    n
        A hash in [0, 1).
    ranges
        Bucket ranges, as :func:`bucket_ranges` returns them.

    Returns
    -------
    int
        Index of the variation, or -1 when ``n`` falls in no range (reduced coverage).

    Examples
    --------
    >>> choose_variation(0.5, [(0, 0.5), (0.5, 1)]), choose_variation(0.4, [(0, 0.25), (0.5, 0.75)])
    (1, -1)

    """
    for index, (start, end) in enumerate(ranges):
        if start <= n < end:
            return index
    return -1


def in_namespace(user_id: str, namespace: tuple[str, float, float]) -> bool:
    """GrowthBook's ``inNamespace``: whether a user falls in a namespace's share.

    Experiments that take disjoint shares of one namespace never share a user.

    Parameters
    ----------
    user_id
        The user.
    namespace
        ``(name, start, end)``: the user is in when ``start <= hash < end``, with the
        version 1 hash of the user id seeded by ``"__" + name``.

    Returns
    -------
    bool
        Whether the user is in the namespace's share.

    Examples
    --------
    >>> in_namespace("1", ("namespace1", 0, 0.4)), in_namespace("1", ("namespace1", 0.4, 1))
    (False, True)

    """
    name, start, end = namespace
    return start <= _hash_v1(f"__{name}", user_id) < end


def assign(experiment: Experiment, user_id: str) -> str:
    """The variant of an experiment a user gets: sticky, deterministic, salted per experiment.

    Parameters
    ----------
    experiment
        A parsed definition (:func:`~pipeline.experiments.definition.parse_definition`).
    user_id
        The user.

    Returns
    -------
    str
        The name of the user's variant.

    Examples
    --------
    >>> from pipeline.experiments.definition import parse_definition
    >>> experiment = parse_definition({
    ...     "schema_version": 1, "id": "rail-size", "salt": "rail-size-2026-11",
    ...     "start": "2026-11-23T00:00:00Z", "metrics": ["click_play_conversion"],
    ...     "variants": [
    ...         {"name": "control", "weight": 0.5, "control": True},
    ...         {"name": "short", "weight": 0.5, "knobs": {"list_size": 5}},
    ...     ],
    ... })
    >>> [assign(experiment, user) for user in ("u-1", "u-2", "u-3", "u-4")]
    ['short', 'control', 'short', 'short']

    """
    n = _HASHES[HASH_VERSION](experiment.salt, user_id)
    ranges = bucket_ranges(
        len(experiment.variants), 1.0, [variant.weight for variant in experiment.variants]
    )
    # Never -1: the weights of a parsed definition sum to 1 (within 1e-9), so the ranges
    # cover [0, 1 - 1e-9) and a version 2 hash is at most 0.9999.
    return experiment.variants[choose_variation(n, ranges)].name
