"""One remote participant as this one receives it: every message checked, its source state, its pose, its silence.

Janus relays all of a feed's messages on one reliable, ordered channel, so MOTION and control
messages arrive mixed: the header's type tells them apart, and each kind has its own
``ReplayGuard``, as each had its own channel (and sequence counter) at the publisher. Source
transfers go through the 1:1 call's ``SourceInbox`` (model id, checksum, sizes, every shape); a
repeat of a state already installed or refused (sent again for a late subscriber, see SOURCE_REQUEST
in PROTOCOL.md) is recognised by its transfer id and skipped unread. What a feed can make us hold
or compute is bounded: a transfer no larger than this model's biggest state, unfinished ones
dropped at ``transfer_timeout_s``, one decode at once and then ever fewer (``decode_backoff``),
the last ``TRANSFERS_REMEMBERED`` transfer ids. Poses come from the call's ``PoseState``. No
asyncio, no threads and no clock of its own: the room passes the time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from adasr.inference import SourceState
from engines.talking_head import TalkingHead
from realtime.control_link import PeerWatch
from realtime.messages import DEFAULT_MAX_MESSAGE, HEADER_SIZE, CallStats, MessageType
from realtime.motion_codec import MotionPacket
from realtime.protocol import Message, ReceiverCounters, ReplayGuard, parse_or_count
from realtime.receiver.pose import PoseCounters, PoseOptions, PoseState
from realtime.receiver.render_loop import RenderJob
from realtime.receiver.source_inbox import CompleteTransfer, SourceCounters, SourceInbox
from realtime.room.backoff import Backoff, BackoffOptions
from realtime.source_messages import SourceBegin, SourceChunk
from realtime.source_state_codec import max_payload_bytes

logger = logging.getLogger(__name__)

_TYPE_OFFSET = 3
#: Transfer ids of states installed or refused that a feed's repeats are recognised by (the newest kept).
TRANSFERS_REMEMBERED = 64


@dataclass(frozen=True)
class FaceOptions:
    """How each remote face is received."""

    pose: PoseOptions = PoseOptions()
    """Relative motion, and what a lost face shows."""
    silence_timeout_s: float = 5.0
    """A feed that sends nothing for this long leaves the grid (it sends STATS every second; Janus itself
    notices a vanished participant only after its 60 s session timeout)."""
    source_request_s: float = 2.0
    """Ask a feed for its source state again after this long without any of a transfer from it."""
    max_message: int = DEFAULT_MAX_MESSAGE
    """Largest message accepted."""
    max_source_bytes: int | None = None
    """Largest source payload accepted (None: the largest a state of this model can be)."""
    transfer_timeout_s: float = 30.0
    """A source transfer not complete this long after its SOURCE_BEGIN is dropped, its chunks freed."""
    decode_backoff: BackoffOptions = BackoffOptions()
    """How often a feed's new source states are decoded (each decode runs the encoder and a test render on the
    room's one decode thread): the first at once, then after a wait that doubles."""
    source_requests: BackoffOptions = BackoffOptions()
    """How often a feed's SOURCE_REQUESTs for our state make us upload it again."""

    def __post_init__(self) -> None:
        if not self.silence_timeout_s > 0 or not self.source_request_s > 0 or not self.transfer_timeout_s > 0:
            raise ValueError("silence_timeout_s, source_request_s and transfer_timeout_s must be > 0")


@dataclass
class FaceStats(PoseCounters, SourceCounters):
    """What came from one remote participant."""

    motion: ReceiverCounters = field(default_factory=ReceiverCounters)
    """Validation counters of its MOTION messages."""
    control: ReceiverCounters = field(default_factory=ReceiverCounters)
    """Validation counters of its other messages."""
    frames_accepted: int = 0
    """MOTION messages that passed validation and the replay guard."""
    frames_before_source: int = 0
    """Of those, frames that came before a usable source state."""
    sources_repeated: int = 0
    """Transfers of a state already installed or refused, skipped unread."""
    transfers_expired: int = 0
    """Transfers dropped unfinished at ``transfer_timeout_s``."""
    source_requests_sent: int = 0
    """SOURCE_REQUESTs we sent naming this feed."""
    peer: CallStats | None = None
    """Its latest STATS."""
    goodbye: str = ""
    """Its GOODBYE's reason and text, if it said goodbye."""


