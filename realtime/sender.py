"""The sending peer: portrait → source state once, then camera → motion packets, paced.

Everything blocking (face tracking, the networks, reading frames, packing the state) runs on one
worker thread; the asyncio loop only moves bytes. Motion goes on the unreliable, unordered
channel, one MOTION message per captured frame; the source state, resets, statistics and the
goodbye on the reliable one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from adasr.face_cropper import FaceCrop, portrait_face
from adasr.faces import FaceTrackerConfig
from adasr.video_io import read_image
from engines.talking_head import TalkingHead
from realtime.capture import CaptureOptions, CapturedFrame
from realtime.clock import monotonic_us
from realtime.control_link import ControlLink, LinkOptions
from realtime.messages import (DEFAULT_MAX_MESSAGE, SEQ_MODULUS, CallStats, Goodbye, GoodbyeReason, StatsMessage,
                               encode_reset_reference)
from realtime.motion_codec import MotionFlags, encode_motion_message
from realtime.motion_pipeline import MotionSample
from realtime.motion_stream import MotionStream
from realtime.peer_text import escaped
from realtime.render_rate import RenderRateFollower
from realtime.smoothing import SmoothingOptions
from realtime.stats import SAMPLES_KEPT, append_bounded
from realtime.source_messages import CHUNK_OVERHEAD, SourceKind, split_source
from realtime.source_payload import Compression, Quantization
from realtime.source_state_codec import encode_image, encode_state, wire_model_id
from realtime.transport import Channel

if TYPE_CHECKING:
    from realtime.receiver import ReceiverStats

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceOptions:
    """The portrait and how it travels."""

    portrait: Path
    """Portrait image file."""
    send_image: bool = False
    """Send the portrait crop instead of the feature volume (far fewer bytes; the receiver runs the encoder)."""
    quantization: Quantization = "fp16"
    """Feature-volume quantisation: fp16 (default), int8 or fp32."""
    compression: Compression = "zlib"
    """Payload compression: zlib (default), lzma or none."""
    crop: bool = True
    """Face-crop the portrait with the tracker (False: it already is a square face crop)."""


@dataclass(frozen=True)
class SenderOptions:
    """Everything the sender does, apart from which connection it uses."""

    capture: CaptureOptions
    """Where frames come from and at what rate."""
    source: SourceOptions
    """The portrait."""
    smoothing: SmoothingOptions = SmoothingOptions()
    """Temporal smoothing of the motion (One-Euro)."""
    crop: bool = True
    """Face-track and crop the driving frames (False: they already are square face crops)."""
    tracker: FaceTrackerConfig | None = None
    """Face tracker settings (None: the defaults)."""
    reset_at_frames: tuple[int, ...] = ()
    """Capture indices at which to reset the receiver's reference pose (scripted resets)."""
    max_message: int = DEFAULT_MAX_MESSAGE
    """Largest data-channel message; source chunks are cut to fit."""
    stats_interval_s: float = 1.0
    """How often STATS goes to the receiver; it is also the keepalive the receiver's peer timeout relies on
    (0: never, which a receiver with a peer timeout takes for a vanished sender)."""
    peer_timeout_s: float = 5.0
    """Stop streaming when the receiver, once heard, says nothing for this long (it sends STATS every second);
    0: never."""
    show_progress: bool = True
    """Progress bar while the source state uploads."""
    max_buffered_bytes: int = 1 << 20
    """Source upload flow control: wait while the control channel holds more than this unsent."""


