"""One participant of the Janus room test, run inside the test's network namespace; prints a JSON report.

``python -m tests.janus_peer --url URL --api-secret S --room N --pin P --name A --members A,B,C
[--leaver C] [--leave-after-phase 1] [--messages 60] [--tone-hz 400]``

It joins the room through ``RoomParticipant`` publishing a tone as its voice, and plays phases:
in each, every member still present sends ``--messages`` counted 48-byte messages (the size of a
MOTION packet) and receives every other's. A message sent before a subscriber's connection is up
is lost (Janus keeps nothing), so no one sends a phase's messages before each other member said it
hears it; and no one leaves before it got the others' messages and some of their voice, and they
said they got its own.
Who hears and got what travels as status messages (JSON), repeated every STATUS_PERIOD_S: the
peers learn it from each other, over the room itself. Phase 1 has every member; the leaver then
leaves; the others wait until the room reports it gone, then play phase 2 among themselves.

``python -m tests.janus_peer refusals --url URL --api-secret S --room N`` instead checks that Janus's
refusals arrive as JanusError with Janus's code (wrong API secret, wrong PIN, a missing room).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiortc.mediastreams import AudioStreamTrack
from av import AudioFrame

from realtime.janus.api import JanusError, JanusOptions, JanusSession
from realtime.janus.participant import ParticipantOptions, RemoteFeed, RoomCallbacks, RoomParticipant
from realtime.janus.videoroom import VIDEOROOM, RoomOptions, ensure_room, join_as_publisher
from realtime.transport import TransportOptions

#: The namespace's address (tests/janus_fixture.py): our only ICE host candidate.
ADDRESS = "198.18.0.1"
#: Counted messages: b"M", phase (u8), index (u16), zero padding to the size of a MOTION packet.
COUNTED = struct.Struct("<cBH")
COUNTED_SIZE = 48
#: How often a participant repeats its status.
STATUS_PERIOD_S = 0.1
#: Bound on each wait for the other participants (a hung room fails the run, it does not hang it).
WAIT_S = 90.0
#: Audio frames a participant must have received from each other before that one may leave.
AUDIO_FRAMES = 25
#: A received frame counts as the tone when its peak is above this (the tone's amplitude is 8000).
TONE_PEAK = 1000


class ToneTrack(AudioStreamTrack):
    """aiortc's paced silent audio track, carrying a sine tone instead: our voice, recognisable by its pitch."""

    def __init__(self, hz: float) -> None:
        super().__init__()
        self.hz = hz

    async def recv(self) -> AudioFrame:
        frame = await super().recv()
        assert isinstance(frame, AudioFrame)
        t = ((frame.pts or 0) + np.arange(frame.samples)) / frame.sample_rate
        frame.planes[0].update((8000 * np.sin(2 * np.pi * self.hz * t)).astype(np.int16).tobytes())
        return frame


@dataclass
class Heard:
    """What one participant received from one other."""

    counted: list[list[int]] = field(default_factory=lambda: [[], []])
    """Indices of the counted messages, per phase, in arrival order."""
    audio_frames: int = 0
    pitches: list[float] = field(default_factory=list)
    """Dominant frequency (Hz) of each received audio frame that carries the tone."""


