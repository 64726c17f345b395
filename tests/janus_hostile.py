"""The hostile participant of issue #28's room attack, run inside the test namespace; prints a JSON report.

``python -m tests.janus_hostile attack --url URL --api-secret S --room N --pin P --victim NAME --victim-stats F``
joins the room as ``mallory`` (it knows the PIN: a participant gone bad) and, against the participant
``NAME`` whose ``--stats-json`` is ``F``:

* G1: asks once for the victim's source state (kept: it is a valid state of the victim's model, replayed
  below as our own), then sends ``--requests`` more SOURCE_REQUESTs for it at once;
* G7: sends ``--transfers`` distinct complete source transfers, one every ``--transfer-gap`` seconds (time
  enough for the victim to decode each), then announces a 60 MiB transfer and leaves it unfinished after 1 MiB;
* G3: ``--churn`` times, a participant joins, shows a face (the victim installs it) and leaves;
* G2: a participant joins with the feed id 2⁵³ + 7 (a publisher picks its own id), and stays.

What the victim did is read from its report (``--victim-stats``, rewritten every second by its watch
task), and from what arrives from it: each wait is on those, bounded. ``attack`` prints what it saw.

``python -m tests.janus_hostile open-room --url URL --api-secret S --room N`` creates room N without a PIN
(G5: whoever comes first sets the room's rules) and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from realtime.clock import monotonic_us
from realtime.errors import ProtocolError
from realtime.janus import participant as participant_module
from realtime.janus.api import JanusHandle, JanusOptions, JanusSession
from realtime.janus.participant import ParticipantOptions, RemoteFeed, RoomCallbacks, RoomParticipant
from realtime.janus.videoroom import VIDEOROOM, Joined, RoomOptions, ensure_room, feeds_in
from realtime.messages import SourceRequest, encode_source_request
from realtime.protocol import decode
from realtime.source_messages import (
    SourceAssembler,
    SourceBegin,
    SourceChunk,
    SourceKind,
    encode_source_begin,
    encode_source_chunk,
    max_chunk_data,
    split_source,
)
from realtime.messages import DEFAULT_MAX_MESSAGE
from realtime.transport import TransportOptions

#: The namespace's address (tests/janus_fixture.py): our only ICE host candidate.
ADDRESS = "198.18.0.1"
#: Bound on each wait for the victim (a victim that never reacts fails the wait, it does not hang the run).
WAIT_S = 120.0
#: How long the G2 step waits for the victim's report to move on after the huge feed joined.
WATCH_WAIT_S = 20.0
#: The feed id the G2 participant picks: past what a SOURCE_REQUEST can carry.
HUGE_FEED_ID = (1 << 53) + 7
#: The G7 announcement and what is sent of it.
ANNOUNCED_BYTES = 60 * 1024 * 1024
SENT_OF_IT = 1024 * 1024


class Hostile:
    """One participant under the attacker's control: what arrives from the victim, and a counter for what we send."""

    def __init__(self, args: argparse.Namespace, display: str) -> None:
        self.victim = args.victim
        self.victim_feed: int | None = None
        self.asked_for_us = 0
        """SOURCE_REQUESTs from the victim naming our feed (it subscribed to us)."""
        self.uploads = 0
        """Source transfers the victim began (SOURCE_BEGINs from it)."""
        self.bytes_from_victim = 0
        self.payload: tuple[bytes, SourceKind, bytes] | None = None
        """The victim's source payload, its kind and model id, once one arrived whole."""
        self.changed = asyncio.Event()
        self._assembler: SourceAssembler | None = None
        self._kind = SourceKind.SOURCE_IMAGE
        self._seq = 0
        options = ParticipantOptions(JanusOptions(args.url, api_secret=args.api_secret, plain_http=True),
                                     RoomOptions(args.room, display, pin=args.pin),
                                     TransportOptions(ice_hosts=(ADDRESS,)))
        self.room = RoomParticipant(options, RoomCallbacks(feed_joined=self._joined, message=self._message))

    def _joined(self, feed: RemoteFeed) -> None:
        if feed.display == self.victim:
            self.victim_feed = feed.id
            self.changed.set()

    def _message(self, feed: RemoteFeed, data: bytes) -> None:
        if feed.display != self.victim:
            return
        self.bytes_from_victim += len(data)
        try:
            message = decode(data)
        except ProtocolError:
            return
        if isinstance(message, SourceRequest) and message.feed == self.room.feed_id:
            self.asked_for_us += 1
        elif isinstance(message, SourceBegin):
            self.uploads += 1
            self._assembler, self._kind = SourceAssembler(message.model_id), message.kind
            self._assembler.feed(message)
        elif isinstance(message, SourceChunk) and self._assembler is not None:
            payload = self._assembler.feed(message)
            if payload is not None:
                self.payload = (payload, self._kind, self._assembler.expected_model_id)
        self.changed.set()

    async def until(self, condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> bool:
        """Wait on what arrives until ``condition``; False after ``timeout_s``."""
        async def wait() -> None:
            while not condition():
                self.changed.clear()
                await self.changed.wait()
        try:
            await asyncio.wait_for(wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            print(f"{self.room.options.room.display}: no {what} within {timeout_s:.0f} s", file=sys.stderr)
            return False

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def ask_for_source(self, feed: int) -> None:
        self.room.send(encode_source_request(self.next_seq(), monotonic_us(), feed))

    def send_state(self, transfer_id: int) -> None:
        """The victim's own payload, as our source state (a valid one: the victim's model made it)."""
        assert self.payload is not None
        payload, kind, model_id = self.payload
        messages = split_source(payload, model_id, kind, first_seq=self._seq + 1, transfer_id=transfer_id)
        self._seq += len(messages)
        for message in messages:
            self.room.send(message)

    def send_unfinished(self, transfer_id: int) -> None:
        """A transfer announcing ANNOUNCED_BYTES, of which SENT_OF_IT are sent and the rest never."""
        assert self.payload is not None
        chunk = max_chunk_data(DEFAULT_MAX_MESSAGE)
        count = -(-ANNOUNCED_BYTES // chunk)
        self.room.send(encode_source_begin(SourceBegin(self.next_seq(), monotonic_us(), transfer_id, ANNOUNCED_BYTES,
                                                       chunk, count, self.payload[1], bytes(32), self.payload[2])))
        for index in range(SENT_OF_IT // chunk):
            self.room.send(encode_source_chunk(SourceChunk(self.next_seq(), monotonic_us(), transfer_id, index, count,
                                                           bytes(chunk))))


def victim_report(path: Path) -> dict[str, Any]:
    try:
        report = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return report if isinstance(report, dict) else {}


def face_of(report: dict[str, Any], display: str) -> dict[str, Any]:
    """The victim's latest report of the face named ``display`` (it may have joined more than once)."""
    faces = [face for face in report.get("faces", {}).values() if face.get("display") == display]
    return faces[-1] if faces else {}


async def until_report(path: Path, condition: Callable[[dict[str, Any]], bool], timeout_s: float = WAIT_S) -> bool:
    """Poll the victim's report (rewritten every second) until ``condition``; False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition(victim_report(path)):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


def picking_feed_id(feed_id: int) -> Callable[[JanusHandle, RoomOptions], Any]:
    """``join_as_publisher`` as a hostile client writes it: choosing its own id (Janus lets a publisher)."""
    async def join(handle: JanusHandle, options: RoomOptions) -> Joined:
        body = {"request": "join", "ptype": "publisher", "room": options.room, "display": options.display,
                "pin": options.pin, "id": feed_id}
        data = (await handle.message(body)).data
        return Joined(int(data["id"]), data.get("private_id"), feeds_in(data))
    return join


async def attack(args: argparse.Namespace) -> dict[str, Any]:
    stats, out = Path(args.victim_stats), {}
    mallory = Hostile(args, "mallory")
    await mallory.room.join()
    try:
        ok = await mallory.until(lambda: mallory.victim_feed is not None and mallory.asked_for_us > 0,
                                 "subscription both ways with the victim")
        assert ok and mallory.victim_feed is not None
        mallory.ask_for_source(mallory.victim_feed)  # once, as any late joiner does: its payload is ours to replay
        assert await mallory.until(lambda: mallory.payload is not None, "source state from the victim")
        out["uploads_before_the_requests"] = mallory.uploads
        # G1: requests for the victim's state, all at once
        for _ in range(args.requests):
            mallory.ask_for_source(mallory.victim_feed)
        # G7: distinct complete transfers, paced so that each could be decoded, then a large one left unfinished
        for transfer in range(args.transfers):
            mallory.send_state(1000 + transfer)
            await asyncio.sleep(args.transfer_gap)
        mallory.send_unfinished(9999)
        out["g7_sent"] = await until_report(stats, lambda r: face_of(r, "mallory").get("source_accepted", 0) >= 1)
        # G3: join, show a face, leave; again
        churned = 0
        for cycle in range(args.churn):
            name = f"churn{cycle}"
            churn = Hostile(args, name)
            churn.payload = mallory.payload
            await churn.room.join()
            if not await churn.until(lambda c=churn: c.asked_for_us > 0, "source request from the victim"):
                await churn.room.leave()
                break
            churn.send_state(1)
            installed = await until_report(stats, lambda r, n=name: face_of(r, n).get("source_accepted", 0) >= 1)
            await churn.room.leave()
            gone = await until_report(stats, lambda r, n=name: any(d.get("display") == n
                                                                   for d in r.get("departures", [])))
            if not (installed and gone):
                break
            churned += 1
        out["churned"] = churned
        # G2: a feed id past 2^53; does the victim's watch (its report, --max-seconds) live on?
        participant_module.join_as_publisher = picking_feed_id(HUGE_FEED_ID)  # type: ignore[assignment]
        huge = Hostile(args, "huge")
        await huge.room.join()
        out["huge_feed_id"] = huge.room.feed_id
        seen = victim_report(stats).get("in_room_s") or 0.0
        out["watch_alive_after_huge"] = await until_report(stats, lambda r: (r.get("in_room_s") or 0.0) > seen + 3,
                                                           WATCH_WAIT_S)
        out["uploads_seen"] = mallory.uploads
        out["bytes_from_victim"] = mallory.bytes_from_victim
        await huge.room.leave()
    finally:
        await mallory.room.leave()
    return out


async def open_room(args: argparse.Namespace) -> dict[str, Any]:
    """Create the room without a PIN, first (G5)."""
    session = await JanusSession.create(JanusOptions(args.url, api_secret=args.api_secret, plain_http=True))
    try:
        handle = await session.attach(VIDEOROOM, lambda event: None)
        created = await ensure_room(handle, RoomOptions(args.room, "squatter"))
    finally:
        await session.destroy()
    return {"created_open": created}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("attack", "open-room"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-secret")
    parser.add_argument("--room", type=int, required=True)
    parser.add_argument("--pin")
    parser.add_argument("--victim", default="victim")
    parser.add_argument("--victim-stats", default="")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--transfers", type=int, default=20)
    parser.add_argument("--transfer-gap", type=float, default=0.5)
    parser.add_argument("--churn", type=int, default=10)
    args = parser.parse_args()
    report = asyncio.run(attack(args) if args.mode == "attack" else open_room(args))
    print(json.dumps(report))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
