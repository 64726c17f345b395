"""The real-time call: smoothing, pacing, latest-wins rendering, source refusal, and a full loopback call."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from adasr.one_euro import OneEuroParams
from realtime.capture import CaptureOptions, ImageFolderReader, PacedCapture
from realtime.latest import LatestSlot
from realtime.motion_codec import MotionFlags, encode_motion
from realtime.receiver import Receiver, ReceiverOptions
from realtime.smoothing import MotionSmoother, SmoothingOptions
from realtime.source_messages import SourceKind, model_id_for, split_source
from realtime.stats import WireOverhead

K = 15
VECTOR = 6 + 3 * K


# ---- smoothing --------------------------------------------------------------------------------

def test_one_euro_follows_fast_motion_with_little_lag() -> None:
    """A head turn (10° step) is followed within a few frames thanks to the speed term."""
    smoother = MotionSmoother(SmoothingOptions())
    still = np.zeros(VECTOR, np.float32)
    turned = still.copy()
    turned[0] = 10.0  # yaw
    for i in range(30):
        smoother(still, i / 30)
    outs = [smoother(turned, (30 + i) / 30)[0] for i in range(10)]
    assert outs[0] > 3.0 and outs[5] > 9.0  # beta lifts the cut-off while the value moves
    lazy = MotionSmoother(SmoothingOptions(filter=OneEuroParams(min_cutoff_hz=1.5, beta=0.0)))
    for i in range(30):
        lazy(still, i / 30)
    assert lazy(turned, 1.0)[0] < outs[0]  # without the speed term the same step lags more


def test_smoothing_disabled_is_identity_and_groups_are_scaled() -> None:
    vec = np.linspace(-1, 1, VECTOR).astype(np.float32)
    assert np.array_equal(MotionSmoother(SmoothingOptions(enabled=False))(vec, 0.0), vec)
    scales = SmoothingOptions().scales(VECTOR)
    assert scales[:3].tolist() == [1.0] * 3 and scales[3:6].tolist() == [0.01] * 3 and (scales[6:] == 0.01).all()


# ---- latest wins ------------------------------------------------------------------------------

def test_latest_slot_keeps_only_the_newest() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is None
    assert slot.put(2) == 1 and slot.put(3) == 2
    assert slot.replaced == 2 and slot.get(0) == 3 and slot.get(0.01) is None
    got: list[int | None] = []
    waiter = threading.Thread(target=lambda: got.append(slot.get(5)))
    waiter.start()
    slot.close()
    waiter.join(2)
    assert got == [None] and not waiter.is_alive()


class _BlockingHead:
    """A TalkingHead stand-in whose renderer waits for a gate: lets a test pile frames up."""

    def __init__(self) -> None:
        config = SimpleNamespace(name="fake", image_size=8, num_kp=K)
        self.backend = SimpleNamespace(model_id="fake", config=config, device=torch.device("cpu"))
        self.size = 8
        self.gate = threading.Event()
        self.started = threading.Event()
        self.rendered: list[int] = []

    def render_image(self, state: object, motion, reference) -> np.ndarray:  # type: ignore[no-untyped-def]
        self.started.set()
        self.gate.wait(5)
        self.rendered.append(round(float(motion.yaw[0])))  # quantised: ±0.05°
        return np.zeros((8, 8, 3), np.uint8)


def test_receiver_renders_only_the_newest_motion_never_a_backlog() -> None:
    async def scenario() -> tuple[list[int], object]:
        head = _BlockingHead()
        receiver = Receiver(head, ReceiverOptions(stats_interval_s=0))  # type: ignore[arg-type]
        receiver.state = object()  # type: ignore[assignment]
        receiver.start()

        def motion(seq: int) -> bytes:
            vec = np.zeros(VECTOR, np.float32)
            vec[0] = seq  # yaw tells which packet was rendered
            return encode_motion(seq, seq * 1000, vec)

        receiver.on_motion(motion(0))
        assert await asyncio.get_running_loop().run_in_executor(None, head.started.wait, 5)
        for seq in (1, 2, 3):  # arrive while frame 0 renders
            receiver.on_motion(motion(seq))
        receiver.on_motion(motion(2))  # late duplicate: refused by the replay guard, not rendered
        head.gate.set()
        await receiver.drain(5)
        stats = await receiver.stop()
        return head.rendered, stats

    rendered, stats = asyncio.run(scenario())
    assert rendered == [0, 3]
    assert stats.frames_rendered == 2 and stats.frames_dropped == 2 and stats.motion.duplicate == 1  # type: ignore[attr-defined]


# ---- pacing and wire model -----------------------------------------------------------------------

def test_paced_capture_releases_frames_at_the_frame_rate(tmp_path: Path) -> None:
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), np.full((8, 8, 3), i * 40, np.uint8))
    capture = PacedCapture(ImageFolderReader(tmp_path), CaptureOptions(images=tmp_path, fps=50, drop_late=False))
    frames = list(capture)
    since_first_ms = (np.array([f.timestamp_us for f in frames]) - frames[0].timestamp_us) / 1e3
    assert [f.index for f in frames] == list(range(5))
    # never early: frame i leaves at least i·20 ms after the first (a busy machine only makes it later)
    assert np.all(since_first_ms >= np.arange(5) * 20 - 0.5), since_first_ms
    assert frames[3].image[0, 0, 0] == 120


def test_wire_overhead_model() -> None:
    gcm = WireOverhead()
    # 48-byte MOTION: SCTP 12 + 16 + 48, DTLS 13 + 8 + 16, UDP 8, IPv4 20 = 141
    assert gcm.per_message(48) == 141 and gcm.overhead(48) == 93
    assert WireOverhead(cipher="ECDHE-ECDSA-CHACHA20-POLY1305").per_message(48) == 133
    assert gcm.per_message(49) == 141 + 4  # SCTP pads the chunk to 4 bytes


# ---- with a real (small, random-weight) model -----------------------------------------------------

def test_receiver_refuses_other_model_and_corrupt_state_and_stays_up(fast_head, astronaut_face) -> None:  # type: ignore[no-untyped-def]
    from realtime.source_state_codec import encode_state, wire_model_id

    state = fast_head.prepare_source(astronaut_face)
    payload = encode_state(state, fast_head.backend.config)

    async def scenario() -> Receiver:
        receiver = Receiver(fast_head, ReceiverOptions(stats_interval_s=0))
        receiver.start()
        seq = 0

        def send(messages: list[bytes]) -> None:
            nonlocal seq
            for m in messages:
                receiver.on_control(m)
            seq += len(messages)

        other = split_source(payload, model_id_for("some other checkpoint"), SourceKind.FEATURE_VOLUME, first_seq=seq)
        send(other)
        assert receiver.stats.source_errors == 1
        assert "both peers must load the same checkpoint" in receiver.stats.last_source_error
        corrupt = split_source(payload, wire_model_id(fast_head), SourceKind.FEATURE_VOLUME, first_seq=seq)
        last = bytearray(corrupt[-1])
        last[-1] ^= 0xFF
        send([*corrupt[:-1], bytes(last)])
        assert receiver.stats.source_errors == 2 and "SHA-256" in receiver.stats.last_source_error
        receiver.on_motion(encode_motion(0, 0, np.zeros(VECTOR, np.float32)))  # no state yet: counted, not rendered
        send(split_source(payload, wire_model_id(fast_head), SourceKind.FEATURE_VOLUME, first_seq=seq))
        await asyncio.wait_for(receiver.source_ready.wait(), 30)
        receiver.on_motion(encode_motion(1, 0, state.motion.to_vector()))
        receiver.on_motion(encode_motion(2, 0, state.motion.to_vector(), MotionFlags.FACE_LOST))
        await receiver.drain(10)
        await receiver.stop()
        return receiver

    receiver = asyncio.run(scenario())
    s = receiver.stats
    assert s.sources_accepted == 1 and s.frames_before_source == 1 and s.frames_face_lost == 1
    assert s.frames_rendered == 1 and s.render_errors == 0
    assert receiver.state is not None and receiver.state.f_s.shape == state.f_s.shape


def test_loopback_call_on_carphone(fast_head) -> None:  # type: ignore[no-untyped-def]
    """A whole call over aiortc on 127.0.0.1 (ICE, DTLS, SCTP): 20 real frames, paced at 5 fps (a 200 ms frame
    budget: the lite renderer at 128 takes ~110 ms on one thread of a machine that is busy with other work)."""
    from realtime.demo import DemoOptions, run_demo_call

    options = DemoOptions(output=None, stats_json=None, fps=5.0, max_frames=20, show_progress=False)
    report = asyncio.run(run_demo_call(fast_head, options))
    sent = report["frames_sent"]
    assert sent == 20
    # the network carries the frames; how many a busy CPU renders is latest-wins, a benchmark's matter
    assert report["frames_received"] >= 0.95 * sent and report["frames_rendered"] >= 1
    # every frame sent is accounted for, once
    accounted = (report["frames_rendered"] + report["frames_dropped_latest_wins"] + report["frames_face_lost"]
                 + report["frames_before_source"] + report["render_errors"])
    assert report["frames_received"] == accounted == sent - report["frames_lost_in_network"]
    assert report["packets_rejected"] == 0
    # every frame of carphone has a face: its motion travels with the tracker's 8 face ratios
    assert report["motion_payload_bytes_per_frame"] == 54 and report["motion_packet_payload_bytes"] == 38
    assert report["motion_wire_bytes_per_frame"] == 149 and report["dtls_cipher"]
    assert report["sender_wire_bytes_per_frame_measured"] >= 149  # every MOTION is one datagram, plus control
    assert report["motion_kbps_payload"] == pytest.approx(54 * 8 * report["fps_sent"] / 1000)
    assert report["source_state_bytes"] > 10_000 and report["source_state_kind"] == "FEATURE_VOLUME"
    assert 0 < report["render_ms_p50"] <= report["e2e_latency_ms_p50"] <= report["e2e_latency_ms_p99"]
    assert report["network_ms_p50"] < 50


def test_demo_without_its_weights_says_how_to_get_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import adasr.checkpoint
    from adasr_cli.main import main

    missing = tmp_path / "weights" / "adasr-lite.pth"
    monkeypatch.setattr(adasr.checkpoint, "DEFAULT_CHECKPOINT", missing)
    assert main(["demo", "--checkpoint", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "adasr demo: error:" in err and "are missing" in err and "--checkpoint" in err


def test_the_demo_sends_at_what_the_cpu_and_each_direction_sustain() -> None:
    """Both peers' CPU per frame spread over the cores, unless one direction's own stages, one after the other,
    are slower (many cores); each with the headroom."""
    from realtime.demo import sustainable_fps

    cost = {"sender_ms": 12.0, "render_ms": 26.0, "cpu_ms": 52.0}
    assert sustainable_fps(cost, 2, 1.5, 2) == pytest.approx(2000 / (1.5 * 2 * 52))
    assert sustainable_fps(cost, 1, 1.5, 1) == pytest.approx(1000 / (1.5 * 52))
    assert sustainable_fps(cost, 2, 1.5, 16) == pytest.approx(1000 / (1.5 * 38))
