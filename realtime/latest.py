"""A single-slot, latest-wins hand-over between the network and the renderer.

DESIGN.md: a frame never waits behind an older one. A queue would let a slow renderer fall
further and further behind the call; this slot holds one item, and a new item replaces the one
that was not taken yet (and is counted as dropped). The asyncio side puts, a worker thread takes.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class ClosableHandOver:
    """The shutdown half of a thread hand-over (this slot, the room's ``FaceQueue``): a condition
    variable that ``get`` waits on, and ``close``, which wakes every waiting ``get`` for good."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._closed = False

    def close(self) -> None:
        """Wake every waiting ``get``; what still waits can be taken, then ``get`` returns None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed


class LatestSlot(ClosableHandOver, Generic[T]):
    """Thread-safe slot of capacity one where ``put`` overwrites; ``get`` blocks until there is an item."""

    def __init__(self) -> None:
        super().__init__()
        self._item: T | None = None
        self._has_item = False
        self.replaced = 0
        """Items overwritten before anyone took them (stale frames dropped)."""
        self.taken = 0
        """Items handed to a consumer."""

    def put(self, item: T) -> T | None:
        """Store ``item``; return the unconsumed item it replaced, if any (never blocks)."""
        with self._cond:
            displaced = self._item if self._has_item else None
            if self._has_item:
                self.replaced += 1
            self._item, self._has_item = item, True
            self._cond.notify()
            return displaced

    def get(self, timeout: float | None = None) -> T | None:
        """Take the newest item, waiting up to ``timeout`` s; None on timeout or once closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._has_item or self._closed, timeout):
                return None
            if not self._has_item:
                return None
            item, self._item, self._has_item = self._item, None, False
            self.taken += 1
            return item

    def pending(self) -> bool:
        """Whether an item waits to be taken."""
        with self._cond:
            return self._has_item
