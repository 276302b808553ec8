"""A local single-node Apache Kafka broker (KRaft), run from Maven Central jars without Docker.

The broker is one ``java`` process that is both broker and controller, listening on
127.0.0.1 only. Everything it needs lives under one home directory::

    <home>/libs-<version>/   the Kafka jars (fetched once with Maven; shareable, see jars_dir)
    <home>/server.properties rendered from deploy/kafka/server.properties on every start
    <home>/data/             the log directory (formatted once, kept across restarts)
    <home>/kafka.log         the broker's output of its latest start
    <home>/broker.pid        the process id while it runs

Its files (``pom.xml``, ``server.properties``, ``log4j.properties``) are read from the
``deploy/kafka`` directory of the source tree.

With :class:`SecureListeners` the broker also serves SASL_SSL (SCRAM-SHA-512 users made
when the data directory is formatted) and SSL with client certificates, on ports of their
own; the PLAINTEXT listener stays, and the broker's own requests keep using it.

Examples
--------
>>> kafka = LocalKafka(Path("/tmp/kafka-example"), port=19092, controller_port=19093)
>>> kafka.bootstrap
'127.0.0.1:19092'
>>> with kafka:  # doctest: +SKIP
...     kafka.ensure_topics(["ott.events"], partitions=4)
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from string import Template
from types import TracebackType
from typing import TYPE_CHECKING

from kafka.errors import KafkaError

from agents.devtools.tls import Certificates
from agents.worker.kafka import admin_client, create_topics

if TYPE_CHECKING:
    from pipeline.config import Settings

__all__ = ["BrokerError", "BrokerStatus", "LocalKafka", "SecureListeners", "wait_for_broker"]

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
"""The broker's Maven project, properties template and logging configuration."""

MIN_JAVA = 11
"""Oldest Java that runs Kafka 3.9 brokers."""

JARS_MARKER = ".complete"
"""File in the jar cache that marks a complete download; holds the digest of ``pom.xml``."""

_POLL_S = 0.2
_KILL_WAIT_S = 10.0
_TAIL_LINES = 40


class BrokerError(RuntimeError):
    """The local broker cannot be fetched, started or stopped; the message says why."""


@dataclass(frozen=True)
class BrokerStatus:
    """What :meth:`LocalKafka.status` reports.

    Attributes
    ----------
    running
        Whether the broker process of this home is alive.
    pid
        Its process id, or None when it is not running.
    bootstrap
        The ``host:port`` clients connect to.
    log_file
        Where the broker writes its output.
    data_dir
        The broker's log directory.
    """

    running: bool
    pid: int | None
    bootstrap: str
    log_file: Path
    data_dir: Path


@dataclass(frozen=True)
class SecureListeners:
    """The two authenticated listeners a :class:`LocalKafka` may add to its PLAINTEXT one.

    Attributes
    ----------
    certificates
        The broker's key store and the CA it trusts for client certificates
        (:func:`agents.devtools.tls.issue_certificates`).
    sasl_ssl_port
        Port of the ``SASL_SSL`` listener: TLS, then a SCRAM-SHA-512 login.
    ssl_port
        Port of the ``SSL`` listener: TLS with a client certificate signed by the CA.
    scram_users
        SCRAM-SHA-512 user names and passwords. They are written into the cluster metadata
        when the data directory is formatted, so they are fixed by the first start.

    Examples
    --------
    >>> certificates = Certificates(*map(Path, ["ca.pem", "b.pem", "c.pem", "c.key"]))
    >>> SecureListeners(certificates, sasl_ssl_port=19094, ssl_port=19095).sasl_ssl_bootstrap
    '127.0.0.1:19094'
    """

    certificates: Certificates
    sasl_ssl_port: int
    ssl_port: int
    scram_users: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def sasl_ssl_bootstrap(self) -> str:
        """The bootstrap servers string of the SASL_SSL listener."""
        return f"127.0.0.1:{self.sasl_ssl_port}"

    @property
    def ssl_bootstrap(self) -> str:
        """The bootstrap servers string of the SSL (mutual TLS) listener."""
        return f"127.0.0.1:{self.ssl_port}"

    def listeners(self) -> str:
        """The listeners to add to ``listeners`` and ``advertised.listeners``, comma first."""
        return f",SASL_SSL://{self.sasl_ssl_bootstrap},SSL://{self.ssl_bootstrap}"

    def properties(self) -> str:
        """The broker properties of both listeners' TLS and SASL, one per line."""
        return (
            "\n# TLS on both secured listeners; SSL also asks for a client certificate.\n"
            "ssl.keystore.type=PEM\n"
            f"ssl.keystore.location={self.certificates.broker}\n"
            "ssl.truststore.type=PEM\n"
            f"ssl.truststore.location={self.certificates.ca}\n"
            "listener.name.ssl.ssl.client.auth=required\n"
            "# SCRAM-SHA-512 logins on SASL_SSL, checked against the users of the metadata log.\n"
            "listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512\n"
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;\n"
        )

    def scram_arguments(self) -> list[str]:
        """``kafka-storage format`` options that create the SCRAM users.

        >>> certificates = Certificates(*map(Path, ["ca.pem", "b.pem", "c.pem", "c.key"]))
        >>> SecureListeners(certificates, 1, 2, {"ottscore": "s3cret"}).scram_arguments()
        ['--add-scram', 'SCRAM-SHA-512=[name="ottscore",password="s3cret"]']
        """
        arguments = []
        for name, password in self.scram_users.items():
            if '"' in name + password:
                raise ValueError(f"SCRAM user {name!r}: names and passwords cannot hold '\"'")
            arguments += ["--add-scram", f'SCRAM-SHA-512=[name="{name}",password="{password}"]']
        return arguments


