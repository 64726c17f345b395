"""The receiving peer: rebuild the source state, render only the newest motion, hand frames to a sink.

Messages arrive on the asyncio loop and are validated there (cheap); rendering runs on one
worker thread fed through a ``LatestSlot``, so the loop never waits for the renderer and the
renderer never works through a backlog: a motion that arrives while the previous one is still
waiting replaces it. Decoding a source state (decompression, the encoder for an image, a test
render) also runs off the loop, one at a time (a newer complete transfer replaces one still waiting),
on the call's own decode thread: ``stop`` cancels what waits there and waits for what runs, so no
decode outlives its call or overlaps the next one. A bad source state is refused with a logged
reason and the call goes on; the sender can send another, until ``source_timeout_s`` after the call
opened: a peer that never delivers a usable state does not hold the receiver's one call slot.

A bad network is expected, not exceptional: lost and late MOTION packets are counted and skipped
(latest wins); a gap in motion longer than ``motion_gap_s`` holds the last pose and is reported
(``ReceiverStats.motion_stalled``, a log line); a sender that says nothing at all for
``peer_timeout_s`` (it sends STATS every second) has vanished, and the call ends with that reason
(``ReceiverStats.end_reason``), so the caller can accept the next one. While the sender's tracker
has lost the face (FACE_LOST), the receiver holds the last frame or eases to the neutral pose.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from adasr.keypoints import Motion
from adasr.pipeline import SourceState, TalkingHead
from realtime.clock import monotonic_us
from realtime.errors import ChecksumMismatch, ModelMismatch, OversizedMessage, ProtocolError
from realtime.latest import LatestSlot
from realtime.messages import (DEFAULT_MAX_MESSAGE, SEQ_MODULUS, CallStats, Goodbye, GoodbyeReason, ResetReference,
                               StatsMessage)
from realtime.motion_codec import MotionPacket
from realtime.peer_text import escaped
from realtime.protocol import ReceiverCounters, ReplayGuard, encode_goodbye, encode_stats, parse_or_count
from realtime.sinks import FrameInfo, NullSink, Sink, draw_overlay
from realtime.source_messages import DEFAULT_MAX_SOURCE_BYTES, SourceAssembler, SourceBegin, SourceChunk, SourceKind
from realtime.source_payload import decode_state, wire_model_id
from realtime.stats import append_bounded, percentile
from realtime.transport import Channel

logger = logging.getLogger(__name__)

#: What the receiver shows while the sender has lost the face (see ``ReceiverOptions.face_lost``).
FaceLostPolicy = Literal["hold", "neutral"]


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
    """A gap in motion longer than this is reported (``ReceiverStats.motion_stalled``, a warning); the last pose holds."""
    peer_timeout_s: float = 5.0
    """No message at all from the sender for this long ends the call as vanished (0: wait forever). The sender
    sends STATS every second, so silence means the process, its machine or the network is gone."""
    source_timeout_s: float = 60.0
    """No usable source state this long after the call opened ends the call (0: wait forever). A sender uploads
    it first thing (seconds even on a slow link), so a peer that never does is holding the call slot."""

    def __post_init__(self) -> None:
        if self.face_lost not in ("hold", "neutral"):
            raise ValueError(f"face_lost must be 'hold' or 'neutral', got {self.face_lost!r}")
        if self.neutral_ease_s < 0 or self.motion_gap_s <= 0 or self.peer_timeout_s < 0 or self.source_timeout_s < 0:
            raise ValueError("neutral_ease_s, peer_timeout_s and source_timeout_s must be ≥ 0 and motion_gap_s > 0")


@dataclass
class ReceiverStats:
    """What the receiver did. ``frames_accepted`` = rendered + dropped + face_lost + before_source + render_errors + pending.

    The per-frame timing lists keep the most recent ``SAMPLES_KEPT`` values, so a long call's memory stays flat.
    """

    motion: ReceiverCounters = field(default_factory=ReceiverCounters)
    """Validation counters of the motion channel."""
    control: ReceiverCounters = field(default_factory=ReceiverCounters)
    """Validation counters of the reliable channel."""
    frames_accepted: int = 0
    """MOTION packets that passed validation and the replay guard."""
    frames_rendered: int = 0
    """Frames rendered and handed to the sink."""
    frames_dropped: int = 0
    """Accepted frames replaced by a newer one before the renderer took them (latest wins)."""
    frames_face_lost: int = 0
    """Accepted frames flagged FACE_LOST and not rendered (the last frame holds, or the ease to neutral is done)."""
    frames_eased: int = 0
    """Accepted FACE_LOST frames rendered on the way to the neutral pose (``face_lost="neutral"``)."""
    face_lost: bool = False
    """The sender's face is lost right now."""
    face_lost_events: int = 0
    """Times the sender lost the face."""
    motion_stalled: bool = False
    """No motion for longer than ``motion_gap_s`` right now: the last pose holds."""
    motion_gaps: int = 0
    """Gaps in motion longer than ``motion_gap_s``."""
    longest_gap_s: float = 0.0
    """Longest time between two accepted MOTION packets."""
    frames_before_source: int = 0
    """Accepted frames that came before any usable source state."""
    render_errors: int = 0
    """Frames whose rendering raised."""
    sources_accepted: int = 0
    """Source states installed."""
    sources_superseded: int = 0
    """Complete transfers never decoded because a newer one arrived while another was being decoded."""
    source_errors: int = 0
    """Source transfers refused (other model, checksum, undecodable, unusable)."""
    last_source_error: str = ""
    """Why the last source transfer was refused."""
    source_chunks_ignored: int = 0
    """Chunks dropped: of a refused transfer, or inconsistent ones (the transfer goes on)."""
    source_state_bytes: int = 0
    """Payload bytes of the installed source state."""
    source_kind: str = ""
    """FEATURE_VOLUME or SOURCE_IMAGE."""
    source_decode_s: float = 0.0
    """Time to decode and check the installed state (encoder included for an image)."""
    references_set: int = 0
    """Times a reference pose was taken (first motion, and after each reset)."""
    render_ms: list[float] = field(default_factory=list)
    """Renderer time per frame (keypoints + network)."""
    e2e_ms: list[float] = field(default_factory=list)
    """Capture (sender) → frame ready for the sink, per rendered frame (meaningful when both clocks are one)."""
    queue_ms: list[float] = field(default_factory=list)
    """Arrival → render start, per rendered frame."""
    sink_ms: list[float] = field(default_factory=list)
    """Time the sink took per frame (writing a file, showing a window)."""
    arrival_us: dict[int, int] = field(default_factory=dict)
    """Arrival time of recent MOTION packets by sequence number (bounded), for latency breakdowns."""
    peer: CallStats | None = None
    """The sender's latest STATS."""
    goodbye: Goodbye | None = None
    """The sender's GOODBYE."""
    end_reason: str = ""
    """Why the call ended on this side (the sender hung up, vanished, the channel closed...)."""

    def call_stats(self) -> CallStats:
        """The receiver's side of a STATS message."""
        latency = percentile(self.e2e_ms[-30:], 50)
        return CallStats(packets_received=self.motion.received,
                         packets_rejected=self.motion.received - self.motion.accepted,
                         frames_rendered=self.frames_rendered, frames_dropped=self.frames_dropped,
                         render_latency_us=int(latency * 1000) if latency is not None else 0)


