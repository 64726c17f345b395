"""Issue #12's call: voice in lip sync, the wire measured, relay-only through a real coturn, HTTPS signaling.

The demo tests run ``adasr demo`` in-process on the 128 px test model; the signaling tests run
``adasr receive`` and ``adasr send`` as the processes a person starts. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import av
import pytest

from adasr_cli.main import main
from realtime.audio.recording import synthetic_voice
from realtime.lip_sync import DelayLine, LipSync, LipSyncOptions
from realtime.messages import ClockMessage
from realtime.wire_meter import WireCount, wire_figures
from tests.processes import stop_process
from tests.turn_server import running_coturn

REPO = Path(__file__).resolve().parents[1]
WIRE_KEYS = ("audio_kbps_wire", "motion_kbps_wire", "total_kbps_wire", "audio_kbps_wire_at_30fps",
             "motion_kbps_wire_at_30fps", "total_kbps_wire_at_30fps")


# ---- lip sync and the wire, without a network -------------------------------------------------

def test_lip_sync_holds_a_face_until_its_voice_plays_within_the_bound() -> None:
    heard_lag_s = 0.120  # the voice captured at wall time W is heard at monotonic W - 1000 + 0.120
    sync = LipSync(lambda wall: wall - 1000.0 + heard_lag_s, LipSyncOptions(max_delay_s=0.3))
    assert sync.delay_s(5_000_000, now_s=0.0) == 0.0  # no CLOCK yet: shown on arrival
    sync.note_clock(ClockMessage(seq=0, timestamp_us=5_000_000, wall_us=1_000_000_000 + 5_000_000))
    # captured at monotonic 5.0 s = wall 1005 s, heard at 5.120 s; it arrived at 5.010 s and renders in 30 ms
    assert sync.captured_at(5_000_000) == pytest.approx(1005.0)
    assert sync.delay_s(5_000_000, now_s=5.010, lead_s=0.030) == pytest.approx(0.080)
    assert sync.delay_s(5_000_000, now_s=5.200) == 0.0  # its voice already played: at once
    assert sync.delay_s(4_000_000, now_s=3.0) == pytest.approx(0.3)  # never held past the bound


def test_a_held_face_overtaken_by_a_newer_one_is_dropped_not_shown() -> None:
    async def scenario() -> tuple[list[int], list[int]]:
        shown: list[int] = []
        dropped: list[int] = []
        line: DelayLine[int] = DelayLine(shown.append, dropped.append)
        line.put(1, 1, 0.05)   # held
        line.put(2, 2, 0.0)    # a newer one, due at once (its voice's timing changed)
        line.put(3, 3, 0.01)
        line.put(4, 4, 10.0)   # still held when the call ends
        for _ in range(200):
            if line.pending() == 1:
                break
            await asyncio.sleep(0.01)
        line.clear()
        return shown, dropped

    shown, dropped = asyncio.run(scenario())
    assert shown == [2, 3] and sorted(dropped) == [1, 4]


def test_wire_figures_split_the_voice_and_scale_only_the_motion_to_30_fps() -> None:
    # 10 s at 10 fps: 100 MOTION datagrams of 141 B + 2000 B of control; 250 voice datagrams of 120 B
    sent = WireCount(bytes=100 * 113 + 2000 + 250 * 92, datagrams=100 + 20 + 250, media_bytes=250 * 92,
                     media_datagrams=250)
    figures = wire_figures(sent, seconds=10.0, frames=100, motion_message_bytes=141)
    assert figures["audio_kbps_wire"] == pytest.approx(250 * 120 * 8 / 1000 / 10)
    assert figures["audio_kbps_wire_at_30fps"] == figures["audio_kbps_wire"]
    data_bytes = 100 * 141 + 2000 + 20 * 28
    assert figures["motion_kbps_wire"] == pytest.approx(data_bytes * 8 / 1000 / 10)
    fixed = (data_bytes - 100 * 141) * 8 / 1000 / 10
    assert figures["motion_kbps_wire_at_30fps"] == pytest.approx(141 * 8 * 30 / 1000 + fixed)
    assert figures["total_kbps_wire_at_30fps"] == pytest.approx(figures["audio_kbps_wire"]
                                                               + figures["motion_kbps_wire_at_30fps"])


# ---- the demo: voice in the mp4, the figures, relay-only through coturn -----------------------

def _demo(tmp_path: Path, checkpoint: Path, *extra: str, frames: int = 20) -> dict[str, object]:
    stats = tmp_path / "stats.json"
    code = main(["demo", "--checkpoint", str(checkpoint), "--threads", "2", "--max-frames", str(frames),
                 "--no-progress", "--stats-json", str(stats), *extra])
    assert code == 0
    return json.loads(stats.read_text())  # type: ignore[no-any-return]


def test_demo_with_a_voice_muxes_it_and_reports_the_wire_and_lip_sync(fast_checkpoint: Path, tmp_path: Path) -> None:
    voice = synthetic_voice(tmp_path / "voice.wav", 60.0)
    video = tmp_path / "demo.mp4"
    report = _demo(tmp_path, fast_checkpoint, "--fps", "5", "--audio", str(voice), "--output", str(video))
    for key in (*WIRE_KEYS, "av_offset_ms_p50", "av_offset_ms_p95", "ice_pair_type"):
        assert key in report, key
    assert report["ice_pair_type"] == "host" and report["output_has_voice"] is True
    assert 0 < report["audio_kbps_wire"] < report["total_kbps_wire"]  # type: ignore[operator]
    assert report["total_kbps_wire_at_30fps"] <= 64.0  # type: ignore[operator]
    assert report["av_offset_frames"] > 0 and report["av_offset_ms_p50"] is not None  # type: ignore[operator]
    with av.open(str(video)) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
        assert container.streams.audio[0].frames > 0 or container.streams.audio[0].duration


def test_relay_only_demo_goes_through_coturn_and_renders_the_frames(fast_checkpoint: Path, tmp_path: Path) -> None:
    with running_coturn(tmp_path / "coturn") as turn:
        report = _demo(tmp_path, fast_checkpoint, "--turn", f"turn:127.0.0.1:{turn.port}", "--turn-user", turn.user,
                       "--turn-password", turn.password, "--relay-only", "--output", str(tmp_path / "relay.mp4"),
                       "--fps", "3", frames=30)  # a rate a busy 2-core CPU renders in full (else latest wins drops)
        relayed = turn.log.read_text(errors="replace")
    assert report["ice_pair_type"] == "relay"
    assert report["frames_rendered"] >= 0.95 * report["frames_sent"]  # type: ignore[operator]
    assert "peer usage" in relayed  # coturn itself counted the relayed packets


# ---- adasr receive over HTTPS, adasr send against it ------------------------------------------

@pytest.fixture
def https_receiver(fast_checkpoint: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    """`adasr receive` as a person starts it; yields what its one line tells the caller."""
    env = {key: value for key, value in os.environ.items() if key != "ADASR_TOKEN"}
    process = subprocess.Popen(
        [sys.executable, "-m", "adasr_cli", "receive", "--port", "0", "--sink", "none", "--audio-out",
         str(tmp_path / "heard.wav"), "--checkpoint", str(fast_checkpoint), "--threads", "1",
         "--config-dir", str(tmp_path / "config")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        lines: list[str] = []
        while not any("give the caller this line:" in line for line in lines):
            line = process.stderr.readline()  # bounded: the process exits (EOF) if it cannot start
            assert line, "adasr receive exited: " + "".join(lines)
            lines.append(line)
        given = [line for line in lines if "give the caller this line:" in line][0]
        words = given.split("give the caller this line: ")[1].split()
        yield {"token": words[0].removeprefix("ADASR_TOKEN="), "url": words[words.index("--url") + 1],
               "pin": words[words.index("--pin") + 1], "line": given}
    finally:
        stop_process(process, timeout_s=20)


def test_receive_serves_https_and_refuses_callers_without_the_token(https_receiver: dict[str, str]) -> None:
    url, pin = https_receiver["url"], https_receiver["pin"]
    assert url.startswith("https://127.0.0.1:") and "--token" not in https_receiver["line"]
    tls = aiohttp.Fingerprint(bytes.fromhex(pin))
    plain = url.replace("https://", "http://")

    async def requests() -> tuple[int, int, int, str]:
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(f"{url}/offer", json={"sdp": "v=0", "type": "offer"}, ssl=tls) as reply:
                no_token = reply.status
            async with session.get(f"{url}/offer", headers={"Authorization": "Bearer wrong-token"}, ssl=tls) as reply:
                wrong = reply.status
            async with session.get(f"{url}/offer", headers={"Authorization": f"Bearer {https_receiver['token']}"},
                                   ssl=tls) as reply:
                right = reply.status
            try:  # plain HTTP to the HTTPS port: the TLS server answers nothing a client could read as an SDP
                async with session.post(f"{plain}/offer", json={"sdp": "v=0", "type": "offer"},
                                        headers={"Authorization": f"Bearer {https_receiver['token']}"}) as reply:
                    text = await reply.text()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                text = type(exc).__name__
        return no_token, wrong, right, text

    no_token, wrong, right, plain_answer = asyncio.run(requests())
    assert (no_token, wrong, right) == (401, 401, 204)
    assert "v=0" not in plain_answer and "sdp" not in plain_answer


def _send(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    """`adasr send` with a checkpoint that does not exist: any error about the call must come before the model."""
    env = {key: value for key, value in os.environ.items() if key != "ADASR_TOKEN"}
    if token is not None:
        env["ADASR_TOKEN"] = token
    from adasr.demo_media import astronaut_portrait, carphone_clip

    return subprocess.run([sys.executable, "-m", "adasr_cli", "send", "--source", str(astronaut_portrait()),
                           "--video", str(carphone_clip()), "--no-audio", "--checkpoint", "/nonexistent/model.pth",
                           *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_send_with_a_wrong_pin_or_token_fails_in_one_line_before_loading_the_model(
        https_receiver: dict[str, str]) -> None:
    url, pin, token = https_receiver["url"], https_receiver["pin"], https_receiver["token"]
    wrong_pin = _send("--url", url, "--pin", "ab" * 32, token=token)
    assert wrong_pin.returncode != 0
    (line,) = wrong_pin.stderr.strip().splitlines()
    assert "does not match --pin" in line and "nonexistent" not in line
    wrong_token = _send("--url", url, "--pin", pin, token="not-the-token")
    (line,) = wrong_token.stderr.strip().splitlines()
    assert "refused the token (401) given by $ADASR_TOKEN" in line and "pass the token" not in line
    no_url = _send()
    (line,) = no_url.stderr.strip().splitlines()
    assert "needs --url" in line and "--signaling tcp" in line
    right = _send("--url", url, "--pin", pin, token=token)  # everything checks out: now the model is loaded
    assert right.returncode != 0 and "nonexistent" in right.stderr