@cache
def kafka_version() -> str:
    """The Kafka version pinned by ``deploy/kafka/pom.xml`` (its ``kafka.version`` property)."""
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    pom = ET.parse(DEPLOY_DIR / "pom.xml")
    version = pom.findtext("m:properties/m:kafka.version", None, namespace)
    if not version:
        raise BrokerError(f"{DEPLOY_DIR / 'pom.xml'} sets no kafka.version property")
    return version


def wait_for_broker(
    bootstrap: str, *, timeout: float = 60.0, alive: Callable[[], bool] = lambda: True
) -> None:
    """Wait until a broker at ``bootstrap`` answers a real Kafka request.

    A refused TCP connection counts as no answer; otherwise a ``DescribeCluster`` request
    (``Metadata`` on old brokers) must list at least one unfenced broker.

    Parameters
    ----------
    bootstrap
        Comma-separated ``host:port`` list of the cluster.
    timeout
        Longest wait, in seconds.
    alive
        Checked before every attempt; when it turns false the wait stops at once (the
        process that should answer has exited).

    Raises
    ------
    BrokerError
        When the broker does not answer in time, or ``alive`` turns false.
    """
    deadline = time.monotonic() + timeout
    while alive():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerError(f"no Kafka broker answered on {bootstrap} within {timeout:g} s")
        if _answers(bootstrap, timeout=min(remaining, 5.0)):
            return
        time.sleep(_POLL_S)
    raise BrokerError(f"the Kafka process exited before it answered on {bootstrap}")


