"""A call on a bad network and against a hostile peer.

Loss and reordering, gaps, garbage on the channels, the sender's face lost, a sender killed
mid-call, source states from another model or failing their checksum, and the HTTP offer
endpoint's token, size cap and one-call-at-a-time rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
import torch
from aiortc import RTCSessionDescription
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime.call import connect_as_sender, run_sender, serve_calls
from realtime.capture import CaptureOptions
from realtime.errors import CallError, ProtocolError
from realtime.http_signaling import HttpSignaling, OfferServer, OfferServerOptions, generate_token
from realtime.messages import Goodbye
from realtime.motion_codec import MotionFlags, encode_motion
from realtime.protocol import decode
from realtime.receiver import Receiver, ReceiverOptions, ReceiverStats
from realtime.sender import SenderOptions, SourceOptions
from realtime.sinks import NullSink
from realtime.source_messages import SourceKind, model_id_for, split_source
from realtime.transport import LOOPBACK, Impairment, InProcessChannel, TransportOptions

REPO = Path(__file__).resolve().parent.parent
K = 15
VECTOR = 6 + 3 * K
TRANSPORT = TransportOptions(ice_hosts=LOOPBACK, connect_timeout_s=30)


def load_fuzzer() -> ModuleType:
    """benchmarks/fuzz_decoders.py, whose corpus and mutation engine the tests share."""
    spec = importlib.util.spec_from_file_location("fuzz_decoders", REPO / "benchmarks" / "fuzz_decoders.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


FUZZ = load_fuzzer()


class RecordingHead:
    """Renders instantly and records the yaw of every rendered motion (tests put a packet's number in it)."""

    def __init__(self) -> None:
        config = SimpleNamespace(name="stub", image_size=8, num_kp=K, feature_channel=4)
        self.backend = SimpleNamespace(model_id="stub", config=config, device=torch.device("cpu"))
        self.size = 8
        self.rendered: list[float] = []

    def render_image(self, state: object, motion: Any, reference: Any) -> np.ndarray:
        self.rendered.append(float(motion.yaw[0]))
        return np.zeros((8, 8, 3), np.uint8)


def motion_with_yaw(seq: int, yaw: float, flags: MotionFlags = MotionFlags.NONE) -> bytes:
    vector = np.zeros(VECTOR, np.float32)
    vector[0] = yaw
    return encode_motion(seq, seq * 33_333, vector, flags)


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class ServedCalls:
    """What a test sees of a receiver serving calls: its URL, the live receiver, the ended calls."""

    url: str = ""
    server: OfferServer | None = None
    receiver: Receiver | None = None
    ended: list[ReceiverStats] = field(default_factory=list)
    task: asyncio.Future[Any] | None = None

    async def finish(self, timeout_s: float) -> None:
        """Wait for ``serve_calls`` to return after its last call."""
        assert self.task is not None
        await asyncio.wait_for(self.task, timeout_s)


@contextlib.asynccontextmanager
async def serving_calls(head: Any, options: ReceiverOptions, token: str, max_calls: int) -> AsyncIterator[ServedCalls]:
    """``serve_calls`` behind the HTTP offer endpoint on a free loopback port, cancelled on exit."""
    served = ServedCalls()
    ready = asyncio.Event()

    def on_ready(server: OfferServer) -> None:
        served.url, served.server = server.url, server
        ready.set()

    served.task = asyncio.ensure_future(serve_calls(
        head, options, NullSink(), OfferServerOptions(token=token, port=0), TRANSPORT, max_calls=max_calls,
        on_ready=on_ready, on_receiver=lambda r: setattr(served, "receiver", r), on_call_end=served.ended.append))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield served
    finally:
        served.task.cancel()


# ---- bad network ------------------------------------------------------------------------------

def test_loss_and_reordering_keep_rendering_and_a_gap_holds_the_pose(caplog: pytest.LogCaptureFixture) -> None:
    """20 % loss plus reordering: late packets are counted and never rendered, rendering goes on to the
    end; a 0.6 s silence (threshold 0.3 s) is flagged while it lasts, logged, and counted once."""
    caplog.set_level(logging.WARNING, logger="realtime.receiver")
    head = RecordingHead()

    async def scenario() -> tuple[ReceiverStats, InProcessChannel, bool]:
        receiver = Receiver(head, ReceiverOptions(stats_interval_s=0, motion_gap_s=0.3, peer_timeout_s=0))  # type: ignore[arg-type]
        receiver.install_state(object())  # type: ignore[arg-type]
        receiver.start()
        link = InProcessChannel(receiver.on_motion,
                                impairment=Impairment(loss=0.2, reorder=0.2, reorder_depth=4, seed=1))
        stalled_in_gap = False
        for seq in range(300):
            if seq == 150:
                await asyncio.sleep(0.6)
                stalled_in_gap = receiver.stats.motion_stalled and receiver.stats.motion_gaps == 1
            link.send(motion_with_yaw(seq, seq * 0.25))  # yaw carries the number (0.25° ≫ the 0.05° quantisation)
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.05)
        await receiver.drain(5)
        return await receiver.stop(), link, stalled_in_gap

    stats, link, stalled_in_gap = asyncio.run(scenario())
    rendered = [round(yaw * 4) for yaw in head.rendered]
    assert 0.12 < link.lost / link.sent < 0.28 and link.reordered > 20
    m = stats.motion
    assert m.received == link.delivered and m.malformed == 0
    assert m.out_of_order > 0 and m.accepted + m.out_of_order + m.duplicate + m.replayed == m.received
    assert all(a < b for a, b in zip(rendered, rendered[1:])), "an out-of-date packet was rendered"
    assert stats.frames_rendered + stats.frames_dropped == stats.frames_accepted == m.accepted
    assert rendered[-1] >= 290  # rendering went on to the end, past the gap
    assert stalled_in_gap and stats.motion_gaps == 1 and not stats.motion_stalled and stats.longest_gap_s >= 0.6
    assert any("holding the last pose" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("policy", ["hold", "neutral"])
def test_face_lost_holds_the_last_pose_or_eases_to_neutral(policy: str) -> None:
    head = RecordingHead()

    async def scenario() -> ReceiverStats:
        receiver = Receiver(head, ReceiverOptions(stats_interval_s=0, peer_timeout_s=0, face_lost=policy,  # type: ignore[arg-type]
                                                  neutral_ease_s=0.2))
        receiver.install_state(object())  # type: ignore[arg-type]
        receiver.start()
        receiver.on_motion(motion_with_yaw(0, 0.0))  # the reference pose: neutral is yaw 0
        await asyncio.sleep(0.03)
        receiver.on_motion(motion_with_yaw(1, 20.0))
        for seq in range(2, 17):  # 15 FACE_LOST packets over 0.375 s, repeating the last good motion
            await asyncio.sleep(0.025)
            receiver.on_motion(motion_with_yaw(seq, 20.0, MotionFlags.FACE_LOST))
        await asyncio.sleep(0.03)
        receiver.on_motion(motion_with_yaw(17, 10.0))  # the face is back
        await receiver.drain(5)
        return await receiver.stop()

    stats = asyncio.run(scenario())
    yaws = [round(y, 1) for y in head.rendered]
    assert stats.face_lost_events == 1 and not stats.face_lost
    assert stats.frames_face_lost + stats.frames_eased == 15
    assert yaws[:2] == [0.0, 20.0] and yaws[-1] == 10.0
    if policy == "hold":
        assert yaws == [0.0, 20.0, 10.0] and stats.frames_eased == 0
    else:
        eased = yaws[2:-1]
        assert stats.frames_eased == len(eased) >= 3
        assert all(a > b for a, b in zip([20.0, *eased], eased)) and eased[-1] == 0.0  # down to neutral, then still


# ---- garbage ----------------------------------------------------------------------------------

CORPUS = FUZZ.Corpus.build(model_id_for("stub:stub:8:15"), seed=0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 2**32 - 1)), max_size=40))
def test_receiver_counts_every_message_and_never_raises(messages: list[tuple[bool, int]]) -> None:
    """Malformed, truncated, oversized, duplicated, replayed and foreign-version input on both channels."""
    inputs = [(on_motion, FUZZ.generate(random.Random(seed), CORPUS.motion if on_motion else CORPUS.control, CORPUS))
              for on_motion, seed in messages]

    async def scenario() -> tuple[ReceiverStats, int, int | None]:
        receiver = Receiver(RecordingHead(), ReceiverOptions(stats_interval_s=0, peer_timeout_s=0))  # type: ignore[arg-type]
        receiver.install_state(object())  # type: ignore[arg-type]
        motion_during = 0  # MOTION-channel messages that arrived while the call was on
        motion_at_end: int | None = None
        for on_motion, (_, data) in inputs:
            if receiver.finished.is_set() and motion_at_end is None:  # a GOODBYE ended the call
                motion_at_end = receiver.stats.motion.received
            motion_during += on_motion and not receiver.finished.is_set()
            (receiver.on_motion if on_motion else receiver.on_control)(data)
        await asyncio.sleep(0)
        return await receiver.stop(), motion_during, motion_at_end

    stats, motion, motion_at_end = asyncio.run(scenario())
    control = sum(1 for on_motion, _ in inputs if not on_motion)
    for counters, count in ((stats.motion, motion), (stats.control, control)):
        assert counters.received == count and counters.accepted + counters.dropped == count
    if motion_at_end is not None:  # after the end no motion is counted: the final STATS keep their numbers
        assert stats.motion.received == motion_at_end
    assert stats.frames_accepted == stats.motion.accepted


