"""A group call: join a VideoRoom, publish voice and motion once, render every other face into one grid.

``GroupCall.run`` is what ``adasr room`` runs. On the event loop only cheap work happens: messages
are checked and routed per feed (``RemoteFace``), poses handed to the one render thread
(``GridRenderer``), source states decoded on one decode thread, one at a time. Every feed's voice
plays through its own adaptive jitter buffer into one mix (``RoomVoices``: the speaker or a WAV
file), and its face is held for that voice as in a 1:1 call (``FaceSync``, on the CLOCK it sends).
A feed that leaves (Janus says so, or it says GOODBYE) or goes silent for
``FaceOptions.silence_timeout_s`` leaves the grid and the mix at once; a silent one comes back if
it speaks again. One that left is forgotten:
its face and source state freed, a short summary kept (the last ``DEPARTURES_KEPT``). Whatever one
feed sends, it costs that feed only: its requests for our state and its decodes are rate-limited
(``FaceOptions``), and a fault while the watch looks at it drops it, not the watch. The call ends
on ``stop`` (Ctrl-C, SIGTERM), after ``max_seconds``, when our capture ends, or when Janus puts us out.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from engines.talking_head import TalkingHead
from realtime.audio.mixer import MixerOptions, VoiceMixer
from realtime.audio.playout import AudioSink, DiscardSink
from realtime.audio.voice import OpusTrack, VoiceOptions, open_voice
from realtime.clock import monotonic_us
from realtime.errors import ProtocolError
from realtime.janus.participant import ParticipantOptions, RemoteFeed, RoomCallbacks, RoomParticipant
from realtime.lip_sync import LipSync
from realtime.messages import ClockMessage, Goodbye, ResetReference, SourceRequest, StatsMessage
from realtime.motion_codec import MotionPacket
from realtime.peer_text import escaped
from realtime.receiver.face_sync import FaceSync
from realtime.receiver.render_loop import RenderJob
from realtime.room.grid import Grid
from realtime.room.grid_renderer import GridRenderer
from realtime.room.publisher import Publisher
from realtime.room.remote_face import FaceOptions, RemoteFace
from realtime.room.voices import FeedVoice, RoomVoices
from realtime.sender import SenderOptions
from realtime.sinks import Sink
from realtime.source_messages import SourceBegin, SourceChunk
from realtime.stats import percentile
from realtime.tasks import PeerTasks

logger = logging.getLogger(__name__)

#: Name prefix of the group call's source-decode thread.
ROOM_DECODE_THREAD = "adasr-room-decode"
#: How often the room looks at silences, source requests and the time limit.
WATCH_PERIOD_S = 0.25
#: Departures (and the last report of each departed face) kept for the report; older ones are only counted.
DEPARTURES_KEPT = 32


@dataclass(frozen=True)
class GroupCallOptions:
    """Everything ``adasr room`` does."""

    participant: ParticipantOptions
    """Janus, the room (id, name, PIN, secret), the transport."""
    sender: SenderOptions
    """Our camera or video, our portrait, smoothing."""
    voice: VoiceOptions = field(default_factory=lambda: VoiceOptions(microphone=False))
    """Our voice: a file, the microphone, or none."""
    faces: FaceOptions = FaceOptions()
    """How remote faces are received: pose, silence timeout, source requests."""
    mix: MixerOptions = MixerOptions()
    """How the voices are mixed to the speaker or the file."""
    grid_size: tuple[int, int] | None = None
    """(width, height) of the grid picture; None: twice the model's size, square."""
    max_seconds: float = 0.0
    """Leave after this long in the room (0: no limit)."""
    report_interval_s: float = 1.0
    """How often ``run``'s ``on_report`` gets the report while the call goes on."""


