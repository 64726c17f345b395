"""Lip sync: show each face when the voice captured at the same instant is heard.

A face's motion is stamped on the sender's monotonic clock; its voice's RTCP sender reports carry
the sender's wall clock. The sender's CLOCK messages (PROTOCOL.md) read both clocks together, so
``LipSync`` turns a motion timestamp into the sender's wall clock, and the audio playout
(``realtime.audio.playout.AudioPlayout.show_at``) turns that into the local instant its voice plays.

A data-channel message arrives ~85 ms before its voice (aiortc's audio jitter buffer); faces shown
on arrival would lead. ``DelayLine`` holds each face until its voice is due, less the render time,
never longer than ``max_delay_s``. Latest wins still holds: the renderer's slot keeps only the
newest job, and a held face that a newer one has overtaken is dropped, not shown. Without voice, or
before the first sender report maps it (0.5–1.5 s into a call), faces are shown on arrival.

Nothing here is tied to a 1:1 call: a group call keeps one ``LipSync`` per remote participant.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from realtime.messages import SEQ_MODULUS, ClockMessage

T = TypeVar("T")

#: ``show_at(captured_wall_s)`` → local monotonic seconds when sound captured then is heard (None: unknown yet).
ShowAt = Callable[[float], "float | None"]


@dataclass(frozen=True)
class LipSyncOptions:
    """How far the receiver goes to show a face with its voice."""

    max_delay_s: float = 0.3
    """Longest a face is held for its voice; beyond it the face is shown that late (an audio path that slow is
    a fault, not something to make the picture wait for)."""

    def __post_init__(self) -> None:
        if self.max_delay_s < 0:
            raise ValueError(f"max_delay_s must be ≥ 0, got {self.max_delay_s}")


class LipSync:
    """One remote sender's faces on its voice's clock."""

    def __init__(self, show_at: ShowAt, options: LipSyncOptions = LipSyncOptions()) -> None:
        self.show_at = show_at
        self.options = options
        self._wall_minus_monotonic_us: int | None = None
        self.clocks = 0
        """CLOCK messages received."""

    def note_clock(self, message: ClockMessage) -> None:
        """The sender's CLOCK: its wall clock next to its monotonic one (the latest pair wins: wall clocks slew)."""
        self._wall_minus_monotonic_us = message.wall_minus_monotonic_us
        self.clocks += 1

    def captured_at(self, timestamp_us: int) -> float | None:
        """The sender's wall clock (Unix seconds) at a motion timestamp; None before its first CLOCK."""
        offset = self._wall_minus_monotonic_us
        return None if offset is None else (timestamp_us + offset) / 1e6

    def due(self, timestamp_us: int) -> float | None:
        """Local monotonic seconds when the voice captured with this face is heard; None while unknown."""
        captured = self.captured_at(timestamp_us)
        return None if captured is None else self.show_at(captured)

    def delay_s(self, timestamp_us: int, now_s: float, lead_s: float = 0.0) -> float:
        """How long to hold a face that takes ``lead_s`` to render so that it shows with its voice, in
        [0, max_delay_s]; 0 while the voice's timing is unknown (shown on arrival)."""
        due = self.due(timestamp_us)
        if due is None:
            return 0.0
        return min(max(due - lead_s - now_s, 0.0), self.options.max_delay_s)


def is_newer(seq: int, than: int) -> bool:
    """Serial-number order of u32 sequence numbers (RFC 1982), as ``ReplayGuard`` applies it."""
    return 0 < (seq - than) % SEQ_MODULUS < SEQ_MODULUS // 2


class DelayLine(Generic[T]):
    """Items held on the event loop until their time, then delivered; one overtaken by a newer delivered item is
    dropped (``on_superseded``) instead: a late face never replaces a newer one."""

    def __init__(self, deliver: Callable[[T], None], on_superseded: Callable[[T], None]) -> None:
        self.deliver = deliver
        self.on_superseded = on_superseded
        # keyed by our own count, not the peer's sequence number: a peer can repeat a number while one is held
        self._held: dict[int, tuple[asyncio.TimerHandle, int, T]] = {}
        self._puts = itertools.count()
        self._newest: int | None = None

    def put(self, seq: int, item: T, delay_s: float) -> None:
        """Deliver ``item`` (numbered ``seq``) after ``delay_s`` (at once when ≤ 0). Call on the loop."""
        if delay_s <= 0:
            self._release(seq, item)
            return
        key = next(self._puts)
        handle = asyncio.get_running_loop().call_later(delay_s, self._due, key)
        self._held[key] = (handle, seq, item)

    def _due(self, key: int) -> None:
        _, seq, item = self._held.pop(key)
        self._release(seq, item)

    def _release(self, seq: int, item: T) -> None:
        if self._newest is not None and not is_newer(seq, self._newest):
            self.on_superseded(item)
            return
        self._newest = seq
        self.deliver(item)

    def pending(self) -> int:
        """Items still held."""
        return len(self._held)

    def clear(self) -> None:
        """Drop what is held (each counted through ``on_superseded``): the call is ending."""
        held, self._held = self._held, {}
        for handle, _, item in held.values():
            handle.cancel()
            self.on_superseded(item)
