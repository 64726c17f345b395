"""A real Janus for tests, alone in a network namespace, and a runner for the participants that meet in it.

Why a namespace: Janus never offers a loopback address as an ICE candidate (its ICE code skips
loopback interfaces), so a Janus on 127.0.0.1 is unreachable for media. The fixture therefore
creates a network namespace of its own (``ip netns add``, a unique name) with ``lo`` up and the
test address ``198.18.0.1/24`` (RFC 2544's benchmarking range) on a veth pair whose two ends stay
inside it (a veth needs no kernel module, unlike a dummy interface). Janus runs there, bound to that
address; the participants run there too, as subprocesses started through ``ip netns exec``, and
offer only that address as their ICE host candidate. Nothing leaves the namespace, and inside it
every port is free, so Janus's HTTP port is fixed.

Janus gets a minimal configuration written into the test's tmp_path: the VideoRoom plugin and the
HTTP transport only (their folders hold links to just those two libraries; no event handler or
logger is loaded), ICE gathering enforced to the test address, an API secret, logs to a file.

Reuse: ``JanusServer.spawn`` runs any command in the namespace (a participant script, or later
``adasr room``) with its output in files; ``NamespaceProcess.wait_json`` waits for it, bounded,
and parses the JSON line it printed last.

Skips, with the reason, where ``janus`` or ``ip`` is missing or namespaces cannot be created (not
root, a container without CAP_SYS_ADMIN).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

#: The namespace's address: Janus's and every participant's ICE host candidate.
ADDRESS = "198.18.0.1"
#: Janus's HTTP API port (the namespace is private: any port is free).
HTTP_PORT = 8088
#: Repository root: participants run from here, with it on PYTHONPATH.
REPO = Path(__file__).resolve().parents[1]
#: Where distributions install Janus's plugin and transport libraries.
JANUS_LIBRARY_ROOTS = ("/usr/lib/*/janus", "/usr/lib/janus", "/usr/local/lib/janus", "/opt/janus/lib/janus")
#: Bound on Janus answering ``/info`` after start, and on stopping it.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class NamespaceUnavailable(RuntimeError):
    """This machine cannot give the test a network namespace (the test skips with this reason)."""


class PeerFailed(AssertionError):
    """A process in the namespace hung, failed, or printed no result (the test fails with its stderr)."""


def _run(argv: Sequence[str]) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise NamespaceUnavailable(f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.returncode}")


@dataclass
class NetworkNamespace:
    """A named network namespace with ``lo`` and one test address up."""

    name: str
    address: str

    @classmethod
    def create(cls, address: str = ADDRESS) -> NetworkNamespace:
        name = f"adasr-{os.getpid()}-{secrets.token_hex(3)}"
        _run(["ip", "netns", "add", name])
        namespace = cls(name, address)
        try:
            for argv in (["ip", "link", "set", "lo", "up"],
                         ["ip", "link", "add", "adasr0", "type", "veth", "peer", "name", "adasr1"],
                         ["ip", "addr", "add", f"{address}/24", "dev", "adasr0"],
                         ["ip", "link", "set", "adasr1", "up"],
                         ["ip", "link", "set", "adasr0", "up"]):
                _run(namespace.command(argv))
        except BaseException:
            namespace.delete()
            raise
        return namespace

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, timeout=30)


@dataclass
class NamespaceProcess:
    """A command running in the namespace, its stdout and stderr in files."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def tail(self, lines: int = 30) -> str:
        """The last lines of its stderr, for a failure message."""
        text = self.stderr.read_text(errors="replace") if self.stderr.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Ask it to stop (SIGTERM), then kill it if it does not within STOP_TIMEOUT_S."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(STOP_TIMEOUT_S)

    def wait_json(self, timeout_s: float) -> Any:
        """Wait for it to exit (killed after ``timeout_s``: a hung peer fails the test, it does not hang it),
        check its exit status and return the JSON of the last line it printed."""
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise PeerFailed(f"{self.name} did not finish within {timeout_s:.0f} s; its stderr ends with:\n"
                             f"{self.tail()}") from None
        if self.popen.returncode != 0:
            raise PeerFailed(f"{self.name} exited with status {self.popen.returncode}; its stderr ends with:\n"
                             f"{self.tail()}")
        lines = self.stdout.read_text().strip().splitlines()
        if not lines:
            raise PeerFailed(f"{self.name} printed nothing; its stderr ends with:\n{self.tail()}")
        return json.loads(lines[-1])


