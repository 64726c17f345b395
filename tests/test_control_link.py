"""The control link both peers share (sequence numbers, keepalive, goodbye, peer timeout), and both peers
ending every task they started when they stop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from realtime.capture import CaptureOptions
from realtime.control_link import ControlLink, LinkOptions, PeerWatch
from realtime.messages import SEQ_MODULUS, CallStats, Goodbye, GoodbyeReason, StatsMessage
from realtime.protocol import decode, encode_stats
from realtime.receiver import Receiver, ReceiverOptions
from realtime.sender import Sender, SenderOptions, SourceOptions
from realtime.source_messages import SourceKind, split_source
from realtime.source_state_codec import wire_model_id

S = 1_000_000  # one second in µs


class RecordingChannel:
    """An open channel that keeps what is sent on it."""

    readyState = "open"  # noqa: N815 (the WebRTC name)
    bufferedAmount = 0  # noqa: N815

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)


async def wait_until(predicate: Any, what: str, timeout_s: float = 10.0) -> None:
    """Wait on a condition, bounded (a hang becomes a failure)."""
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), timeout_s)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def link_for(channel: RecordingChannel | None, options: LinkOptions, clock: Any = None,
             vanished: list[float] | None = None) -> ControlLink:
    kwargs = {} if clock is None else {"clock": clock}
    return ControlLink(channel, options, local_stats=lambda: CallStats(frames_sent=7),  # type: ignore[arg-type]
                       on_vanished=(vanished if vanished is not None else []).append, **kwargs)


# ---- the peer watch -------------------------------------------------------------------------------

def test_a_peer_watched_from_the_start_vanishes_after_the_timeout_of_silence() -> None:
    watch = PeerWatch(2.0, since_us=0)
    assert not watch.vanished(2 * S) and watch.vanished(2 * S + 1)
    watch.heard(3 * S)
    assert watch.silent_s(4 * S) == 1.0 and not watch.vanished(5 * S) and watch.vanished(5 * S + 1)


def test_a_peer_not_yet_heard_is_not_watched_and_a_zero_timeout_never_expires() -> None:
    watch = PeerWatch(2.0)
    assert watch.silent_s(100 * S) is None and not watch.vanished(100 * S)
    watch.heard(100 * S)
    assert watch.vanished(103 * S)
    forever = PeerWatch(0.0, since_us=0)
    assert not forever.vanished(10**6 * S)


# ---- the link ---------------------------------------------------------------------------------------

def test_every_message_a_peer_sends_takes_the_next_sequence_number_across_the_wrap() -> None:
    channel = RecordingChannel()
    link = link_for(channel, LinkOptions())
    assert link.reserve(SEQ_MODULUS - 2) == 0  # as if 2³² − 2 messages had gone before
    link.send_stats()
    block = link.reserve(3)  # a source transfer's BEGIN and two chunks
    link.send_goodbye(GoodbyeReason.ERROR, "bye")
    stats, goodbye = (decode(m) for m in channel.sent)
    assert isinstance(stats, StatsMessage) and stats.seq == SEQ_MODULUS - 2 and stats.stats.frames_sent == 7
    assert block == SEQ_MODULUS - 1 and link.next_seq == 3
    assert isinstance(goodbye, Goodbye) and goodbye.seq == 2 and goodbye.text == "bye"


def test_a_closed_link_sends_no_stats_or_goodbye() -> None:
    channel = RecordingChannel()
    channel.readyState = "closed"  # type: ignore[misc]
    link = link_for(channel, LinkOptions())
    link.send_stats()
    link.send_goodbye()
    assert channel.sent == [] and not link_for(None, LinkOptions()).is_open


def test_receipts_are_checked_counted_and_heard() -> None:
    now = [5 * S]
    link = link_for(RecordingChannel(), LinkOptions(), clock=lambda: now[0])
    first = encode_stats(4, 0, CallStats())
    assert isinstance(link.receive(first), StatsMessage)
    now[0] = 6 * S
    assert link.receive(first) is None and link.receive(b"garbage") is None  # a duplicate and a malformed one
    c = link.counters
    assert (c.received, c.accepted, c.duplicate, c.malformed) == (3, 1, 1, 1)
    assert link.watch.last_heard_us == 6 * S  # garbage is still a sign of life


def test_the_keepalive_sends_stats_until_the_link_stops() -> None:
    async def scenario() -> tuple[list[bytes], set[asyncio.Task[Any]], set[asyncio.Task[Any]]]:
        before = asyncio.all_tasks()
        channel = RecordingChannel()
        link = link_for(channel, LinkOptions(keepalive_s=0.01, peer_timeout_s=0))
        link.start()
        await wait_until(lambda: len(channel.sent) >= 3, "three keepalives")
        await link.stop()
        return channel.sent, before, asyncio.all_tasks()

    sent, before, after = asyncio.run(scenario())
    messages = [decode(m) for m in sent]
    assert all(isinstance(m, StatsMessage) for m in messages)
    assert [m.seq for m in messages] == list(range(len(messages)))
    assert after == before


def test_a_silent_peer_is_reported_once_as_vanished_by_the_clock_the_link_is_given() -> None:
    now = [0]

    async def scenario() -> list[float]:
        vanished: list[float] = []
        link = link_for(RecordingChannel(), LinkOptions(keepalive_s=0, peer_timeout_s=1.0), clock=lambda: now[0],
                        vanished=vanished)
        link.start()
        link.heard()  # at 0: watched from here on (a sender watches its receiver once heard)
        now[0] = 3 * S // 2
        await wait_until(lambda: bool(vanished), "the peer to be reported gone")
        await link.stop()
        return vanished

    assert asyncio.run(scenario()) == [1.5]


# ---- both peers: every task started is awaited on stop --------------------------------------------------

class GatedHead:
    """Renders at once; decoding a source state (its shape check) waits for ``gate``, then fails."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.decode_ended = False
        config = SimpleNamespace(name="gated", image_size=8, num_kp=15, sent_volume_shape=self._blocked)
        self.backend = SimpleNamespace(model_id="gated", config=config, device=torch.device("cpu"))
        self.size = 8

    def _blocked(self) -> tuple[int, ...]:
        self.gate.wait(30)
        self.decode_ended = True
        raise RuntimeError("this stub cannot decode")

    def render_image(self, state: object, motion: object, reference: object) -> np.ndarray:
        return np.zeros((8, 8, 3), np.uint8)