@dataclass
class _Member:
    """A remote feed and what we receive from it."""

    feed: RemoteFeed
    face: RemoteFace
    left: str = ""
    """Why it left ("" while it is in)."""
    silenced: int = 0
    """Times it left the grid for its silence."""
    silenced_after_s: float | None = None
    """The last time it did: how long it had been silent then (the timeout, plus at most the watch's period)."""
    decoding: bool = False
    sync: FaceSync | None = None
    """Its faces, held for its voice."""
    voice: FeedVoice | None = None
    """Its voice (None: its subscription carried none)."""
    superseded: int = 0
    """Its faces held for their voice that a newer one overtook (dropped)."""
    voice_ended: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when it left: its voice stops following its faces."""


Report = dict[str, Any]


class GroupCall:
    """One participant of a group call; ``await run()``, ``stop()`` from the loop (a signal handler)."""

    def __init__(self, head: TalkingHead, options: GroupCallOptions, sink: Sink,
                 audio_sink: Callable[[], AudioSink] | None = None) -> None:
        self.head = head
        self.options = options
        self.audio_sink = audio_sink or DiscardSink
        """Opens where the others' voices are played (at ``run``): the speaker, a WAV file; default nowhere."""
        width, height = options.grid_size or (2 * head.size, 2 * head.size)
        self.renderer = GridRenderer(head, sink, Grid(width, height))
        self.members: dict[int, _Member] = {}
        """The feeds in the room now (one that leaves is forgotten)."""
        self.departures: deque[dict[str, Any]] = deque(maxlen=DEPARTURES_KEPT)
        """The latest feeds that left: who, why, when (s since we joined), and the frames rendered per face then."""
        self.departures_total = 0
        """Feeds that left, all of them."""
        self._departed_faces: deque[tuple[str, dict[str, Any]]] = deque(maxlen=DEPARTURES_KEPT)
        self.end_reason = ""
        self.participant: RoomParticipant | None = None
        self.publisher: Publisher | None = None
        self.voice: OpusTrack | None = None
        self.voices: RoomVoices | None = None
        """The others' voices and their mix, from ``run``."""
        self._stop = asyncio.Event()
        self._tasks = PeerTasks()
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix=ROOM_DECODE_THREAD)
        self._started_us = monotonic_us()
        self._joined_us: int | None = None

    def stop(self, reason: str = "stopped") -> None:
        """Leave the room (idempotent: the first reason is kept)."""
        if not self.end_reason:
            self.end_reason = reason
        self._stop.set()

    # ---- the call ------------------------------------------------------------------------------

    async def run(self, on_report: Callable[[Report], None] | None = None) -> Report:
        """Join, publish, render until the call ends (module docstring), leave; the final report."""
        self._started_us = monotonic_us()
        self.voice = open_voice(self.options.voice)
        voices = self.voices = RoomVoices(VoiceMixer(self.audio_sink(), self.options.mix))
        callbacks = RoomCallbacks(feed_joined=self._joined, message=self._message, feed_left=self._left,
                                  ended=lambda reason: self.stop(f"out of the room: {reason}"),
                                  connecting=voices.connecting)
        participant = self.participant = RoomParticipant(self.options.participant, callbacks, audio=self.voice)
        publisher = self.publisher = Publisher(self.head, self.options.sender, participant)
        self.renderer.start()
        voices.start()
        try:
            await participant.join()
            self._joined_us = monotonic_us()
            self._tasks.spawn(publisher.serve_source(), "adasr-room-source")
            self._tasks.spawn(self._publish_motion(publisher), "adasr-room-motion")
            self._tasks.spawn(self._watch(on_report), "adasr-room-watch")
            await self._stop.wait()
            logger.info("leaving the room: %s", self.end_reason)
        finally:
            await self._leave()
        return self.report()

    async def _publish_motion(self, publisher: Publisher) -> None:
        await publisher.source_sent.wait()  # motion before the face is of no use to anyone
        await publisher.stream()
        self.stop("our capture ended")

    async def _leave(self) -> None:
        if self.publisher is not None:
            self.publisher.stop()
        await self._tasks.stop()
        if self.publisher is not None:
            await self.publisher.goodbye()
        if self.participant is not None:
            await self.participant.leave()
        for member in self.members.values():
            self._unsync(member)
        if self.voices is not None:
            await self.voices.stop()
        await self.renderer.stop()
        if self.publisher is not None:
            await self.publisher.close()
        if self.voice is not None:
            self.voice.stop()
        await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(self._decoder.shutdown, wait=True, cancel_futures=True))

    async def _watch(self, on_report: Callable[[Report], None] | None) -> None:
        """Silences, source requests, the time limit and the periodic report."""
        next_report = time.monotonic()
        while True:
            await asyncio.sleep(WATCH_PERIOD_S)
            now = monotonic_us()
            for member in list(self.members.values()):
                self._look_at(member, now)
            if self.voices is not None:
                self.voices.keep_only(set(self.members))
            if self.options.max_seconds and self._joined_us is not None \
                    and (now - self._joined_us) / 1e6 >= self.options.max_seconds:
                self.stop(f"{self.options.max_seconds:g} s in the room")
            if on_report is not None and time.monotonic() >= next_report:
                next_report = time.monotonic() + self.options.report_interval_s
                on_report(self.report())

    def _look_at(self, member: _Member, now: int) -> None:
        try:
            self._watch_one(member, now)
        except Exception:  # whatever this feed made go wrong costs this feed, not the watch that serves every feed
            logger.exception("feed %d failed: dropped", member.face.feed)
            self._depart(member, "dropped after a fault")

    def _watch_one(self, member: _Member, now: int) -> None:
        face = member.face
        if member.left:
            return
        face.expire(now)
        if face.decode_due(now) and not member.decoding:
            self._start_decode(member)
        if not face.silent and face.watch.vanished(now):
            face.silent = True
            member.silenced += 1
            member.silenced_after_s = face.watch.silent_s(now)
            self.renderer.remove(face.feed)
            if self.voices is not None:
                self.voices.mute(face.feed, True)
            logger.warning("%s (feed %d) is silent for %.1f s: out of the grid and the mix", escaped(face.display),
                           face.feed, face.watch.silent_s(now) or 0.0)
        # a silent feed is still asked (every ``source_request_s``): one whose own subscription to us comes up
        # late hears nothing of our first requests, and would otherwise never be asked again
        if face.wants_source(now) and self.publisher is not None:
            self.publisher.ask_for_source(face.feed)
            face.requested(now)

    # ---- what the room reports -------------------------------------------------------------------

    def _joined(self, feed: RemoteFeed) -> None:
        face = RemoteFace(feed.id, feed.display, self.head, self.options.faces, monotonic_us())
        member = self.members[feed.id] = _Member(feed, face)
        self.renderer.add(feed.id, feed.display)
        self._sync(member)
        logger.info("%s (feed %d) joined", escaped(feed.display), feed.id)
        self._look_at(self.members[feed.id], monotonic_us())  # ask for its face at once

    def _sync(self, member: _Member) -> None:
        """Hold the member's faces for its voice, and let its voice wait for its faces (as a 1:1 receiver does)."""
        feed = member.face.feed
        voice = member.voice = self.voices.voices.get(feed) if self.voices is not None else None
        slack_ms: list[float] = []

        def superseded(_: RenderJob) -> None:
            member.superseded += 1

        member.sync = FaceSync(LipSync(voice.remote.show_at) if voice is not None else None,
                               functools.partial(self.renderer.offer, feed), superseded,
                               self.renderer.faces[feed].lead_ms, slack_ms)
        if voice is not None:
            voice.remote.hold_for_faces(slack_ms, member.voice_ended)

    @staticmethod
    def _unsync(member: _Member) -> None:
        member.voice_ended.set()
        if member.sync is not None:
            member.sync.clear()

    def _left(self, feed: RemoteFeed, reason: str) -> None:
        member = self.members.get(feed.id)
        if member is not None and not member.left:
            self._depart(member, reason)

    def _depart(self, member: _Member, reason: str) -> None:
        """The feed left: summarise it for the report, then forget it (its face, source state and counters)."""
        now = monotonic_us()
        feed = member.face.feed
        member.left = reason
        self.departures_total += 1
        self.departures.append({
            "feed": feed, "display": member.face.display, "reason": reason, "at_s": self._since_join(now),
            "frames_rendered": {m.face.display: self.renderer.faces[f].frames_rendered
                                for f, m in self.members.items() if f in self.renderer.faces}})
        self._departed_faces.append((f"{member.face.display}#{feed}", self._face_report(member, now)))
        self._unsync(member)
        if self.voices is not None:
            self.voices.drop(feed)
        self.renderer.forget(feed)
        if self.members.get(feed) is member:
            del self.members[feed]

    def _message(self, feed: RemoteFeed, data: bytes) -> None:
        member = self.members.get(feed.id)
        if member is None or member.left:
            return
        face, now = member.face, monotonic_us()
        if face.silent:  # it speaks again: back in the grid and the mix
            face.silent = False
            self.renderer.add(face.feed, face.display)
            if self.voices is not None:
                self.voices.mute(face.feed, False)
            if face.refused:
                self.renderer.refuse(face.feed, face.refused)
        message = face.receive(data, now)
        if isinstance(message, MotionPacket):
            job = face.motion(message, now)
            if job is not None and member.sync is not None:
                member.sync.schedule(job)
        elif isinstance(message, (SourceBegin, SourceChunk)):
            if face.source(message, now) and not member.decoding:
                self._start_decode(member)
            if face.refused and face.state is None:
                self.renderer.refuse(face.feed, face.refused)
        elif isinstance(message, SourceRequest):
            if self.publisher is not None and self.participant is not None and message.feed == self.participant.feed_id:
                self.publisher.request_source(allowed=face.requests.allow(now))
        elif isinstance(message, StatsMessage):
            face.stats.peer = message.stats
        elif isinstance(message, ResetReference):
            face.pose.reset_from(message.from_motion_seq)
        elif isinstance(message, ClockMessage):
            if member.sync is not None and member.sync.lip_sync is not None:
                member.sync.lip_sync.note_clock(message)
        elif isinstance(message, Goodbye):
            face.stats.goodbye = f"{message.reason.name}: {escaped(message.text)}"
            self._depart(member, f"said goodbye ({face.stats.goodbye})")

    def _start_decode(self, member: _Member) -> None:
        member.decoding = True
        self._tasks.spawn(self._decode(member), f"adasr-room-decode-{member.face.feed}")

    async def _decode(self, member: _Member) -> None:
        """Decode the feed's complete transfers one at a time, the newest waiting one next, on the decode thread, as
        often as its decode budget allows (the watch starts this again when a waiting one becomes due)."""
        face, loop = member.face, asyncio.get_running_loop()
        try:
            while not member.left and (item := face.take(monotonic_us())) is not None:
                transfer_id, transfer = item
                start = time.perf_counter()
                try:
                    state = await loop.run_in_executor(self._decoder, face.inbox.decode, transfer)
                except ProtocolError as exc:
                    face.decode_refused(transfer_id, str(exc))
                    if face.refused and not member.left:
                        self.renderer.refuse(face.feed, face.refused)
                    continue
                if not member.left:
                    face.installed(transfer_id, state, len(transfer.payload), transfer.kind.name,
                                   time.perf_counter() - start)
        finally:
            member.decoding = False

    # ---- the report ------------------------------------------------------------------------------

    def _since_join(self, now_us: int) -> float | None:
        return None if self._joined_us is None else (now_us - self._joined_us) / 1e6

    def report(self) -> Report:
        """Where the call stands: us, what we published, and per remote face what came and what was rendered."""
        now = monotonic_us()
        participant, publisher = self.participant, self.publisher
        sent, received = participant.wire_bytes() if participant is not None else (0, 0)
        report: Report = {
            "display": self.options.participant.room.display, "room": self.options.participant.room.room,
            "feed_id": participant.feed_id if participant is not None else None,
            "join_s": None if self._joined_us is None else (self._joined_us - self._started_us) / 1e6,
            "in_room_s": self._since_join(now), "end_reason": self.end_reason,
            "wire_bytes_sent": sent, "wire_bytes_received": received,
            "grid_frames_shown": self.renderer.frames_shown, "render_pending": self.renderer.pending(),
            "faces_in_room": len(self.members), "departures": list(self.departures),
            "departures_total": self.departures_total,
            "faces": dict(self._departed_faces),
        }
        if publisher is not None:
            s = publisher.stats
            report["published"] = {
                "frames_captured": s.frames_captured, "frames_sent": s.frames_sent, "motion_bytes": s.motion_bytes,
                "source_state_bytes": s.source_state_bytes, "source_wire_bytes": s.source_wire_bytes,
                "source_uploads": publisher.source_uploads, "source_requests": publisher.source_requests,
                "source_requests_refused": publisher.source_requests_refused,
                "voice_frames": self.voice.frames_encoded if self.voice is not None else 0,
                "voice_payload_bytes": self.voice.payload_bytes if self.voice is not None else 0}
        if self.voices is not None:
            report["voice_mix"] = self.voices.report()
        for feed_id, member in self.members.items():
            report["faces"][f"{member.face.display}#{feed_id}"] = self._face_report(member, now)
        return report

    def _face_report(self, member: _Member, now: int) -> dict[str, Any]:
        face, feed = member.face, member.feed
        s, rendered = face.stats, self.renderer.faces.get(face.feed)
        first, last = (rendered.first_frame_us, rendered.last_frame_us) if rendered else (None, None)
        frames = rendered.frames_rendered if rendered else 0
        span_s = (last - first) / 1e6 if first is not None and last is not None else 0.0
        heard = member.voice.report() if member.voice is not None else None
        return {
            "display": face.display, "feed": face.feed, "left": member.left, "silent": face.silent,
            "silenced": member.silenced, "silenced_after_s": member.silenced_after_s, "messages": feed.messages,
            "bytes": feed.bytes,
            "audio_frames": heard["frames"] if heard is not None else feed.audio_frames, "voice": heard,
            "av_offset_ms_p50": percentile(rendered.av_offset_ms, 50) if rendered else None,
            "av_offset_ms_p95": percentile(rendered.av_offset_ms, 95) if rendered else None,
            "frames_accepted": s.frames_accepted,
            "frames_before_source": s.frames_before_source, "frames_rendered": frames,
            "frames_dropped": self.renderer.dropped(face.feed) + member.superseded,
            "frames_face_lost": s.frames_face_lost,
            "render_errors": rendered.render_errors if rendered else 0,
            "render_fps": (frames - 1) / span_s if span_s > 0 else 0.0,
            "render_ms_p50": percentile(rendered.render_ms, 50) if rendered else None,
            "first_face_s": self._since_join(first) if first is not None else None,
            "source_accepted": s.sources_accepted, "source_errors": s.source_errors, "refused": face.refused,
            "sources_repeated": s.sources_repeated, "sources_superseded": s.sources_superseded,
            "transfers_expired": s.transfers_expired, "source_requests_sent": s.source_requests_sent,
            "motion_rejected": s.motion.dropped, "control_rejected": s.control.dropped,
            "peer_frames_sent": s.peer.frames_sent if s.peer is not None else None,
        }