class Peer:
    """The test's logic around one RoomParticipant."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.name: str = args.name
        self.heard: dict[str, Heard] = {}
        self.hearing: set[str] = set()
        """Members a message of has arrived from: their messages reach us."""
        self.status: dict[str, dict[str, Any]] = {}
        self.joined: list[str] = []
        self.left: dict[str, str] = {}
        self.changed = asyncio.Event()
        callbacks = RoomCallbacks(feed_joined=self.on_joined, message=self.on_message,
                                  audio_frame=self.on_audio, feed_left=self.on_left)
        options = ParticipantOptions(
            JanusOptions(args.url, api_secret=args.api_secret, plain_http=True),  # the test namespace is ours alone
            RoomOptions(args.room, self.name, pin=args.pin, secret=args.room_secret),
            TransportOptions(ice_hosts=(ADDRESS,)))
        self.room = RoomParticipant(options, callbacks, audio=ToneTrack(args.tone_hz))

    # -- what the room reports -----------------------------------------------------------------------------

    def _notify(self) -> None:
        self.changed.set()

    def on_joined(self, feed: RemoteFeed) -> None:
        self.joined.append(feed.display)
        self.heard.setdefault(feed.display, Heard())
        self._notify()

    def on_left(self, feed: RemoteFeed, reason: str) -> None:
        self.left[feed.display] = reason
        self._notify()

    def on_message(self, feed: RemoteFeed, data: bytes) -> None:
        heard = self.heard.setdefault(feed.display, Heard())
        self.hearing.add(feed.display)
        if data[:1] == b"M":
            _, phase, index = COUNTED.unpack_from(data)
            heard.counted[phase - 1].append(index)
        elif data[:1] == b"S":
            self.status[feed.display] = json.loads(data[1:])
        self._notify()

    def on_audio(self, feed: RemoteFeed, frame: AudioFrame) -> None:
        heard = self.heard.setdefault(feed.display, Heard())
        heard.audio_frames += 1
        samples = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0].astype(np.float64)
        if np.abs(samples).max() > TONE_PEAK:
            spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
            heard.pitches.append(float(np.argmax(spectrum) * frame.sample_rate / len(samples)))
        if heard.audio_frames == AUDIO_FRAMES:
            self._notify()

    # -- what we tell the others ---------------------------------------------------------------------------

    async def send_status(self) -> None:
        """Repeat our status for as long as we are in the room: who we hear, what we got from whom."""
        while True:
            status = {"hear": sorted(self.hearing),
                      "got": {name: [len(h.counted[0]), len(h.counted[1])] for name, h in self.heard.items()},
                      "audio": {name: h.audio_frames for name, h in self.heard.items()}}
            self.room.send(b"S" + json.dumps(status).encode())
            await asyncio.sleep(STATUS_PERIOD_S)

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait, on the room's events, until ``condition`` holds (bounded by WAIT_S)."""
        async def wait() -> None:
            while not condition():
                self.changed.clear()
                await self.changed.wait()
        try:
            await asyncio.wait_for(wait(), WAIT_S)
        except asyncio.TimeoutError:
            raise SystemExit(
                f"{self.name}: no {what} within {WAIT_S:.0f} s (status {self.status}, left {self.left})") from None

    def acknowledged(self, other: str, phase: int) -> bool:
        """``other`` said it got our phase's messages and some of our voice (or it is gone)."""
        if other in self.left:
            return True
        status = self.status.get(other, {})
        return (status.get("got", {}).get(self.name, [0, 0])[phase - 1] >= self.args.messages
                and status.get("audio", {}).get(self.name, 0) >= AUDIO_FRAMES)

    async def play(self, phase: int, members: list[str]) -> float:
        """One phase among ``members``; returns its duration in seconds."""
        others = [m for m in members if m != self.name]
        began = time.monotonic()
        await self.until(lambda: all(self.name in self.status.get(o, {}).get("hear", []) for o in others),
                         f"phase {phase}: every other member hearing us")
        for index in range(self.args.messages):
            self.room.send(COUNTED.pack(b"M", phase, index).ljust(COUNTED_SIZE, b"\0"))
        await self.until(lambda: all(len(self.heard[o].counted[phase - 1]) >= self.args.messages
                                     and self.heard[o].audio_frames >= AUDIO_FRAMES
                                     and self.acknowledged(o, phase) for o in others),
                         f"phase {phase}: every message and some voice from and to {others}")
        return time.monotonic() - began

    async def run(self) -> dict[str, Any]:
        members = self.args.members.split(",")
        began = time.monotonic()
        await self.room.join()
        joined_s = time.monotonic() - began
        status = asyncio.ensure_future(self.send_status())
        try:
            phases = [await self.play(1, members)]
            if self.args.leave_after_phase != 1:
                await self.until(lambda: self.args.leaver in self.left, f"report that {self.args.leaver} left")
                phases.append(await self.play(2, [m for m in members if m != self.args.leaver]))
        finally:
            status.cancel()
            await asyncio.gather(status, return_exceptions=True)
            wire_sent, wire_received = self.room.wire_bytes()
            await self.room.leave()
        counters = self.room.counters
        return {"name": self.name, "feed_id": self.room.feed_id, "joined_s": joined_s, "phases_s": phases,
                "joined": self.joined, "left": self.left,
                "counted": {n: h.counted for n, h in self.heard.items()},
                "audio_frames": {n: h.audio_frames for n, h in self.heard.items()},
                "pitch_hz": {n: float(np.median(h.pitches)) if h.pitches else None for n, h in self.heard.items()},
                "messages_sent": counters.messages_sent, "bytes_sent": counters.bytes_sent,
                "messages_received": counters.messages_received, "bytes_received": counters.bytes_received,
                "subscriptions_failed": counters.subscriptions_failed,
                "wire_bytes_sent": wire_sent, "wire_bytes_received": wire_received}


async def refusals(args: argparse.Namespace) -> dict[str, Any]:
    """Janus's refusals as JanusError: wrong API secret, wrong PIN, a missing room we may not create."""
    codes: dict[str, Any] = {}

    async def refused(what: str, options: JanusOptions, room: RoomOptions) -> None:
        session = None
        try:
            session = await JanusSession.create(options)
            handle = await session.attach(VIDEOROOM, lambda event: None)
            await ensure_room(handle, room)
            await join_as_publisher(handle, room)
            codes[what] = None
        except JanusError as error:
            codes[what] = {"code": error.code, "message": str(error)}
        finally:
            if session is not None:
                await session.destroy()

    good = JanusOptions(args.url, api_secret=args.api_secret, plain_http=True)
    await refused("api_secret", JanusOptions(args.url, api_secret="wrong", plain_http=True),
                  RoomOptions(args.room, "X"))
    await refused("pin", good, RoomOptions(args.room, "X", pin="wrong"))
    await refused("missing_room", good, RoomOptions(args.room + 1, "X", create=False))
    return codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", nargs="?", choices=("peer", "refusals"), default="peer")
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-secret")
    parser.add_argument("--room", type=int, required=True)
    parser.add_argument("--pin")
    parser.add_argument("--room-secret")
    parser.add_argument("--name", default="X")
    parser.add_argument("--members", default="")
    parser.add_argument("--leaver", default="")
    parser.add_argument("--leave-after-phase", type=int, default=0)
    parser.add_argument("--messages", type=int, default=60)
    parser.add_argument("--tone-hz", type=float, default=440.0)
    args = parser.parse_args()
    report = asyncio.run(Peer(args).run() if args.mode == "peer" else refusals(args))
    print(json.dumps(report))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