@dataclass(frozen=True)
class _RenderJob:
    packet: MotionPacket
    reference: np.ndarray | None
    state: SourceState
    arrival_us: int


_ARRIVALS_KEPT = 4096
#: Source refusals logged as errors before the rest go to debug (``ReceiverStats.source_errors`` counts them all).
_LOUD_REFUSALS = 3
#: Name prefix of the call's source-decode thread.
DECODE_THREAD = "adasr-source-decode"
#: Per-frame timing samples kept in ``ReceiverStats`` lists: ten minutes at 30 fps.
SAMPLES_KEPT = 18_000


class Receiver:
    """One call's receiving side. Feed it with ``on_motion`` / ``on_control`` (on the loop)."""

    def __init__(self, head: TalkingHead, options: ReceiverOptions = ReceiverOptions(), sink: Sink | None = None,
                 control: Channel | None = None) -> None:
        self.head = head
        self.options = options
        self.sink: Sink = sink or NullSink()
        self.control = control
        """Where STATS goes back to the sender (None: nowhere)."""
        self.stats = ReceiverStats()
        self.state: SourceState | None = None
        self.source_ready = asyncio.Event()
        """Set once a source state is installed."""
        self.finished = asyncio.Event()
        """Set when the call ends on this side (``finish``: GOODBYE, a vanished sender, ``stop``...; see ``stats.end_reason``)."""
        self._assembler = SourceAssembler(wire_model_id(head), max_total=options.max_source_bytes)
        self._motion_guard = ReplayGuard()
        self._control_guard = ReplayGuard()
        self._slot: LatestSlot[_RenderJob] = LatestSlot()
        self._num_kp = int(head.backend.config.num_kp)
        self._reference: np.ndarray | None = None
        self._reset_from: int | None = None
        self._last_vector: np.ndarray | None = None  # last motion handed to the renderer (the pose on screen)
        self._lost_since_us = 0
        self._eased = False  # the ease to neutral reached its end for this loss
        self._last_motion_us: int | None = None
        self._last_heard_us = self._started_us = monotonic_us()
        self._refused_transfer: int | None = None
        self._pending_source: tuple[bytes, SourceKind] | None = None
        self._installing = False
        self._control_seq = 0
        self._thread = threading.Thread(target=self._render_loop, name="adasr-render", daemon=True)
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix=DECODE_THREAD)
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start the render thread, the periodic STATS and the liveness watch (call on the loop)."""
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._last_heard_us = self._started_us = monotonic_us()
        self._thread.start()
        if self.control is not None and self.options.stats_interval_s > 0:
            self._spawn(self._stats_loop())
        self._spawn(self._watch_loop())

    def finish(self, reason: str) -> None:
        """End the call on this side (idempotent: the first reason is the one kept and reported)."""
        if not self.stats.end_reason:
            self.stats.end_reason = reason
        self.finished.set()

    # ---- motion (loop thread) ----------------------------------------------------------------

    def on_motion(self, data: object) -> None:
        """A message from the motion channel: validate, then offer it to the renderer (latest wins)."""
        now = monotonic_us()
        self._last_heard_us = now
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
        self._note_motion(now)
        stats.arrival_us[message.seq] = now
        if len(stats.arrival_us) > _ARRIVALS_KEPT:
            stats.arrival_us.pop(next(iter(stats.arrival_us)))
        if self.state is None:
            stats.frames_before_source += 1
            return
        if message.face_lost:
            self._on_face_lost(message, now)  # a lost face is never a reference
            return
        if stats.face_lost:
            stats.face_lost, self._eased = False, False
            logger.info("the sender's face is back (motion %d)", message.seq)
        if self._reset_from is not None and (message.seq - self._reset_from) % SEQ_MODULUS < SEQ_MODULUS // 2:
            self._reference, self._reset_from = None, None
        if self._reference is None:
            self._reference = message.vector
            stats.references_set += 1
        self._last_vector = message.vector
        self._hand(message, now)

    def _hand(self, message: MotionPacket, now: int) -> None:
        reference = self._reference if self.options.relative else None
        assert self.state is not None
        if self._slot.put(_RenderJob(message, reference, self.state, now)) is not None:
            self.stats.frames_dropped += 1

    def _unaccept_motion(self, why: str) -> None:
        """A message that decoded but cannot be used here: counted as malformed, not accepted."""
        counters = self.stats.motion
        counters.malformed += 1
        counters.accepted -= 1
        counters.last_error = f"dropped {why}"
        (logger.warning if counters.malformed == 1 else logger.debug)("dropped %s", why)

    def _note_motion(self, now: int) -> None:
        """Gap bookkeeping: a gap the watch loop reported ends here; one it missed is counted now."""
        s = self.stats
        if self._last_motion_us is not None:
            gap_s = (now - self._last_motion_us) / 1e6
            s.longest_gap_s = max(s.longest_gap_s, gap_s)
            if gap_s > self.options.motion_gap_s:
                if not s.motion_stalled:
                    s.motion_gaps += 1
                logger.info("motion resumed after a %.2f s gap", gap_s)
        s.motion_stalled = False
        self._last_motion_us = now

    def _on_face_lost(self, message: MotionPacket, now: int) -> None:
        """Hold the last frame, or ease from the pose on screen to the neutral pose (``options.face_lost``)."""
        s = self.stats
        neutral = self.options.face_lost == "neutral"
        if not s.face_lost:
            s.face_lost, self._eased = True, False
            s.face_lost_events += 1
            self._lost_since_us = now
            logger.info("the sender lost the face: %s", "easing to the neutral pose" if neutral else "holding the last pose")
        target = self._neutral_vector()
        if not neutral or self._eased or self._last_vector is None or target is None:
            s.frames_face_lost += 1
            return
        ease_us = self.options.neutral_ease_s * 1e6
        alpha = min(1.0, (now - self._lost_since_us) / ease_us) if ease_us > 0 else 1.0
        if alpha <= 0.0:  # the first lost frame: nothing moved yet, nothing to render
            s.frames_face_lost += 1
            return
        self._eased = alpha >= 1.0
        vector = (self._last_vector + (target - self._last_vector) * alpha).astype(np.float32)
        s.frames_eased += 1
        self._hand(dataclasses.replace(message, vector=vector), now)

    def _neutral_vector(self) -> np.ndarray | None:
        """The motion that renders the portrait's own pose: the reference (relative) or the source's motion."""
        if self.options.relative:
            return self._reference
        return None if self.state is None else self.state.motion.to_vector()

    # ---- control (loop thread) ---------------------------------------------------------------

    def on_control(self, data: object) -> None:
        """A message from the reliable channel: source transfer, reset, stats, goodbye."""
        self._last_heard_us = monotonic_us()
        message = parse_or_count(data, self.stats.control, self._control_guard, max_message=self.options.max_message)
        if message is None:
            return
        if isinstance(message, (SourceBegin, SourceChunk)):
            self._feed_source(message)
        elif isinstance(message, ResetReference):
            self._reset_from = message.from_motion_seq
            logger.info("reference pose reset from motion %d", message.from_motion_seq)
        elif isinstance(message, StatsMessage):
            self.stats.peer = message.stats
        elif isinstance(message, Goodbye):
            self.stats.goodbye = message
            log = logger.info if message.reason == 0 else logger.warning
            said = f": {escaped(message.text)}" if message.text else ""  # the peer's words: never raw in a log
            log("the sender hung up (%s)%s", message.reason.name, said)
            self.finish(f"the sender hung up ({message.reason.name}{said})")
        else:
            logger.debug("ignoring %s on the reliable channel", type(message).__name__)

    def _feed_source(self, message: SourceBegin | SourceChunk) -> None:
        """One refusal per transfer: a refused BEGIN's chunks are dropped quietly; a bad chunk alone does not end it."""
        if isinstance(message, SourceChunk) and message.transfer_id == self._refused_transfer:
            self.stats.source_chunks_ignored += 1
            return
        try:
            payload = self._assembler.feed(message)
        except (ModelMismatch, ChecksumMismatch, OversizedMessage) as exc:
            self._refused_transfer = message.transfer_id
            self._refuse_source(str(exc))
            return
        except ProtocolError as exc:
            if isinstance(message, SourceBegin):
                self._refused_transfer = message.transfer_id
                self._refuse_source(str(exc))
            else:
                self.stats.source_chunks_ignored += 1
                log = logger.warning if self.stats.source_chunks_ignored == 1 else logger.debug
                log("dropped a source chunk: %s", exc)
            return
        if isinstance(message, SourceBegin):
            self._refused_transfer = None
            logger.info("receiving a source state: %s, %d bytes in %d chunks", message.kind.name,
                        message.total_length, message.chunk_count)
        if payload is not None:
            begin = self._assembler.completed
            assert begin is not None
            if self._pending_source is not None:
                self.stats.sources_superseded += 1
            self._pending_source = (payload, begin.kind)
            if not self._installing:
                self._installing = True
                self._spawn(self._install_pending())

    def _refuse_source(self, reason: str) -> None:
        """Count and say why; past the first few, refusals are logged at debug level (a flood must not flood the log)."""
        self.stats.source_errors += 1
        self.stats.last_source_error = reason
        log = logger.error if self.stats.source_errors <= _LOUD_REFUSALS else logger.debug
        log("refused the source state: %s (the call stays up, waiting for a usable one)", reason)

    async def _install_pending(self) -> None:
        """Decode complete transfers one at a time, the newest first: a flood of them cannot pile up work."""
        try:
            while self._pending_source is not None:
                payload, kind = self._pending_source
                self._pending_source = None
                await self._install_source(payload, kind)
        finally:
            self._installing = False

    async def _install_source(self, payload: bytes, kind: SourceKind) -> None:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            state = await loop.run_in_executor(self._decoder, decode_state, payload, kind, self.head)
        except ProtocolError as exc:
            self._refuse_source(str(exc))
            return
        except Exception as exc:  # the encoder failed on a state that passed every check: refuse it, keep the call
            logger.exception("decoding a source state failed")
            self._refuse_source(f"this receiver could not use the source state ({type(exc).__name__}: {exc})")
            return
        self.install_state(state, payload_bytes=len(payload), kind=kind.name, decode_s=time.perf_counter() - start)

    def install_state(self, state: SourceState, *, payload_bytes: int = 0, kind: str = "local",
                      decode_s: float = 0.0) -> None:
        """Render from ``state`` from now on: a received one after its checks, or the local webcam's own.

        A new face takes a new reference pose at the next motion.
        """
        self.state = state
        self._reference, self._reset_from, self._last_vector = None, None, None
        s = self.stats
        s.sources_accepted += 1
        s.source_state_bytes, s.source_kind, s.source_decode_s = payload_bytes, kind, decode_s
        logger.info("source state installed (%s, %d bytes, %.2f s to decode)", kind, payload_bytes, decode_s)
        self.source_ready.set()

    # ---- rendering (worker thread) -----------------------------------------------------------

    def _render_loop(self) -> None:
        try:
            while True:
                job = self._slot.get(timeout=0.25)
                if job is None:
                    if self._slot.closed:
                        return
                    continue
                self._render(job)
        finally:
            try:
                self.sink.close()
            except Exception:
                logger.exception("closing the sink failed")

    def _render(self, job: _RenderJob) -> None:
        s = self.stats
        start_us = monotonic_us()
        t0 = time.perf_counter()
        try:
            motion = Motion.from_vector(job.packet.vector)
            reference = Motion.from_vector(job.reference) if job.reference is not None else None
            frame = self.head.render_image(job.state, motion, reference)
        except Exception:
            s.render_errors += 1
            log = logger.exception if s.render_errors == 1 else logger.debug
            log("rendering motion %d failed", job.packet.seq)
            return
        render_ms = (time.perf_counter() - t0) * 1e3
        if self.options.overlay:
            frame = draw_overlay(frame, self._overlay_lines(render_ms))
        ready_us = monotonic_us()
        t1 = time.perf_counter()
        try:
            self.sink.show(frame, FrameInfo(job.packet.seq, job.packet.timestamp_us, render_ms))
        except Exception:
            s.render_errors += 1
            logger.exception("the sink failed on frame %d", job.packet.seq)
            return
        append_bounded(s.sink_ms, (time.perf_counter() - t1) * 1e3, SAMPLES_KEPT)
        if getattr(self.sink, "closed_by_user", False) and self._loop is not None and not self.finished.is_set():
            self._loop.call_soon_threadsafe(self.finish, "the preview window was closed")  # hang up
        append_bounded(s.render_ms, render_ms, SAMPLES_KEPT)
        append_bounded(s.queue_ms, (start_us - job.arrival_us) / 1e3, SAMPLES_KEPT)
        append_bounded(s.e2e_ms, (ready_us - job.packet.timestamp_us) / 1e3, SAMPLES_KEPT)
        s.frames_rendered += 1

    def _overlay_lines(self, render_ms: float) -> list[str]:
        s = self.stats
        e2e = percentile(s.e2e_ms[-30:], 50)
        return [f"render {render_ms:.0f} ms" + (f"  e2e {e2e:.0f} ms" if e2e is not None else ""),
                f"frames {s.frames_rendered}  dropped {s.frames_dropped}  bad {s.motion.dropped}"]

    # ---- lifecycle ---------------------------------------------------------------------------

    def pending(self) -> bool:
        """Whether a frame waits for the renderer."""
        return self._slot.pending()

    async def drain(self, timeout_s: float = 2.0) -> None:
        """Wait until the renderer has taken and finished every frame handed to it, or the timeout."""
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            s = self.stats
            handed = s.frames_accepted - s.frames_before_source - s.frames_face_lost - s.frames_dropped
            if handed <= s.frames_rendered + s.render_errors:
                return
            await asyncio.sleep(0.01)

    async def stop(self) -> ReceiverStats:
        """Stop rendering (frames still waiting are rendered first), close the sink, return the stats."""
        self._slot.close()
        for task in list(self._tasks):
            task.cancel()
        loop = asyncio.get_running_loop()
        if self._started:
            await loop.run_in_executor(None, self._thread.join)
        # a queued decode is dropped; a running one is waited for, so this call's work ends with it
        await loop.run_in_executor(None, functools.partial(self._decoder.shutdown, wait=True, cancel_futures=True))
        self.finish("stopped")
        return self.stats

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def goodbye(self, reason: GoodbyeReason = GoodbyeReason.NORMAL, text: str = "") -> None:
        """Hang up from the receiving side (the sender stops streaming)."""
        if self.control is not None and self.control.readyState == "open":
            seq, self._control_seq = self._control_seq, (self._control_seq + 1) % SEQ_MODULUS
            self.control.send(encode_goodbye(seq, monotonic_us(), reason, text))

    def send_stats(self) -> None:
        """Send the receiver's counters to the sender now (also done every ``stats_interval_s``)."""
        if self.control is not None and self.control.readyState == "open":
            seq, self._control_seq = self._control_seq, (self._control_seq + 1) % SEQ_MODULUS
            self.control.send(encode_stats(seq, monotonic_us(), self.stats.call_stats()))

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.stats_interval_s)
            self.send_stats()

    async def _watch_loop(self) -> None:
        """Report gaps in motion (the last pose holds) and end the call when the sender has gone silent."""
        opts = self.options
        period_s = min(0.25, opts.motion_gap_s / 2, opts.peer_timeout_s / 4 if opts.peer_timeout_s else 0.25)
        while not self.finished.is_set():
            await asyncio.sleep(period_s)
            now, s = monotonic_us(), self.stats
            if (self._last_motion_us is not None and not s.motion_stalled
                    and now - self._last_motion_us > opts.motion_gap_s * 1e6):
                s.motion_stalled = True
                s.motion_gaps += 1
                logger.warning("no motion from the sender for %.1f s: holding the last pose", opts.motion_gap_s)
            waited_s = (now - self._started_us) / 1e6
            if opts.source_timeout_s and self.state is None and waited_s > opts.source_timeout_s:
                reason = f"no usable source state within {opts.source_timeout_s:g} s"
                if s.last_source_error:
                    reason += f" (last refused: {s.last_source_error})"
                logger.warning("%s; ending the call", reason)
                self.finish(reason)
                return
            silent_s = (now - self._last_heard_us) / 1e6
            if opts.peer_timeout_s and silent_s > opts.peer_timeout_s:
                logger.warning("the sender vanished: no message for %.1f s (process killed, machine or network gone); "
                               "ending the call", silent_s)
                self.finish(f"the sender vanished (no message for {silent_s:.1f} s)")
                return
