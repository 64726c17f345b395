"""The group call's parts without a network: the round-robin face queue, the grid, one remote face's messages,
the one render thread for N faces, and SOURCE_REQUEST on the wire."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from realtime.messages import encode_header, encode_source_request, MessageType
from realtime.motion_codec import encode_motion_message
from realtime.protocol import ReceiverCounters, SourceRequest, decode, encode, parse_or_count
from realtime.receiver.pose import Pose
from realtime.receiver.render_loop import RenderJob
from realtime.room.face_queue import FaceQueue
from realtime.room.grid import Grid, layout, printable
from realtime.room.grid_renderer import GridRenderer
from realtime.room.remote_face import FaceOptions, RemoteFace
from realtime.sinks import FrameInfo
from realtime.source_messages import SourceKind, split_source
from realtime.source_state_codec import encode_state, wire_model_id


def test_source_request_round_trips_and_bad_ones_are_refused() -> None:
    data = encode_source_request(7, 123, 4242)
    assert len(data) == 16 + 8
    message = decode(data)
    assert message == SourceRequest(7, 123, 4242) and encode(message) == data
    counters = ReceiverCounters()
    for bad in (encode_header(MessageType.SOURCE_REQUEST, 1, 0) + bytes(8),  # feed 0
                encode_header(MessageType.SOURCE_REQUEST, 1, 0) + (1 << 60).to_bytes(8, "little"),
                data[:-1], data + b"\0"):
        assert parse_or_count(bad, counters) is None
    assert counters.malformed == 4
    with pytest.raises(ValueError):
        encode_source_request(0, 0, 0)


def test_face_queue_keeps_the_newest_job_per_face_and_serves_faces_in_turn() -> None:
    queue: FaceQueue[str] = FaceQueue()
    queue.put(1, "a1")
    queue.put(2, "b1")
    assert queue.put(1, "a2") is True  # replaces a1, keeps face 1's turn
    queue.put(3, "c1")
    assert queue.get(0) == (1, "a2")
    queue.put(1, "a3")  # face 1 was just served: it goes behind 2 and 3
    assert [queue.get(0), queue.get(0), queue.get(0)] == [(2, "b1"), (3, "c1"), (1, "a3")]
    assert queue.dropped == {1: 1} and queue.pending() == 0
    queue.put(2, "b2")
    queue.discard(2)
    queue.poke()
    assert queue.get(0) is None and queue.take_poke() and not queue.take_poke()
    queue.close()
    assert queue.get(None) is None and queue.closed


def test_grid_lays_out_tiles_and_shows_a_refused_face() -> None:
    assert [layout(n) for n in (0, 1, 2, 3, 4, 5, 6)] == [(1, 1), (1, 1), (2, 1), (2, 2), (2, 2), (3, 2), (3, 2)]
    assert printable("Zoë\n" + "x" * 40).startswith("Zo??x") and len(printable("y" * 40)) == 32
    grid = Grid(64, 64)
    assert grid.compose().shape == (64, 64, 3)
    grid.add(1, "A")
    grid.add(2, "B")
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    assert grid.set_frame(1, red)
    grid.refuse(2, "another model")
    picture = grid.compose()
    assert picture.shape == (64, 64, 3)
    assert (picture[24:32, 8:24, 0] == 255).all()  # face 1 fills the left half, scaled, apart from its name
    tile = grid.tile(2)
    assert tile is not None and tile.refused and "another model" in tile.note
    assert grid.remove(1) and not grid.set_frame(1, red) and grid.faces() == [2]


class _SlowHead:
    """Renders a face whose colour is its motion's first value, taking ``delay_s``, counting in which order."""

    size = 8

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.order: list[int] = []

    def render_image(self, state: object, motion, reference) -> np.ndarray:  # type: ignore[no-untyped-def]
        threading.Event().wait(self.delay_s)
        self.order.append(int(state))  # type: ignore[call-overload]
        return np.full((8, 8, 3), int(state), np.uint8)


class _Frames:
    def __init__(self) -> None:
        self.shown = 0
        self.closed = False

    def show(self, frame: np.ndarray, info: FrameInfo) -> None:
        self.shown += 1

    def close(self) -> None:
        self.closed = True


def _job(seq: int) -> RenderJob:
    return RenderJob(seq, 0, Pose(np.zeros(51, np.float32), None), None, 0)  # type: ignore[arg-type]


