"""The newest frame of each face, handed to the one renderer round-robin: N faces share it, none builds a backlog.

With N faces a CPU renders each at 1/N of its rate. A queue per face would grow whenever the
renderer is slower than the senders; a single latest-wins slot would starve every face but the
busiest. Here each face holds at most one job (a newer one replaces it: ``dropped``), and faces
with a job wait in line in the order they got it: a face just rendered goes to the back. So each
face gets its share, renders its newest motion, and the work waiting is at most one job per face.
The event loop puts, the render thread takes; ``poke`` wakes the renderer when the grid changed
without a new frame (a face came, left or was refused).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

from realtime.latest import ClosableHandOver

T = TypeVar("T")


class FaceQueue(ClosableHandOver, Generic[T]):
    """At most one job per face; ``get`` takes the face that has waited longest. Thread-safe."""

    def __init__(self) -> None:
        super().__init__()
        self._jobs: OrderedDict[int, T] = OrderedDict()
        self._poked = False
        self.dropped: dict[int, int] = {}
        """Jobs replaced by a newer one of the same face before the renderer took them, per face."""

    def put(self, face: int, job: T) -> bool:
        """Hand over ``face``'s newest job; True when it replaced one still waiting (which keeps its turn)."""
        with self._cond:
            replaced = face in self._jobs
            if replaced:
                self.dropped[face] = self.dropped.get(face, 0) + 1
            self._jobs[face] = job
            self._cond.notify()
            return replaced

    def discard(self, face: int) -> None:
        """Forget ``face``'s waiting job (it left the grid)."""
        with self._cond:
            self._jobs.pop(face, None)

    def forget(self, face: int) -> None:
        """Forget ``face`` altogether: its waiting job and its count of dropped jobs (it left for good)."""
        with self._cond:
            self._jobs.pop(face, None)
            self.dropped.pop(face, None)

    def poke(self) -> None:
        """Wake the renderer to show the grid again (it changed without a new frame)."""
        with self._cond:
            self._poked = True
            self._cond.notify()

    def take_poke(self) -> bool:
        """Whether the grid changed since the last look (and forget it)."""
        with self._cond:
            poked, self._poked = self._poked, False
            return poked

    def get(self, timeout: float | None = None) -> tuple[int, T] | None:
        """The longest-waiting face and its newest job; None after ``timeout``, on a poke, or once closed and empty."""
        with self._cond:
            self._cond.wait_for(lambda: self._jobs or self._poked or self._closed, timeout)
            if not self._jobs:
                return None
            return self._jobs.popitem(last=False)

    def pending(self) -> int:
        """Faces with a job waiting."""
        with self._cond:
            return len(self._jobs)
