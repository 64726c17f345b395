"""The one clock of a call: microseconds on the monotonic clock.

Capture timestamps in the wire header, render times and display times all come from here, so
latencies are differences on one clock. On Linux ``time.monotonic_ns`` is CLOCK_MONOTONIC, shared
by every process of the machine: two processes on one host (``adasr send`` and ``adasr receive``
over loopback) can subtract each other's timestamps; peers on different hosts cannot.
"""

from __future__ import annotations

import time


def monotonic_us() -> int:
    """Now, in integer microseconds on the monotonic clock (fits the header's u64)."""
    return time.monotonic_ns() // 1000
