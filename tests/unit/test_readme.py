"""The README documents what the code does: every setting, the CI command, every metric."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from agents.worker.metrics import Metrics
from pipeline.config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_readme_lists_every_setting_with_its_default() -> None:
    for name, field in Settings.model_fields.items():
        env = (
            "KAFKA_BOOTSTRAP_SERVERS"
            if name == "kafka_bootstrap_servers"
            else f"OTTSCORE_{name.upper()}"
        )
        row = re.search(rf"^\| `{env}` \| `([^`]*)` \|", README, re.MULTILINE)
        assert row, f"{env} is not in the README's configuration table"
        if field.default is not None and not hasattr(field.default, "get_secret_value"):
            assert row.group(1) == str(field.default), env


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test\n" in ci
    assert "make test   #" in README


def test_readme_lists_every_metric() -> None:
    metrics = Metrics(CollectorRegistry())
    names = {family.name for family in metrics.registry.collect()}
    for name in names:
        assert f"`ottscore_{name.removeprefix('ottscore_')}" in README, name