def test_a_receiver_stopped_mid_decode_leaves_no_task_behind() -> None:
    head = GatedHead()

    async def scenario() -> tuple[set[str], set[asyncio.Task[Any]], set[asyncio.Task[Any]], bool]:
        before = asyncio.all_tasks()
        channel = RecordingChannel()
        receiver = Receiver(head, ReceiverOptions(stats_interval_s=0.01), control=channel)  # type: ignore[arg-type]
        receiver.start()
        for message in split_source(b"x" * 1000, wire_model_id(head), SourceKind.FEATURE_VOLUME):  # type: ignore[arg-type]
            receiver.on_control(message)
        await wait_until(lambda: len(channel.sent) >= 2, "the receiver's keepalive")
        running = {task.get_name() for task in asyncio.all_tasks()}
        stopping = asyncio.ensure_future(receiver.stop())
        await asyncio.sleep(0.05)
        head.gate.set()  # the running decode ends: stop waits for it (and drops its result)
        await asyncio.wait_for(stopping, 30)
        return running, before, asyncio.all_tasks(), head.decode_ended

    running, before, after, decode_ended = asyncio.run(scenario())
    assert {"adasr-keepalive", "adasr-peer-watch", "adasr-receiver-watch", "adasr-source-decode"} <= running
    assert after == before and decode_ended


def test_a_sender_closed_after_its_call_leaves_no_task_behind(fast_head, astronaut_face,
                                                                tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    portrait = tmp_path / "face.png"
    cv2.imwrite(str(portrait), cv2.cvtColor(astronaut_face, cv2.COLOR_RGB2BGR))
    options = SenderOptions(capture=CaptureOptions(images=tmp_path, fps=20, max_frames=4, loop=True),
                            source=SourceOptions(portrait, crop=False), crop=False, show_progress=False,
                            stats_interval_s=0.01)

    async def scenario() -> tuple[set[str], set[asyncio.Task[Any]], set[asyncio.Task[Any]], int]:
        before = asyncio.all_tasks()
        motion, control = RecordingChannel(), RecordingChannel()
        running: set[str] = set()
        sender = Sender(fast_head, options, motion, control,  # type: ignore[arg-type]
                        on_sample=lambda *_: running.update(task.get_name() for task in asyncio.all_tasks()))
        sender.on_control(encode_stats(0, 0, CallStats()))  # the receiver heard: from now on it is watched
        await sender.send_source()
        stats = await sender.stream()
        await sender.goodbye()
        await sender.close()
        return running, before, asyncio.all_tasks(), stats.frames_sent

    running, before, after, frames_sent = asyncio.run(scenario())
    assert {"adasr-keepalive", "adasr-peer-watch"} <= running and frames_sent == 4
    assert after == before


def test_link_options_refuse_negative_times() -> None:
    with pytest.raises(ValueError):
        LinkOptions(keepalive_s=-1)
    with pytest.raises(ValueError):
        ReceiverOptions(peer_timeout_s=-1)