@dataclass
class SenderStats:
    """What the sender did."""

    frames_captured: int = 0
    """Frames read from the capture source (skipped ones included)."""
    frames_skipped: int = 0
    """Frames of a file or folder skipped because the sender was late for them."""
    frames_sent: int = 0
    """MOTION messages sent."""
    face_lost_frames: int = 0
    """MOTION messages sent with FACE_LOST."""
    clamped_frames: int = 0
    """MOTION messages whose values hit a quantiser range (CLAMPED)."""
    motion_bytes: int = 0
    """Bytes of MOTION messages handed to the data channel (header included)."""
    source_state_bytes: int = 0
    """Bytes of the source payload (before chunk framing)."""
    source_wire_bytes: int = 0
    """Bytes of the SOURCE_BEGIN and SOURCE_CHUNK messages."""
    source_kind: str = ""
    """FEATURE_VOLUME or SOURCE_IMAGE."""
    source_upload_s: float = 0.0
    """Time to hand the source messages to the transport."""
    resets_sent: int = 0
    """RESET_REFERENCE messages sent."""
    track_ms: list[float] = field(default_factory=list)
    """Face tracker time per frame."""
    extract_ms: list[float] = field(default_factory=list)
    """Motion extractor time per frame."""
    sender_ms: list[float] = field(default_factory=list)
    """Capture → message handed to the data channel, per frame."""
    peer: CallStats | None = None
    """The receiver's latest STATS."""
    ice_pair_type: str | None = None
    """How the call's packets travelled: host, srflx, prflx or relay (set by ``run_sender``)."""
    wire: dict[str, float] = field(default_factory=dict)
    """What streaming cost on the wire (``realtime.wire_meter.wire_figures``; set by ``run_sender``)."""
    peer_goodbye: Goodbye | None = None
    """The receiver's GOODBYE, if it hung up."""
    peer_timed_out: bool = False
    """The receiver vanished: silent for ``peer_timeout_s`` while we streamed, or no answer to our GOODBYE
    within it."""
    send_fps: float | None = None
    """The send rate the sender lowered itself to, following what the receiver renders (None: never lowered)."""
    peer_face: ReceiverStats | None = None
    """The callee's face as this side rendered it, on a two-way call (set by ``run_sender``; None: one-way)."""

    def call_stats(self) -> CallStats:
        """The sender's side of a STATS message."""
        return CallStats(frames_captured=self.frames_captured, frames_sent=self.frames_sent,
                         face_lost_frames=self.face_lost_frames)


def locate_portrait(path: Path, size: int, crop: bool,
                    tracker_config: FaceTrackerConfig | None = None) -> tuple[np.ndarray, FaceCrop]:
    """The portrait image and the size×size face crop the source encoder sees, with its box.

    The box is the tracker's face crop, or (``crop=False``: the image already is a square face crop)
    its centre square. The local webcam needs the image and the box too, to paste the rendered face
    back into the portrait's own framing.
    """
    image = read_image(path)
    return image, portrait_face(image, size, crop, tracker_config, f"the portrait {path}", "--no-source-crop")


def portrait_crop(path: Path, size: int, crop: bool, tracker_config: FaceTrackerConfig | None = None) -> FaceCrop:
    """The portrait as the source encoder wants it: the tracker's square face crop at the model's size, with the
    landmarks its expression vector is measured from."""
    return locate_portrait(path, size, crop, tracker_config)[1]


SampleHook = Callable[[int, CapturedFrame, MotionSample], None]


