"""Prometheus rules, Grafana dashboard and alert runbooks: valid for promtool, and consistent.

The tests run the real ``promtool`` (Debian package ``prometheus``, installed by
``make test``); without it they fail.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from agents.worker.metrics import Metrics
from pipeline.core.outputs import SCORED_KINDS
from pipeline.core.tally import Tally

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "ottscore.json"
DASHBOARD_PROVIDERS = ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "ottscore.yml"
RUNBOOKS = ROOT / "docs" / "alerts.md"
RUNBOOK_URL = "https://github.com/ottscore/ottscore/blob/main/docs/alerts.md#"

# label values and range or subquery durations ("[5m:1m]") hold no series name
_NOT_NAMES = re.compile(r'"(?:[^"\\]|\\.)*"|\[[^\]]*\]')
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("promtool")
    assert executable, "promtool not found: `make test` installs the Debian package prometheus"
    return subprocess.run(
        [executable, *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def populated_metrics() -> Metrics:
    """A :class:`Metrics` where every metric has a value."""
    metrics = Metrics(CollectorRegistry())
    tally = Tally(received=12, deduplicated=1, already_applied=1, sessions_closed=2, kpi_late=1)
    tally.consumed.update(play=6, click=2)
    tally.rejected.update(not_json=2)
    tally.published.update(churn=2, personalization=3, signal=1)
    tally.artwork_shows.update(bandit=10)
    tally.artwork_takes.update(bandit=1)
    tally.actions.update({("win_back", "sent"): 1})
    metrics.add(tally)
    for kind in SCORED_KINDS:
        metrics.event_to_publish_latency.labels(kind).observe(0.2)
        metrics.ingest_to_publish_latency.labels(kind).observe(0.02)
    metrics.batch_duration.observe(0.004)
    metrics.state_writes.inc(5)
    metrics.users_cached.set(5)
    metrics.set_audiences({("drama", "fans"): 3, ("drama", "lapsed"): 1})
    metrics.timers_pending.set(7)
    metrics.snapshots_published.inc()
    metrics.snapshots_refused.labels("bad_signature").inc()
    metrics.snapshots_restored.inc()
    metrics.snapshot_seconds.observe(0.03)
    metrics.snapshot_bytes.set(1024)
    metrics.snapshot_last_published.set(time.time())
    metrics.consumer_lag.labels("0").set(120)
    metrics.consumer_committed_lag.labels("0").set(300)
    metrics.ready.set(1)
    hour = {"key": "hour/2026-12-07T10:00:00.000Z/all", "window": "hour", "scope": ["all"],
            "start": "2026-12-07T10:00:00.000Z", "end": "2026-12-07T11:00:00.000Z",
            "active_users": 40, "clicks": 10, "click_plays": 6, "click_play_conversion": 0.6,
            "search_play_success": None, "schema_version": 1}  # fmt: skip
    metrics.set_kpis([hour])
    result_schema = json.loads((ROOT / "schemas" / "experiment_result.schema.json").read_text())
    metrics.set_experiment_results(result_schema["examples"])
    metrics.set_quality(
        {
            ("churn_auc", "logreg"): 0.81,
            ("churn_logloss", "logreg"): 0.42,
            ("hit_rate_at_10", "personalized"): 0.3,
            ("hit_rate_at_10", "trending"): 0.2,
        }
    )
    return metrics


@functools.cache
def exported_names() -> frozenset[str]:
    """Every series name a worker can export, whether or not it has a sample yet."""
    names: set[str] = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
    return frozenset(names)


@functools.cache
def rule_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES.read_text())["groups"]


def rules() -> Iterator[dict[str, Any]]:
    for group in rule_groups():
        yield from group["rules"]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def series_names(expr: str) -> set[str]:
    """The ottscore metric and recording-rule names ``expr`` reads."""
    return {
        name
        for name in _IDENTIFIER.findall(_NOT_NAMES.sub(" ", expr))
        if name.startswith("ottscore_") or ":" in name
    }


@functools.cache
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def runbook_anchors() -> set[str]:
    """GitHub's anchors of the ``###`` headings of the runbooks."""
    headings = re.findall(r"^### (.+)$", RUNBOOKS.read_text(), flags=re.MULTILINE)
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings
    }