def _answers(bootstrap: str, *, timeout: float) -> bool:
    """Whether the first of ``bootstrap`` accepts TCP and the cluster has an unfenced broker."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        with admin_client({"bootstrap_servers": bootstrap}, timeout=timeout) as admin:
            brokers = admin.describe_cluster()["brokers"]
    except (OSError, KafkaError):
        return False
    return any(not broker.get("is_fenced", False) for broker in brokers)


def _tail(path: Path, lines: int = _TAIL_LINES) -> str:
    """The last ``lines`` lines of a text file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def _port_taken(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port`` (connections in TIME_WAIT do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _cluster_id() -> str:
    """A random KRaft cluster id, in the format of ``kafka-storage random-uuid``."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


class LocalKafka:
    """A single-node Kafka broker on 127.0.0.1, managed through a pid file in ``home``.

    Parameters
    ----------
    home
        Directory of the broker's configuration, data, log and pid file.
    port
        Client (PLAINTEXT) port.
    controller_port
        KRaft controller port.
    heap
        Largest Java heap, as for ``-Xmx``.
    jars_dir
        Cache of the Kafka jars; defaults to ``<home>/libs-<kafka version>``. Several homes
        may share one cache (the tests do): fetching holds a file lock.
    secure
        Authenticated listeners to serve besides PLAINTEXT; None for PLAINTEXT only.
    """

    def __init__(
        self,
        home: Path,
        *,
        port: int,
        controller_port: int,
        heap: str = "512m",
        jars_dir: Path | None = None,
        secure: SecureListeners | None = None,
    ) -> None:
        self.home = Path(home).absolute()
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.secure = secure
        default_jars_dir = self.home / f"libs-{kafka_version()}"
        self.jars_dir = Path(jars_dir).absolute() if jars_dir else default_jars_dir
        self.data_dir = self.home / "data"
        self.log_file = self.home / "kafka.log"
        self.pid_file = self.home / "broker.pid"
        self.properties_file = self.home / "server.properties"
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, jars_dir: Path | None = None) -> LocalKafka:
        """The broker that the ``broker_*`` settings describe."""
        return cls(
            settings.broker_home,
            port=settings.broker_port,
            controller_port=settings.broker_controller_port,
            jars_dir=jars_dir,
        )

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers string of this broker, ``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- jars -------------------------------------------------------------------------

    def fetch_jars(self) -> None:
        """Copy the Kafka jars from Maven into ``jars_dir``, unless a complete copy is there.

        The copy is complete when its marker file holds the digest of ``pom.xml``: it is
        written last, so an interrupted or failed download is redone, and so is a download
        for another ``pom.xml``.

        Raises
        ------
        BrokerError
            When ``mvn`` is not installed or fails; the message ends with its output.
        """
        pom = DEPLOY_DIR / "pom.xml"
        digest = hashlib.sha256(pom.read_bytes()).hexdigest()
        marker = self.jars_dir / JARS_MARKER
        if _read(marker) == digest:
            return
        self.jars_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.jars_dir.with_name(self.jars_dir.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _read(marker) == digest:
                return
            mvn = shutil.which("mvn")
            if mvn is None:
                raise BrokerError(
                    "Maven (mvn) is not on PATH: it is needed once, to fetch the Kafka jars "
                    f"into {self.jars_dir}"
                )
            shutil.rmtree(self.jars_dir, ignore_errors=True)
            done = subprocess.run(
                [
                    mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(pom),
                    "dependency:copy-dependencies", "-DincludeScope=runtime",
                    f"-DoutputDirectory={self.jars_dir}",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
            )  # fmt: skip
            if done.returncode != 0:
                tail = "\n".join(done.stdout.splitlines()[-_TAIL_LINES:])
                raise BrokerError(
                    f"mvn failed (exit {done.returncode}) fetching the Kafka jars:\n{tail}"
                )
            marker.write_text(digest)

    # --- lifecycle --------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Start the broker and wait until it answers Kafka requests; do nothing if it does.

        The first start formats ``data_dir`` with a new cluster id; later starts keep the data.

        Parameters
        ----------
        timeout
            Longest wait for the broker to answer, in seconds.

        Raises
        ------
        BrokerError
            When a port is taken by another process, Java or Maven is missing, or the broker
            exits or does not answer in time (it is then killed); the message ends with the
            tail of the broker's log.
        """
        pid = self._running_pid()
        if pid is not None:
            self._wait_ready(pid, timeout)
            return
        secure_ports = (self.secure.sasl_ssl_port, self.secure.ssl_port) if self.secure else ()
        for port in (self.port, self.controller_port, *secure_ports):
            if _port_taken(port):
                raise BrokerError(
                    f"127.0.0.1:{port} is already in use by another process, not by the broker "
                    f"of {self.home}; stop that process or choose other broker ports"
                )
        self.fetch_jars()
        self.home.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text(self._properties())
        if not (self.data_dir / "meta.properties").exists():
            self._format()
        with open(self.log_file, "wb") as log:
            self._process = subprocess.Popen(
                [*self._java_command(f"-Xmx{self.heap}"), "kafka.Kafka", str(self.properties_file)],
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._process.pid}\n")
        self._wait_ready(self._process.pid, timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after ``timeout`` seconds; do nothing if stopped.

        Raises
        ------
        BrokerError
            When the process survives SIGKILL.
        """
        pid = self._running_pid()
        if pid is not None:
            _signal_group(pid, signal.SIGTERM)
            if not self._wait_exit(pid, timeout):
                _signal_group(pid, signal.SIGKILL)
                if not self._wait_exit(pid, _KILL_WAIT_S):
                    raise BrokerError(f"the Kafka process {pid} survived SIGKILL")
        self.pid_file.unlink(missing_ok=True)

    def status(self) -> BrokerStatus:
        """Whether the broker of this home runs, and where its files are."""
        pid = self._running_pid()
        return BrokerStatus(
            running=pid is not None,
            pid=pid,
            bootstrap=self.bootstrap,
            log_file=self.log_file,
            data_dir=self.data_dir,
        )

    def ensure_topics(
        self,
        names: Iterable[str],
        *,
        partitions: int,
        replication: int = 1,
        compacted: Iterable[str] = (),
    ) -> None:
        """Create missing topics on this broker; see :func:`agents.worker.kafka.create_topics`."""
        create_topics(
            {"bootstrap_servers": self.bootstrap},
            names,
            partitions=partitions,
            replication=replication,
            compacted=compacted,
        )

    # --- helpers ----------------------------------------------------------------------

    @cached_property
    def java(self) -> str:
        """A Java :data:`MIN_JAVA`+ executable: ``$JAVA_HOME/bin/java``, else ``java`` on PATH."""
        java_home = os.environ.get("JAVA_HOME")
        candidate = Path(java_home, "bin", "java") if java_home else None
        java = str(candidate) if candidate and candidate.is_file() else shutil.which("java")
        if java is None:
            raise BrokerError(f"no java found (JAVA_HOME or PATH); Kafka needs Java {MIN_JAVA}+")
        output = subprocess.run(
            [java, "-version"], capture_output=True, text=True, check=False
        ).stderr
        found = re.search(r'version "(?:1\.)?(\d+)', output)
        if found is None or int(found.group(1)) < MIN_JAVA:
            raise BrokerError(f"{java} is not Java {MIN_JAVA}+: {output.strip()}")
        return java

    def _java_command(self, *options: str) -> list[str]:
        """``java`` with the Kafka class path and logging configuration, before the class name."""
        return [
            self.java,
            *options,
            "-cp",
            str(self.jars_dir / "*"),
            f"-Dlog4j.configuration={(DEPLOY_DIR / 'log4j.properties').as_uri()}",
        ]

    def _properties(self) -> str:
        """The broker's properties: the template filled in, and the secured listeners' own."""
        properties = Template((DEPLOY_DIR / "server.properties").read_text()).substitute(
            port=self.port,
            controller_port=self.controller_port,
            data_dir=self.data_dir,
            secure_listeners=self.secure.listeners() if self.secure else "",
        )
        return properties + self.secure.properties() if self.secure else properties

    def _format(self) -> None:
        """Format ``data_dir`` for KRaft with a new cluster id (and the SCRAM users)."""
        done = subprocess.run(
            [
                *self._java_command(),
                "kafka.tools.StorageTool", "format",
                "-t", _cluster_id(), "-c", str(self.properties_file),
                *(self.secure.scram_arguments() if self.secure else ()),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise BrokerError(f"formatting {self.data_dir} failed:\n{done.stdout.strip()}")

    def _wait_ready(self, pid: int, timeout: float) -> None:
        """Wait for the broker process ``pid`` to answer; kill it and raise if it does not."""
        try:
            wait_for_broker(self.bootstrap, timeout=timeout, alive=lambda: self._alive(pid))
        except BrokerError as exc:
            _signal_group(pid, signal.SIGKILL)
            self._wait_exit(pid, _KILL_WAIT_S)
            self.pid_file.unlink(missing_ok=True)
            tail = _tail(self.log_file)
            raise BrokerError(f"{exc}; last lines of {self.log_file}:\n{tail}") from None

    def _running_pid(self) -> int | None:
        """The pid of this home's live broker process, or None; a stale pid file is removed."""
        try:
            pid = int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        if self._alive(pid) and self._runs_our_broker(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def _runs_our_broker(self, pid: int) -> bool:
        """Whether ``pid`` runs ``kafka.Kafka`` on our properties (not a reused pid).

        Without ``/proc`` (macOS) the pid file is trusted.
        """
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return not Path("/proc").is_dir()
        return b"kafka.Kafka" in argv and str(self.properties_file).encode() in argv

    def _alive(self, pid: int) -> bool:
        """Whether process ``pid`` runs; reaps it when it is our exited child."""
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is None
        try:
            reaped, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return reaped == 0

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``pid`` to exit; whether it did."""
        deadline = time.monotonic() + timeout
        while self._alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True


def _signal_group(pid: int, signum: signal.Signals) -> None:
    """Send ``signum`` to the process group led by ``pid``, if it still exists."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


def _read(path: Path) -> str | None:
    """The text of ``path``, or None when it does not exist."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
