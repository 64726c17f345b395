"""Our side of a group call: motion and the source state, through the 1:1 call's Sender, to every subscriber.

The ``RoomParticipant`` is a ``Channel``: the ``Sender`` writes MOTION and its control messages
(STATS every second, which the others' silence timeout relies on, and GOODBYE) to it, and Janus
forwards them to whoever subscribes. The source state is encoded once and sent again whenever a
subscriber asks (SOURCE_REQUEST naming our feed): one transfer at a time, requests that arrive
during one make exactly one more after it, so N late joiners cost at most two uploads in a row.
The room decides which requests count (each feed's are rate-limited, ``FaceOptions.source_requests``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from engines.talking_head import TalkingHead
from realtime.clock import monotonic_us
from realtime.messages import encode_source_request
from realtime.sender import Sender, SenderOptions, SenderStats
from realtime.transport import Channel

logger = logging.getLogger(__name__)


class Publisher:
    """``serve_source`` and ``stream`` run side by side; ``request_source`` on a SOURCE_REQUEST for our feed."""

    def __init__(self, head: TalkingHead, options: SenderOptions, channel: Channel) -> None:
        # nobody answers a publisher: no peer to time out; no progress bar per upload
        self.sender = Sender(head, replace(options, peer_timeout_s=0.0, show_progress=False), channel, channel)
        self.channel = channel
        self.source_uploads = 0
        """Times the source state went out (the first, and again on requests)."""
        self.source_requests = 0
        """SOURCE_REQUESTs for our feed received."""
        self.source_requests_refused = 0
        """Of those, requests that came too soon after the same feed's last one: not answered."""
        self.source_sent = asyncio.Event()
        """Set once the source state went out the first time."""
        self._wanted = asyncio.Event()

    @property
    def stats(self) -> SenderStats:
        return self.sender.stats

    def request_source(self, *, allowed: bool = True) -> None:
        """A subscriber asked for our source state: send it again (after the upload in progress, if any) when
        ``allowed``; otherwise only counted."""
        self.source_requests += 1
        if allowed:
            self._wanted.set()
        else:
            self.source_requests_refused += 1

    async def serve_source(self) -> None:
        """Encode and send the source state, then send it again on each request, until cancelled."""
        while True:
            await self.sender.send_source()
            self.source_uploads += 1
            self.source_sent.set()
            await self._wanted.wait()
            self._wanted.clear()

    async def stream(self) -> SenderStats:
        """Capture and send motion until the capture ends or ``stop``."""
        return await self.sender.stream()

    def ask_for_source(self, feed: int) -> None:
        """Ask the publisher of ``feed`` for its source state (everyone receives it; only that feed answers)."""
        if self.sender.link.is_open:
            self.sender.link.send(encode_source_request(self.sender.link.reserve(), monotonic_us(), feed))

    def stop(self) -> None:
        self.sender.stop()

    async def goodbye(self) -> None:
        """Final STATS and GOODBYE to every subscriber (bounded wait until they left)."""
        await self.sender.goodbye(text="left the room")

    async def close(self) -> None:
        await self.sender.close()