def test_promtool_accepts_the_config_and_the_rule_files_it_loads() -> None:
    result = promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rules.yml" in result.stdout


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_pass_their_promtool_unit_tests() -> None:
    result = promtool("test", "rules", str(PROMETHEUS_DIR / "tests" / "rules_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_stays_quiet_in_the_unit_tests() -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "tests" / "rules_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for alert in alerts():
        own = [case for case in cases if case["alertname"] == alert["alert"]]
        assert any(case["exp_alerts"] for case in own), f"{alert['alert']} never fires"
        assert any(not case["exp_alerts"] for case in own), f"{alert['alert']} always fires"


def test_promtool_finds_no_problem_in_the_exported_metrics() -> None:
    exposition = generate_latest(populated_metrics().registry).decode()
    result = promtool("check", "metrics", stdin=exposition)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_the_populated_registry_has_a_sample_of_every_metric() -> None:
    empty = [family.name for family in populated_metrics().registry.collect() if not family.samples]
    assert not empty


def test_the_rules_read_only_exported_metrics_and_recorded_series() -> None:
    known = exported_names() | recorded_names()
    for rule in rules():
        unknown = series_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule['record']}: {sorted(unknown)}"


@pytest.mark.parametrize("alert", alerts(), ids=lambda alert: alert["alert"])
def test_an_alert_has_a_severity_a_summary_a_description_and_a_runbook(
    alert: dict[str, Any],
) -> None:
    assert alert["labels"]["severity"] in {"critical", "warning"}
    annotations = alert["annotations"]
    assert annotations["summary"] and annotations["description"]
    assert annotations["runbook_url"] == RUNBOOK_URL + alert["alert"].lower()
    assert alert["alert"].lower() in runbook_anchors(), f"no '### {alert['alert']}' in {RUNBOOKS}"


def test_the_runbooks_cover_exactly_the_alerts() -> None:
    assert runbook_anchors() == {alert["alert"].lower() for alert in alerts()}


def test_the_dashboard_queries_only_exported_metrics_and_recorded_series() -> None:
    known = exported_names() | recorded_names()
    for panel in panels():
        for target in panel.get("targets", []):
            unknown = series_names(target["expr"]) - known
            assert not unknown, f"{panel['title']}: {sorted(unknown)}"


def test_the_dashboard_reads_the_provisioned_prometheus() -> None:
    datasources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    uid = {source["type"]: source["uid"] for source in datasources}["prometheus"]
    board = dashboard()
    assert board["uid"] and board["schemaVersion"] >= 39
    refs = [
        ref
        for panel in panels()
        if panel["type"] != "row"
        for ref in [panel["datasource"], *(target["datasource"] for target in panel["targets"])]
    ]
    assert refs and all(ref == {"type": "prometheus", "uid": uid} for ref in refs)
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids))


def test_the_dashboard_has_a_row_per_concern() -> None:
    rows = [panel["title"] for panel in panels() if panel["type"] == "row"]
    assert rows == [
        "RED per stage",
        "Consumer lag",
        "Model quality",
        "Dead-letter queue",
        "Snapshots",
        "Business KPIs",
        "Experiments",
    ]


def test_grafana_loads_the_dashboards_directory_that_compose_mounts() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = {
        volume.split(":")[1]: ROOT / volume.split(":")[0]
        for volume in compose["services"]["grafana"]["volumes"]
    }
    (provider,) = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"]
    assert provider["type"] == "file"
    assert mounts[provider["options"]["path"]] == DASHBOARD.parent
