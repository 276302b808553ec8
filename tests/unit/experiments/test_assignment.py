"""Assignment: GrowthBook's cross-SDK vectors, shares over a million users, independence.

``growthbook_cases.json`` holds the ``hash``, ``getBucketRange``, ``chooseVariation`` and
``inNamespace`` sections, unchanged, of ``tests/cases.json`` (spec version 0.7.1) in the
GitHub repository growthbook/growthbook-python, read at commit
c444b7df05dadb097018755c9f71ca356570a9fa (release 2.2.1). GrowthBook's Python SDK is MIT
licensed: Copyright (c) 2021, GrowthBook (the repository's LICENSE file).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_definition import definition

from pipeline.experiments.assignment import (
    assign,
    bucket_ranges,
    choose_variation,
    growthbook_hash,
    in_namespace,
)
from pipeline.experiments.definition import Experiment, parse_definition

CASES = json.loads((Path(__file__).parent / "growthbook_cases.json").read_text(encoding="utf-8"))
USERS = [f"u-{index:07d}" for index in range(1_000_000)]


def experiment(weights: list[float], salt: str, experiment_id: str | None = None) -> Experiment:
    variants = [
        {"name": f"v{index}", "weight": weight, "control": index == 0}
        for index, weight in enumerate(weights)
    ]
    return parse_definition(definition(id=experiment_id or salt, salt=salt, variants=variants))


def test_cases_file_holds_the_four_sections_in_full() -> None:
    counts = {section: len(CASES[section]) for section in CASES if section != "specVersion"}
    assert counts == {"hash": 15, "getBucketRange": 13, "chooseVariation": 13, "inNamespace": 16}


@pytest.mark.parametrize(("seed", "value", "version", "expected"), CASES["hash"])
def test_hash_matches_growthbook(seed: str, value: str, version: int, expected: float) -> None:
    assert growthbook_hash(seed, value, version) == expected


@pytest.mark.parametrize(("name", "args", "expected"), CASES["getBucketRange"])
def test_bucket_ranges_match_growthbook(name: str, args: list[Any], expected: Any) -> None:
    n_variations, coverage, weights = args
    ranges = bucket_ranges(n_variations, coverage, weights)
    assert [[round(bound, 6) for bound in pair] for pair in ranges] == expected, name


@pytest.mark.parametrize(("name", "n", "ranges", "expected"), CASES["chooseVariation"])
def test_choose_variation_matches_growthbook(
    name: str, n: float, ranges: list[list[float]], expected: int
) -> None:
    assert choose_variation(n, [(start, end) for start, end in ranges]) == expected, name


@pytest.mark.parametrize(("name", "user_id", "namespace", "expected"), CASES["inNamespace"])
def test_in_namespace_matches_growthbook(
    name: str, user_id: str, namespace: list[Any], expected: bool
) -> None:
    assert in_namespace(user_id, (namespace[0], namespace[1], namespace[2])) is expected, name


def test_assign_gives_the_variation_growthbook_hashes_imply() -> None:
    # hash("foo", "ab", 2) = 0.2575 and hash("foo", "def", 2) = 0.2019 (the vectors above)
    split = experiment([0.25, 0.75], salt="foo")
    assert assign(split, "ab") == "v1"
    assert assign(split, "def") == "v0"


def test_assignment_depends_on_salt_and_user_only() -> None:
    first = experiment([0.5, 0.5], salt="rail-size-2026-11")
    renamed = experiment([0.5, 0.5], salt="rail-size-2026-11", experiment_id="other-id")
    resalted = experiment([0.5, 0.5], salt="rail-size-2026-12")
    users = USERS[:2_000]
    assert [assign(first, user) for user in users] == [assign(renamed, user) for user in users]
    changed = sum(assign(first, user) != assign(resalted, user) for user in users)
    assert 800 < changed < 1_200  # a new salt reshuffles about half of the users


@pytest.mark.parametrize("weights", [[0.5, 0.5], [0.2, 0.3, 0.5]])
def test_shares_over_a_million_users_match_the_weights(weights: list[float]) -> None:
    split = experiment(weights, salt=f"share-{len(weights)}")
    counts = Counter(assign(split, user) for user in USERS)
    shares = [counts[f"v{index}"] / len(USERS) for index in range(len(weights))]
    print(f"\nweights {weights}: shares over {len(USERS):,} users {shares}")
    assert sum(counts.values()) == len(USERS)
    assert all(abs(share - weight) <= 0.0015 for share, weight in zip(shares, weights, strict=True))


def test_experiments_with_different_salts_assign_independently() -> None:
    first = experiment([0.5, 0.5], salt="rail-size-2026-11")
    second = experiment([0.5, 0.5], salt="debounce-2026-11")
    users = USERS[:100_000]
    pairs = Counter((assign(first, user), assign(second, user)) for user in users)
    shares = {pair: count / len(users) for pair, count in sorted(pairs.items())}
    print(f"\njoint shares of two 50/50 experiments over {len(users):,} users: {shares}")
    assert len(shares) == 4
    assert all(abs(share - 0.25) <= 0.005 for share in shares.values())
