"""RenderLoop.taken: what lets the local webcam work out frame n+1 while frame n renders, and no further."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np

from realtime.receiver.pose import Pose
from realtime.receiver.render_loop import RenderJob, RenderLoop
from realtime.sinks import NullSink


class _GatedHead:
    """Renders only once its gate opens; says when a render has started."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()

    def render_image(self, state: Any, motion: Any, reference: Any) -> np.ndarray:
        self.started.set()
        self.gate.wait(timeout=30)
        return np.zeros((8, 8, 3), np.uint8)


def _job(seq: int) -> RenderJob:
    return RenderJob(seq, 0, Pose(np.zeros(51, np.float32), None), state=None, arrival_us=0)  # type: ignore[arg-type]


def test_taken_waits_while_a_job_waits_behind_the_one_rendering() -> None:
    async def scenario() -> RenderLoop:
        head = _GatedHead()
        loop = RenderLoop(head, NullSink())  # type: ignore[arg-type]
        loop.start()
        loop.offer(_job(0))
        await loop.taken()  # the idle render thread takes it
        assert await asyncio.to_thread(head.started.wait, 30)
        loop.offer(_job(1))  # waits: frame 0 is still rendering
        waiter = asyncio.ensure_future(loop.taken())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not waiter.done()
        head.gate.set()
        await asyncio.wait_for(waiter, timeout=30)  # frame 0 done, frame 1 taken
        await loop.stop()
        return loop

    loop = asyncio.run(scenario())
    assert loop.stats.frames_rendered == 2 and loop.stats.frames_dropped == 0
