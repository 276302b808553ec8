"""A real Prometheus scrapes a real worker with the deployed config and rules.

The ``prometheus`` server binary comes from the Debian package that ``make test`` installs;
without it the test fails. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import free_ports
from worker_process import WorkerProcess

from agents.devtools.produce import produce
from pipeline.sim.simulate import SimulationConfig, Simulator

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RECORDS = 2_000
RECORDED_RATE = "job:ottscore_records_received:rate5m"


def prometheus_config(metrics_port: int) -> dict[str, Any]:
    """The deployed config, scraping ``metrics_port`` and evaluating the rules every second."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    return config


class Prometheus:
    """The HTTP API of a Prometheus server on 127.0.0.1:``port``."""

    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> dict[str, float]:
        """The instant value of each series of ``expr``, keyed by its ``job`` label."""
        try:
            result = self.get("/api/v1/query", query=expr)["result"]
        except OSError:
            return {}
        return {series["metric"].get("job", ""): float(series["value"][1]) for series in result}

    def wait_until(self, condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                log = self.log_path.read_text(errors="replace").splitlines()[-20:]
                raise AssertionError(f"timed out after {timeout_s} s {what}:\n" + "\n".join(log))
            time.sleep(0.5)


@contextmanager
def running_prometheus(config: dict[str, Any], directory: Path) -> Iterator[Prometheus]:
    executable = shutil.which("prometheus")
    assert executable, "prometheus not found: `make test` installs the Debian package prometheus"
    (port,) = free_ports(1)
    config_path = directory / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    server = Prometheus(port, directory / "prometheus.log")
    with open(server.log_path, "wb") as log:
        process = subprocess.Popen(
            [
                executable,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        server.wait_until(
            lambda: process.poll() is None and server.query("vector(1)") == {"": 1.0},
            timeout_s=30,
            what="waiting for Prometheus to answer queries",
        )
        yield server
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.timeout(240)
def test_prometheus_stores_the_workers_count_and_evaluates_every_rule(
    settings_factory, tmp_path: Path
) -> None:
    settings = settings_factory(metrics_port=free_ports(1)[0])
    records = Simulator(SimulationConfig(users=100, days=7, seed=3, bad_rate=0.02)).records()
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    with running_prometheus(prometheus_config(settings.metrics_port), tmp_path) as prometheus:
        worker.start()
        try:
            # scraped at 0 before the records arrive, so the recorded rate sees them arrive
            prometheus.wait_until(
                lambda: prometheus.query("ottscore_records_received_total") == {"ottscore": 0},
                timeout_s=60,
                what="waiting for a first scrape of the worker",
            )
            produce(settings, itertools.islice(records, RECORDS))
            worker.wait_received(RECORDS, timeout_s=120)
            received = worker.metric("ottscore_records_received_total")
            prometheus.wait_until(
                lambda: (
                    prometheus.query("ottscore_records_received_total") == {"ottscore": received}
                ),
                timeout_s=30,
                what=f"waiting for Prometheus to store {received} records received",
            )
            prometheus.wait_until(
                lambda: prometheus.query(RECORDED_RATE).get("ottscore", 0) > 0,
                timeout_s=30,
                what=f"waiting for {RECORDED_RATE} to be recorded",
            )
            groups = prometheus.get("/api/v1/rules")["groups"]
        finally:
            assert worker.stop() == 0

    assert received == RECORDS
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    deployed = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())["groups"]
    assert set(rules) == {
        rule.get("alert") or rule["record"] for g in deployed for rule in g["rules"]
    }
    assert {name: rule["health"] for name, rule in rules.items()} == dict.fromkeys(rules, "ok")
