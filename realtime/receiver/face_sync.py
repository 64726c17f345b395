"""One sender's faces held for its voice: each render job released when the voice captured with it plays.

What the 1:1 receiver and each face of a group call share. ``realtime.lip_sync`` has the clocks
(``LipSync``: a motion timestamp → when its voice is heard) and the ``DelayLine`` that holds jobs
(latest wins); here a job is stamped with that instant (for the renderer's ``av_offset_ms``), held
until it less the usual lead (from delivery to the frame ready: the render, and where one renderer
serves several faces the wait for it), and the slack its voice leaves it is recorded for the voice's
own delay to follow (``realtime.audio.lip_sync_hold``). Without voice a job goes to the renderer at once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace

from realtime.lip_sync import DelayLine, LipSync
from realtime.receiver.render_loop import RenderJob
from realtime.stats import SAMPLES_KEPT, append_bounded, percentile

#: Recent leads whose median is what a face is expected to take.
_RENDERS_CONSIDERED = 30


class FaceSync:
    """``schedule`` each job on the loop; ``deliver`` gets it when its voice plays (at once without ``lip_sync``)."""

    def __init__(self, lip_sync: LipSync | None, deliver: Callable[[RenderJob], None],
                 on_superseded: Callable[[RenderJob], None], lead_ms: list[float], slack_ms: list[float]) -> None:
        self.lip_sync = lip_sync
        self.deliver = deliver
        self.lead_ms = lead_ms
        """This face's recent times from delivery to the frame ready (the renderer appends them)."""
        self.slack_ms = slack_ms
        """Per face scheduled on its voice: how long it could wait for its voice once rendered (negative: late)."""
        self._held = DelayLine(deliver, on_superseded)

    def schedule(self, job: RenderJob) -> None:
        """To ``deliver`` now, or, with voice, when its voice plays less the usual lead (latest wins)."""
        sync = self.lip_sync
        if sync is None:
            self.deliver(job)
            return
        job = replace(job, voice_heard_at=functools.partial(sync.due, job.timestamp_us))
        lead_ms = percentile(self.lead_ms[-_RENDERS_CONSIDERED:], 50) or 0.0
        due = sync.due(job.timestamp_us)
        if due is not None:  # what the voice's delay leaves this face (the voice follows it: AdaptiveVoice)
            append_bounded(self.slack_ms, (due - lead_ms / 1e3 - job.arrival_us / 1e6) * 1e3, SAMPLES_KEPT)
        self._held.put(job.seq, job, sync.delay_s(job.timestamp_us, job.arrival_us / 1e6, lead_ms / 1e3))

    def pending(self) -> int:
        """Jobs still held for their voice."""
        return self._held.pending()

    def clear(self) -> None:
        """Drop what is held (each through ``on_superseded``)."""
        self._held.clear()