def test_fuzz_benchmark_short_run_lets_nothing_escape_and_counts() -> None:
    """benchmarks/fuzz_decoders.py in small (the 100k-case run is the benchmark's job)."""
    report = FUZZ.run(cases=2500, seed=3)
    assert report.escaped == []
    r = report.receiver["motion"]
    assert r["malformed"] > 0 and r["oversized"] > 0 and r["version_mismatch"] > 0
    assert r["duplicate"] + r["replayed"] + r["out_of_order"] > 0
    assert report.outcomes["protocol_error"] > 0 and report.outcomes["payload_refused"] > 0
    assert report.outcomes["transfer_refused"] > 0
    assert report.receiver["control"]["malformed"] > 0


# ---- the HTTP endpoint, a hostile peer, a vanished peer -----------------------------------------

def garbage(data: object) -> bool:
    """What the flood sends: anything a data channel carries (bytes or text up to aiortc's 64 KiB) except a
    valid GOODBYE, which is a peer hanging up, not garbage."""
    if not isinstance(data, (bytes, str)) or len(data) > 65536:
        return False
    try:
        return not isinstance(decode(data), Goodbye)  # type: ignore[arg-type]
    except ProtocolError:
        return True


@pytest.fixture(scope="module")
def flood_head():  # type: ignore[no-untyped-def]
    """The fast lite model without its detail path (and source blend). Known open problem: with the detail path,
    the garbage flood below slows the receiver's SCTP reading (it renders the flood's valid motions meanwhile)
    until a 100-message drain takes minutes; this test is about the protocol's defences, so it runs the lighter
    renderer."""
    import dataclasses

    from adasr.config import load_model_config
    from adasr.networks import AdaSRNetworks
    from adasr.checkpoint import LoadedModel
    from engines.talking_head import TalkingHead
    from engines.torch_backend import TorchBackend

    torch.manual_seed(0)
    config = dataclasses.replace(load_model_config("lite"), image_size=128, name="lite-128-flood-test")
    config.generator.detail_channels = 0
    config.generator.blend_source = False
    config.generator.source_interpolation = "bilinear"
    return TalkingHead(TorchBackend(LoadedModel(AdaSRNetworks(config).eval(), config, "lite-128-flood-test",
                                                Path("random"))))


