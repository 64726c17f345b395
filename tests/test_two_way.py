"""Issue #25: a two-way 1:1 call on one peer connection (each side sends its face and voice, renders the other's),
and the one-way calls it must not break. The calls run over loopback WebRTC on the 128 px test model."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import wave
from pathlib import Path

import av

from adasr.demo_media import astronaut_portrait, carphone_clip
from realtime.audio.opus import OpusOptions
from realtime.audio.recording import synthetic_voice
from realtime.audio.voice import VoiceOptions
from realtime.call import Answering, Watching, connect_as_receiver, run_sender, serve_connection
from realtime.capture import CaptureOptions
from realtime.receiver import ReceiverOptions, ReceiverStats
from realtime.sender import SenderOptions, SenderStats, SourceOptions
from realtime.signaling import InProcessSignaling
from realtime.sinks import NullSink
from realtime.transport import LOOPBACK, TransportOptions
from tests.turn_server import free_port

TRANSPORT = TransportOptions(ice_hosts=LOOPBACK, connect_timeout_s=60.0)


def _face(frames: int | None, *, loop: bool = False) -> SenderOptions:
    capture = CaptureOptions(video=carphone_clip(), fps=5.0, max_frames=frames, loop=loop, drop_late=False)
    return SenderOptions(capture=capture, source=SourceOptions(astronaut_portrait()), show_progress=False)


def _call(head: object, tmp_path: Path, *, caller_watches: bool,
          answering: Answering) -> tuple[SenderStats, ReceiverStats]:
    voice = VoiceOptions(file=synthetic_voice(tmp_path / "caller.wav", 60.0), microphone=False,
                         opus=OpusOptions(frame_ms=20))
    watching = Watching(NullSink(), ReceiverOptions()) if caller_watches else None

    async def scenario() -> tuple[SenderStats, ReceiverStats]:
        to_callee, to_caller = InProcessSignaling.pair()

        async def callee() -> ReceiverStats:
            connection = await connect_as_receiver(to_caller, TRANSPORT, voice=answering.voice)
            return await serve_connection(head, ReceiverOptions(), NullSink(), connection,  # type: ignore[arg-type]
                                          own_face=answering.face)

        answered = asyncio.ensure_future(callee())
        sent = await asyncio.wait_for(run_sender(head, _face(25), to_callee, TRANSPORT, voice=voice,  # type: ignore[arg-type]
                                                 console=False, watching=watching), 300)
        return sent, await asyncio.wait_for(answered, 60)

    return asyncio.run(scenario())


def test_both_sides_send_their_face_and_voice_and_render_the_others(fast_head, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    callee_voice = VoiceOptions(file=synthetic_voice(tmp_path / "callee.wav", 60.0), microphone=False,
                                opus=OpusOptions(frame_ms=20))
    sent, received = _call(fast_head, tmp_path, caller_watches=True,
                           answering=Answering(face=_face(None, loop=True), voice=callee_voice))
    # the caller's face and voice at the callee
    assert sent.frames_sent == 25 and received.frames_rendered > 0
    assert received.voice is not None and received.voice.frames > 0
    # the callee's face and voice at the caller, on the same connection
    own, seen = received.own_face, sent.peer_face
    assert own is not None and own.frames_sent > 0 and own.source_state_bytes > 0
    assert seen is not None and seen.sources_accepted == 1 and seen.frames_rendered > 0
    assert seen.frames_accepted <= own.frames_sent
    assert seen.voice is not None and seen.voice.frames > 0
    assert seen.goodbye is not None  # the callee's face said goodbye when the caller hung up
    assert len(seen.av_offset_ms) > 0  # the callee's face is scheduled on the callee's voice


def test_a_two_way_demo_shows_both_faces_within_64_kbps_each_way(fast_head) -> None:  # type: ignore[no-untyped-def]
    from realtime.demo import DemoOptions, run_demo_call

    report = asyncio.run(run_demo_call(fast_head, DemoOptions(output=None, stats_json=None, fps=10.0, max_frames=40,
                                                              show_progress=False)))
    assert report["frames_rendered"] > 0 and report["reply_frames_rendered"] > 0
    assert report["audio_frames_played"] > 0 and report["reply_audio_frames_played"] > 0
    # the caller's uplink also carries its acknowledgements of the callee's face: delayed, they cost ~3 kbps, not ~20
    assert report["sctp_acks_delayed"] >= 0.5 * report["reply_frames_rendered"]
    assert report["total_kbps_wire_at_30fps"] <= 64.0


def test_one_way_stays_possible_from_either_side(fast_head, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # a callee with no face nor voice: the watching caller renders nothing and the call ends as before
    sent, received = _call(fast_head, tmp_path, caller_watches=True, answering=Answering())
    assert received.frames_rendered > 0 and received.own_face is None
    assert sent.peer_face is None and sent.peer_goodbye is not None
    # a caller that does not watch: the callee's face is refused (its channels closed), the call goes on
    sent, received = _call(fast_head, tmp_path, caller_watches=False, answering=Answering(face=_face(None, loop=True)))
    assert received.frames_rendered > 0 and sent.peer_face is None and sent.peer_goodbye is not None


def test_the_command_line_makes_a_two_way_call(fast_checkpoint: Path, tmp_path: Path) -> None:
    """`adasr receive --source --video` answers with its face and voice; `adasr send --sink file --audio-out` keeps
    them (TCP signaling on loopback: two processes as two people start them)."""
    voice = synthetic_voice(tmp_path / "voice.wav", 60.0)
    common = ["--checkpoint", str(fast_checkpoint), "--threads", "1", "--signaling", "tcp",
              "--signaling-port", str(free_port()), "--audio", str(voice)]
    face = ["--source", str(astronaut_portrait()), "--video", str(carphone_clip())]
    callee = subprocess.Popen([sys.executable, "-m", "adasr_cli", "receive", *common, *face, "--loop", "--sink", "none",
                               "--audio-out", str(tmp_path / "callee_heard.wav"),
                               "--stats-json", str(tmp_path / "callee.json")])
    try:
        caller = subprocess.run([sys.executable, "-m", "adasr_cli", "send", *common, *face, "--fps", "5",
                                 "--max-frames", "20", "--no-progress", "--sink", "file",
                                 "--output", str(tmp_path / "callee_face.mp4"),
                                 "--audio-out", str(tmp_path / "caller_heard.wav"),
                                 "--stats-json", str(tmp_path / "caller.json")], timeout=300)
        assert caller.returncode == 0
        assert callee.wait(timeout=60) == 0
    finally:
        callee.kill()
    sent = json.loads((tmp_path / "caller.json").read_text())
    answered = json.loads((tmp_path / "callee.json").read_text())
    assert sent["frames_sent"] == 20 and answered["frames_rendered"] > 0
    assert answered["own_frames_sent"] > 0 and sent["peer_frames_rendered"] > 0
    with av.open(str(tmp_path / "callee_face.mp4")) as container:
        assert container.streams.video[0].frames > 0
    for heard in ("caller_heard.wav", "callee_heard.wav"):
        with wave.open(str(tmp_path / heard)) as recording:
            assert recording.getnframes() > 48_000 // 2, heard  # over half a second of the other's voice