def test_one_render_thread_serves_every_face_in_turn_and_never_queues_more_than_one_job_each() -> None:
    head, sink = _SlowHead(delay_s=0.01), _Frames()

    async def scenario() -> GridRenderer:
        renderer = GridRenderer(head, sink, Grid(32, 32))  # type: ignore[arg-type]
        renderer.start()
        for face in (1, 2, 3):
            renderer.add(face, f"P{face}")
        for seq in range(60):  # three senders, far faster than the renderer
            for face in (1, 2, 3):
                renderer.offer(face, RenderJob(seq, 0, Pose(np.zeros(51, np.float32), None), face, 0))  # type: ignore[arg-type]
                assert renderer.pending() <= 3
            await asyncio.sleep(0.001)
        renderer.remove(3)
        for _ in range(500):  # bounded: the renderer works off what waits (at most one job per face)
            if renderer.pending() == 0:
                break
            await asyncio.sleep(0.01)
        await renderer.stop()
        return renderer

    renderer = asyncio.run(scenario())
    rendered = {face: renderer.faces[face].frames_rendered for face in (1, 2, 3)}
    assert all(count >= 1 for count in rendered.values())
    assert max(rendered.values()) - min(rendered.values()) <= 2 + rendered[1] // 4  # a fair share each
    for face in (1, 2, 3):  # every offer was rendered or replaced by a newer one
        assert rendered[face] + renderer.dropped(face) <= 60
    assert sink.closed and renderer.frames_shown >= sum(rendered.values())
    assert renderer.grid.faces() == [1, 2]


def test_remote_face_checks_its_messages_installs_one_state_and_skips_its_repeat(fast_head, astronaut_face) -> None:  # type: ignore[no-untyped-def]
    state = fast_head.prepare_source(astronaut_face)
    payload = encode_state(state, fast_head.backend.config)
    face = RemoteFace(9, "A", fast_head, FaceOptions(silence_timeout_s=5.0), now_us=0)
    messages = split_source(payload, wire_model_id(fast_head), SourceKind.FEATURE_VOLUME, first_seq=0)
    vector = state.motion.to_vector()

    motion = face.receive(encode_motion_message(0, 10, vector)[0], 1)  # sequence 0 on the motion counter
    assert face.motion(motion, 1) is None and face.stats.frames_before_source == 1  # type: ignore[arg-type]
    complete = [face.source(face.receive(m, 2), 2) for m in messages]  # type: ignore[arg-type]
    assert complete[-1] and not any(complete[:-1])
    transfer_id, transfer = face.take(2)  # type: ignore[misc]
    face.installed(transfer_id, face.inbox.decode(transfer), len(payload), transfer.kind.name, 0.0)
    assert face.state is not None and not face.wants_source(10**9)
    again = split_source(payload, wire_model_id(fast_head), SourceKind.FEATURE_VOLUME, first_seq=len(messages))
    assert not any(face.source(face.receive(m, 3), 3) for m in again)  # type: ignore[arg-type]
    assert face.stats.sources_repeated == 1 and face.stats.sources_accepted == 1
    ratios = np.array([0.1, 0.6, 0.25, 0.05, 0.3, 0.3, 0.24, 0.24], np.float32)  # the publisher's face ratios...
    job = face.motion(face.receive(encode_motion_message(1, 20, vector, face_ratios=ratios)[0], 4), 4)  # type: ignore[arg-type]
    assert job is not None and job.state is face.state
    assert job.pose.face_ratios is not None and np.allclose(job.pose.face_ratios, ratios, atol=0.007)  # ...reach it
    assert job.pose.reference_ratios is job.pose.face_ratios  # the first ratios after the reference was taken
    assert face.receive(encode_motion_message(1, 20, vector)[0], 5) is None  # a replay
    assert face.stats.motion.duplicate == 1 and face.stats.control.accepted == 2 * len(messages)
    assert face.receive(b"garbage", 6) is None and face.stats.control.malformed == 1
    assert not face.watch.vanished(6 + 4_000_000) and face.watch.vanished(6 + 6_000_000)


def test_remote_face_from_another_model_is_refused_and_not_asked_again(fast_head, astronaut_face) -> None:  # type: ignore[no-untyped-def]
    payload = encode_state(fast_head.prepare_source(astronaut_face), fast_head.backend.config)
    face = RemoteFace(9, "B", fast_head, FaceOptions(source_request_s=2.0), now_us=0)
    assert face.wants_source(0)
    face.requested(0)
    assert not face.wants_source(1_000_000) and face.wants_source(2_500_000)
    for message in split_source(payload, b"\x01" * 32, SourceKind.FEATURE_VOLUME, first_seq=0):
        assert not face.source(face.receive(message, 3_000_000), 3_000_000)  # type: ignore[arg-type]
    assert "model" in face.refused and face.stats.source_errors == 1 and face.state is None
    assert not face.wants_source(10**9)
