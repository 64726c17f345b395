"""`adasr room` through a real Janus: three participants driven by a video, each sees and hears the two others,
and one leaving mid-call is dropped from the others' grids while they go on.

Janus and the three `adasr room` processes run in a private network namespace (``tests/janus_fixture.py``).
Each writes its report (``--stats-json``) every second; the test waits on what those reports say (bounded),
never on the clock: faces rendered and voice frames heard per feed, then C's departure, then frames the
two others rendered of each other after it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.janus_fixture import ADDRESS, JanusServer, NamespaceProcess, PeerFailed, janus_server  # noqa: F401
from tests.tones import tone_amplitude, write_tone

NAMES = ("A", "B", "C")
#: Frames of each other face, and voice frames of each other participant, each must get before C leaves.
FRAMES = 4
AUDIO_FRAMES = 25
#: Bound on each phase: a hung room fails the test after this; a healthy one takes a fraction of it.
PHASE_TIMEOUT_S = 300.0




def _report(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _faces(report: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The report's faces by display name."""
    return {face["display"]: face for face in (report or {}).get("faces", {}).values()}


def _wait(condition: Callable[[], bool], processes: list[NamespaceProcess], what: str) -> None:
    """Poll ``condition`` (the reports on disk) until it holds; fail, bounded, if it does not or a process died."""
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    while not condition():
        for process in processes:
            if process.popen.poll() is not None:
                raise PeerFailed(f"{process.name} exited ({process.popen.returncode}) while waiting for {what}:\n"
                                 f"{process.tail()}")
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}:\n{p.tail(15)}" for p in processes)
            raise PeerFailed(f"no {what} within {PHASE_TIMEOUT_S:.0f} s\n{tails}")
        time.sleep(0.5)


def _leave(process: NamespaceProcess, stats: Path) -> dict[str, Any]:
    """SIGTERM (the participant leaves the room), then its final report."""
    process.stop()
    if process.popen.returncode != 0:
        raise PeerFailed(f"{process.name} exited with {process.popen.returncode}:\n{process.tail()}")
    report = _report(stats)
    assert report is not None and report["end_reason"] == "signal SIGTERM"
    return report