@dataclass
class JanusServer:
    """A running Janus in its namespace, and what a participant needs to reach it."""

    namespace: NetworkNamespace
    workdir: Path
    api_secret: str
    process: NamespaceProcess | None = None
    info: dict[str, Any] = field(default_factory=dict)
    """Janus's ``/info`` answer (``version_string``, plugins, transports)."""
    spawned: list[NamespaceProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.namespace.address}:{HTTP_PORT}/janus"

    @property
    def log(self) -> Path:
        return self.workdir / "janus.log"

    def spawn(self, argv: Sequence[str], name: str, repo: Path = REPO) -> NamespaceProcess:
        """Start ``argv`` inside the namespace, from the root of ``repo`` (this checkout, or another one, e.g. an
        older commit) with it on PYTHONPATH; stopped at teardown if still running."""
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
        stdout, stderr = self.workdir / f"{name}.out", self.workdir / f"{name}.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            popen = subprocess.Popen(self.namespace.command(argv), cwd=repo, env=env, stdout=out, stderr=err,
                                     stdin=subprocess.DEVNULL)
        process = NamespaceProcess(name, popen, stdout, stderr)
        self.spawned.append(process)
        return process

    def spawn_python(self, module: str, args: Sequence[str], name: str, repo: Path = REPO) -> NamespaceProcess:
        """``python -m module args`` (this interpreter, ``repo``'s code) inside the namespace."""
        return self.spawn([sys.executable, "-m", module, *args], name, repo)

    def stop(self) -> None:
        """Stop whatever still runs in the namespace, Janus (started first) last."""
        for process in reversed(self.spawned):
            process.stop()


def _jcfg(sections: dict[str, dict[str, str | int | bool]]) -> str:
    """Janus's configuration syntax (libconfig): ``name: { key = value }``."""
    out = []
    for section, entries in sections.items():
        out.append(f"{section}: {{")
        for key, value in entries.items():
            rendered = str(value).lower() if isinstance(value, bool) else (
                str(value) if isinstance(value, int) else json.dumps(value))
            out.append(f"\t{key} = {rendered}")
        out.append("}")
    return "\n".join(out) + "\n"


def _janus_libraries() -> Path:
    """The folder that holds Janus's ``plugins/`` and ``transports/``."""
    for pattern in JANUS_LIBRARY_ROOTS:
        for root in sorted(Path("/").glob(pattern.lstrip("/"))):
            if ((root / "plugins" / "libjanus_videoroom.so").exists()
                    and (root / "transports" / "libjanus_http.so").exists()):
                return root
    raise NamespaceUnavailable(f"Janus's VideoRoom plugin and HTTP transport not found under {JANUS_LIBRARY_ROOTS}")


def write_config(workdir: Path, address: str, api_secret: str) -> Path:
    """Janus's configuration in ``workdir``: VideoRoom + HTTP only, ICE on ``address``; returns janus.jcfg."""
    libraries = _janus_libraries()
    folders = {name: workdir / name for name in ("plugins", "transports", "events", "loggers")}
    for folder in folders.values():
        folder.mkdir()
    (folders["plugins"] / "libjanus_videoroom.so").symlink_to(libraries / "plugins" / "libjanus_videoroom.so")
    (folders["transports"] / "libjanus_http.so").symlink_to(libraries / "transports" / "libjanus_http.so")
    (workdir / "janus.jcfg").write_text(_jcfg({
        "general": {"configs_folder": str(workdir), "plugins_folder": str(folders["plugins"]),
                    "transports_folder": str(folders["transports"]), "events_folder": str(folders["events"]),
                    "loggers_folder": str(folders["loggers"]), "log_to_stdout": False,
                    "log_to_file": str(workdir / "janus.log"), "debug_level": 4, "api_secret": api_secret,
                    "interface": address,
                    "session_timeout": 60},
        "media": {"rtp_port_range": "40000-40200"},
        "nat": {"ice_enforce_list": address, "ignore_mdns": True, "nice_debug": False},
        "events": {"broadcast": False},
    }))
    (workdir / "janus.transport.http.jcfg").write_text(_jcfg({
        "general": {"json": "plain", "base_path": "/janus", "http": True, "ip": address, "port": HTTP_PORT,
                    "https": False},
        "admin": {"admin_http": False, "admin_https": False},
    }))
    (workdir / "janus.plugin.videoroom.jcfg").write_text(_jcfg({"general": {}}))
    return workdir / "janus.jcfg"


def start_janus(namespace: NetworkNamespace, workdir: Path) -> JanusServer:
    """Janus in ``namespace``, configured in ``workdir``, answering its HTTP API (bounded wait)."""
    server = JanusServer(namespace, workdir, api_secret=secrets.token_hex(8))
    config = write_config(workdir, namespace.address, server.api_secret)
    server.process = server.spawn(["janus", "-C", str(config), "-F", str(workdir), "--disable-colors"], "janus")
    probe = server.spawn_python("tests.janus_probe", [server.url, str(START_TIMEOUT_S)], "janus-probe")
    try:
        server.info = probe.wait_json(START_TIMEOUT_S + STOP_TIMEOUT_S)
    except PeerFailed as error:
        server.stop()
        log = server.log.read_text(errors="replace")[-3000:] if server.log.exists() else server.process.tail()
        raise PeerFailed(f"Janus did not answer at {server.url} ({error}); its log ends with:\n{log}") from None
    return server


@pytest.fixture
def janus_server(tmp_path: Path) -> Iterator[JanusServer]:
    """A fresh Janus (VideoRoom, HTTP API with an API secret) in a private network namespace."""
    for tool in ("janus", "ip"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` is not installed (apt-get install janus iproute2)")
    try:
        namespace = NetworkNamespace.create()
    except NamespaceUnavailable as error:
        pytest.skip(f"no network namespace for Janus: {error}")
    server = None
    try:
        try:
            server = start_janus(namespace, tmp_path)
        except NamespaceUnavailable as error:
            pytest.skip(str(error))
        yield server
    finally:
        if server is not None:
            server.stop()
        namespace.delete()