def test_token_size_cap_busy_flood_and_bad_source_states_then_the_next_call(
        flood_head, astronaut_face, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    """The "done when": 401 without the token; a flood of garbage on both channels, a source state from
    another model and one failing its checksum neither crash the receiver nor end the call, which waits
    for a good state; after the hostile peer drops, the next valid call is served."""
    from realtime.source_state_codec import encode_state, wire_model_id

    caplog.set_level(logging.ERROR, logger="realtime.receiver")
    payload = encode_state(flood_head.prepare_source(astronaut_face), flood_head.backend.config)
    portrait = tmp_path / "face.png"
    cv2.imwrite(str(portrait), cv2.cvtColor(astronaut_face, cv2.COLOR_RGB2BGR))
    token = generate_token()

    async def scenario() -> tuple[list[ReceiverStats], dict[str, Any]]:
        live: dict[str, Any] = {}
        async with serving_calls(flood_head, ReceiverOptions(), token, max_calls=2) as served:
            url = served.url + "/offer"
            offer = {"sdp": "v=0\r\n", "type": "offer"}
            async with aiohttp.ClientSession() as http:
                async with http.post(url, json=offer) as reply:
                    live["no_token"] = (reply.status, reply.headers.get("WWW-Authenticate"))
                async with http.post(url, json=offer, headers={"Authorization": "Bearer " + token[:-1] + "x"}) as reply:
                    live["wrong_token"] = reply.status
                auth = {"Authorization": f"Bearer {token}"}
                async with http.post(url, data=b"x" * (70 * 1024), headers=auth) as reply:
                    live["too_large"] = reply.status
                async with http.post(url, data=b"{not json", headers=auth) as reply:
                    live["not_json"] = reply.status
                async with http.post(url, json=offer, headers=auth) as reply:  # no data channel in it
                    live["no_channel"] = reply.status
            with pytest.raises(CallError, match="refused the token"):
                await HttpSignaling(served.url, "not-the-token").send(
                    RTCSessionDescription(sdp="v=0\r\n", type="offer"))

            hostile = await connect_as_sender(HttpSignaling(served.url, token), TRANSPORT)
            with pytest.raises(CallError, match="409"):
                await HttpSignaling(served.url, token).send(RTCSessionDescription(sdp="v=0\r\n", type="offer"))
            await wait_until(lambda: served.receiver is not None, 10, "the receiver of the hostile call")
            receiver = served.receiver
            assert receiver is not None
            motion, control = hostile.channels.motion, hostile.channels.control
            wrong = split_source(payload, model_id_for("another checkpoint"), SourceKind.FEATURE_VOLUME)
            corrupt = split_source(payload, wire_model_id(flood_head), SourceKind.FEATURE_VOLUME, first_seq=len(wrong))
            corrupt[-1] = corrupt[-1][:-1] + bytes([corrupt[-1][-1] ^ 0xFF])
            good = split_source(payload, wire_model_id(flood_head), SourceKind.FEATURE_VOLUME,
                                first_seq=len(wrong) + len(corrupt), transfer_id=7)
            for message in [*wrong, *corrupt, *good]:
                control.send(message)
            await wait_until(lambda: receiver.stats.sources_accepted == 1, 60, "the good source state")
            live["source_errors"] = receiver.stats.source_errors
            r = random.Random(5)
            # Garbage on both channels in bursts of 20 per channel, each sent only when the previous burst has
            # left: unpaced, a busy receiver's UDP socket overflows and SCTP's retransmission backoff (seconds,
            # doubling) stalls the flood for minutes on a loaded machine (measured: RcvbufErrors +11,000).
            for index in range(1500):
                for channel, pool in ((motion, CORPUS.motion), (control, CORPUS.control)):
                    data = FUZZ.generate(r, pool, CORPUS)[1]
                    if garbage(data):
                        channel.send(data)
                if index % 20 == 19:
                    # a bound against a hang, not a budget
                    await wait_until(lambda: motion.bufferedAmount + control.bufferedAmount == 0, 120,
                                     "the flood to drain")
            await wait_until(lambda: receiver.stats.control.received > 1400, 60, "the flood to arrive")
            await asyncio.sleep(0.3)
            live["alive_after_flood"] = not receiver.finished.is_set()
            live["flood_counts"] = (receiver.stats.motion.as_dict(), receiver.stats.control.as_dict())
            await hostile.pc.close()  # vanish without GOODBYE
            await wait_until(lambda: len(served.ended) == 1, 30, "the receiver to see the hostile peer gone")

            options = SenderOptions(capture=CaptureOptions(images=tmp_path, fps=10, max_frames=12, loop=True),
                                    source=SourceOptions(portrait, crop=False), crop=False, show_progress=False)
            live["second_sender"] = await run_sender(flood_head, options, HttpSignaling(served.url, token), TRANSPORT,
                                                     console=False)
            await served.finish(60)
        return served.ended, live

    (first, second), live = asyncio.run(scenario())
    assert live["no_token"] == (401, 'Bearer realm="adasr"') and live["wrong_token"] == 401
    assert live["too_large"] == 413 and live["not_json"] == 400 and live["no_channel"] == 400
    assert live["source_errors"] == 2 and first.sources_accepted == 1
    errors = " ".join(r.getMessage() for r in caplog.records)
    assert "both peers must load the same checkpoint" in errors and "failed its SHA-256 check" in errors
    assert live["alive_after_flood"]
    motion, control = live["flood_counts"]
    assert motion["malformed"] > 100 and motion["oversized"] > 0 and motion["version_mismatch"] > 0
    assert control["malformed"] > 100 and control["duplicate"] + control["replayed"] + control["out_of_order"] > 0
    assert "closed" in first.end_reason
    assert second.frames_rendered > 0 and second.goodbye is not None and second.source_errors == 0
    assert live["second_sender"].frames_sent == 12


def test_a_killed_sender_is_noticed_and_the_next_call_is_served(
        fast_head, fast_checkpoint: Path, astronaut_face, carphone_frames, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`adasr send --url` as a subprocess, SIGKILLed mid-call: the receiver ends the call as vanished
    (peer timeout 2 s) and answers the next offer without a restart."""
    portrait = tmp_path / "face.png"
    cv2.imwrite(str(portrait), cv2.cvtColor(astronaut_face, cv2.COLOR_RGB2BGR))
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, frame in enumerate(carphone_frames[:8]):
        cv2.imwrite(str(frames / f"{i:02d}.png"), cv2.cvtColor(frame[:, 16:160], cv2.COLOR_RGB2BGR))  # 144² crops
    token = generate_token()
    log = (tmp_path / "sender.log").open("w")

    async def scenario() -> list[ReceiverStats]:
        process = None
        async with serving_calls(fast_head, ReceiverOptions(peer_timeout_s=2.0), token, max_calls=2) as served:
            try:
                process = subprocess.Popen(
                    [sys.executable, "-m", "adasr_cli", "send", "--url", served.url, "--source", str(portrait),
                     "--no-source-crop", "--images", str(frames), "--no-crop", "--loop", "--fps", "8",
                     "--checkpoint", str(fast_checkpoint), "--threads", "1", "--no-progress"],
                    cwd=REPO, env={**os.environ, "ADASR_TOKEN": token}, stdout=log, stderr=subprocess.STDOUT)
                await wait_until(lambda: served.receiver is not None and served.receiver.stats.frames_rendered >= 3,
                                 60, "frames from the sender subprocess")
                process.send_signal(signal.SIGKILL)
                process.wait(5)
                # bounded against a hang only: the peer timeout (2 s) or the transport ends the call
                await wait_until(lambda: len(served.ended) == 1, 60, "the receiver to notice")
                options = SenderOptions(capture=CaptureOptions(images=frames, fps=10, max_frames=10),
                                        source=SourceOptions(portrait, crop=False), crop=False, show_progress=False)
                await run_sender(fast_head, options, HttpSignaling(served.url, token), TRANSPORT, console=False)
                await served.finish(20)
            finally:
                if process is not None and process.poll() is None:
                    process.kill()
                log.close()
        return served.ended

    vanished, next_call = asyncio.run(scenario())
    assert "vanished" in vanished.end_reason or "failed" in vanished.end_reason, vanished.end_reason
    assert vanished.frames_rendered >= 3 and vanished.goodbye is None
    assert next_call.frames_rendered > 0 and next_call.goodbye is not None


def test_adasr_receive_prints_its_token_and_serves_a_call(fast_head, fast_checkpoint: Path, astronaut_face,
                                                          tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`adasr receive` (HTTPS, the default) as a subprocess: a generated token and the certificate's pin printed
    at start in the one line to give the caller, the call it serves, its summary, and the exit after --max-calls."""
    portrait = tmp_path / "face.png"
    cv2.imwrite(str(portrait), cv2.cvtColor(astronaut_face, cv2.COLOR_RGB2BGR))
    env = {key: value for key, value in os.environ.items() if key != "ADASR_TOKEN"}
    process = subprocess.Popen(
        [sys.executable, "-m", "adasr_cli", "receive", "--port", "0", "--sink", "none", "--max-calls", "1",
         "--checkpoint", str(fast_checkpoint), "--threads", "1",
         "--config-dir", str(tmp_path.with_name(tmp_path.name + "-config"))],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        lines: list[str] = []
        while not any(line.startswith("adasr receive: give the caller this line:") for line in lines):
            line = process.stderr.readline()
            assert line, "adasr receive exited: " + "".join(lines)
            lines.append(line)
        text = "".join(lines)
        url = text.split("waiting for calls on ")[1].split("/offer")[0]
        token = text.split("ADASR_TOKEN=")[1].split()[0]
        pin = text.split("--pin ")[1].split()[0]
        assert url.startswith("https://127.0.0.1:") and len(token) >= 32 and len(pin) == 64
        options = SenderOptions(capture=CaptureOptions(images=tmp_path, fps=10, max_frames=8, loop=True),
                                source=SourceOptions(portrait, crop=False), crop=False, show_progress=False)
        sent = asyncio.run(run_sender(fast_head, options, HttpSignaling(url, token, pin=pin), TRANSPORT,
                                       console=False))
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0 and sent.frames_sent == 8
    assert "adasr receive: frames_received=" in out and "end_reason=the sender hung up" in out
