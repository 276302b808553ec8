"""SECURITY.md documents the Kafka security settings the code has."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.config import Settings

SECURITY = (Path(__file__).resolve().parents[2] / "SECURITY.md").read_text()
CONNECTION_PREFIXES = ("kafka_bootstrap_", "kafka_security_", "kafka_sasl_", "kafka_ssl_")


def test_security_md_lists_every_kafka_connection_setting_with_its_default() -> None:
    for name, field in Settings.model_fields.items():
        if not name.startswith(CONNECTION_PREFIXES):
            continue
        env = name.upper() if name == "kafka_bootstrap_servers" else f"OTTSCORE_{name.upper()}"
        row = re.search(rf"^\| `{env}`[^|]*\| ([^|]*) \|", SECURITY, re.MULTILINE)
        assert row, f"{env} is not in SECURITY.md's settings table"
        if isinstance(field.default, str) and field.default:
            assert row.group(1) == f"`{field.default}`", env
