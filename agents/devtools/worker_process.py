"""An ``ottscore worker`` run as a child process: start, read its metrics and memory, stop.

The benchmark (:mod:`agents.devtools.bench`, :mod:`agents.devtools.latency`) runs the real
worker this way, exactly as an operator does (``python -m agents worker`` with the settings
as environment variables), and watches it from outside through its Prometheus endpoint
and ``/proc``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from agents.devtools.demo import scrape
from pipeline.config import Settings

__all__ = ["WorkerError", "WorkerProcess", "free_port", "wait_for"]

_TAIL_LINES = 30
# records_new() reads these two samples only: polled ten times a second during a timed
# run, a full scrape (311 lines) cost the worker 2.4 ms of CPU, this one 0.4 ms
_RECORDS_NEW = ("ottscore_records_received_total", "ottscore_events_already_applied_total")


class WorkerError(RuntimeError):
    """A worker exited early or did not get through its work in time; carries its log tail."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WorkerProcess:
    """One ``python -m agents worker`` process with ``settings``, logging to ``log_path``.

    Parameters
    ----------
    settings
        The worker's settings, passed as ``OTTSCORE_*`` environment variables; its
        ``metrics_port`` must be set (the endpoint is how the process is watched).
    log_path
        File that receives the worker's output.
    loglevel
        The worker's ``--loglevel``.
    """

    def __init__(self, settings: Settings, log_path: Path, *, loglevel: str = "warn") -> None:
        if not settings.metrics_port:
            raise ValueError("a watched worker needs a metrics_port")
        self.settings = settings
        self.log_path = log_path
        self.loglevel = loglevel
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start the process (it needs a few seconds to join its group)."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agents", "worker", "--loglevel", self.loglevel],
                env={**os.environ, **self.settings.to_env()},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        """The worker's process id."""
        if self.process is None:
            raise WorkerError("the worker was not started")
        return self.process.pid

    def metrics(self, names: Iterable[str] = ()) -> dict[str, float]:
        """Its Prometheus samples summed by name (empty while the endpoint is not up).

        ``names`` restricts the scrape to those sample names (see :func:`scrape`).

        Raises
        ------
        WorkerError
            When the process has exited.
        """
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise WorkerError(f"the worker exited (status {code}):\n{self.log_tail()}")
        try:
            return scrape(f"http://127.0.0.1:{self.settings.metrics_port}/metrics", names=names)
        except OSError:
            return {}

    def records_new(self) -> float:
        """Input records it took in for the first time: received minus re-read after a move."""
        samples = self.metrics(_RECORDS_NEW)
        return samples.get(_RECORDS_NEW[0], 0.0) - samples.get(_RECORDS_NEW[1], 0.0)

    def peak_rss_bytes(self) -> int:
        """Its peak resident set size so far (``VmHWM`` of ``/proc/<pid>/status``)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise WorkerError(f"no VmHWM in /proc/{self.pid}/status")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int | None:
        """``sig`` (SIGTERM: a graceful stop that commits), SIGKILL after ``timeout_s``.

        Returns its exit status.
        """
        if self.process is None:
            return None
        self._signal_and_wait(sig, timeout_s)
        return self.process.returncode

    def _signal_and_wait(self, sig: int, timeout_s: float) -> bool:
        """Send ``sig`` to a running worker and wait; False when it had to be killed."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return False
        return True

    def log_tail(self) -> str:
        """The last lines of its log."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(lines[-_TAIL_LINES:])


def wait_for(
    condition: Callable[[], bool], *, timeout_s: float, what: str, poll_s: float = 0.1
) -> None:
    """Poll ``condition`` until it holds; :class:`WorkerError` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise WorkerError(f"timed out after {timeout_s:g} s {what}")
        time.sleep(poll_s)
