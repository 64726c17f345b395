"""One peer's end of the reliable channel: numbered messages out, checked messages in, and liveness.

Both peers need the same plumbing on the control channel, so both hold a ``ControlLink``:

* **sequence numbers**: one counter per channel and sender (PROTOCOL.md), shared by every message
  the peer sends there (STATS, GOODBYE, RESET_REFERENCE, a source transfer's block of messages);
* **checked receipts**: every incoming message through ``parse_or_count`` and the channel's
  ``ReplayGuard``, counted in ``counters``;
* **keepalive**: STATS every ``keepalive_s``, which the other side's peer timeout relies on; a peer
  that sends voice (``announce_clock``) sends CLOCK with it, its wall clock next to its monotonic one,
  which is what the other side's lip sync rests on;
* **peer timeout**: a peer silent for longer than ``peer_timeout_s`` has vanished (``PeerWatch``,
  clock-free so that it is tested without sleeping); ``on_vanished`` says what that means to this peer;
* **goodbye**: GOODBYE with a reason, and a bounded wait until what was sent has left.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from realtime.clock import monotonic_us
from realtime.messages import DEFAULT_MAX_MESSAGE, SEQ_MODULUS, CallStats, GoodbyeReason
from realtime.protocol import (Message, ReceiverCounters, ReplayGuard, encode_clock, encode_goodbye, encode_stats,
                               parse_or_count)
from realtime.tasks import PeerTasks
from realtime.transport import Channel

#: Longest pause between two looks at the peer's silence.
WATCH_PERIOD_S = 0.25


class PeerWatch:
    """When the peer was last heard, and whether its silence has outlasted ``timeout_s`` (0: never).

    Before the peer is first heard there is nothing to measure a silence from: ``since_us`` starts
    the watch at once (a receiver expects its sender from the start), None waits for the first message.
    Times are passed in (µs on one monotonic clock), so the rules are tested without a clock.
    """

    def __init__(self, timeout_s: float, since_us: int | None = None) -> None:
        if timeout_s < 0:
            raise ValueError(f"timeout_s must be ≥ 0, got {timeout_s}")
        self.timeout_s = timeout_s
        self.last_heard_us = since_us
        """When the peer was last heard (or the watch started); None: not yet watched."""

    def heard(self, now_us: int) -> None:
        """The peer said something."""
        self.last_heard_us = now_us

    def silent_s(self, now_us: int) -> float | None:
        """Seconds since the peer was last heard; None while not watched."""
        return None if self.last_heard_us is None else (now_us - self.last_heard_us) / 1e6

    def vanished(self, now_us: int) -> bool:
        """The peer has been silent for longer than the timeout."""
        silent = self.silent_s(now_us)
        return bool(self.timeout_s) and silent is not None and silent > self.timeout_s


@dataclass(frozen=True)
class LinkOptions:
    """How one peer keeps its control channel alive and watches the other end."""

    keepalive_s: float = 1.0
    """STATS every this many seconds (0: never; a peer with a peer timeout then takes us for gone)."""
    peer_timeout_s: float = 5.0
    """The other end silent for this long has vanished (0: wait forever)."""
    watch_from_start: bool = False
    """Watch the peer's silence from ``start`` (True), or only once it was first heard (False)."""
    max_message: int = DEFAULT_MAX_MESSAGE
    """Largest message accepted."""
    announce_clock: bool = False
    """Send CLOCK at ``start`` and with every keepalive (the sender of a call with voice)."""

    def __post_init__(self) -> None:
        if self.keepalive_s < 0 or self.peer_timeout_s < 0:
            raise ValueError("keepalive_s and peer_timeout_s must be ≥ 0")


