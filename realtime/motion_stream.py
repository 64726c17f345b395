"""Captured frames → motion samples, worked out on one worker thread, awaited one at a time on the loop.

The sender streams these samples to the network; the local webcam renders them directly. Both
need the same thing: the capture and the ``MotionPipeline`` (tracker, crop, motion extractor,
smoothing) opened, run and closed on one worker thread (they block, and mediapipe wants one
thread), never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from adasr.faces import FaceTrackerConfig
from engines.talking_head import TalkingHead
from realtime.capture import CaptureOptions, CapturedFrame, PacedCapture, open_reader
from realtime.motion_pipeline import MotionPipeline, MotionSample
from realtime.smoothing import SmoothingOptions


class MotionStream:
    """``open``, then ``next`` until it returns None (the capture ended or ``stop``), then ``close``."""

    def __init__(self, head: TalkingHead, capture: CaptureOptions, pool: ThreadPoolExecutor, *,
                 smoothing: SmoothingOptions = SmoothingOptions(), tracker: FaceTrackerConfig | None = None,
                 crop: bool = True) -> None:
        self.head = head
        self.capture_options = capture
        self.smoothing = smoothing
        self.tracker = tracker
        self.crop = crop
        self._pool = pool
        self._capture: PacedCapture | None = None
        self._pipeline: MotionPipeline | None = None
        self._frames: Iterator[CapturedFrame] = iter(())
        self._stopped = False

    def _open(self) -> tuple[PacedCapture, MotionPipeline]:
        capture = PacedCapture(open_reader(self.capture_options), self.capture_options)
        pipeline = MotionPipeline(self.head, self.smoothing, self.tracker, self.crop)
        return capture, pipeline

    async def open(self) -> float:
        """Open the capture and the pipeline (worker thread); returns the capture's frame rate."""
        capture, self._pipeline = await asyncio.get_running_loop().run_in_executor(self._pool, self._open)
        self._capture, self._frames = capture, iter(capture)
        if self._stopped:
            capture.stop()
        return capture.fps

    async def next(self) -> tuple[CapturedFrame, MotionSample] | None:
        """The next frame and its motion (worker thread), or None once the capture has ended."""
        pipeline, frames = self._pipeline, self._frames
        assert pipeline is not None, "open() first"

        def step() -> tuple[CapturedFrame, MotionSample] | None:
            frame = next(frames, None)
            return None if frame is None else (frame, pipeline.process(frame))

        return await asyncio.get_running_loop().run_in_executor(self._pool, step)

    @property
    def frames_read(self) -> int:
        """Frames read from the capture source (skipped ones included)."""
        return 0 if self._capture is None else self._capture.frames_read

    @property
    def frames_skipped(self) -> int:
        """Frames of a file or folder skipped because the stream was late for them."""
        return 0 if self._capture is None else self._capture.frames_skipped

    def limit_rate(self, fps: float | None) -> None:
        """Deliver at most ``fps`` frames a second from now on (None: the capture's own rate; any thread, after
        ``open``)."""
        if self._capture is not None:
            self._capture.limit_rate(fps)

    def stop(self) -> None:
        """End the capture after the frame in progress (any thread)."""
        self._stopped = True
        if self._capture is not None:
            self._capture.stop()

    async def close(self) -> None:
        """Release the capture and the pipeline (worker thread)."""
        capture, pipeline = self._capture, self._pipeline
        if capture is None or pipeline is None:
            return

        def close() -> None:
            capture.close()
            pipeline.close()

        await asyncio.get_running_loop().run_in_executor(self._pool, close)
