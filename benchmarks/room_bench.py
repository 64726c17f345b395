"""N participants of `adasr room` through a real Janus, in a private network namespace; prints one JSON report.

    sudo python benchmarks/room_bench.py --participants 4 --seconds 40 -- --backend onnxruntime --onnx DIR

Needs root (network namespaces), ``janus`` and ``ip`` (``tests/janus_fixture.py`` starts Janus there
with a minimal configuration). Every participant is an `adasr room` driven by the carphone clip (looped,
``--fps``) with a tone as its voice, rendering into no sink and mixing the others' voices into a WAV
file (``--audio-out``), for ``--seconds`` in the room; the arguments after ``--`` pick the backend.
Reported per participant: bytes on the wire up and down (DTLS records: data channels, voice, SCTP acks;
add 28 B of IPv4/UDP per packet), join time, and per remote face the render rate, its first frame after
joining, the frames dropped (latest wins), lip sync (``av_offset_ms``), and its voice: mouth-to-ear delay
(sender capture → out of the mix; one machine, one clock), seconds mixed, packets lost and concealed.
``--kill-after S`` SIGKILLs the last participant S seconds after it has seen and heard every other one,
and reports when its tone stopped in each other's recording and when its face left their grids. All
participants share this machine's CPU: a face's rate here is that CPU divided among N·(N−1) faces.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adasr.demo_media import astronaut_portrait, carphone_clip  # noqa: E402
from tests.janus_fixture import ADDRESS, NamespaceProcess, NetworkNamespace, start_janus  # noqa: E402
from tests.tones import tone_amplitude, write_tone  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--participants", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=40.0, help="time each participant stays in the room")
    parser.add_argument("--fps", type=float, default=15.0, help="capture rate of each participant's video")
    parser.add_argument("--silence-timeout", type=float, default=5.0, help="each participant's --silence-timeout")
    parser.add_argument("--kill-after", type=float, default=None,
                        help="SIGKILL the last participant this long after it has seen and heard every other one")
    parser.add_argument("backend", nargs=argparse.REMAINDER, help="-- then `adasr room`'s backend options")
    args = parser.parse_args()
    backend = [a for a in args.backend if a != "--"]
    workdir = Path(tempfile.mkdtemp(prefix="adasr-room-bench-"))
    namespace = NetworkNamespace.create()
    server = None
    try:
        server = start_janus(namespace, workdir)
        names = [chr(ord("A") + i) for i in range(args.participants)]
        processes = {}
        for index, name in enumerate(names):
            voice = write_tone(workdir / f"{name}.wav", _tone(index), args.seconds + 120)
            processes[name] = server.spawn_python("adasr_cli", [
                "room", "--janus", server.url, "--janus-plain-http", "--api-secret", server.api_secret, "--room", "777",
                "--display", name, "--ice-host", ADDRESS, "--source", str(astronaut_portrait()),
                "--video", str(carphone_clip()), "--loop", "--fps", str(args.fps), "--audio", str(voice),
                "--sink", "none", "--audio-out", str(workdir / f"{name}-heard.wav"), "--max-seconds",
                str(args.seconds), "--stats-json", str(workdir / f"{name}.json"), "--silence-timeout",
                str(args.silence_timeout), *backend], name)
        victim = names[-1] if args.kill_after is not None else None
        killed_at = _kill(processes[victim], workdir / f"{victim}.json", args) if victim is not None else None
        for process in processes.values():
            process.popen.wait(args.seconds + 600)
            if process.popen.returncode != 0 and process.name != victim:
                raise SystemExit(f"{process.name} failed:\n{process.tail()}")
        reports = {name: json.loads((workdir / f"{name}.json").read_text()) for name in names}
    finally:
        if server is not None:
            server.stop()
        namespace.delete()
    participants = {}
    for name, report in reports.items():
        seconds = report["in_room_s"]
        faces = list(report["faces"].values())
        participants[name] = {
            "join_s": report["join_s"], "in_room_s": seconds,
            "wire_bytes_up": report["wire_bytes_sent"], "wire_bytes_down": report["wire_bytes_received"],
            "kbps_up": report["wire_bytes_sent"] * 8 / seconds / 1000,
            "kbps_down": report["wire_bytes_received"] * 8 / seconds / 1000,
            "source_state_bytes": report["published"]["source_state_bytes"],
            "source_uploads": report["published"]["source_uploads"],
            "motion_frames_sent": report["published"]["frames_sent"],
            "faces": {face["display"]: {**{k: face[k] for k in ("frames_rendered", "render_fps", "render_ms_p50",
                                                                "first_face_s", "frames_dropped", "audio_frames",
                                                                "av_offset_ms_p50", "av_offset_ms_p95")},
                                        "voice": _voice(face["voice"])}
                      for face in faces},
        }
    faces = [f for p in participants.values() for f in p["faces"].values()]
    fps = [f["render_fps"] for f in faces]
    first = [f["first_face_s"] for f in faces if f["first_face_s"]]
    kill = None
    if victim is not None and killed_at is not None:
        kill = {"victim": victim, **{name: _after_kill(reports[name], workdir / f"{name}-heard.wav", victim,
                                                     _tone(names.index(victim)), killed_at)
                                     for name in names if name != victim}}
    print(json.dumps({
        "participants": args.participants, "kill": kill, "seconds": args.seconds, "capture_fps": args.fps,
        "backend": backend,
        "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
        "render_fps_per_face_median": statistics.median(fps) if fps else None,
        "first_face_s_median": statistics.median(first) if first else None,
        "voice_delay_ms_p50_median": _median([f["voice"].get("delay_ms_p50") for f in faces]),
        "av_offset_ms_p50_median": _median([f["av_offset_ms_p50"] for f in faces]),
        "voices_heard": sum(f["voice"].get("ms_mixed", 0) > 0 for f in faces), "voices": len(faces),
        "kbps_up_median": statistics.median(p["kbps_up"] for p in participants.values()),
        "kbps_down_median": statistics.median(p["kbps_down"] for p in participants.values()),
        "per_participant": participants}, indent=1))


def _tone(index: int) -> float:
    """Participant ``index``'s voice (Hz): apart from every other's and their harmonics."""
    return 300.0 + 170.0 * index


def _kill(victim: NamespaceProcess, stats: Path, args: argparse.Namespace) -> float:
    """SIGKILL ``victim`` ``args.kill_after`` s after its report shows every other face rendered and voice mixed;
    the wall-clock instant of the kill."""
    deadline = time.monotonic() + args.seconds + 600
    while time.monotonic() < deadline and victim.popen.poll() is None:
        try:
            faces = list(json.loads(stats.read_text())["faces"].values())
        except (FileNotFoundError, json.JSONDecodeError):
            faces = []
        if len(faces) == args.participants - 1 and all(
                f["frames_rendered"] > 0 and (f["voice"] or {}).get("ms_mixed", 0) > 0 for f in faces):
            break
        time.sleep(0.5)
    else:
        raise SystemExit(f"{victim.name} never saw and heard everyone:\n{victim.tail()}")
    time.sleep(args.kill_after)
    killed_at = time.time()
    victim.popen.kill()
    victim.popen.wait()
    return killed_at


def _after_kill(report: dict[str, Any], heard: Path, victim: str, hz: float, killed_at: float) -> dict[str, Any]:
    """When the killed participant's voice stopped in this one's recording (s after the kill: the last 0.1 s
    window with its tone over 1000), and its face's silence when it left the grid."""
    face = next((f for f in report["faces"].values() if f["display"] == victim), None)
    start = report["voice_mix"]["started_unix"]
    heard_windows = np.flatnonzero(tone_amplitude(heard, hz, 0.1) > 1000.0)
    stopped = None if start is None or not heard_windows.size else (heard_windows[-1] + 1) * 0.1 - (killed_at - start)
    return {"voice_stopped_after_kill_s": stopped,
            "left_grid_after_silence_s": face["silenced_after_s"] if face is not None else None}


def _voice(voice: dict[str, Any] | None) -> dict[str, Any]:
    """What a participant heard of one other voice (empty: none came)."""
    keys = ("delay_ms_p50", "delay_ms_p95", "ms_mixed", "frames", "packets", "lost", "concealed", "late",
            "jitter_target_ms", "lip_sync_delay_ms")
    return {k: voice[k] for k in keys if k in voice} if voice else {}


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


if __name__ == "__main__":
    main()
