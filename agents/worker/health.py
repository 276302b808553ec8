"""Liveness, readiness and metrics of a worker on one HTTP port.

``GET /healthz``
    200 while the worker's event loop has beaten within ``stale_after_s`` (a timer in the
    app beats every second) and no processed record has waited more than
    ``commit_stale_s`` for a successful commit, else 503: a stuck loop, or a worker whose
    outputs and offsets cannot reach Kafka, is a dead worker: restart it.
``GET /readyz``
    200 once the worker has recovered its table and processes its partitions, 503 while
    it starts, rebalances or recovers (or is not live): send no traffic, do not page.
``GET /metrics`` (and any other path)
    the Prometheus exposition of the worker's registry.

Both health answers are a small JSON object saying why. The server runs in a daemon
thread, so it answers even while the event loop is busy, which is what lets /healthz see
a stuck loop.

>>> import urllib.error, urllib.request
>>> from prometheus_client import CollectorRegistry
>>> health = Health(stale_after_s=30)
>>> server = serve(health, CollectorRegistry(), host="127.0.0.1", port=0)
>>> url = f"http://127.0.0.1:{server.server_port}"
>>> urllib.request.urlopen(url + "/healthz").status
200
>>> try:
...     urllib.request.urlopen(url + "/readyz")
... except urllib.error.HTTPError as error:
...     print(error.code, error.read().decode())
503 {"ready":false,"live":true,"reason":"starting"}
>>> health.set_ready(True, "processing")
>>> urllib.request.urlopen(url + "/readyz").read().decode()
'{"ready":true,"live":true,"reason":"processing"}'
>>> server.shutdown()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import orjson
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

__all__ = ["Health", "serve"]


class Health:
    """What /healthz and /readyz answer, fed by the worker.

    ``beat()`` from the event loop proves it runs; ``set_ready()`` says whether the worker
    processes its partitions; ``commit_pending()`` and ``committed()`` say whether what it
    processed reaches Kafka. ``clock`` is for tests.

    >>> now = [0.0]
    >>> health = Health(stale_after_s=30, commit_stale_s=60, clock=lambda: now[0])
    >>> health.commit_pending(); now[0] = 50.0; health.beat(); health.liveness()
    (True, {'live': True, 'loop_silent_s': 0.0, 'uncommitted_s': 50.0})
    >>> now[0] = 61.0; health.beat(); health.liveness()[1]["reason"]
    'no commit for 61 s while records are pending'
    >>> health.committed(); health.live()
    True
    """

    def __init__(
        self,
        *,
        stale_after_s: float,
        commit_stale_s: float = float("inf"),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stale_after_s = stale_after_s
        self.commit_stale_s = commit_stale_s
        self._clock = clock
        self._last_beat = clock()
        self._pending_since: float | None = None
        self._ready = False
        self._reason = "starting"

    def beat(self) -> None:
        """The event loop is alive now."""
        self._last_beat = self._clock()

    def commit_pending(self) -> None:
        """Processed records wait for a commit (from now, unless they waited already)."""
        if self._pending_since is None:
            self._pending_since = self._clock()

    def committed(self) -> None:
        """Nothing processed waits for a commit any more (one succeeded, or none is due)."""
        self._pending_since = None

    def _uncommitted_s(self) -> float:
        since = self._pending_since
        return 0.0 if since is None else self._clock() - since

    def set_ready(self, ready: bool, reason: str) -> None:
        """Whether the worker serves its partitions, and why (a word for the operator)."""
        self._ready = ready
        self._reason = reason

    def live(self) -> bool:
        """True while the last beat is recent and no record waits too long for a commit."""
        return self._why_dead() is None

    def _why_dead(self) -> str | None:
        silent = self._clock() - self._last_beat
        if silent > self.stale_after_s:
            return "event loop stalled"
        uncommitted = self._uncommitted_s()
        if uncommitted > self.commit_stale_s:
            return f"no commit for {uncommitted:.0f} s while records are pending"
        return None

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """(live, the JSON body of /healthz)."""
        why = self._why_dead()
        body: dict[str, Any] = {
            "live": why is None,
            "loop_silent_s": round(self._clock() - self._last_beat, 3),
            "uncommitted_s": round(self._uncommitted_s(), 3),
        }
        if why is not None:
            body["reason"] = why
        return why is None, body

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, the JSON body of /readyz): ready needs live too."""
        why = self._why_dead()
        ready = self._ready and why is None
        reason = self._reason if why is None else why
        return ready, {"ready": ready, "live": why is None, "reason": reason}


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        """Scrapes and probes every few seconds are not worth a log line each."""


def _app(health: Health, registry: CollectorRegistry) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)
    probes = {"/healthz": health.liveness, "/readyz": health.readiness}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        probe = probes.get(environ.get("PATH_INFO", ""))
        if probe is None:
            return metrics(environ, start_response)
        ok, body = probe()
        payload = orjson.dumps(body)
        start_response(
            "200 OK" if ok else "503 Service Unavailable",
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]

    return app


def serve(
    health: Health, registry: CollectorRegistry, *, host: str, port: int
) -> ThreadingWSGIServer:
    """Serve /healthz, /readyz and /metrics on ``host:port`` from a daemon thread.

    Returns the server (``server_port`` is the bound port; ``shutdown()`` stops it).
    """
    server = make_server(
        host, port, _app(health, registry), ThreadingWSGIServer, handler_class=_QuietHandler
    )
    threading.Thread(target=server.serve_forever, name="ottscore-http", daemon=True).start()
    return server