class RemoteFace:
    """One feed's messages in (``receive``), render jobs and source transfers out; see the module docstring."""

    def __init__(self, feed: int, display: str, head: TalkingHead, options: FaceOptions, now_us: int) -> None:
        self.feed = feed
        self.display = display
        self.options = options
        self.stats = FaceStats()
        self.state: SourceState | None = None
        """Its face, once a source state is installed."""
        self.refused: str = ""
        """Why its latest source state was refused ("" when none was)."""
        self.watch = PeerWatch(options.silence_timeout_s, since_us=now_us)
        """Its silence, from when its subscription came up."""
        self.silent = False
        """Out of the grid for its silence (until it speaks again)."""
        self.pose = PoseState(options.pose, self.stats)
        max_total = options.max_source_bytes or max_payload_bytes(head.backend.config)
        self.inbox = SourceInbox(head, max_total=max_total, deadline_s=0, opened_us=now_us, stats=self.stats)
        self.requests = Backoff(options.source_requests)
        """When its next SOURCE_REQUEST for our state may make us upload it."""
        self._decodes = Backoff(options.decode_backoff)
        self._num_kp = int(head.backend.config.num_kp)
        self._guards = {True: ReplayGuard(), False: ReplayGuard()}  # by "is MOTION"
        self._known_transfers: dict[int, None] = {}  # installed or refused (a repeat is skipped), oldest first
        self._skipping: int | None = None
        self._arriving: int | None = None  # transfer id of the BEGIN being assembled
        self._arriving_since_us = 0
        self._waiting: int | None = None  # transfer id of the complete payload waiting for its decode
        self._last_source_us: int | None = None
        self._last_request_us: int | None = None

    # ---- messages ------------------------------------------------------------------------------

    def receive(self, data: bytes, now_us: int) -> Message | None:
        """One message from the feed, checked and counted; None when dropped. Motion goes through ``motion``."""
        self.watch.heard(now_us)
        is_motion = len(data) >= HEADER_SIZE and data[_TYPE_OFFSET] == MessageType.MOTION
        counters = self.stats.motion if is_motion else self.stats.control
        message = parse_or_count(data, counters, self._guards[is_motion], max_message=self.options.max_message)
        if isinstance(message, MotionPacket) and message.num_kp != self._num_kp:
            counters.unaccept(f"MOTION with K={message.num_kp} keypoints, this model has {self._num_kp}")
            return None
        return message

    def motion(self, message: MotionPacket, now_us: int) -> RenderJob | None:
        """The render job for an accepted MOTION, or None (no face yet, refused, a held frame)."""
        self.stats.frames_accepted += 1
        if self.state is None:
            self.stats.frames_before_source += 1
            return None
        pose = self.pose.step(message.seq, message.vector, message.face_lost, now_us, message.face_ratios)
        if pose is None:
            return None
        return RenderJob(message.seq, message.timestamp_us, pose, self.state, now_us)

    def source(self, message: SourceBegin | SourceChunk, now_us: int) -> bool:
        """One message of a source transfer; True when a payload waits for its decode (``take``)."""
        self._last_source_us = now_us
        if isinstance(message, SourceBegin):
            if message.transfer_id in self._known_transfers:
                self._skipping = message.transfer_id
                self.stats.sources_repeated += 1
                return False
            self._skipping, self._arriving, self._arriving_since_us = None, message.transfer_id, now_us
        elif message.transfer_id == self._skipping:
            return False
        errors = self.stats.source_errors
        complete = self.inbox.feed(message)
        if self.stats.source_errors > errors:  # refused (another model, checksum, size): shown, not asked again
            self._refuse(message.transfer_id, self.stats.last_source_error)
        if complete:  # from now on a repeat of it is skipped, even while it still waits for its decode
            self._waiting = self._arriving
            self._remember(message.transfer_id)
        return complete

    def expire(self, now_us: int) -> None:
        """Drop a transfer still unfinished ``transfer_timeout_s`` after its SOURCE_BEGIN."""
        if self.inbox.receiving and now_us - self._arriving_since_us > self.options.transfer_timeout_s * 1e6:
            self.inbox.abandon()
            self.stats.transfers_expired += 1
            logger.warning("feed %d: a source transfer unfinished after %g s was dropped", self.feed,
                           self.options.transfer_timeout_s)

    def decode_due(self, now_us: int) -> bool:
        """Whether a complete transfer waits and this feed's decode budget allows decoding it now."""
        return self.inbox.waiting and self._decodes.ready(now_us)

    def take(self, now_us: int) -> tuple[int | None, CompleteTransfer] | None:
        """The newest complete transfer waiting for its decode, with its transfer id; None when none waits or this
        feed must wait for its next decode (``decode_due`` says when)."""
        if not self.inbox.waiting or not self._decodes.allow(now_us):
            return None
        transfer = self.inbox.take()
        return None if transfer is None else (self._waiting, transfer)

    def installed(self, transfer_id: int | None, state: SourceState, payload_bytes: int, kind: str,
                  decode_s: float) -> None:
        """Its decoded state passed every check: render from it (a new reference pose at the next motion)."""
        self.state, self.refused = state, ""
        self.pose.new_source(state)
        self.inbox.installed(payload_bytes=payload_bytes, kind=kind, decode_s=decode_s)
        if transfer_id is not None:
            self._remember(transfer_id)

    def decode_refused(self, transfer_id: int | None, reason: str) -> None:
        """Its decoded state failed a check (shapes, values, the encoder)."""
        self.inbox.refuse(reason)
        self._refuse(transfer_id, reason)

    def _refuse(self, transfer_id: int | None, reason: str) -> None:
        if self.state is None:  # a face already shown keeps showing; a face never shown is shown as refused
            self.refused = reason
        if transfer_id is not None:
            self._remember(transfer_id)

    def _remember(self, transfer_id: int) -> None:
        self._known_transfers.pop(transfer_id, None)
        self._known_transfers[transfer_id] = None
        if len(self._known_transfers) > TRANSFERS_REMEMBERED:
            del self._known_transfers[next(iter(self._known_transfers))]

    # ---- liveness and requests -------------------------------------------------------------------

    def wants_source(self, now_us: int) -> bool:
        """Whether to ask it for its source state now: none usable, none refused, nothing of a transfer arriving
        lately, and no request of ours lately."""
        if self.state is not None or self.refused:
            return False
        period_us = self.options.source_request_s * 1e6
        recent = [t for t in (self._last_source_us, self._last_request_us) if t is not None and now_us - t < period_us]
        return not recent

    def requested(self, now_us: int) -> None:
        """We just sent a SOURCE_REQUEST naming it."""
        self._last_request_us = now_us
        self.stats.source_requests_sent += 1
