"""A real coturn on loopback for the tests: a minimal configuration, started and stopped around a test.

``turnserver`` comes from Debian's ``coturn`` package (``make test`` installs it where apt is
available); where it is absent the tests that need it skip and say so. The server listens on
127.0.0.1 only, on a free port, with one static long-term-credential user, and
``allow-loopback-peers`` (it refuses to relay to loopback addresses otherwise: fine for a test,
never for production). Its log, pid file and user database stay in the test's temporary folder.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.processes import stop_process

TURN_USER = "alice"
TURN_PASSWORD = "s3cret-for-tests"
REALM = "adasr.test"


@dataclass(frozen=True)
class TurnServer:
    """A running coturn: where it listens and who may use it."""

    port: int
    """UDP and TCP port of plain TURN on 127.0.0.1."""
    tls_port: int | None
    """TCP port of TURN over TLS (``turns:``), when started with a certificate."""
    user: str
    password: str
    log: Path
    """coturn's log (the relayed traffic shows up in its ``peer usage`` lines)."""

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        assert self.tls_port is not None, "started without a certificate"
        return f"turns:127.0.0.1:{self.tls_port}"


def turnserver_or_skip() -> str:
    """Path of ``turnserver``, or skip the test with the way to get it."""
    path = shutil.which("turnserver")
    if path is None:
        pytest.skip("needs coturn's `turnserver` (apt-get install coturn; `make test` installs it where apt is "
                    "available)")
    return path


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port


def _wait_listening(process: subprocess.Popen[bytes], port: int, log: Path, timeout_s: float) -> None:
    """Poll the TCP port until coturn accepts, bounded; fail with its log when it exits or never listens."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"turnserver exited with {process.returncode}: {_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"turnserver did not listen on {port} within {timeout_s:.0f} s: {_tail(log)}") from None
            time.sleep(0.05)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"


@contextmanager
def running_coturn(folder: Path, certificate: tuple[Path, Path] | None = None,
                   start_timeout_s: float = 15.0) -> Iterator[TurnServer]:
    """coturn on 127.0.0.1 for the duration of the block; ``certificate`` (cert, key) adds a ``turns:`` port."""
    binary = turnserver_or_skip()
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    tls_port = free_port() if certificate is not None else None
    log = folder / "turnserver.log"
    lines = [
        "listening-ip=127.0.0.1", "relay-ip=127.0.0.1", f"listening-port={port}",
        f"realm={REALM}", "lt-cred-mech", f"user={TURN_USER}:{TURN_PASSWORD}", "fingerprint",
        "no-dtls", "no-cli", "allow-loopback-peers", "no-multicast-peers", "simple-log", "verbose",
        f"log-file={log}", f"pidfile={folder / 'turnserver.pid'}", f"userdb={folder / 'turndb'}",
    ]
    if certificate is None:
        lines.append("no-tls")
    else:
        lines += [f"tls-listening-port={tls_port}", f"cert={certificate[0]}", f"pkey={certificate[1]}"]
    config = folder / "turnserver.conf"
    config.write_text("\n".join(lines) + "\n")
    process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(process, port, log, start_timeout_s)
        if tls_port is not None:
            _wait_listening(process, tls_port, log, start_timeout_s)
        yield TurnServer(port=port, tls_port=tls_port, user=TURN_USER, password=TURN_PASSWORD, log=log)
    finally:
        stop_process(process)
