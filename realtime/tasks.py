"""The asyncio tasks one peer starts, every one of them cancelled and awaited when the peer stops.

A task cancelled but not awaited is still pending when its owner says it has stopped: it may run
one more step against a closed channel, and the loop warns about it at shutdown. ``PeerTasks.stop``
returns only once every task has ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)


class PeerTasks:
    """The running tasks of one peer (keepalive, watches, source decodes)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """Run ``coro`` as a task of this peer (call on the loop); once stopped, nothing new starts (None)."""
        if self._stopped:
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("task %s failed", task.get_name(), exc_info=task.exception())

    async def stop(self) -> None:
        """Cancel every task still running and wait until each has ended; later ``spawn`` calls start nothing."""
        self._stopped = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
