"""The render thread: the newest pose in, a frame to the sink out; never on the event loop, never a backlog.

One worker thread takes jobs from a ``LatestSlot``: a job that arrives while the previous one
still waits replaces it (``frames_dropped``), so the renderer never works through a backlog and the
loop that offers jobs never waits for it (DESIGN.md: latest wins, inference off the loop). The
thread owns the sink: it shows every frame and closes the sink when the loop stops. The call's
receiver and the local webcam both render through one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from adasr.keypoints import Motion
from adasr.inference import SourceState
from engines.talking_head import TalkingHead
from realtime.clock import monotonic_us
from realtime.latest import LatestSlot
from realtime.receiver.pose import Pose
from realtime.sinks import FrameInfo, Sink, draw_overlay
from realtime.stats import SAMPLES_KEPT, append_bounded

logger = logging.getLogger(__name__)

#: Name of the render thread.
RENDER_THREAD = "adasr-render"


@dataclass
class RenderCounters:
    """What the render thread did. The per-frame timing lists keep the most recent ``SAMPLES_KEPT`` values,
    so a long call's memory stays flat."""

    frames_rendered: int = 0
    """Frames rendered and handed to the sink."""
    frames_dropped: int = 0
    """Jobs replaced by a newer one before the renderer took them (latest wins)."""
    render_errors: int = 0
    """Frames whose rendering (or showing) raised."""
    render_ms: list[float] = field(default_factory=list)
    """Renderer time per frame (keypoints + network)."""
    e2e_ms: list[float] = field(default_factory=list)
    """Capture (sender) → frame ready for the sink, per rendered frame (meaningful when both clocks are one)."""
    queue_ms: list[float] = field(default_factory=list)
    """Arrival → render start, per rendered frame."""
    sink_ms: list[float] = field(default_factory=list)
    """Time the sink took per frame (writing a file, showing a window)."""
    av_offset_ms: list[float] = field(default_factory=list)
    """Per frame shown while the voice's timing was known: shown − when its instant's voice is heard
    (positive: the face lags its voice)."""


@dataclass(frozen=True)
class RenderJob:
    """One frame to render."""

    seq: int
    """Motion sequence number (the frame's number for the sink)."""
    timestamp_us: int
    """Capture time of the camera frame."""
    pose: Pose
    """The motion to render (``Motion.to_vector`` order) with its face ratios, and the reference they are relative
    to."""
    state: SourceState
    """The face to render."""
    arrival_us: int
    """When the motion arrived (queueing time is measured from here)."""
    voice_heard_at: Callable[[], float | None] | None = None
    """Local monotonic seconds when the voice captured with this face is heard (None: no voice, or not known
    yet); read when the frame is shown, for ``av_offset_ms``."""

    def render(self, head: TalkingHead) -> np.ndarray:
        """The frame (HWC uint8 RGB) this job asks of ``head``."""
        pose = self.pose
        reference = None if pose.reference is None else Motion.from_vector(pose.reference)
        if reference is not None:
            reference = dataclasses.replace(reference, face_ratios=pose.reference_ratios)
        motion = dataclasses.replace(Motion.from_vector(pose.vector), face_ratios=pose.face_ratios)
        return head.render_image(self.state, motion, reference)


#: Status lines drawn on each frame, given its render time in ms (``ReceiverOptions.overlay``).
OverlayLines = Callable[[float], list[str]]


