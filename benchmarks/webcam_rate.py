"""The whole ``adasr cam`` frame as a sustained rate: the real webcam pipeline fed from a video, a null output.

``LocalWebcam`` runs as the command runs it (capture → face tracker → motion extractor → smoothing → pose →
renderer → pasted into the 1280×720 portrait framing → output thread), with two stand-ins: a video for the
camera, read as fast as the pipeline takes frames (so the rate measured is what the pipeline sustains, not
the video's own), and an output that only notes when each frame reached it. The first ``warmup`` frames
are left out; the rate is the frames shown over the time between the first and the last of the rest.

Latency is capture → shown per frame, to compare with the stages run one after the other (tracking +
motion + render): overlapping them may add at most one frame.

CPU time is read per thread over the timed frames (Linux: /proc/self/task): the process's CPU milliseconds per
frame shown, and who spent them (the render thread, the tracker's worker, mediapipe's own thread, ...). Divided into
the cores, it is the most frames a second this work can give on this machine whatever the scheduling.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.talking_head import TalkingHead
from realtime.capture import CaptureOptions
from realtime.clock import monotonic_us
from realtime.sinks import FrameInfo, ThreadedSink
from realtime.webcam import LocalWebcam, WebcamOptions, WebcamStats


#: The name given to native threads that never named themselves (they carry the program's name: ONNX Runtime's
#: intra-op pool, for one).
UNNAMED = "unnamed native"


def thread_cpu_seconds() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) so far of each thread of this process by its id, with its name: the Python
    name where Python started the thread, else the one the thread gave itself (mediapipe's is "drishti"), else
    ``UNNAMED``. Empty where /proc is not there."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[str, float]] = {}
    try:
        tasks = os.listdir("/proc/self/task")
        program = Path("/proc/self/comm").read_text().strip()
    except OSError:
        return found
    for task in tasks:
        try:
            stat = Path(f"/proc/self/task/{task}/stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        tid, comm, rest = int(task), stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        name = names.get(tid, UNNAMED if comm == program else comm)
        found[tid] = (name, (int(rest[11]) + int(rest[12])) / tick)  # utime, stime
    return found


def cpu_by_thread(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent between two ``thread_cpu_seconds`` readings, summed by thread name, most first."""
    spent: dict[str, float] = {}
    for tid, (name, seconds) in after.items():
        spent[name] = spent.get(name, 0.0) + seconds - before.get(tid, (name, 0.0))[1]
    return dict(sorted(spent.items(), key=lambda item: -item[1]))


class _ShownTimes:
    """A sink that keeps, per frame number, when it was first shown and when it was captured (µs), and the
    threads' CPU time when frames ``first`` and ``last`` were shown."""

    def __init__(self, first: int, last: int) -> None:
        self.shown: dict[int, tuple[int, int]] = {}
        self.marks: dict[int, dict[int, tuple[str, float]]] = {first: {}, last: {}}

    def show(self, frame: np.ndarray, info: FrameInfo) -> None:
        if info.seq in self.shown:
            return
        self.shown[info.seq] = (monotonic_us(), info.timestamp_us)
        if info.seq in self.marks:
            self.marks[info.seq] = thread_cpu_seconds()

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
    cpu_ms_by_thread: dict[str, float] = field(default_factory=dict)
    """CPU ms per frame shown, by thread name, between the first and the last timed frame (empty without /proc)."""

    @property
    def cpu_ms_per_frame(self) -> float:
        """The process's CPU ms per frame shown (0 without /proc)."""
        return sum(self.cpu_ms_by_thread.values())

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
    recorder = _ShownTimes(warmup, warmup + frames - 1)
    capture = CaptureOptions(video=video, fps=1000.0, drop_late=False, loop=True, max_frames=warmup + frames)
    webcam = LocalWebcam(WebcamOptions(portrait=portrait, capture=capture, width=width, height=height,
                                       console=False))
    stats = asyncio.run(webcam.run(head, ThreadedSink(recorder, fps=30.0, repeat_last=False)))
    steady = [times for seq, times in sorted(recorder.shown.items()) if seq >= warmup]
    if len(steady) < 2:
        raise RuntimeError(f"the webcam showed {len(steady)} frames after the warm-up; is there a face in {video}?")
    shown = [t for t, _ in steady]
    start, end = recorder.marks.values()
    cpu = {name: seconds * 1e3 / (len(steady) - 1) for name, seconds in cpu_by_thread(start, end).items()
           if seconds > 0} if start and end else {}
    return WebcamRun(frames=len(steady), seconds=(shown[-1] - shown[0]) / 1e6,
                     interval_ms=[(b - a) / 1e3 for a, b in zip(shown, shown[1:])],
                     latency_ms=[(t - captured) / 1e3 for t, captured in steady], stats=stats, cpu_ms_by_thread=cpu)


def latency_summary(run: WebcamRun, serial_ms: float) -> str:
    """One line: the overlapped pipeline's latency, the stages' sum timed alone, and what the overlap adds (a
    motion's wait for the renderer to finish the frame before it) in frames of the rate sustained."""
    latency = statistics.median(run.latency_ms)
    period = 1000.0 / run.fps if run.fps > 0 else float("inf")
    wait = run.stats.wait_ms_p50 or 0.0
    return (f"capture->shown p50 {latency:.1f} ms (stages timed alone, one after the other: {serial_ms:.1f} ms); "
            f"overlap adds the wait for the renderer, p50 {wait:.1f} ms = {wait / period:.2f} frame")


def cpu_summary(run: WebcamRun, cores: int) -> str:
    """One line: the CPU ms per frame, the most frames a second it allows on ``cores``, and the threads that spent
    it (those over 0.5 ms a frame)."""
    if not run.cpu_ms_by_thread:
        return "CPU per thread not readable here (no /proc)"
    top = ", ".join(f"{name} {ms:.1f}" for name, ms in run.cpu_ms_by_thread.items() if ms >= 0.5)
    bound = cores * 1000.0 / run.cpu_ms_per_frame
    return (f"CPU {run.cpu_ms_per_frame:.1f} ms per frame ({top}): at most {bound:.1f} FPS on {cores} cores, "
            f"{run.fps / bound:.0%} of it sustained")
