"""Throwaway TLS material for a local broker: a CA, a broker and a client certificate.

The certificates are made with the ``openssl`` command line tool, as PEM files that both
Kafka (``ssl.keystore.type=PEM``) and Python's :mod:`ssl` read. They are meant for tests
and demos on one machine: the keys are not encrypted, and the CA's key is deleted once the
two certificates are signed, so nothing else can ever be signed by that CA.

Examples
--------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as directory:
...     certificates = issue_certificates(Path(directory))
...     certificates.ca.name, certificates.ca.exists()
('ca.pem', True)
"""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Certificates", "OpensslError", "issue_certificates"]

_CURVE = "prime256v1"


class OpensslError(RuntimeError):
    """``openssl`` is not installed or failed; the message ends with its output."""


@dataclass(frozen=True)
class Certificates:
    """The PEM files :func:`issue_certificates` writes.

    Attributes
    ----------
    ca
        The CA certificate: what clients trust (``OTTSCORE_KAFKA_SSL_CAFILE``), and the
        broker's trust store for client certificates.
    broker
        The broker's private key followed by its certificate chain (broker, CA), the form
        of a Kafka ``PEM`` key store.
    client_cert
        A client certificate for mutual TLS (``OTTSCORE_KAFKA_SSL_CERTFILE``).
    client_key
        Its private key (``OTTSCORE_KAFKA_SSL_KEYFILE``).
    """

    ca: Path
    broker: Path
    client_cert: Path
    client_key: Path


def issue_certificates(
    directory: Path,
    *,
    hosts: Iterable[str] = ("127.0.0.1", "localhost"),
    client_name: str = "ottscore-client",
    days: int = 30,
) -> Certificates:
    """Make a new CA and sign a broker and a client certificate with it, in ``directory``.

    Parameters
    ----------
    directory
        Where the files go (created if needed); existing files of the same names are
        replaced.
    hosts
        IP addresses and DNS names the broker certificate is valid for (its subject
        alternative names); clients check the address they connect to against them.
    client_name
        Common name of the client certificate: the broker's principal for that client is
        ``User:CN=<client_name>``.
    days
        Validity of the three certificates.

    Raises
    ------
    OpensslError
        When ``openssl`` is missing or one of its commands fails.
    """
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = directory / "ca.key"
    ca = directory / "ca.pem"
    _openssl(
        "req", "-x509", "-new", *_new_key(ca_key), "-out", ca, "-days", str(days),
        "-subj", "/CN=ottscore local CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
    )  # fmt: skip
    try:
        names = ",".join(map(_alternative_name, hosts))
        broker_key, broker_cert = directory / "broker.key", directory / "broker.crt"
        _sign(directory, broker_key, broker_cert, "/CN=ottscore broker", ca, ca_key, days,
              f"subjectAltName={names}\nextendedKeyUsage=serverAuth\n")  # fmt: skip
        client_key, client_cert = directory / "client.key", directory / "client.pem"
        _sign(directory, client_key, client_cert, f"/CN={client_name}", ca, ca_key, days,
              "extendedKeyUsage=clientAuth\n")  # fmt: skip
    finally:
        ca_key.unlink(missing_ok=True)
    broker = directory / "broker.pem"
    broker.write_text(broker_key.read_text() + broker_cert.read_text() + ca.read_text())
    broker.chmod(0o600)
    broker_key.unlink()
    broker_cert.unlink()
    return Certificates(ca=ca, broker=broker, client_cert=client_cert, client_key=client_key)


def _new_key(path: Path) -> tuple[str | Path, ...]:
    """``openssl req`` options for a new unencrypted EC key (PKCS#8) written to ``path``."""
    return ("-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{_CURVE}", "-nodes", "-keyout", path)


def _alternative_name(host: str) -> str:
    """``IP:<host>`` for an IP address, else ``DNS:<host>``."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"DNS:{host}"
    return f"IP:{host}"


def _sign(
    directory: Path,
    key: Path,
    cert: Path,
    subject: str,
    ca: Path,
    ca_key: Path,
    days: int,
    extensions: str,
) -> None:
    """Write a new key and a certificate for ``subject`` signed by the CA, with ``extensions``."""
    request, extfile = directory / f"{cert.stem}.csr", directory / f"{cert.stem}.ext"
    extfile.write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n" + extensions
    )
    try:
        _openssl("req", "-new", *_new_key(key), "-out", request, "-subj", subject)
        _openssl(
            "x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-set_serial",
            str(secrets.randbits(63)), "-days", str(days),
            "-extfile", extfile, "-out", cert,
        )  # fmt: skip
    finally:
        request.unlink(missing_ok=True)
        extfile.unlink(missing_ok=True)
    key.chmod(0o600)


def _openssl(*args: str | Path) -> None:
    """Run ``openssl`` with ``args``; raise :class:`OpensslError` when it fails."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise OpensslError("openssl is not on PATH: it makes the local broker's certificates")
    done = subprocess.run(
        [openssl, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise OpensslError(f"openssl {args[0]} failed (exit {done.returncode}):\n{done.stdout}")