@pytest.mark.slow
def test_three_participants_see_and_hear_each_other_and_one_leaving_is_dropped(
        janus_server: JanusServer, fast_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    from adasr.demo_media import astronaut_portrait, carphone_clip

    portrait, clip = astronaut_portrait(), carphone_clip()
    stats = {name: tmp_path / f"{name}.json" for name in NAMES}
    processes = {}
    for index, name in enumerate(NAMES):
        voice = write_tone(tmp_path / f"{name}.wav", 400.0 + 200 * index, 900.0)
        processes[name] = janus_server.spawn_python("adasr_cli", [
            "room", "--janus", janus_server.url, "--janus-plain-http", "--api-secret", janus_server.api_secret,
            "--room", "5150",
            "--pin", "room-pin", "--room-secret", "room-secret", "--display", name, "--ice-host", ADDRESS,
            "--source", str(portrait), "--video", str(clip), "--loop", "--fps", "10", "--audio", str(voice),
            "--sink", "none", "--stats-json", str(stats[name]), "--checkpoint", str(fast_checkpoint),
            "--threads", "1"], name)
    everyone = list(processes.values())

    def seen(name: str, others: list[str], frames: Callable[[str], int]) -> bool:
        faces = _faces(_report(stats[name]))
        return all(other in faces and faces[other]["frames_rendered"] >= frames(other)
                   and faces[other]["audio_frames"] >= AUDIO_FRAMES for other in others)

    _wait(lambda: all(seen(name, [o for o in NAMES if o != name], lambda _: FRAMES) for name in NAMES), everyone,
          f"{FRAMES} frames and {AUDIO_FRAMES} voice frames of every other face in every grid")

    report_c = _leave(processes["C"], stats["C"])  # C leaves mid-call

    def after_c_left(name: str) -> bool:
        report = _report(stats[name]) or {}
        departure = next((d for d in report.get("departures", []) if d["display"] == "C"), None)
        other = "B" if name == "A" else "A"
        return departure is not None and seen(name, [other], lambda o: departure["frames_rendered"][o] + FRAMES)

    _wait(lambda: after_c_left("A") and after_c_left("B"), [processes["A"], processes["B"]],
          f"C's departure and {FRAMES} more frames of each other in A's and B's grids")
    reports = {"A": _leave(processes["A"], stats["A"]), "B": _leave(processes["B"], stats["B"]), "C": report_c}

    for name, report in reports.items():
        faces = _faces(report)
        assert report["join_s"] is not None and report["published"]["source_uploads"] >= 1
        assert report["published"]["frames_sent"] > 0 and report["published"]["voice_frames"] > 0
        for other in (o for o in NAMES if o != name):
            face = faces[other]
            assert face["source_accepted"] == 1 and face["source_errors"] == 0 and face["refused"] == ""
            assert face["frames_rendered"] >= FRAMES and face["render_errors"] == 0
            assert face["audio_frames"] >= AUDIO_FRAMES
            assert face["motion_rejected"] == 0 and face["control_rejected"] == 0
            assert face["first_face_s"] is not None and face["first_face_s"] > 0
    for name in ("A", "B"):
        faces = _faces(reports[name])
        assert faces["C"]["left"] and not faces["C"]["silenced"]  # Janus said C left: dropped from the grid
        assert [d["display"] for d in reports[name]["departures"]][0] == "C"  # then B sees A go, when A is stopped
    assert _faces(reports["A"])["B"]["left"] == ""
    assert reports["C"]["departures"] == []


#: Each voice's tone (Hz) in the killed-participant test: apart from each other and from each other's harmonics.
TONES = {"A": 400.0, "B": 700.0, "C": 1100.0}
#: Seconds of each other voice every participant must have mixed into its --audio-out before C is killed, and of
#: the voice that stays after.
HEARD_S = 2.0
SILENCE_TIMEOUT_S = 3.0
#: Analysis window of the recorded mix, and the tone amplitude (int16 units, of 8000 sent) that counts as heard.
WINDOW_S = 0.1
HEARD_AMPLITUDE = 1000.0


@pytest.mark.slow
def test_every_voice_is_mixed_in_lip_sync_and_a_killed_participant_leaves_the_grid_and_the_mix(
        janus_server: JanusServer, fast_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    """A, B and C each publish a tone and record what they hear (--audio-out): each records both other tones; C is
    SIGKILLed (no GOODBYE, Janus keeps it for 60 s): its tone stops in A's and B's recordings at once, its face
    leaves their grids at the silence timeout, and B's tone goes on in A's."""
    from adasr.demo_media import astronaut_portrait, carphone_clip

    portrait, clip = astronaut_portrait(), carphone_clip()
    stats = {name: tmp_path / f"{name}.json" for name in NAMES}
    heard = {name: tmp_path / f"{name}-heard.wav" for name in NAMES}
    processes = {}
    for name in NAMES:
        voice = write_tone(tmp_path / f"{name}.wav", TONES[name], 900.0)
        processes[name] = janus_server.spawn_python("adasr_cli", [
            "room", "--janus", janus_server.url, "--janus-plain-http", "--api-secret", janus_server.api_secret,
            "--room", "5151", "--display", name, "--ice-host", ADDRESS, "--source", str(portrait), "--video",
            str(clip), "--loop", "--fps", "10", "--audio", str(voice), "--audio-out", str(heard[name]),
            "--silence-timeout", str(SILENCE_TIMEOUT_S), "--sink", "none", "--stats-json", str(stats[name]),
            "--checkpoint", str(fast_checkpoint), "--threads", "1"], name)
    everyone = list(processes.values())

    def mixed_ms(name: str, other: str) -> float:
        voice = _faces(_report(stats[name])).get(other, {}).get("voice") or {}
        return float(voice.get("ms_mixed", 0.0))

    def ready(name: str) -> bool:
        faces = _faces(_report(stats[name]))
        return all(other in faces and faces[other]["frames_rendered"] >= FRAMES
                   and mixed_ms(name, other) >= HEARD_S * 1e3 for other in NAMES if other != name)

    _wait(lambda: all(ready(name) for name in NAMES), everyone,
          f"{FRAMES} frames and {HEARD_S:g} s of voice of every other participant, in every grid and mix")

    killed_at = time.time()
    processes["C"].popen.kill()
    processes["C"].popen.wait()
    survivors = [processes["A"], processes["B"]]
    heard_before = {name: mixed_ms(name, other) for name, other in (("A", "B"), ("B", "A"))}

    def c_gone(name: str) -> bool:
        other = "B" if name == "A" else "A"
        face = _faces(_report(stats[name])).get("C")
        return (face is not None and face["silent"] and face["voice"]["muted"]  # out of the grid and the mix
                and mixed_ms(name, other) >= heard_before[name] + HEARD_S * 1e3)

    _wait(lambda: c_gone("A") and c_gone("B"), survivors,
          f"C silent in A's and B's grids, and {HEARD_S:g} s more of each other's voice")
    stopped_at = time.time()  # from here on A leaves, then B: neither hears the other any more
    reports = {"A": _leave(processes["A"], stats["A"]), "B": _leave(processes["B"], stats["B"])}

    for name, report in reports.items():
        faces = _faces(report)
        other = "B" if name == "A" else "A"
        c = faces["C"]
        assert c["silenced"] == 1 and c["left"] == ""  # silent, not gone: Janus still holds it
        assert SILENCE_TIMEOUT_S <= c["silenced_after_s"] <= SILENCE_TIMEOUT_S + 1.0
        for who in ("C", other):
            voice = faces[who]["voice"]
            assert voice["frames"] > 0 and voice["packets"] > 0 and voice["delay_ms_p50"] is not None
            assert voice["lost"] == voice["recovered"] + voice["concealed"]
            assert faces[who]["av_offset_ms_p50"] is not None  # its face was held against this voice
        assert report["voice_mix"]["started_unix"] is not None

        c_tone, other_tone, own_tone = (tone_amplitude(heard[name], TONES[who], WINDOW_S) for who in ("C", other, name))
        start = report["voice_mix"]["started_unix"]
        kill = int((killed_at - start) / WINDOW_S)  # the window C was killed in
        enough = int(0.75 * HEARD_S / WINDOW_S)  # windows of each voice, allowing for a busy machine's stalls
        assert np.sum(c_tone[:kill] > HEARD_AMPLITUDE) >= enough, f"{name} did not hear C before the kill"
        assert np.sum(other_tone[:kill] > HEARD_AMPLITUDE) >= enough, f"{name} did not hear {other} before the kill"
        assert np.all(own_tone < HEARD_AMPLITUDE), f"{name} heard itself"
        last_c = int(np.flatnonzero(c_tone > HEARD_AMPLITUDE)[-1])
        stopped_s = (last_c + 1) * WINDOW_S - (killed_at - start)
        assert stopped_s <= SILENCE_TIMEOUT_S, f"C's voice went on {stopped_s:.2f} s in {name}'s mix after the kill"
        after = slice(kill + 5, int((stopped_at - start) / WINDOW_S))
        assert np.sum(other_tone[after] > HEARD_AMPLITUDE) >= enough, f"{name} lost {other}'s voice after the kill"