class Sender:
    """One call's sending side over two channels (see ``realtime.transport.CallChannels``)."""

    def __init__(self, head: TalkingHead, options: SenderOptions, motion: Channel, control: Channel,
                 *, on_sample: SampleHook | None = None) -> None:
        self.head = head
        self.options = options
        self.motion = motion
        self.on_sample = on_sample
        """Called on the loop after each MOTION is sent: (seq, frame, sample); the demo keeps the crops."""
        self.stats = SenderStats()
        self.finished = asyncio.Event()
        """Set when streaming ended (source exhausted, stop(), or the receiver hung up)."""
        self.link = ControlLink(control, LinkOptions(keepalive_s=options.stats_interval_s,
                                                     peer_timeout_s=options.peer_timeout_s, announce_clock=True),
                                local_stats=self.stats.call_stats, on_vanished=self._receiver_vanished)
        """The reliable channel: source, resets, STATS as keepalive with CLOCK (the receiver's lip sync puts the
        motion timestamps on the voice's clock with it), GOODBYE, and the watch on the receiver (from the first
        message it sends)."""
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="adasr-sender")
        self._motion_seq = 0
        self._stopping = False
        self._reset_requested = False
        self._stream: MotionStream | None = None
        self._answered = asyncio.Event()
        self._goodbye_sent = False
        self._rate: RenderRateFollower | None = None
        self._source: tuple[bytes, SourceKind] | None = None

    # ---- source ------------------------------------------------------------------------------

    def _build_source_payload(self) -> tuple[bytes, SourceKind]:
        opts = self.options.source
        face = portrait_crop(opts.portrait, self.head.size, opts.crop, self.options.tracker)
        if opts.send_image:
            return encode_image(face.crop, face.landmarks, compression=opts.compression), SourceKind.SOURCE_IMAGE
        state = self.head.prepare_source(face.crop, face.landmarks)
        payload = encode_state(state, self.head.backend.config, quantization=opts.quantization,
                               compression=opts.compression)
        return payload, SourceKind.FEATURE_VOLUME

    async def send_source(self) -> None:
        """Encode the portrait (worker thread, the first time) and upload it in chunks on the reliable channel."""
        loop = asyncio.get_running_loop()
        self.link.start()  # encoding takes seconds on a CPU: the receiver must hear from us meanwhile
        if self._source is None:  # encoded once: a group call sends it again to each late subscriber
            self._source = await loop.run_in_executor(self._pool, self._build_source_payload)
        payload, kind = self._source
        messages = split_source(payload, wire_model_id(self.head), kind, self.options.max_message,
                                first_seq=self.link.next_seq, timestamp_us=monotonic_us())
        self.link.reserve(len(messages))
        self.stats.source_state_bytes, self.stats.source_kind = len(payload), kind.name
        logger.info("source state: %s, %d bytes in %d messages", kind.name, len(payload), len(messages))
        start = time.perf_counter()
        with tqdm(total=len(payload), unit="B", unit_scale=True, desc="source state",
                  disable=not self.options.show_progress, leave=False) as bar:
            for index, message in enumerate(messages):
                await self.link.wait_sent(below=self.options.max_buffered_bytes)
                self.link.send(message)
                self.stats.source_wire_bytes += len(message)
                if index:
                    bar.update(len(message) - CHUNK_OVERHEAD)  # a chunk's data
            await self.link.wait_sent()  # handed to SCTP: the upload time includes the transmission
        self.stats.source_upload_s = time.perf_counter() - start

    # ---- motion ------------------------------------------------------------------------------

    async def stream(self) -> SenderStats:
        """Capture, extract and send motion until the source ends, ``stop()``, or the receiver leaves."""
        opts = self.options
        stream = self._stream = MotionStream(self.head, opts.capture, self._pool, smoothing=opts.smoothing,
                                             tracker=opts.tracker, crop=opts.crop)
        fps = await stream.open()
        self._rate = RenderRateFollower(fps)
        logger.info("streaming motion at %.1f fps", fps)
        self.link.start()
        try:
            while not self._stopping:
                item = await stream.next()
                self.stats.frames_captured, self.stats.frames_skipped = stream.frames_read, stream.frames_skipped
                if item is None:
                    break
                if not self._send_frame(*item):
                    break
        finally:
            await stream.close()
            await self.link.stop()
            self.finished.set()
        return self.stats

    def _send_frame(self, frame: CapturedFrame, sample: MotionSample) -> bool:
        """Send one MOTION (preceded by a RESET_REFERENCE when one is due); False once the channel is gone."""
        if self.motion.readyState != "open":
            logger.warning("motion channel is %s: stopping", self.motion.readyState)
            return False
        seq = self._motion_seq
        if self._reset_requested or frame.index in self.options.reset_at_frames:
            self._reset_requested = False
            self.link.send(encode_reset_reference(self.link.reserve(), monotonic_us(), seq))
            self.stats.resets_sent += 1
            logger.info("reference pose reset from motion %d", seq)
        data, flags = encode_motion_message(seq, frame.timestamp_us, sample.vector, sample.flags,
                                           face_ratios=sample.face_ratios)
        self.motion.send(data)
        self._motion_seq = (seq + 1) % SEQ_MODULUS
        s = self.stats
        s.frames_sent += 1
        s.motion_bytes += len(data)
        s.face_lost_frames += bool(sample.flags & MotionFlags.FACE_LOST)
        s.clamped_frames += bool(flags & MotionFlags.CLAMPED)
        append_bounded(s.track_ms, sample.track_ms, SAMPLES_KEPT)
        if not sample.flags & MotionFlags.FACE_LOST:
            append_bounded(s.extract_ms, sample.extract_ms, SAMPLES_KEPT)
        append_bounded(s.sender_ms, (monotonic_us() - frame.timestamp_us) / 1e3, SAMPLES_KEPT)
        if self.on_sample is not None:
            self.on_sample(seq, frame, sample)
        return True

    # ---- control -----------------------------------------------------------------------------

    def request_reset(self) -> None:
        """Make the receiver take the next frame's pose as its new reference (call on the loop)."""
        self._reset_requested = True

    def stop(self) -> None:
        """End streaming after the frame in progress (call on the loop)."""
        self._stopping = True
        if self._stream is not None:
            self._stream.stop()

    async def goodbye(self, reason: GoodbyeReason = GoodbyeReason.NORMAL, text: str = "") -> None:
        """Hang up: the final STATS and GOODBYE on the reliable channel, then wait (up to 1 s) until they have left."""
        if not self.link.is_open:
            return
        self.link.send_stats()
        self.link.send_goodbye(reason, text)
        self._goodbye_sent = True
        await self.link.wait_sent(timeout_s=1.0)

    async def wait_answer(self) -> bool:
        """After ``goodbye``: wait for the receiver's GOODBYE, which follows its final STATS. A receiver that does
        not answer within ``peer_timeout_s`` (3 s when that is 0) has vanished (``peer_timed_out``); False then."""
        if self.stats.peer_goodbye is not None or self.stats.peer_timed_out:
            return self.stats.peer_goodbye is not None
        timeout_s = self.options.peer_timeout_s or 3.0
        try:
            await asyncio.wait_for(self._answered.wait(), timeout_s)
        except asyncio.TimeoutError:
            logger.warning("the receiver did not answer the goodbye within %.1f s: it vanished", timeout_s)
            self.stats.peer_timed_out = True
            return False
        return True

    def on_control(self, data: object) -> None:
        """A message from the receiver on the reliable channel (STATS, GOODBYE)."""
        message = self.link.receive(data)
        if isinstance(message, StatsMessage):
            self.stats.peer = message.stats
            self._follow_render_rate(message.stats)
        elif isinstance(message, Goodbye):
            self.stats.peer_goodbye = message
            self._answered.set()
            if not self._goodbye_sent:
                logger.warning("the receiver hung up (%s)%s", message.reason.name,
                               f": {escaped(message.text)}" if message.text else "")
            self.stop()
        elif message is not None:
            logger.debug("ignoring %s from the receiver", type(message).__name__)

    def _follow_render_rate(self, peer: CallStats) -> None:
        """Send no faster than the receiver renders: frames beyond that are dropped there (latest wins), after
        costing this side a capture and a motion extraction each."""
        follower, stream = self._rate, self._stream
        if follower is None or stream is None or self._stopping:
            return
        rate = follower.update(monotonic_us(), peer)
        if rate is None:
            return
        if self.stats.send_fps is None:
            logger.info("the receiver renders %.1f fps and drops the rest: sending at that rate instead of %.1f fps",
                        rate, follower.ceiling_fps)
        else:
            logger.debug("following the receiver's render rate: sending at %.1f fps", rate)
        self.stats.send_fps = rate
        stream.limit_rate(None if rate >= follower.ceiling_fps else rate)

    def _receiver_vanished(self, silent_s: float) -> None:
        if self._stopping:
            return
        logger.warning("the receiver vanished: no message for %.1f s; stopping", silent_s)
        self.stats.peer_timed_out = True
        self.stop()

    async def close(self) -> None:
        """Stop the keepalive and the watch, and release the worker thread (after ``stream`` returned)."""
        await self.link.stop()
        await asyncio.get_running_loop().run_in_executor(None, functools.partial(self._pool.shutdown, wait=True))
