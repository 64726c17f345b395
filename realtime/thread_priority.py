"""A worker thread that yields the CPU to the threads it feeds: a higher nice value for the calling thread alone.

In ``adasr cam`` the tracker and the motion extractor of frame n+1 run while frame n renders, on two cores that
the renderer's two threads could fill by themselves. At equal priority the tracking thread takes its share while
the renderer works, finishes early and its motion then waits, and the renderer's own serial stretches leave a core
idle. A few nice steps behind, the renderer goes first and the tracking fills the gaps: on this project's 2-core CPU the
motion's wait fell from ~6.5 to ~2.5 ms and the webcam's rate rose by about 3 % (benchmarks/RESULTS.md, issue #27).

Linux keeps a nice value per thread, inherited by the threads it starts (mediapipe's, a video decoder's); other
systems have no per-thread nice, and there this does nothing.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

logger = logging.getLogger(__name__)

#: Nice steps the webcam's tracking thread takes behind the renderer (CFS weights 1024 : 423, about 70 : 30 of a
#: contended core; 10 steps starved the tracker until the renderer waited for it).
BEHIND_THE_RENDERER = 4
_MAX_NICE = 19


def lower_this_thread(steps: int = BEHIND_THE_RENDERER) -> bool:
    """Raise the calling thread's nice value by ``steps`` (at most 19); False where the system has no per-thread
    nice or refuses."""
    if not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(_MAX_NICE, os.getpriority(os.PRIO_PROCESS, tid) + steps))
    except OSError as exc:
        logger.debug("could not lower thread %d's priority: %s", tid, exc)
        return False
    return True
