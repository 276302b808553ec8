"""The docker-compose stack: valid for Docker Compose, and consistent with the code it runs."""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.cli import build_parser
from pipeline.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE_CHECK = ROOT / "deploy" / "compose-check"
WORKERS = ("worker-1", "worker-2")
METRICS_PORT = Settings.model_fields["metrics_port"].default
_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")


@functools.cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def interpolate(value: object, env: dict[str, str]) -> str:
    """``value`` with ``${NAME}`` and ``${NAME:-default}`` replaced as Compose does."""
    return _INTERPOLATION.sub(lambda m: env.get(m["name"]) or (m["default"] or ""), str(value))


@functools.cache
def compose_check(tmp: Path) -> Path:
    """The Compose file checker (``deploy/compose-check``), built once with the Go toolchain.

    It loads a file with compose-spec/compose-go, the loader of ``docker compose``: schema,
    interpolation and normalisation as ``docker compose config --quiet`` checks them, with
    no Docker engine. Go is required: the test fails, never skips, without it.
    """
    go = shutil.which("go")
    assert go, "the Go toolchain is needed to validate docker-compose.yml (make tools)"
    binary = tmp / "compose-check"
    build = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=COMPOSE_CHECK,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert build.returncode == 0, build.stderr
    return binary


def check_compose_file(path: Path, env: dict[str, str], tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(compose_check(tmp)), str(path)], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def go_build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compose-check")


@pytest.mark.slow
@pytest.mark.parametrize("snapshot_key", ["", "a-snapshot-key"])
def test_composes_own_loader_accepts_the_file(snapshot_key: str, go_build_dir: Path) -> None:
    env = {**os.environ, "OTTSCORE_SNAPSHOT_KEY": snapshot_key}
    result = check_compose_file(COMPOSE_FILE, env, go_build_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == sorted(
        ["kafka", *WORKERS, "simulator", "prometheus", "grafana"]
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "error"),
    [
        (("services:", "servces:"), "additional properties 'servces' not allowed"),
        (("condition: service_healthy", "condition: healthy"), "condition"),
    ],
)
def test_composes_own_loader_refuses_a_broken_file(
    change: tuple[str, str], error: str, go_build_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace(*change))
    result = check_compose_file(broken, dict(os.environ), go_build_dir)
    assert result.returncode == 1 and error in result.stderr, result.stderr


def test_the_stack_has_broker_workers_simulator_and_monitoring() -> None:
    assert set(compose()["services"]) == {"kafka", *WORKERS, "simulator", "prometheus", "grafana"}


def test_kafka_is_a_healthchecked_kraft_node_on_a_named_volume() -> None:
    kafka = service("kafka")
    assert kafka["image"] == "apache/kafka:3.9.1"
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "kafka-broker-api-versions.sh --bootstrap-server localhost:9092" in " ".join(
        kafka["healthcheck"]["test"]
    )
    assert "kafka-data:/var/lib/kafka/data" in kafka["volumes"]
    assert "PLAINTEXT://kafka:9092" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]


@pytest.mark.parametrize("name", WORKERS)
def test_a_worker_runs_the_image_after_the_broker_is_healthy(name: str) -> None:
    worker = service(name)
    assert worker["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    assert "command" not in worker  # the image's default: ottscore worker
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert f"http://127.0.0.1:{METRICS_PORT}/healthz" in " ".join(worker["healthcheck"]["test"])
    assert worker["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert worker["volumes"] == [f"{name}-data:{worker['environment']['OTTSCORE_DATA_DIR']}"]


def test_the_image_runs_ottscore_worker_by_default() -> None:
    found = dict(re.findall(r"^([A-Z]+) +(.*)$", DOCKERFILE.read_text(), flags=re.MULTILINE))
    assert found["FROM"] == "python:3.11-slim"
    assert (found["ENTRYPOINT"], found["CMD"]) == ('["ottscore"]', '["worker"]')
    assert build_parser().parse_args(["worker"]).command == "worker"


def test_the_image_copies_only_what_the_repository_has() -> None:
    copies = [
        shlex.split(line)[1:-1]
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith("COPY ") and "--from=" not in line  # not from another stage
    ]
    assert copies, "the Dockerfile copies the project"
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_the_simulator_command_is_a_valid_ottscore_invocation() -> None:
    simulator = service("simulator")
    assert simulator["image"] == service(WORKERS[0])["image"]
    args = build_parser().parse_args([str(arg) for arg in simulator["command"]])
    assert (args.command, args.to_kafka, args.users, args.rate) == ("simulate", True, 5000, 2000)


def test_every_named_volume_is_declared_and_no_two_workers_share_one() -> None:
    declared = set(compose()["volumes"])
    used = [
        volume.split(":")[0]
        for svc in compose()["services"].values()
        for volume in svc.get("volumes", [])
        if not volume.startswith((".", "/"))
    ]
    assert set(used) == declared
    assert len(used) == len(set(used))


@pytest.mark.parametrize("snapshot_key", ["", "a-snapshot-key"])
def test_every_ottscore_variable_is_a_setting_and_parses_to_its_value(
    monkeypatch: pytest.MonkeyPatch, snapshot_key: str
) -> None:
    shell = {"OTTSCORE_SNAPSHOT_KEY": snapshot_key}
    for name, svc in compose()["services"].items():
        env = {key: interpolate(value, shell) for key, value in svc.get("environment", {}).items()}
        ours = {key: value for key, value in env.items() if key.startswith("OTTSCORE_")}
        unknown = {
            key
            for key in ours
            if key.removeprefix("OTTSCORE_").lower() not in Settings.model_fields
        }
        assert not unknown, f"{name}: not Settings fields: {sorted(unknown)}"
        for key in [key for key in os.environ if key.startswith("OTTSCORE_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        rendered = Settings().to_env()
        assert {key: rendered[key] for key in ours} == ours, name
        if "KAFKA_BOOTSTRAP_SERVERS" in env:
            assert rendered["KAFKA_BOOTSTRAP_SERVERS"] == env["KAFKA_BOOTSTRAP_SERVERS"]


def test_prometheus_scrapes_every_worker_on_its_metrics_port() -> None:
    prometheus = service("prometheus")
    mounted = {
        volume.split(":")[1]: ROOT / volume.split(":")[0] for volume in prometheus["volumes"]
    }
    config = yaml.safe_load((mounted["/etc/prometheus"] / "prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert targets == {f"{worker}:{METRICS_PORT}" for worker in WORKERS}


def test_grafana_is_provisioned_with_the_stacks_prometheus() -> None:
    grafana = service("grafana")
    mounted = {volume.split(":")[1]: ROOT / volume.split(":")[0] for volume in grafana["volumes"]}
    provisioning = mounted["/etc/grafana/provisioning"]
    datasources = [
        source
        for path in sorted((provisioning / "datasources").glob("*.yml"))
        for source in yaml.safe_load(path.read_text())["datasources"]
    ]
    assert [(s["type"], s["url"], s["isDefault"]) for s in datasources] == [
        ("prometheus", "http://prometheus:9090", True)
    ]
    assert "9090:9090" in service("prometheus")["ports"]
