"""How often a room peer may make us do something costly: the first time at once, then ever less often.

A peer that asks for our source state, or sends a new one for us to decode, is honoured at once;
asking again is honoured only after an interval that doubles each time it is honoured (up to a
ceiling). An honest peer asks once or twice per call and never notices; one that asks in a loop
gets a handful of answers in its first minute and one per ``max_s`` after that.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffOptions:
    """The intervals of a ``Backoff``."""

    first_s: float = 2.0
    """Wait after the first time before the second."""
    max_s: float = 60.0
    """Longest wait between two times (the doubling stops there)."""

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.max_s:
            raise ValueError(f"need 0 < first_s ≤ max_s, got {self.first_s} and {self.max_s}")


class Backoff:
    """``allow(now)`` says whether the action may happen now, and if so counts it."""

    def __init__(self, options: BackoffOptions = BackoffOptions()) -> None:
        self.options = options
        self._next_us: int | None = None
        self._interval_s = options.first_s

    def ready(self, now_us: int) -> bool:
        """Whether ``allow`` would say yes now (nothing counted)."""
        return self._next_us is None or now_us >= self._next_us

    def allow(self, now_us: int) -> bool:
        """True (and the next one is pushed further off) when the action may happen now."""
        if not self.ready(now_us):
            return False
        self._next_us = now_us + int(self._interval_s * 1e6)
        self._interval_s = min(2 * self._interval_s, self.options.max_s)
        return True
