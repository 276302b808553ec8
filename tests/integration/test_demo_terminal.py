"""``ottscore demo`` on the real broker: live within two minutes, nothing left after Ctrl-C.

The demo runs as a user runs it, in a terminal (a pseudo-terminal here), starting its own
broker: its simulated users send events and see the lists the worker publishes; the view
must show a list of a sample user, a closed KPI hour and the experiment's report, and
SIGINT to its process group (what Ctrl-C sends) must stop the users, then the worker,
then the broker, and exit 0.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_ports

#: What the view shows once everything is live.
LIVE = ("latest list of", "business KPIs of the hour", "experiment demo-rail")


def read_until(fd: int, wanted: tuple[str, ...], timeout_s: float) -> str:
    """Everything the terminal shows until every one of ``wanted`` appeared (or the time)."""
    seen = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:  # the process closed the terminal
                break
        text = seen.decode(errors="replace")
        if all(w in text for w in wanted):
            return text
    return seen.decode(errors="replace")


@pytest.mark.slow
def test_the_demo_goes_live_within_two_minutes_and_ctrl_c_leaves_nothing_running(
    kafka_jars_dir: Path, tmp_path: Path
) -> None:
    """The demo starts its own broker, and stops it with everything else.

    The broker has a home of its own, with the project's Kafka jars linked in.
    """
    metrics_port, web_port, port, controller_port = free_ports(4)
    home = tmp_path / "kafka"
    home.mkdir()
    (home / kafka_jars_dir.name).symlink_to(kafka_jars_dir, target_is_directory=True)
    env = {
        **os.environ,
        "OTTSCORE_BROKER_HOME": str(home),
        "OTTSCORE_BROKER_PORT": str(port),
        "OTTSCORE_BROKER_CONTROLLER_PORT": str(controller_port),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "OTTSCORE_DATA_DIR": str(tmp_path / "data"),
        "OTTSCORE_METRICS_PORT": str(metrics_port),
        "OTTSCORE_WORKER_WEB_PORT": str(web_port),
        "COLUMNS": "160",
        "LINES": "60",
    }
    controller, terminal = pty.openpty()
    demo = subprocess.Popen(
        [sys.executable, "-m", "agents", "demo", "--users", "600", "--rate", "1500"],
        stdin=terminal, stdout=terminal, stderr=terminal, env=env, start_new_session=True,
    )  # fmt: skip
    os.close(terminal)
    started = time.monotonic()
    try:
        shown = read_until(controller, LIVE, timeout_s=120)
        live_after_s = time.monotonic() - started
        missing = [w for w in LIVE if w not in shown]
        assert not missing, f"not shown within 120 s: {missing}\n{shown[-3000:]}"
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the process group
        shown_at_exit = read_until(controller, ("no worker or broker left running",), timeout_s=90)
        demo.wait(timeout=30)
        os.close(controller)
    assert demo.returncode == 0, shown_at_exit[-2000:]
    assert "stopped: no worker or broker left running" in shown_at_exit
    left = subprocess.run(  # the worker runs in the demo's session
        ["pgrep", "-s", str(demo.pid)], capture_output=True, text=True, check=False
    )
    assert not left.stdout.strip(), f"still running after Ctrl-C: {left.stdout}"
    print(f"\ndemo live after {live_after_s:.0f} s; stopped cleanly")
