"""Issue #28's room attack against a real Janus: a victim (``adasr room``) and the hostile ``tests.janus_hostile``.

``run_attack(server, checkpoint, workdir)`` runs it in the namespace of ``server`` (tests/janus_fixture.py):
the victim joins room ROOM with a PIN, drives its face from a video and writes its report every
second; ``janus_hostile attack`` then plays G1, G7, G3 and G2 against it; the victim is stopped and
its final report read. Then G5: ``janus_hostile open-room`` creates OPEN_ROOM without a PIN, and a
second victim asks to join it with ``--pin``. The figures come back as one dict.

``python -m tests.room_attack [--victim-repo PATH]`` does the same on a fresh Janus (root, ``janus`` and
``ip`` needed) and prints the figures as JSON; ``--victim-repo`` runs the victims from another checkout
(``git archive 4b44c17 | tar -x -C PATH``: the code before the fixes), the attacker from this one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.janus_fixture import ADDRESS, REPO, JanusServer, NamespaceProcess, NetworkNamespace, PeerFailed, start_janus
from tests.janus_hostile import victim_report

ROOM, OPEN_ROOM, PIN = 6060, 6161, "room-pin"
#: Bound on each wait for a victim; the attacker's own waits are bounded inside it.
VICTIM_TIMEOUT_S = 300.0
ATTACK_TIMEOUT_S = 900.0
#: Builds the test model (conftest's ``fast_checkpoint``) with the victim's own code, for ``main``.
MAKE_CHECKPOINT = """
import dataclasses, sys, torch
from adasr.checkpoint import save_checkpoint
from adasr.config import load_model_config
from adasr.networks import AdaSRNetworks
torch.manual_seed(0)
config = dataclasses.replace(load_model_config("lite"), image_size=128, name="lite-128-test")
save_checkpoint(sys.argv[1], AdaSRNetworks(config))
"""


def rss_kib(pid: int) -> int:
    """Resident memory of a process (``ip netns exec`` execs its command: the pid is the victim's)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _wait(condition: Callable[[], bool], process: NamespaceProcess, what: str) -> None:
    deadline = time.monotonic() + VICTIM_TIMEOUT_S
    while not condition():
        if process.popen.poll() is not None and not condition():
            raise PeerFailed(f"{process.name} exited ({process.popen.returncode}) before {what}:\n{process.tail()}")
        if time.monotonic() > deadline:
            raise PeerFailed(f"no {what} within {VICTIM_TIMEOUT_S:.0f} s:\n{process.tail()}")
        time.sleep(0.2)


def _victim(server: JanusServer, repo: Path, checkpoint: Path, workdir: Path, name: str,
            room: int) -> tuple[NamespaceProcess, Path]:
    from adasr.demo_media import astronaut_portrait, carphone_clip

    stats = workdir / f"{name}.json"
    # the test namespace is private; code from before --janus-plain-http took http:// anywhere
    plain = ["--janus-plain-http"] if "--janus-plain-http" in (repo / "adasr_cli" / "room_command.py").read_text() \
        else []
    argv = ["room", "--janus", server.url, *plain, "--api-secret", server.api_secret, "--room", str(room),
            "--pin", PIN, "--display", name, "--ice-host", ADDRESS, "--source", str(astronaut_portrait()),
            "--video", str(carphone_clip()), "--loop", "--fps", "10", "--no-audio", "--sink", "none",
            "--stats-json", str(stats), "--checkpoint", str(checkpoint), "--threads", "1"]
    return server.spawn_python("adasr_cli", argv, name, repo), stats


def run_attack(server: JanusServer, checkpoint: Path, workdir: Path, victim_repo: Path = REPO) -> dict[str, Any]:
    """The attack (module docstring); its figures."""
    victim, stats = _victim(server, victim_repo, checkpoint, workdir, "victim", ROOM)
    _wait(lambda: victim_report(stats).get("published", {}).get("source_uploads", 0) >= 1, victim,
          "the victim in the room with its face published")
    rss_before = rss_kib(victim.popen.pid)
    attacker = server.spawn_python("tests.janus_hostile", [
        "attack", "--url", server.url, "--api-secret", server.api_secret, "--room", str(ROOM), "--pin", PIN,
        "--victim", "victim", "--victim-stats", str(stats)], "mallory")
    seen = attacker.wait_json(ATTACK_TIMEOUT_S)
    rss_after = rss_kib(victim.popen.pid)
    victim.stop()
    final = victim_report(stats)

    server.spawn_python("tests.janus_hostile", ["open-room", "--url", server.url, "--api-secret",
                                                server.api_secret, "--room", str(OPEN_ROOM)], "squatter").wait_json(60)
    late, late_stats = _victim(server, victim_repo, checkpoint, workdir, "late", OPEN_ROOM)
    _wait(lambda: late.popen.poll() is not None or victim_report(late_stats).get("join_s") is not None, late,
          "the late victim joining or refusing the open room")
    joined_open = late.popen.poll() is None and victim_report(late_stats).get("join_s") is not None
    late.stop()
    return {"attacker": seen, "attacker_stderr": attacker.tail(20), "victim": final,
            "victim_rss_kib": [rss_before, rss_after],
            "late": {"joined_open_room": joined_open, "exit_status": late.popen.returncode,
                     "stderr": late.tail(3)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--victim-repo", type=Path, default=REPO, help="checkout the victims run from")
    args = parser.parse_args()
    repo = args.victim_repo.resolve()
    workdir = Path(tempfile.mkdtemp(prefix="adasr-room-attack-"))
    checkpoint = workdir / "lite128.pth"
    subprocess.run([sys.executable, "-c", MAKE_CHECKPOINT, str(checkpoint)], cwd=repo, check=True,
                   env=dict(os.environ, PYTHONPATH=str(repo)))
    namespace = NetworkNamespace.create()
    server = None
    try:
        server = start_janus(namespace, workdir)
        figures = run_attack(server, checkpoint, workdir, repo)
    finally:
        if server is not None:
            server.stop()
        namespace.delete()
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