class ControlLink:
    """The control channel as one peer uses it (see the module docstring). Call everything on the loop."""

    def __init__(self, channel: Channel | None, options: LinkOptions, *, local_stats: Callable[[], CallStats],
                 on_vanished: Callable[[float], None], counters: ReceiverCounters | None = None,
                 clock: Callable[[], int] = monotonic_us) -> None:
        self.channel = channel
        """Where messages go (None: nowhere, e.g. a receiver fed by a test)."""
        self.options = options
        self.counters = counters if counters is not None else ReceiverCounters()
        """Validation counters of what arrived."""
        self.watch = PeerWatch(options.peer_timeout_s)
        self._local_stats = local_stats
        self._on_vanished = on_vanished
        self._clock = clock
        self._guard = ReplayGuard()
        self._next_seq = 0
        self._tasks = PeerTasks()
        self._started = False

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the keepalive and the watch on the peer (once; later calls do nothing)."""
        if self._started:
            return
        self._started = True
        if self.options.watch_from_start:
            self.watch.heard(self._clock())
        if self.options.announce_clock:
            self.send_clock()
        if self.channel is not None and self.options.keepalive_s > 0:
            self._tasks.spawn(self._keepalive(), "adasr-keepalive")
        if self.options.peer_timeout_s > 0:
            self._tasks.spawn(self._watch_peer(), "adasr-peer-watch")

    async def stop(self) -> None:
        """Stop the keepalive and the watch, and wait until both have ended (sending still works)."""
        await self._tasks.stop()

    # ---- incoming ----------------------------------------------------------------------------

    def heard(self) -> None:
        """The peer said something, on any channel."""
        self.watch.heard(self._clock())

    def receive(self, data: object) -> Message | None:
        """A message from the peer on this channel: checked, counted, and returned unless dropped."""
        self.heard()
        return parse_or_count(data, self.counters, self._guard, max_message=self.options.max_message)

    # ---- outgoing ----------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether messages can be sent now."""
        return self.channel is not None and self.channel.readyState == "open"

    @property
    def next_seq(self) -> int:
        """The sequence number the next message sent here takes (``reserve`` takes it)."""
        return self._next_seq

    def reserve(self, count: int = 1) -> int:
        """The first of ``count`` consecutive sequence numbers, taken for messages about to be sent."""
        first = self._next_seq
        self._next_seq = (first + count) % SEQ_MODULUS
        return first

    def send(self, data: bytes) -> None:
        """Send an encoded message (numbered with ``reserve``); fails as the channel does when it is not open."""
        if self.channel is None:
            raise ConnectionError("this peer has no control channel")
        self.channel.send(data)

    def send_stats(self) -> None:
        """This peer's counters to the other end, now (also the keepalive's message); nothing when closed."""
        if self.is_open:
            self.send(encode_stats(self.reserve(), self._clock(), self._local_stats()))

    def send_clock(self) -> None:
        """CLOCK: this peer's wall clock read together with its monotonic one; nothing when closed."""
        if self.is_open:
            self.send(encode_clock(self.reserve(), self._clock(), time.time_ns() // 1000))

    def send_goodbye(self, reason: GoodbyeReason = GoodbyeReason.NORMAL, text: str = "") -> None:
        """Hang up: GOODBYE with a reason; nothing when the channel is already closed."""
        if self.is_open:
            self.send(encode_goodbye(self.reserve(), self._clock(), reason, text))

    async def wait_sent(self, below: int = 0, timeout_s: float | None = None) -> bool:
        """Wait until at most ``below`` bytes wait to be sent, the channel closes, or ``timeout_s`` passes
        (None: no limit); False on the timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.is_open and self.channel is not None and self.channel.bufferedAmount > below:
            if deadline is not None and time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    # ---- tasks -------------------------------------------------------------------------------

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.options.keepalive_s)
            if self.options.announce_clock:
                self.send_clock()
            self.send_stats()

    async def _watch_peer(self) -> None:
        """Call ``on_vanished`` once, when the peer has been silent for longer than its timeout."""
        period_s = min(WATCH_PERIOD_S, self.options.peer_timeout_s / 4)
        while True:
            await asyncio.sleep(period_s)
            now = self._clock()
            if self.watch.vanished(now):
                silent = self.watch.silent_s(now)
                assert silent is not None
                self._on_vanished(silent)
                return
