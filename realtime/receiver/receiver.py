"""The receiving peer: the channels' messages routed to the parts that deal with them, on the event loop.

Validation is cheap and runs on the loop as messages arrive; everything slow runs elsewhere:
rendering on the render thread (``RenderLoop``: latest wins, the loop never waits for it), source
decoding on the call's own decode thread (one at a time, the newest waiting transfer next: ``stop``
cancels what waits there and waits for what runs, so no decode outlives its call or overlaps the next
one). The parts, each usable without asyncio:

* ``PoseState``: which pose to render (reference pose, resets, the sender's face lost);
* ``SourceInbox``: transfers → checked SourceStates, refusals, the source deadline;
* ``RenderLoop``: the render thread and the sink;
* ``MotionGapWatch``: gaps in motion (the last pose holds, and it is reported);
* ``FaceSync`` (with voice): each face held until its voice plays (``realtime.receiver.face_sync``);
* ``ControlLink`` (shared with the sender): sequence numbers, STATS as keepalive, GOODBYE, and the
  peer timeout: a sender that says nothing at all for ``peer_timeout_s`` has vanished and the call
  ends with that reason (``ReceiverStats.end_reason``), so the caller can accept the next one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from adasr.inference import SourceState
from engines.talking_head import TalkingHead
from realtime.audio.playout import PlayoutStats
from realtime.clock import monotonic_us
from realtime.control_link import ControlLink, LinkOptions
from realtime.errors import ProtocolError
from realtime.lip_sync import LipSync
from realtime.messages import (DEFAULT_MAX_MESSAGE, CallStats, ClockMessage, Goodbye, GoodbyeReason, ResetReference,
                               StatsMessage)
from realtime.motion_codec import MotionPacket
from realtime.peer_text import escaped
from realtime.protocol import ReceiverCounters, ReplayGuard, parse_or_count
from realtime.receiver.face_sync import FaceSync
from realtime.receiver.motion_gaps import GapCounters, MotionGapWatch
from realtime.receiver.pose import FaceLostPolicy, PoseCounters, PoseOptions, PoseState
from realtime.receiver.render_loop import RenderCounters, RenderJob, RenderLoop
from realtime.receiver.source_inbox import SourceCounters, SourceInbox
from realtime.sinks import NullSink, Sink
from realtime.source_messages import DEFAULT_MAX_SOURCE_BYTES, SourceBegin, SourceChunk
from realtime.stats import percentile
from realtime.tasks import PeerTasks
from realtime.transport import Channel


logger = logging.getLogger(__name__)

#: Name prefix of the call's source-decode thread.
DECODE_THREAD = "adasr-source-decode"
_ARRIVALS_KEPT = 4096


@dataclass(frozen=True)
class ReceiverOptions:
    """How the receiver renders."""

    relative: bool = True
    """Relative motion: the first motion after a (new) source, or after RESET_REFERENCE, is the reference pose."""
    overlay: bool = False
    """Draw live statistics on the frames."""
    max_message: int = DEFAULT_MAX_MESSAGE
    """Largest message accepted."""
    max_source_bytes: int = DEFAULT_MAX_SOURCE_BYTES
    """Largest source payload accepted."""
    stats_interval_s: float = 1.0
    """How often STATS goes back to the sender (0: never)."""
    face_lost: FaceLostPolicy = "hold"
    """While the sender has lost the face: ``hold`` the last frame, or ease to ``neutral`` (the portrait's own
    pose: the reference pose in relative mode, the source's motion in absolute mode) over ``neutral_ease_s``."""
    neutral_ease_s: float = 0.5
    """Duration of the ease to the neutral pose (0: jump to it)."""
    motion_gap_s: float = 0.5
    """A gap in motion longer than this is reported (``ReceiverStats.motion_stalled``, a warning); the last pose
    holds."""
    peer_timeout_s: float = 5.0
    """No message at all from the sender for this long ends the call as vanished (0: wait forever). The sender
    sends STATS every second, so silence means the process, its machine or the network is gone."""
    source_timeout_s: float = 60.0
    """No usable source state this long after the call opened ends the call (0: wait forever). A sender uploads
    it first thing (seconds even on a slow link), so a peer that never does is holding the call slot."""

    def __post_init__(self) -> None:
        if self.motion_gap_s <= 0 or self.source_timeout_s < 0:
            raise ValueError("source_timeout_s must be ≥ 0 and motion_gap_s > 0")
        _ = self.pose, self.link  # built now, so that their own checks (face-lost policy, ease, timeouts) run now

    @property
    def pose(self) -> PoseOptions:
        """What the pose state takes of these options."""
        return PoseOptions(self.relative, self.face_lost, self.neutral_ease_s)

    @property
    def link(self) -> LinkOptions:
        """What the control link takes: STATS as keepalive, and the sender watched from the start."""
        return LinkOptions(keepalive_s=self.stats_interval_s, peer_timeout_s=self.peer_timeout_s,
                           watch_from_start=True, max_message=self.max_message)


class OwnFaceStats(Protocol):
    """What a receiver reports of its own face sent back on a two-way call: ``realtime.sender.SenderStats``, named
    by what it offers so that the receiver need not import the sender (which imports this module)."""

    frames_sent: int
    peer: CallStats | None


@dataclass
class ReceiverStats(RenderCounters, PoseCounters, GapCounters, SourceCounters):
    """What the receiver did: its parts' counters, and the channels' and the call's own.

    ``frames_accepted`` = rendered + dropped + face_lost + before_source + render_errors + pending.
    """

    motion: ReceiverCounters = field(default_factory=ReceiverCounters)
    """Validation counters of the motion channel."""
    control: ReceiverCounters = field(default_factory=ReceiverCounters)
    """Validation counters of the reliable channel."""
    frames_accepted: int = 0
    """MOTION packets that passed validation and the replay guard."""
    frames_before_source: int = 0
    """Accepted frames that came before any usable source state."""
    arrival_us: dict[int, int] = field(default_factory=dict)
    """Arrival time of recent MOTION packets by sequence number (bounded), for latency breakdowns."""
    peer: CallStats | None = None
    """The sender's latest STATS."""
    goodbye: Goodbye | None = None
    """The sender's GOODBYE."""
    end_reason: str = ""
    """Why the call ended on this side (the sender hung up, vanished, the channel closed...)."""
    ice_pair_type: str | None = None
    """How the call's packets travelled: host, srflx, prflx or relay (None: not known)."""
    voice: PlayoutStats | None = None
    """What the playout of the sender's voice did (None: the call had no voice)."""
    sync_slack_ms: list[float] = field(default_factory=list)
    """Per face scheduled on its voice: how long it could wait for its voice once rendered (negative: it will show
    late). The voice's delay follows it, so that faces keep up (``realtime.audio.lip_sync_hold``)."""
    own_face: OwnFaceStats | None = None
    """This side's own face sent back to the caller on a two-way call (the sender's ``SenderStats``; None:
    one-way)."""

    def call_stats(self) -> CallStats:
        """The receiver's side of a STATS message."""
        latency = percentile(self.e2e_ms[-30:], 50)
        return CallStats(packets_received=self.motion.received,
                         packets_rejected=self.motion.received - self.motion.accepted,
                         frames_rendered=self.frames_rendered, frames_dropped=self.frames_dropped,
                         render_latency_us=int(latency * 1000) if latency is not None else 0)


class Receiver:
    """One call's receiving side. Feed it with ``on_motion`` / ``on_control`` (on the loop)."""

    def __init__(self, head: TalkingHead, options: ReceiverOptions = ReceiverOptions(), sink: Sink | None = None,
                 control: Channel | None = None, lip_sync: LipSync | None = None) -> None:
        self.head = head
        self.lip_sync = lip_sync
        """Schedules faces against the sender's voice (None: shown on arrival)."""
        self.options = options
        self.stats = ReceiverStats()
        self.state: SourceState | None = None
        """The face rendered now (None until a source state is installed)."""
        self.source_ready = asyncio.Event()
        """Set once a source state is installed."""
        self.finished = asyncio.Event()
        """Set when the call ends on this side (``finish``: GOODBYE, a vanished sender, ``stop``...; see
        ``stats.end_reason``)."""
        stats = self.stats
        self.link = ControlLink(control, options.link, local_stats=stats.call_stats, on_vanished=self._vanished,
                                counters=stats.control)
        """Where STATS and GOODBYE go back to the sender, and the watch on its silence."""
        self.pose = PoseState(options.pose, stats)
        self.inbox = SourceInbox(head, max_total=options.max_source_bytes, deadline_s=options.source_timeout_s,
                                 opened_us=monotonic_us(), stats=stats)
        self.gaps = MotionGapWatch(options.motion_gap_s, stats)
        self.renderer = RenderLoop(head, sink or NullSink(), stats,
                                   overlay=self._overlay_lines if options.overlay else None,
                                   on_sink_closed=lambda: self.finish("the preview window was closed"))
        self._held = FaceSync(lip_sync, self.renderer.offer, self._superseded, stats.render_ms, stats.sync_slack_ms)
        self._motion_guard = ReplayGuard()
        self._num_kp = int(head.backend.config.num_kp)
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix=DECODE_THREAD)
        self._decoding = False
        self._tasks = PeerTasks()
        self._started = False

    def start(self) -> None:
        """Start the render thread, the periodic STATS and the liveness watches (call on the loop)."""
        if self._started:
            return
        self._started = True
        self.inbox.opened_us = monotonic_us()
        self.renderer.start()
        self.link.start()
        self._tasks.spawn(self._watch(), "adasr-receiver-watch")

    def finish(self, reason: str) -> None:
        """End the call on this side (idempotent: the first reason is the one kept and reported)."""
        if not self.stats.end_reason:
            self.stats.end_reason = reason
        self.finished.set()

    # ---- motion ------------------------------------------------------------------------------

    def on_motion(self, data: object) -> None:
        """A message from the motion channel: validate, then offer its pose to the renderer (latest wins)."""
        now = monotonic_us()
        self.link.heard()
        if self.finished.is_set():  # the call is over: nothing more is counted, so the final STATS hold its numbers
            return
        message = parse_or_count(data, self.stats.motion, self._motion_guard, max_message=self.options.max_message)
        if message is None:
            return
        if not isinstance(message, MotionPacket):
            self._unaccept_motion(f"a {type(message).__name__} on the motion channel")
            return
        if message.num_kp != self._num_kp:
            self._unaccept_motion(f"MOTION with K={message.num_kp} keypoints, this model has {self._num_kp}")
            return
        stats = self.stats
        stats.frames_accepted += 1
        self.gaps.arrived(now)
        stats.arrival_us[message.seq] = now
        if len(stats.arrival_us) > _ARRIVALS_KEPT:
            stats.arrival_us.pop(next(iter(stats.arrival_us)))
        if self.state is None:
            stats.frames_before_source += 1
            return
        pose = self.pose.step(message.seq, message.vector, message.face_lost, now, message.face_ratios)
        if pose is not None:
            self._schedule(RenderJob(message.seq, message.timestamp_us, pose, self.state, now))

    def _schedule(self, job: RenderJob) -> None:
        """To the renderer now, or, with voice, when its voice plays less the usual render time (latest wins)."""
        self._held.schedule(job)

    def _superseded(self, job: RenderJob) -> None:
        """A held face overtaken by a newer one: dropped, as the renderer's slot drops (latest wins)."""
        self.stats.frames_dropped += 1

    def _unaccept_motion(self, why: str) -> None:
        """A message that decoded but cannot be used here: counted as malformed, not accepted."""
        counters = self.stats.motion
        counters.unaccept(why)
        (logger.warning if counters.malformed == 1 else logger.debug)("dropped %s", why)

    # ---- control -----------------------------------------------------------------------------

    def on_control(self, data: object) -> None:
        """A message from the reliable channel: source transfer, reset, stats, goodbye."""
        message = self.link.receive(data)
        if message is None:
            return
        if isinstance(message, (SourceBegin, SourceChunk)):
            if self.inbox.feed(message) and not self._decoding:
                self._decoding = True
                self._tasks.spawn(self._decode_waiting(), "adasr-source-decode")
        elif isinstance(message, ResetReference):
            self.pose.reset_from(message.from_motion_seq)
            logger.info("reference pose reset from motion %d", message.from_motion_seq)
        elif isinstance(message, StatsMessage):
            self.stats.peer = message.stats
        elif isinstance(message, ClockMessage):
            if self.lip_sync is not None:
                self.lip_sync.note_clock(message)
        elif isinstance(message, Goodbye):
            self.stats.goodbye = message
            log = logger.info if message.reason == 0 else logger.warning
            said = f": {escaped(message.text)}" if message.text else ""  # the peer's words: never raw in a log
            log("the sender hung up (%s)%s", message.reason.name, said)
            self.finish(f"the sender hung up ({message.reason.name}{said})")
        else:
            logger.debug("ignoring %s on the reliable channel", type(message).__name__)

    async def _decode_waiting(self) -> None:
        """Decode complete transfers one at a time, the newest first: a flood of them cannot pile up work."""
        loop = asyncio.get_running_loop()
        try:
            while (transfer := self.inbox.take()) is not None:
                start = time.perf_counter()
                try:
                    state = await loop.run_in_executor(self._decoder, self.inbox.decode, transfer)
                except ProtocolError as exc:
                    self.inbox.refuse(str(exc))
                    continue
                self.install_state(state, payload_bytes=len(transfer.payload), kind=transfer.kind.name,
                                   decode_s=time.perf_counter() - start)
        finally:
            self._decoding = False

    def install_state(self, state: SourceState, *, payload_bytes: int = 0, kind: str = "local",
                      decode_s: float = 0.0) -> None:
        """Render from ``state`` from now on; a new face takes a new reference pose at the next motion."""
        self.state = state
        self.pose.new_source(state)
        self.inbox.installed(payload_bytes=payload_bytes, kind=kind, decode_s=decode_s)
        self.source_ready.set()

    # ---- liveness ----------------------------------------------------------------------------

    def _vanished(self, silent_s: float) -> None:
        logger.warning("the sender vanished: no message for %.1f s (process killed, machine or network gone); "
                       "ending the call", silent_s)
        self.finish(f"the sender vanished (no message for {silent_s:.1f} s)")

    async def _watch(self) -> None:
        """Report gaps in motion (the last pose holds) and end a call that got no usable source state in time."""
        period_s = min(0.25, self.options.motion_gap_s / 2)
        while not self.finished.is_set():
            await asyncio.sleep(period_s)
            now = monotonic_us()
            if self.gaps.check(now):
                logger.warning("no motion from the sender for %.1f s: holding the last pose", self.options.motion_gap_s)
            overdue = self.inbox.overdue(now)
            if overdue is not None:
                logger.warning("%s; ending the call", overdue)
                self.finish(overdue)
                return

    def _overlay_lines(self, render_ms: float) -> list[str]:
        s = self.stats
        e2e = percentile(s.e2e_ms[-30:], 50)
        return [f"render {render_ms:.0f} ms" + (f"  e2e {e2e:.0f} ms" if e2e is not None else ""),
                f"frames {s.frames_rendered}  dropped {s.frames_dropped}  bad {s.motion.dropped}"]

    # ---- hanging up --------------------------------------------------------------------------

    def send_stats(self) -> None:
        """Send the receiver's counters to the sender now (also done every ``stats_interval_s``)."""
        self.link.send_stats()

    def goodbye(self, reason: GoodbyeReason = GoodbyeReason.NORMAL, text: str = "") -> None:
        """Hang up from the receiving side (the sender stops streaming)."""
        self.link.send_goodbye(reason, text)

    async def drain(self, timeout_s: float = 2.0) -> None:
        """Wait until the renderer has taken and finished every frame handed to it, or the timeout."""
        deadline = time.perf_counter() + timeout_s
        while self._held.pending() and time.perf_counter() < deadline:  # held for their voice: ≤ max_delay_s
            await asyncio.sleep(0.01)
        await self.renderer.drain(max(deadline - time.perf_counter(), 0.0))

    async def stop(self) -> ReceiverStats:
        """Stop rendering (frames still waiting are rendered first), close the sink, end every task and
        thread this receiver started, and return the stats."""
        await self._tasks.stop()
        self._held.clear()
        await self.link.stop()
        await self.renderer.stop()
        # a queued decode is dropped; a running one is waited for, so this call's work ends with it
        await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(self._decoder.shutdown, wait=True, cancel_futures=True))
        self.finish("stopped")
        return self.stats
