"""The whole ``adasr cam`` frame as a sustained rate: the real webcam pipeline fed from a video, a null output.

``LocalWebcam`` runs as the command runs it (capture → face tracker → motion extractor → smoothing → pose →
renderer → pasted into the 1280×720 portrait framing → output thread), with two stand-ins: a video for the
camera, read as fast as the pipeline takes frames (so the rate measured is what the pipeline sustains, not
the video's own), and an output that only notes when each frame reached it. The first ``warmup`` frames
are left out; the rate is the frames shown over the time between the first and the last of the rest.

Latency is capture → shown per frame, to compare with the stages run one after the other (tracking +
motion + render): overlapping them may add at most one frame.
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.talking_head import TalkingHead
from realtime.capture import CaptureOptions
from realtime.clock import monotonic_us
from realtime.sinks import FrameInfo, ThreadedSink
from realtime.webcam import LocalWebcam, WebcamOptions, WebcamStats


class _ShownTimes:
    """A sink that keeps, per frame number, when it was first shown and when it was captured (µs)."""

    def __init__(self) -> None:
        self.shown: dict[int, tuple[int, int]] = {}

    def show(self, frame: np.ndarray, info: FrameInfo) -> None:
        self.shown.setdefault(info.seq, (monotonic_us(), info.timestamp_us))

    def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class WebcamRun:
    """What one run of the webcam sustained."""

    frames: int
    """Frames shown after the warm-up."""
    seconds: float
    """From the first to the last of them."""
    interval_ms: list[float]
    """Between consecutive frames shown."""
    latency_ms: list[float]
    """Capture → shown, per frame."""
    stats: WebcamStats
    """The webcam's own counters (frames dropped, skipped, face lost, ...)."""

    @property
    def fps(self) -> float:
        """Frames per second sustained."""
        return (self.frames - 1) / self.seconds if self.seconds > 0 else 0.0


def measure_webcam(head: TalkingHead, video: Path, portrait: Path, frames: int, warmup: int,
                   width: int = 1280, height: int = 720) -> WebcamRun:
    """Run ``adasr cam``'s pipeline on ``warmup + frames`` frames of ``video`` (looped) and time the last
    ``frames`` of them as they reach the output."""
    if frames < 2:
        raise ValueError(f"the webcam rate needs at least 2 timed frames, got {frames}")
    recorder = _ShownTimes()
    capture = CaptureOptions(video=video, fps=1000.0, drop_late=False, loop=True, max_frames=warmup + frames)
    webcam = LocalWebcam(WebcamOptions(portrait=portrait, capture=capture, width=width, height=height,
                                       console=False))
    stats = asyncio.run(webcam.run(head, ThreadedSink(recorder, fps=30.0, repeat_last=False)))
    steady = [times for seq, times in sorted(recorder.shown.items()) if seq >= warmup]
    if len(steady) < 2:
        raise RuntimeError(f"the webcam showed {len(steady)} frames after the warm-up; is there a face in {video}?")
    shown = [t for t, _ in steady]
    return WebcamRun(frames=len(steady), seconds=(shown[-1] - shown[0]) / 1e6,
                     interval_ms=[(b - a) / 1e3 for a, b in zip(shown, shown[1:])],
                     latency_ms=[(t - captured) / 1e3 for t, captured in steady], stats=stats)


def latency_summary(run: WebcamRun, serial_ms: float) -> str:
    """One line: the overlapped pipeline's latency, the stages' sum timed alone, and what the overlap adds (a
    motion's wait for the renderer to finish the frame before it) in frames of the rate sustained."""
    latency = statistics.median(run.latency_ms)
    period = 1000.0 / run.fps if run.fps > 0 else float("inf")
    wait = run.stats.wait_ms_p50 or 0.0
    return (f"capture->shown p50 {latency:.1f} ms (stages timed alone, one after the other: {serial_ms:.1f} ms); "
            f"overlap adds the wait for the renderer, p50 {wait:.1f} ms = {wait / period:.2f} frame")