class RenderLoop:
    """One render thread fed through a latest-wins slot. ``offer`` on the loop; ``stop`` to end."""

    def __init__(self, head: TalkingHead, sink: Sink, stats: RenderCounters | None = None, *,
                 overlay: OverlayLines | None = None, on_sink_closed: Callable[[], None] | None = None) -> None:
        self.head = head
        self.sink = sink
        self.stats = stats if stats is not None else RenderCounters()
        self.overlay = overlay
        self.on_sink_closed = on_sink_closed
        """Called on the loop, once, when the user closed the sink (a preview window)."""
        self._slot: LatestSlot[RenderJob] = LatestSlot()
        self._thread = threading.Thread(target=self._run, name=RENDER_THREAD, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._offered = 0
        self._told_closed = False
        self._taken = asyncio.Event()
        """Set (on the loop) each time the render thread takes a job."""

    def start(self) -> None:
        """Start the render thread (on the loop that will offer jobs)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._thread.start()

    def offer(self, job: RenderJob) -> None:
        """Hand ``job`` to the renderer; one still waiting is replaced (and counted as dropped)."""
        self._offered += 1
        if self._slot.put(job) is not None:
            self.stats.frames_dropped += 1

    async def taken(self) -> None:
        """Return once no offered job waits: the renderer has taken the last one (it may still be rendering it).

        A producer that awaits this before working out the next job (the local webcam's tracking and motion)
        overlaps that work with the frame being rendered, and spends nothing on jobs the slot would drop.
        """
        while self._slot.pending() and not self._slot.closed:
            self._taken.clear()
            if self._slot.pending():
                await self._taken.wait()

    def idle(self) -> bool:
        """Every job offered has been rendered, dropped, or failed."""
        s = self.stats
        return self._offered - s.frames_dropped <= s.frames_rendered + s.render_errors

    async def drain(self, timeout_s: float = 2.0) -> None:
        """Wait until the renderer has taken and finished every job handed to it, or the timeout."""
        deadline = time.perf_counter() + timeout_s
        while not self.idle() and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Render what still waits, end the thread (which closes the sink) and wait for it, off the loop."""
        self._slot.close()
        if self._loop is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    # ---- the render thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                job = self._slot.get(timeout=0.25)
                if job is None:
                    if self._slot.closed:
                        return
                    continue
                self._tell_taken()
                self._render(job)
        finally:
            try:
                self.sink.close()
            except Exception:
                logger.exception("closing the sink failed")

    def _render(self, job: RenderJob) -> None:
        s = self.stats
        start_us = monotonic_us()
        t0 = time.perf_counter()
        try:
            frame = job.render(self.head)
        except Exception:
            s.render_errors += 1
            log = logger.exception if s.render_errors == 1 else logger.debug
            log("rendering motion %d failed", job.seq)
            return
        render_ms = (time.perf_counter() - t0) * 1e3
        if self.overlay is not None:
            frame = draw_overlay(frame, self.overlay(render_ms))
        ready_us = monotonic_us()
        t1 = time.perf_counter()
        try:
            self.sink.show(frame, FrameInfo(job.seq, job.timestamp_us, render_ms))
        except Exception:
            s.render_errors += 1
            logger.exception("the sink failed on frame %d", job.seq)
            return
        shown_s = time.monotonic()
        append_bounded(s.sink_ms, (time.perf_counter() - t1) * 1e3, SAMPLES_KEPT)
        heard_s = job.voice_heard_at() if job.voice_heard_at is not None else None
        if heard_s is not None:
            append_bounded(s.av_offset_ms, (shown_s - heard_s) * 1e3, SAMPLES_KEPT)
        self._tell_if_closed()
        append_bounded(s.render_ms, render_ms, SAMPLES_KEPT)
        append_bounded(s.queue_ms, (start_us - job.arrival_us) / 1e3, SAMPLES_KEPT)
        append_bounded(s.e2e_ms, (ready_us - job.timestamp_us) / 1e3, SAMPLES_KEPT)
        s.frames_rendered += 1

    def _tell_taken(self) -> None:
        """Wake ``taken`` on the loop (which may already be closed when a call ends)."""
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._taken.set)
            except RuntimeError:
                pass

    def _tell_if_closed(self) -> None:
        """The user closed the sink's window: tell the loop, once (the caller hangs up)."""
        if (self.on_sink_closed is not None and not self._told_closed and self._loop is not None
                and getattr(self.sink, "closed_by_user", False)):
            self._told_closed = True
            self._loop.call_soon_threadsafe(self.on_sink_closed)
