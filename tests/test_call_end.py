"""How a call ends and what each side reports: the sender follows the receiver's render rate, both summaries
hold the same numbers, and a receiver that died is noticed."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from realtime.call import connect_as_receiver, run_sender, serve_connection
from realtime.capture import CaptureOptions, ImageFolderReader, PacedCapture
from realtime.messages import CallStats
from realtime.receiver import ReceiverOptions, ReceiverStats
from realtime.render_rate import MIN_FPS, RenderRateFollower
from realtime.sender import SenderOptions, SenderStats, SourceOptions
from realtime.signaling import InProcessSignaling
from realtime.sinks import NullSink
from realtime.transport import LOOPBACK, TransportOptions

TRANSPORT = TransportOptions(ice_hosts=LOOPBACK, connect_timeout_s=30)


def test_the_follower_takes_the_render_rate_while_the_receiver_drops_and_probes_up_after() -> None:
    follower = RenderRateFollower(ceiling_fps=30.0)
    assert follower.update(0, CallStats(frames_rendered=0, frames_dropped=0)) is None  # the first measure point
    assert follower.update(500_000, CallStats(frames_rendered=3, frames_dropped=9)) is None  # under an interval
    assert follower.update(2_000_000, CallStats(frames_rendered=10, frames_dropped=40)) == pytest.approx(5.0)
    assert follower.update(3_000_000, CallStats(frames_rendered=15, frames_dropped=40)) == pytest.approx(6.25)
    assert follower.update(4_000_000, CallStats(frames_rendered=15, frames_dropped=41)) is None  # a stall
    assert follower.update(5_000_000, CallStats(frames_rendered=15 + 1, frames_dropped=50)) == MIN_FPS
    steady = RenderRateFollower(ceiling_fps=30.0)
    steady.update(0, CallStats())
    assert steady.update(1_000_000, CallStats(frames_rendered=30)) is None  # keeping up: nothing to change


def test_a_rate_limit_skips_frames_on_the_capture_schedule(tmp_path: Path) -> None:
    for i in range(20):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), np.full((8, 8, 3), i, np.uint8))
    capture = PacedCapture(ImageFolderReader(tmp_path, 100.0), CaptureOptions(images=tmp_path, fps=100,
                                                                                 drop_late=False))
    capture.limit_rate(25.0)
    assert [frame.index for frame in capture] == [0, 4, 8, 12, 16]
    assert capture.frames_read == 20 and capture.frames_skipped == 15


class SlowHead:
    """The fast model, rendering no faster than ``fps`` (a receiver on a slow CPU)."""

    def __init__(self, head: Any, fps: float) -> None:
        self._head, self._period_s = head, 1.0 / fps

    def __getattr__(self, name: str) -> Any:
        return getattr(self._head, name)

    def render_image(self, *args: Any) -> np.ndarray:
        time.sleep(self._period_s)
        return self._head.render_image(*args)


def _portrait_and_frames(tmp_path: Path, face: np.ndarray, frames: list[np.ndarray]) -> tuple[Path, Path]:
    portrait = tmp_path / "face.png"
    cv2.imwrite(str(portrait), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames[:8]):
        cv2.imwrite(str(folder / f"{i:02d}.png"), cv2.cvtColor(frame[:, 16:160], cv2.COLOR_RGB2BGR))
    return portrait, folder


#: Frames delivered once the rate limit is on: enough to see it skip, few enough to stay short at ~3 fps.
FRAMES_WHILE_LIMITED = 12
#: Bound on the whole capture if the limit never comes (~20 s at 30 fps): the test then fails, it does not hang.
FRAMES_AT_MOST = 600


def _end_after_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every capture end FRAMES_WHILE_LIMITED frames after its rate limit took effect, so the test waits
    on the limit itself: a fixed frame count raced the receiver's STATS (two of them, a second apart) on a
    busy machine, and the clip could run out before the limit came."""
    unlimited_iter = PacedCapture.__iter__

    def ending_iter(capture: PacedCapture):  # type: ignore[no-untyped-def]
        limited = 0
        for emitted, frame in enumerate(unlimited_iter(capture), 1):
            yield frame
            limited += capture._min_interval_us > 0  # noqa: SLF001 - the limit is what the test waits for
            if limited >= FRAMES_WHILE_LIMITED or emitted >= FRAMES_AT_MOST:
                return

    monkeypatch.setattr(PacedCapture, "__iter__", ending_iter)


def test_the_sender_follows_a_slow_receiver_and_both_summaries_agree(
        fast_head, astronaut_face, carphone_frames, tmp_path: Path,  # type: ignore[no-untyped-def]
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="realtime.sender")
    portrait, frames = _portrait_and_frames(tmp_path, astronaut_face, carphone_frames)
    _end_after_the_limit(monkeypatch)
    options = SenderOptions(capture=CaptureOptions(images=frames, fps=30, loop=True),
                            source=SourceOptions(portrait, crop=False), crop=False, show_progress=False)

    async def scenario() -> tuple[SenderStats, ReceiverStats]:
        to_receiver, to_sender = InProcessSignaling.pair()

        async def receive() -> ReceiverStats:
            connection = await connect_as_receiver(to_sender, TRANSPORT)
            # 3 fps: far below what the sender reaches even on a busy machine
            return await serve_connection(SlowHead(fast_head, 3.0), ReceiverOptions(), NullSink(), connection)

        receiving = asyncio.ensure_future(receive())
        sent = await asyncio.wait_for(run_sender(fast_head, options, to_receiver, TRANSPORT, console=False), 300)
        return sent, await asyncio.wait_for(receiving, 60)

    sent, received = asyncio.run(scenario())
    assert sent.send_fps is not None and sent.send_fps < 20  # lowered from 30 towards the ~3 fps rendered
    assert any("the receiver renders" in r.getMessage() and "sending at that rate" in r.getMessage()
               for r in caplog.records)
    assert sent.frames_sent < FRAMES_AT_MOST  # the limit came: the capture did not run to its bound
    assert sent.frames_skipped > 0 and sent.frames_captured == sent.frames_sent + sent.frames_skipped
    # the same call in both summaries: the sender's last view of the receiver is the receiver's own count
    assert sent.peer is not None and received.peer is not None and sent.peer_goodbye is not None
    assert (sent.peer.frames_rendered, sent.peer.frames_dropped) == (received.frames_rendered, received.frames_dropped)
    assert received.peer.frames_sent == sent.frames_sent and not sent.peer_timed_out


def test_a_receiver_that_never_answers_the_goodbye_has_vanished(
        fast_head, astronaut_face, carphone_frames, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The receiving side connects, then its process is as good as dead (nothing answers): the sender's summary
    says the receiver vanished instead of ending as a normal call."""
    portrait, frames = _portrait_and_frames(tmp_path, astronaut_face, carphone_frames)
    options = SenderOptions(capture=CaptureOptions(images=frames, fps=10, max_frames=5), peer_timeout_s=1.0,
                            source=SourceOptions(portrait, crop=False), crop=False, show_progress=False)

    async def scenario() -> SenderStats:
        to_receiver, to_sender = InProcessSignaling.pair()
        connecting = asyncio.ensure_future(connect_as_receiver(to_sender, TRANSPORT))
        sent = await asyncio.wait_for(run_sender(fast_head, options, to_receiver, TRANSPORT, console=False), 120)
        await (await asyncio.wait_for(connecting, 30)).pc.close()
        return sent

    sent = asyncio.run(scenario())
    assert sent.frames_sent == 5 and sent.peer_timed_out and sent.peer_goodbye is None
