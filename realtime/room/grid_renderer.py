"""The one render thread of a group call: each face's newest motion, round-robin, into one grid, to one sink.

Rendering never runs on the event loop, and there is one renderer however many faces: N faces
cost N renders per round, so each face's rate is the machine's rate divided by N (``FaceQueue``
keeps the newest job per face and takes them in turn; nothing piles up). After each render the
grid is composed and shown; a grid that changed without a frame (a face came, left, was refused)
is shown again when ``FaceQueue.poke`` says so. The thread owns the sink and closes it at the end.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field

from engines.talking_head import TalkingHead
from realtime.clock import monotonic_us
from realtime.receiver.render_loop import RenderJob
from realtime.room.face_queue import FaceQueue
from realtime.room.grid import Grid
from realtime.sinks import FrameInfo, Sink
from realtime.stats import SAMPLES_KEPT, append_bounded

logger = logging.getLogger(__name__)

#: Name of the group call's render thread.
GRID_THREAD = "adasr-grid-render"


@dataclass
class FaceRenderCounters:
    """What the renderer did for one face."""

    frames_rendered: int = 0
    """Frames of this face rendered into the grid."""
    render_errors: int = 0
    """Its frames whose rendering raised."""
    first_frame_us: int | None = None
    """When its first frame was rendered (monotonic µs)."""
    last_frame_us: int | None = None
    """When its latest frame was rendered."""
    render_ms: list[float] = field(default_factory=list)
    """Render time per frame (recent ones)."""
    lead_ms: list[float] = field(default_factory=list)
    """Per frame: offered → in the grid, the wait for the one render thread included (recent ones): how long before
    it is due a face must be offered (``FaceSync``)."""
    av_offset_ms: list[float] = field(default_factory=list)
    """Per frame shown while its voice's timing was known: shown − when its instant's voice is heard (positive: the
    face lags its voice; recent ones)."""


class GridRenderer:
    """``offer`` jobs per face on the loop; the thread renders them in turn into ``grid`` and shows it on ``sink``."""

    def __init__(self, head: TalkingHead, sink: Sink, grid: Grid) -> None:
        self.head = head
        self.sink = sink
        self.grid = grid
        self.faces: dict[int, FaceRenderCounters] = {}
        """Per face, written by the render thread (created on the loop by ``add``)."""
        self.frames_shown = 0
        """Grid pictures handed to the sink."""
        self.sink_errors = 0
        self._queue: FaceQueue[tuple[RenderJob, float]] = FaceQueue()  # with when it was offered
        self._thread = threading.Thread(target=self._run, name=GRID_THREAD, daemon=True)
        self._started = False

    # ---- on the event loop ---------------------------------------------------------------------

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def add(self, face: int, label: str) -> None:
        """A new tile (it says "waiting" until its first frame)."""
        self.faces.setdefault(face, FaceRenderCounters())
        self.grid.add(face, label)
        self._queue.poke()

    def remove(self, face: int) -> None:
        """The face leaves the grid; its counters stay for the report."""
        self._queue.discard(face)
        if self.grid.remove(face):
            self._queue.poke()

    def forget(self, face: int) -> None:
        """The face left for good: out of the grid, its counters dropped too."""
        self.remove(face)
        self.faces.pop(face, None)
        self._queue.forget(face)

    def refuse(self, face: int, reason: str) -> None:
        """Show the face as refused; its waiting frame is forgotten."""
        self._queue.discard(face)
        self.grid.refuse(face, reason)
        self._queue.poke()

    def offer(self, face: int, job: RenderJob) -> None:
        """The face's newest motion; one of its jobs still waiting is replaced (latest wins)."""
        self._queue.put(face, (job, time.perf_counter()))

    def dropped(self, face: int) -> int:
        """The face's jobs replaced before they were rendered."""
        return self._queue.dropped.get(face, 0)

    def pending(self) -> int:
        return self._queue.pending()

    async def stop(self) -> None:
        """End the thread (it closes the sink) and wait for it, off the loop."""
        self._queue.close()
        if self._started:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    # ---- the render thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get(timeout=0.25)
                if item is None:
                    if self._queue.closed:
                        return
                    if self._queue.take_poke():
                        self._show()
                    continue
                face, (job, offered) = item
                rendered = self._render(face, job, offered)
                self._queue.take_poke()  # shown now anyway
                if self._show() and rendered:
                    self._note_av_offset(face, job)
        finally:
            try:
                self.sink.close()
            except Exception:
                logger.exception("closing the grid's sink failed")

    def _render(self, face: int, job: RenderJob, offered: float) -> bool:
        """Render the job into its tile; whether it is there now."""
        counters = self.faces.get(face)
        if counters is None:
            return False
        t0 = time.perf_counter()
        try:
            frame = job.render(self.head)
        except Exception:
            counters.render_errors += 1
            (logger.exception if counters.render_errors == 1 else logger.debug)("rendering face %d failed", face)
            return False
        if not self.grid.set_frame(face, frame):
            return False
        now = monotonic_us()
        counters.first_frame_us = counters.first_frame_us or now
        counters.last_frame_us = now
        counters.frames_rendered += 1
        done = time.perf_counter()
        append_bounded(counters.render_ms, (done - t0) * 1e3, SAMPLES_KEPT)
        append_bounded(counters.lead_ms, (done - offered) * 1e3, SAMPLES_KEPT)
        return True

    def _note_av_offset(self, face: int, job: RenderJob) -> None:
        """The face just shown against its voice (``FaceSync`` stamped the job with when that voice is heard)."""
        counters = self.faces.get(face)
        heard_s = job.voice_heard_at() if job.voice_heard_at is not None else None
        if counters is not None and heard_s is not None:
            append_bounded(counters.av_offset_ms, (time.monotonic() - heard_s) * 1e3, SAMPLES_KEPT)

    def _show(self) -> bool:
        """The grid to the sink; whether it took it."""
        try:
            self.sink.show(self.grid.compose(), FrameInfo(self.frames_shown, monotonic_us(), 0.0))
        except Exception:
            self.sink_errors += 1
            (logger.exception if self.sink_errors == 1 else logger.debug)("the grid's sink failed")
            return False
        self.frames_shown += 1
        return True
