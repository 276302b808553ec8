"""A user-facing failure of the command line is one line that says what to do, and exit 1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def ottscore(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agents", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    line = one_line(ottscore("evaluate", "nope.jsonl", "--report", "r.json", cwd=tmp_path))
    assert line == "ottscore evaluate: nope.jsonl: no such file"


@pytest.mark.slow  # the client gives up bootstrapping after 30 s
def test_a_broker_that_does_not_answer_says_how_to_get_one(tmp_path: Path) -> None:
    bootstrap = f"127.0.0.1:{closed_port()}"
    line = one_line(
        ottscore(
            "tail", "ott.events", "--max", "1", cwd=tmp_path, KAFKA_BOOTSTRAP_SERVERS=bootstrap
        )
    )
    assert line.startswith("ottscore tail: no Kafka broker answers") and bootstrap in line
    assert "ottscore broker start" in line


def test_a_port_already_taken_is_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line(
            ottscore(
                "broker", "start", cwd=tmp_path,
                OTTSCORE_BROKER_HOME=str(tmp_path / "kafka"), OTTSCORE_BROKER_PORT=str(port),
            )
        )  # fmt: skip
    assert f"127.0.0.1:{port} is already in use" in line


def test_an_invalid_setting_is_named(tmp_path: Path) -> None:
    line = one_line(ottscore("tail", "x", cwd=tmp_path, OTTSCORE_TOPIC_PARTITIONS="zero"))
    assert line.startswith("ottscore tail: invalid setting topic_partitions")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = ottscore("--debug", "evaluate", "nope.jsonl", "--report", "r.json", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert "FileNotFoundError" in result.stderr
