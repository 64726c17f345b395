"""Hostile peers and bad files: one test per hole found by attacking the receiver (issue #15).

Each test attacks through the interface an attacker has: raw sockets and HTTP for the offer
endpoint, crafted protocol messages through a real WebRTC data channel for the receiver, crafted
files for the checkpoint, config and resume loaders. Memory findings are asserted by what the code
refuses and before what (a shape refused before its data is read, an archive before torch opens
it), never by timing or RSS. Names of the code under test are imported inside the tests, so each
test fails on its own (not at collection) where the defence is missing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import threading
import tracemalloc
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import numpy as np
import pytest
import torch
import yaml
from aiortc import RTCSessionDescription

from realtime.call import connect_as_sender
from realtime.errors import CallError
from realtime.http_signaling import HttpSignaling, OfferServer, OfferServerOptions, generate_token
from realtime.messages import DEFAULT_MAX_MESSAGE, CallStats, GoodbyeReason
from realtime.protocol import encode_goodbye, encode_stats
from realtime.receiver import ReceiverOptions
from realtime.source_messages import SourceBegin, SourceKind, encode_source_begin, max_chunk_data, split_source
from realtime.source_payload import STATE_FORMAT_VERSION
from tests.conftest import TINY_CHECKPOINT, TINY_CONFIG
from tests.test_resilience import TRANSPORT, serving_calls, wait_until

#: An SDP that passes the endpoint's checks (a data channel), for servers whose call handler is a stub.
OFFER_SDP = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"


async def echo_answer(signaling: Any) -> None:
    """A stub call: answer the offer at once (with its own SDP) and end, freeing the slot."""
    offer = await signaling.receive()
    await signaling.send(RTCSessionDescription(sdp=offer.sdp, type="answer"))


def request_head(token: str, body_length: int, *extra: bytes) -> bytes:
    lines = [b"POST /offer HTTP/1.1", b"Host: 127.0.0.1", b"Authorization: Bearer " + token.encode(),
             b"Content-Type: application/json", b"Content-Length: %d" % body_length, *extra]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def status_of(port: int, data: bytes, timeout_s: float = 30.0) -> int:
    """Send raw bytes, return the HTTP status the server answers with."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout_s)
        return int(line.split()[1])
    finally:
        writer.close()


async def post_offer(url: str, token: str) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/offer", json={"sdp": OFFER_SDP, "type": "offer"},
                             headers={"Authorization": f"Bearer {token}"}) as reply:
            return reply.status


def peer_log(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("realtime"))


# ---- F1: an aborted upload or a bad gzip body locked the receiver out of every later call -------------

def test_f1_an_aborted_upload_and_a_bad_gzip_body_leave_the_next_call_free(
        fast_head, astronaut_face, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import cv2

    from realtime.call import run_sender
    from realtime.capture import CaptureOptions
    from realtime.sender import SenderOptions, SourceOptions

    portrait = tmp_path / "face.png"
    cv2.imwrite(str(portrait), cv2.cvtColor(astronaut_face, cv2.COLOR_RGB2BGR))
    token = generate_token()

    async def scenario() -> tuple[int, int]:
        async with serving_calls(fast_head, ReceiverOptions(), token, max_calls=1) as served:
            server = served.server
            assert server is not None
            # a client that drops mid-body (RST), holding the slot on the old code
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request_head(token, 4096) + b'{"sdp": "v=0')
            await writer.drain()
            await wait_until(lambda: server._busy, 10, "the server to take the slot")
            writer.transport.abort()
            await wait_until(lambda: not server._busy, 10, "the slot to be released after the abort")
            # a body its Content-Encoding cannot decode
            not_gzip = b"\x1f\x8b\x08\x00 not a gzip stream"
            gzip_status = await status_of(server.port, request_head(token, len(not_gzip), b"Content-Encoding: gzip")
                                          + not_gzip)
            options = SenderOptions(capture=CaptureOptions(images=tmp_path, fps=10, max_frames=6, loop=True),
                                    source=SourceOptions(portrait, crop=False), crop=False, show_progress=False)
            sent = await run_sender(fast_head, options, HttpSignaling(served.url, token), TRANSPORT, console=False)
            await served.finish(60)
            return gzip_status, sent.frames_sent

    gzip_status, frames_sent = asyncio.run(scenario())
    assert gzip_status == 400
    assert frames_sent == 6  # the next legitimate call connected and ran


# ---- F2: a 20 KB source state of the wrong shape made the receiver allocate gigabytes -------------------

def _crafted_payload(arrays: list[tuple[str, int, tuple[int, ...], bytes]], raw_length: int | None = None) -> bytes:
    """A source payload as an attacker writes it: (name, encoding, declared shape, data) per array, no
    compression. The declared shape need not match the data: that is the attack."""
    body = struct.pack("<H", len(arrays))
    for name, encoding, shape, data in arrays:
        raw = name.encode()
        body += bytes([len(raw)]) + raw + bytes([encoding, len(shape)]) + struct.pack(f"<{len(shape)}I", *shape) + data
    length = len(body) if raw_length is None else raw_length
    return struct.pack("<4sBBHI", b"ASRC", STATE_FORMAT_VERSION, 0, 0, length) + body


def test_f2_a_source_state_of_any_wrong_shape_is_refused_before_its_data_is_read_and_decodes_end_with_the_call(
        fast_head, astronaut_face, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    from realtime.receiver import DECODE_THREAD
    from realtime.source_state_codec import encode_state, max_raw_bytes, wire_model_id

    caplog.set_level(logging.DEBUG, logger="realtime.receiver")
    config = fast_head.backend.config
    c, d, h, w = config.sent_volume_shape()
    k = config.num_kp
    fp16, fp32 = 1, 0
    good_x_c = ("x_c", fp32, (1, k, 3), bytes(4 * 3 * k))
    good_motion = ("motion", fp32, (6 + 3 * k,), bytes(4 * (6 + 3 * k)))
    # every f_s declares a wrong shape and carries 64 bytes: refused at the shape, its data never read
    wrong = [(1, c, d, 720, 720), (1, c, d + 1, h, w), (1, c + 1, d, h, w), (1, c, d, h, w, 1), (2, c, d, h, w)]
    payloads = [_crafted_payload([("f_s", fp16, shape, bytes(64)), good_x_c, good_motion]) for shape in wrong]
    payloads.append(_crafted_payload([("x_c", fp32, (1, k + 1, 3), bytes(64)), good_motion]))
    cap = max_raw_bytes(SourceKind.FEATURE_VOLUME, config)
    payloads.append(_crafted_payload([good_x_c], raw_length=cap + 1))  # claims more than any state of this model
    token = generate_token()

    async def scenario() -> tuple[Any, bool, bool]:
        async with serving_calls(fast_head, ReceiverOptions(), token, max_calls=1) as served:
            hostile = await connect_as_sender(HttpSignaling(served.url, token), TRANSPORT)
            await wait_until(lambda: served.receiver is not None, 10, "the receiver of the hostile call")
            receiver = served.receiver
            assert receiver is not None
            seq = 0
            good = encode_state(fast_head.prepare_source(astronaut_face), config)
            for index, payload in enumerate([*payloads, good]):
                for message in split_source(payload, wire_model_id(fast_head), SourceKind.FEATURE_VOLUME,
                                            first_seq=seq, transfer_id=index):
                    hostile.channels.control.send(message)
                    seq += 1
                await wait_until(lambda index=index: receiver.stats.source_errors + receiver.stats.sources_accepted
                                 == index + 1, 60, f"the verdict on transfer {index}")
            decoder_alive = any(t.name.startswith(DECODE_THREAD) for t in threading.enumerate())
            await hostile.pc.close()
            await served.finish(30)
        decoder_gone = not any(t.name.startswith(DECODE_THREAD) for t in threading.enumerate())
        return served.ended[0], decoder_alive, decoder_gone

    stats, decoder_alive, decoder_gone = asyncio.run(scenario())
    assert stats.source_errors == len(payloads) and stats.sources_accepted == 1
    log = peer_log(caplog)
    for shape in wrong:
        assert f"'f_s' of shape {shape}, this model takes {(1, c, d, h, w)}" in log
    assert f"'x_c' of shape {(1, k + 1, 3)}, this model takes {(1, k, 3)}" in log
    assert f"claims {cap + 1} decompressed bytes, the limit is {cap}" in log
    assert decoder_alive and decoder_gone  # decodes ran on the call's own thread, which ended with the call


# ---- F3: no read timeouts, no connection cap ------------------------------------------------------------

def test_f3_slow_bodies_and_half_sent_headers_time_out_and_connections_are_capped(
        caplog: pytest.LogCaptureFixture) -> None:
    token = generate_token()

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        quick = OfferServer(echo_answer, OfferServerOptions(token=token, port=0, header_timeout_s=0.5,
                                                            body_timeout_s=0.5))
        capped = OfferServer(echo_answer, OfferServerOptions(token=token, port=0, max_connections=4))
        await quick.start()
        await capped.start()
        try:
            # a body dribbled then stalled: 408, and the slot is free for the next offer
            seen["slow_body"] = await status_of(quick.port, request_head(token, 1000) + b"{")
            seen["after_slow_body"] = await post_offer(quick.url, token)
            # headers never finished: the connection is closed
            reader, writer = await asyncio.open_connection("127.0.0.1", quick.port)
            writer.write(b"POST /offer HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            seen["half_headers"] = await asyncio.wait_for(reader.read(), 30)
            writer.close()
            # past the cap a connection is closed on arrival, before it is read
            idle = [await asyncio.open_connection("127.0.0.1", capped.port) for _ in range(4)]
            reader, writer = await asyncio.open_connection("127.0.0.1", capped.port)
            seen["over_cap"] = await asyncio.wait_for(reader.read(), 30)
            seen["refused"] = capped.stats.connections_refused
            writer.close()
            for _, idle_writer in idle:
                idle_writer.close()
            await wait_until(lambda: not capped._runner.server.connections, 10, "the idle connections to close")
            seen["after_cap"] = await post_offer(capped.url, token)
        finally:
            await quick.stop()
            await capped.stop()
        return seen

    seen = asyncio.run(scenario())
    assert seen["slow_body"] == 408 and seen["after_slow_body"] == 200
    assert seen["half_headers"] == b""
    assert seen["over_cap"] == b"" and seen["refused"] == 1 and seen["after_cap"] == 200


# ---- F4: a 100-byte announcement cost a 64 MiB buffer; 1-byte chunks were allowed ------------------------

def test_f4_announcements_allocate_nothing_and_tiny_chunks_are_refused(fast_head) -> None:  # type: ignore[no-untyped-def]
    from realtime.source_state_codec import wire_model_id

    token = generate_token()
    model_id = wire_model_id(fast_head)
    chunk = max_chunk_data(DEFAULT_MAX_MESSAGE)
    announced = 60 * 1024 * 1024
    begins = [encode_source_begin(SourceBegin(i, 0, i, announced, chunk, -(-announced // chunk),
                                              SourceKind.FEATURE_VOLUME, bytes(32), model_id)) for i in range(20)]
    tiny = encode_source_begin(SourceBegin(20, 0, 99, 100, 1, 100, SourceKind.FEATURE_VOLUME, bytes(32), model_id))

    async def scenario() -> tuple[int, Any]:
        async with serving_calls(fast_head, ReceiverOptions(), token, max_calls=1) as served:
            hostile = await connect_as_sender(HttpSignaling(served.url, token), TRANSPORT)
            await wait_until(lambda: served.receiver is not None, 10, "the receiver of the hostile call")
            receiver = served.receiver
            assert receiver is not None
            tracemalloc.start()
            try:
                for message in [*begins, tiny]:
                    hostile.channels.control.send(message)
                await wait_until(lambda: receiver.stats.control.received == len(begins) + 1, 30, "the announcements")
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            counters = receiver.stats.control
            await hostile.pc.close()
            await served.finish(30)
        return peak, counters

    peak, counters = asyncio.run(scenario())
    assert peak < 8 * 1024 * 1024, f"{len(begins)} announcements of {announced} bytes allocated {peak} bytes"
    assert counters.malformed == 1 and "chunk size 1 outside" in counters.last_error  # the BEGINs were accepted


# ---- F5: undecodable Authorization bytes gave HTTP 500 and a traceback ----------------------------------

def test_f5_an_undecodable_authorization_header_is_a_plain_401(caplog: pytest.LogCaptureFixture) -> None:
    token = generate_token()

    async def scenario() -> int:
        server = OfferServer(echo_answer, OfferServerOptions(token=token, port=0))
        await server.start()
        try:
            head = request_head(token, 2).replace(b"Bearer " + token.encode(), b"Bearer \xff\xfe\xfd")
            return await status_of(server.port, head + b"{}")
        finally:
            await server.stop()

    caplog.set_level(logging.WARNING)
    assert asyncio.run(scenario()) == 401
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# ---- F6: the peer's hang-up text was logged and printed unescaped ----------------------------------------

def test_f6_a_forged_hang_up_text_reaches_logs_and_the_summary_escaped(
        fast_head, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG, logger="realtime")
    token = generate_token()
    forged = "bye\nWARNING realtime.http_signaling: answered an offer from 10.0.0.66\r\x1b[2J\x1b]0;token 0wned\x07"

    async def scenario() -> Any:
        async with serving_calls(fast_head, ReceiverOptions(), token, max_calls=1) as served:
            hostile = await connect_as_sender(HttpSignaling(served.url, token), TRANSPORT)
            hostile.channels.control.send(encode_goodbye(0, 0, GoodbyeReason.ERROR, forged))
            await served.finish(30)
            await hostile.pc.close()
        return served.ended[0]

    stats = asyncio.run(scenario())
    assert stats.goodbye is not None and stats.goodbye.text == forged  # the message itself is intact
    shown = [stats.end_reason, *(r.getMessage() for r in caplog.records if "hung up" in r.getMessage())]
    assert len(shown) > 1 and all("answered an offer from 10.0.0.66" in text for text in shown)
    for text in shown:
        assert not set(text) & set("\n\r\x1b\x07"), text
    assert "bye\\nWARNING" in stats.end_reason and "\\x1b[2J" in stats.end_reason


# ---- F7: image_size had no bounds when motion_scale != 1 ------------------------------------------------

@pytest.mark.parametrize("image_size", [100000, 0, -256, 66])
def test_f7_a_config_with_an_absurd_image_size_is_refused_with_a_clear_message(tmp_path: Path, image_size: int) -> None:
    from adasr.config import CONFIG_DIR, load_model_config
    from adasr.errors import ConfigError

    doc = yaml.safe_load((CONFIG_DIR / "lite.yaml").read_text())
    assert doc["model"]["generator"]["dense_motion_params"]["motion_scale"] != 1  # the case the old check skipped
    doc["model"]["image_size"] = image_size
    path = tmp_path / "crafted.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError,
                       match=r"image_size must be a multiple of 4 in \[32, 2048\], got " + str(image_size)):
        load_model_config(path)


# ---- F8: `adasr train --resume` ran code from a crafted checkpoint.pt ----------------------------------

class _RunsCode:
    """Unpickling this creates a directory: proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def test_f8_resume_refuses_a_checkpoint_that_runs_code_and_still_restores_rng_states(tmp_path: Path) -> None:
    import random

    from adasr.errors import CheckpointError
    from adasr.training.trainer import Trainer

    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted" / "checkpoint.pt"
    crafted.parent.mkdir()
    torch.save({"step": 1, "payload": _RunsCode(marker)}, crafted)
    restored: list[dict[str, Any]] = []
    trainer = SimpleNamespace(device=torch.device("cpu"), load_state_dict=restored.append)  # what load() touches
    with pytest.raises(CheckpointError, match="refused"):
        Trainer.load(trainer, crafted)  # type: ignore[arg-type]
    assert not marker.exists()
    genuine = tmp_path / "genuine.pt"
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    torch.save({"step": 3, "rng": rng}, genuine)
    Trainer.load(trainer, genuine)  # type: ignore[arg-type]
    numpy_state = restored[0]["rng"]["numpy"]
    assert numpy_state[0] == "MT19937" and np.array_equal(numpy_state[1], rng["numpy"][1])
    assert restored[0]["rng"]["python"] == rng["python"]


# ---- F9: a 1 MB checkpoint with a deflated storage expanded before it was refused -------------------------

def test_f9_a_checkpoint_with_a_compressed_storage_is_refused_before_torch_reads_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adasr.checkpoint import load_model
    from adasr.errors import CheckpointError

    crafted = tmp_path / "deflated.pth"
    with zipfile.ZipFile(TINY_CHECKPOINT) as source, zipfile.ZipFile(crafted, "w", zipfile.ZIP_DEFLATED) as out:
        for entry in source.infolist():
            out.writestr(entry.filename, source.read(entry))

    def read_anyway(*args: object, **kwargs: object) -> object:
        raise AssertionError("torch.load was reached: the storages would be expanded before any check")

    monkeypatch.setattr(torch, "load", read_anyway)
    with pytest.raises(CheckpointError, match="is compressed .* refused before reading it"):
        load_model(crafted, TINY_CONFIG)


# ---- F10: TCP signaling had no authentication ----------------------------------------------------------

@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.org"])
def test_f10_tcp_signaling_off_loopback_is_refused(host: str) -> None:
    from realtime.signaling import tcp_signaling

    with pytest.raises(CallError, match="loopback"):
        tcp_signaling(host, 9999)
    for loopback in ("127.0.0.1", "::1", "localhost"):
        tcp_signaling(loopback, 9999)  # still there for scripts on one machine


# ---- by design, bounded: a peer that never sends a source state held the slot forever --------------------

def test_a_peer_that_only_sends_stats_is_hung_up_on_at_the_source_deadline(fast_head) -> None:  # type: ignore[no-untyped-def]
    token = generate_token()
    options = ReceiverOptions(source_timeout_s=1.0, peer_timeout_s=0)

    async def scenario() -> tuple[Any, Any]:
        async with serving_calls(fast_head, options, token, max_calls=2) as served:
            hostile = await connect_as_sender(HttpSignaling(served.url, token), TRANSPORT)
            seq = 0
            while not served.ended:  # STATS, and nothing else, until the receiver hangs up
                hostile.channels.control.send(encode_stats(seq, 0, CallStats(0, 0, 0, 0, 0, 0, 0, 0)))
                seq += 1
                await asyncio.sleep(0.2)
                assert seq < 600, "the receiver never hung up"
            await hostile.pc.close()
            following = await connect_as_sender(HttpSignaling(served.url, token), TRANSPORT)  # the slot is free
            await following.pc.close()
            await served.finish(30)
        return served.ended[0], served.ended[1]

    first, second = asyncio.run(scenario())
    assert first.end_reason.startswith("no usable source state within 1 s")
    assert second.end_reason  # the following peer was answered and its call ended


# ==== issue #28: hostile room participants, Janus servers and local neighbours ==============================

def _group_call(fast_head: Any, tmp_path: Path) -> Any:
    """A GroupCall as the room's callbacks drive it, with no Janus: we are feed 1, our uploads are counted."""
    from realtime.capture import CaptureOptions
    from realtime.janus.api import JanusOptions
    from realtime.janus.participant import ParticipantOptions
    from realtime.janus.videoroom import RoomOptions
    from realtime.room.publisher import Publisher
    from realtime.room.room import GroupCall, GroupCallOptions
    from realtime.sender import SenderOptions, SourceOptions
    from realtime.sinks import NullSink

    sender = SenderOptions(capture=CaptureOptions(images=tmp_path), source=SourceOptions(tmp_path / "face.png"))
    options = GroupCallOptions(ParticipantOptions(JanusOptions("http://127.0.0.1:1/janus"), RoomOptions(9, "me")),
                               sender)
    call = GroupCall(fast_head, options, NullSink())
    call.participant = SimpleNamespace(feed_id=1, wire_bytes=lambda: (0, 0))
    channel = SimpleNamespace(readyState="open", bufferedAmount=0, sent=[])
    channel.send = channel.sent.append
    call.publisher = Publisher(fast_head, sender, channel)  # type: ignore[arg-type]
    call.uploads = []

    async def counted_upload() -> None:
        call.uploads.append(len(call.uploads))
    call.publisher.sender.send_source = counted_upload
    return call


def test_g1_a_participant_asking_for_our_source_state_over_and_over_gets_few_uploads(
        fast_head, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from realtime.janus.participant import RemoteFeed
    from realtime.messages import encode_source_request

    async def scenario() -> tuple[int, int]:
        call = _group_call(fast_head, tmp_path)
        serving = asyncio.ensure_future(call.publisher.serve_source())
        mallory = RemoteFeed(7, "mallory")
        call._joined(mallory)
        for seq in range(200):  # 200 requests naming our feed, the upload loop free to run between them
            call._message(mallory, encode_source_request(seq, seq, 1))
            for _ in range(3):
                await asyncio.sleep(0)
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        return len(call.uploads), call.publisher.source_requests

    uploads, requests = asyncio.run(scenario())
    assert requests == 200
    assert uploads <= 2, f"200 requests from one feed made {uploads} uploads"  # the first, and at most one answer


def test_g2_a_feed_id_beyond_2_53_is_dropped_at_the_boundary_and_cannot_stop_the_room_s_watch(
        fast_head, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    from realtime.janus.participant import RemoteFeed
    from realtime.janus.videoroom import departed_feed, feeds_in

    huge = 1 << 53
    assert [f.id for f in feeds_in({"publishers": [{"id": huge, "display": "m"}, {"id": 5, "display": "b"},
                                                   {"id": -3}, {"id": 0}]})] == [5]
    assert departed_feed({"leaving": huge}) is None and departed_feed({"unpublished": 5}) == 5

    async def scenario() -> tuple[str, dict[int, Any]]:
        call = _group_call(fast_head, tmp_path)
        call.options = dataclasses.replace(call.options, max_seconds=0.5)
        call._joined_us = call._started_us
        call._joined(RemoteFeed(6, "bob"))
        call._joined(RemoteFeed(huge, "mallory"))  # past the boundary: it must cost this feed, not the watch
        watch = asyncio.ensure_future(call._watch(None))
        await asyncio.wait_for(call._stop.wait(), 30)  # the watch lived on to apply --max-seconds
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        return call.end_reason, call.members

    reason, members = asyncio.run(scenario())
    assert reason == "0.5 s in the room"
    assert huge not in members and 6 in members


def test_g3_departed_participants_are_freed_and_what_is_kept_of_them_is_bounded(
        fast_head, astronaut_face, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import gc
    import json
    import weakref

    from realtime.janus.participant import RemoteFeed
    from realtime.room.room import DEPARTURES_KEPT

    state = fast_head.prepare_source(astronaut_face)

    async def scenario() -> tuple[Any, list[Any], int]:
        call = _group_call(fast_head, tmp_path)
        faces = []
        for cycle in range(3 * DEPARTURES_KEPT):  # join, show a face, leave, again and again
            feed = RemoteFeed(100 + cycle, f"churn{cycle}")
            call._joined(feed)
            face = call.members[feed.id].face
            face.installed(cycle, state, 1000, "FEATURE_VOLUME", 0.0)
            faces.append(weakref.ref(face))
            call._left(feed, "left the room")
        del face
        gc.collect()
        return call, faces, len(json.dumps(call.report()))

    call, faces, report_bytes = asyncio.run(scenario())
    assert call.members == {}
    assert all(ref() is None for ref in faces), "a departed participant's face (and source state) is still held"
    assert len(call.departures) == DEPARTURES_KEPT and call.departures_total == 3 * DEPARTURES_KEPT
    assert all(len(d["frames_rendered"]) <= 1 for d in call.departures)
    assert report_bytes < 2000 * DEPARTURES_KEPT


def test_g4_a_remote_janus_over_plain_http_is_refused_unless_asked_for_loudly(
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    from adasr.demo_media import astronaut_portrait
    from adasr_cli.main import build_parser, main
    from realtime.janus.api import JanusOptions

    with pytest.raises(CallError, match="https://"):
        JanusOptions("http://janus.example.org:8088/janus")
    with pytest.raises(CallError, match="https://"):
        JanusOptions("http://198.51.100.7:8088/janus", api_secret="s")
    JanusOptions("https://janus.example.org:8089/janus")
    JanusOptions("http://127.0.0.1:8088/janus")  # nothing leaves this machine
    caplog.set_level(logging.WARNING)
    JanusOptions("http://198.51.100.7:8088/janus", plain_http=True)
    assert any("in the clear" in r.getMessage() for r in caplog.records)
    room = build_parser()._subparsers._group_actions[0].choices["room"]  # type: ignore[union-attr]
    janus_help = next(a.help for a in room._actions if a.dest == "janus")
    assert "https://" in janus_help and "http://HOST" not in janus_help
    code = main(["room", "--janus", "http://198.51.100.7:8088/janus", "--room", "7", "--source",
                 str(astronaut_portrait()), "--video", "unused.mp4", "--checkpoint", "not-loaded.pth"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "refusing plain http://" in lines[0], lines


def test_g6_voice_timestamps_stepped_by_a_second_per_packet_add_no_more_silence_than_the_clock_allows(
        tmp_path: Path) -> None:
    import time
    import wave
    from fractions import Fraction

    import av

    from realtime.audio.opus import SAMPLE_RATE
    from realtime.audio.playout import AudioPlayout, WavSink
    from tests.test_audio import _FrameTrack

    def frame(pts: int) -> av.AudioFrame:
        out = av.AudioFrame.from_ndarray(np.full((1, 2 * 960), 100, np.int16), format="s16", layout="stereo")
        out.sample_rate, out.pts, out.time_base = SAMPLE_RATE, pts, Fraction(1, SAMPLE_RATE)
        return out

    frames = [frame(i * (SAMPLE_RATE - 100)) for i in range(50)]  # each packet ~1 s after the previous
    began = time.monotonic()
    stats = asyncio.run(AudioPlayout(_FrameTrack(frames), WavSink(tmp_path / "out.wav")).run())  # type: ignore[arg-type]
    elapsed = time.monotonic() - began
    with wave.open(str(tmp_path / "out.wav")) as wav:
        written = wav.getnframes()
    assert stats.frames == 50 and written == stats.samples
    assert written <= SAMPLE_RATE * (elapsed + 1.0) + 50 * 960, f"{written / SAMPLE_RATE:.1f} s in {elapsed:.1f} s"


def test_g7_room_source_transfers_are_bounded_by_the_model_a_deadline_and_a_decode_budget(
        fast_head, astronaut_face) -> None:  # type: ignore[no-untyped-def]
    from realtime.room.remote_face import FaceOptions, RemoteFace
    from realtime.source_messages import encode_source_chunk
    from realtime.source_state_codec import encode_state, wire_model_id
    from realtime.source_messages import SourceChunk

    model_id = wire_model_id(fast_head)
    chunk = max_chunk_data(DEFAULT_MAX_MESSAGE)
    options = FaceOptions()
    face = RemoteFace(9, "mallory", fast_head, options, now_us=0)
    seq = 0

    def send(message: bytes, now_us: int) -> bool:
        parsed = face.receive(message, now_us)
        assert parsed is not None, face.stats.control.last_error
        return face.source(parsed, now_us)  # type: ignore[arg-type]

    # (1) an announcement beyond the largest state this model has is refused (it was 64 MiB for any model)
    announced = 60 * 1024 * 1024
    send(encode_source_begin(SourceBegin(seq, 0, 1, announced, chunk, -(-announced // chunk),
                                         SourceKind.FEATURE_VOLUME, bytes(32), model_id)), 0)
    seq += 1
    assert face.stats.source_errors == 1 and "limit" in face.stats.last_source_error
    # (2) an unfinished transfer is dropped at its deadline, its chunks freed
    send(encode_source_begin(SourceBegin(seq, 0, 2, 10 * chunk, chunk, 10, SourceKind.FEATURE_VOLUME, bytes(32),
                                         model_id)), 0)
    seq += 1
    send(encode_source_chunk(SourceChunk(seq, 0, 2, 0, 10, bytes(chunk))), 0)
    seq += 1
    assert face.inbox.receiving
    face.expire(int(options.transfer_timeout_s * 1e6) - 1)
    assert face.inbox.receiving
    face.expire(int(options.transfer_timeout_s * 1e6) + 1)
    assert not face.inbox.receiving
    # (3) a flood of distinct complete transfers: one decode now, the next only after the feed's decode backoff
    payload = encode_state(fast_head.prepare_source(astronaut_face), fast_head.backend.config)
    now = 10**9
    decoded = 0
    for transfer in range(100, 120):
        for message in split_source(payload, model_id, SourceKind.FEATURE_VOLUME, first_seq=seq,
                                    transfer_id=transfer):
            send(message, now)
            seq += 1
        if face.take(now) is not None:
            decoded += 1
    assert decoded == 1
    assert face.take(now + int(options.decode_backoff.first_s * 1e6) + 1) is not None  # the newest, later
    # (4) transfer ids remembered are bounded
    for transfer in range(1000, 3000):
        send(encode_source_begin(SourceBegin(seq, 0, transfer, chunk, chunk, 1, SourceKind.FEATURE_VOLUME, bytes(32),
                                             b"\x01" * 32)), now)
        seq += 1
    assert len(face._known_transfers) <= 64


def test_g8_a_janus_event_naming_a_list_as_its_sender_does_not_end_the_long_poll() -> None:
    from realtime.janus.api import JanusSession
    from tests.test_janus_api import HANDLE, FakeJanus, _serve

    async def scenario() -> tuple[list[Any], list[str]]:
        fake = FakeJanus()
        runner, options = await _serve(fake)
        events: list[Any] = []
        lost: list[str] = []
        got = asyncio.Event()
        try:
            session = await JanusSession.create(options, on_lost=lost.append)
            await session.attach("janus.plugin.videoroom", lambda event: (events.append(event), got.set()))
            await fake.events.put({"janus": "event", "sender": [HANDLE], "plugindata": {}})
            await fake.events.put({"janus": "event", "sender": {"a": 1}})
            await fake.events.put({"janus": "event", "sender": HANDLE, "plugindata": {"data": {"n": 2}}})
            await asyncio.wait_for(got.wait(), 10)
            await session.destroy()
            return events, lost
        finally:
            await runner.cleanup()

    events, lost = asyncio.run(scenario())
    assert [e["plugindata"]["data"]["n"] for e in events] == [2] and lost == []


FORGED = "Bob\x1b[2J\x1b]0;owned\x07\nWARNING realtime: forged"


def _unescaped(text: str) -> bool:
    return bool(set(text) & set("\n\r\x1b\x07"))


def test_g9_names_and_reasons_a_server_or_peer_wrote_are_escaped_before_they_reach_a_terminal() -> None:
    from aiohttp import web

    from realtime.janus.api import JanusError, JanusOptions, plugin_reply
    from realtime.janus.participant import ParticipantOptions, RoomCallbacks, RoomParticipant
    from realtime.janus.videoroom import RoomOptions, feeds_in

    assert not _unescaped(feeds_in({"publishers": [{"id": 5, "display": FORGED}]})[0].display)
    with pytest.raises(JanusError) as refused:
        plugin_reply({"plugindata": {"data": {"error_code": 433, "error": FORGED}}}, "join")
    assert not _unescaped(str(refused.value)) and "\\x1b[2J" in str(refused.value)
    ended: list[str] = []
    participant = RoomParticipant(ParticipantOptions(JanusOptions("http://127.0.0.1:1/janus"), RoomOptions(1, "me")),
                                  RoomCallbacks(ended=ended.append))
    participant._on_publisher_event({"janus": "hangup", "reason": FORGED})
    assert ended and not _unescaped(ended[0]) and not _unescaped(participant.end_reason or "")

    async def receiver_error() -> str:
        async def refuse(request: web.Request) -> web.Response:
            return web.json_response({"error": FORGED}, status=500)
        app = web.Application()
        app.router.add_route("*", "/offer", refuse)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        try:
            with pytest.raises(CallError) as error:
                await HttpSignaling(f"http://{host}:{port}", "t" * 32).probe()
            return str(error.value)
        finally:
            await runner.cleanup()

    message = asyncio.run(receiver_error())
    assert "HTTP 500" in message and not _unescaped(message)


def test_g9_the_room_summary_escapes_display_names_and_the_end_reason() -> None:
    from adasr_cli.room_command import summary_line

    report = {"end_reason": f"out of the room: {FORGED}", "wire_bytes_sent": 1, "wire_bytes_received": 2,
              "faces": {"x#5": {"display": FORGED, "frames_rendered": 3, "left": FORGED}}}
    line = summary_line(report)
    assert not _unescaped(line) and line.count("\\x1b[2J") == 3


def _receive(config_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    from adasr_cli.main import main

    code = main(["receive", "--config-dir", str(config_dir), "--sink", "none", "--port", "0", "--token", "t" * 32,
                 "--checkpoint", str(TINY_CHECKPOINT), "--config", str(TINY_CONFIG)])
    return code, capsys.readouterr().err.strip().splitlines()


def test_g10_a_config_folder_or_key_that_others_can_write_is_refused_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from realtime.tls_identity import KEY_FILE, load_or_create_identity

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # a folder anyone can write: a planted key pair would be served as ours
    load_or_create_identity(tmp_path / "planted")  # a pair made properly, then loosened below
    os.chmod(tmp_path / "planted" / KEY_FILE, 0o666)
    with pytest.raises(CallError, match="writable by others.*chmod"):
        load_or_create_identity(shared)
    with pytest.raises(CallError, match=f"{KEY_FILE}.*chmod 600"):
        load_or_create_identity(tmp_path / "planted")
    code, lines = _receive(shared, capsys)
    assert code == 2 and len(lines) == 1 and "writable by others" in lines[0], lines
    os.chmod(shared, 0o700)
    os.chmod(tmp_path / "planted" / KEY_FILE, 0o600)
    assert load_or_create_identity(shared).fingerprint != load_or_create_identity(tmp_path / "planted").fingerprint


def test_g11_an_empty_pin_is_an_error_not_no_pin(
        tmp_path: Path, astronaut_face, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    import cv2

    from adasr_cli.main import main

    with pytest.raises(CallError, match="--pin is empty"):
        HttpSignaling("https://192.0.2.1:8443", "t" * 32, pin="")
    portrait = tmp_path / "face.png"
    cv2.imwrite(str(portrait), cv2.cvtColor(astronaut_face, cv2.COLOR_RGB2BGR))
    code = main(["send", "--url", "https://192.0.2.1:8443", "--token", "t" * 32, "--pin", "", "--source",
                 str(portrait), "--images", str(tmp_path), "--no-audio"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "--pin is empty" in lines[0], lines


def test_g12_crafted_sequence_numbers_cannot_collide_while_faces_are_held_for_lip_sync() -> None:
    from realtime.lip_sync import DelayLine

    async def scenario() -> tuple[list[str], list[str], list[Any]]:
        delivered: list[str] = []
        superseded: list[str] = []
        errors: list[Any] = []
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: errors.append(context.get("exception")))

        def settle(into: list[str]) -> Any:
            def take(item: str) -> None:
                into.append(item)
                if len(delivered) + len(superseded) == 4:
                    done.set()
            return take

        line: DelayLine[str] = DelayLine(settle(delivered), settle(superseded))
        for seq, item, delay in ((0, "a", 0.05), (1431655765, "b", 0.1), (2863311530, "c", 0.15), (0, "d", 0.2)):
            line.put(seq, item, delay)  # each step is "newer" (< 2^31 ahead): the numbers come round to 0
        await asyncio.wait_for(done.wait(), 10)
        while line.pending():
            await asyncio.sleep(0.05)
        return delivered, superseded, errors

    delivered, superseded, errors = asyncio.run(scenario())
    assert errors == [] and sorted(delivered + superseded) == ["a", "b", "c", "d"]
    assert delivered[0] == "a"  # the first face shown is the first one due, not the one that reused its number


def test_a_feed_silent_before_it_could_hear_us_is_still_asked_for_its_source_state(
        fast_head, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A participant whose subscription to us comes up after its silence timeout (a loaded machine) heard none of
    our first requests: it is out of the grid, but still asked, at the request period."""
    from realtime.janus.participant import RemoteFeed
    from realtime.messages import SourceRequest
    from realtime.protocol import decode

    call = _group_call(fast_head, tmp_path)
    call._joined(RemoteFeed(8, "late"))
    member = call.members[8]
    start = member.face.watch.last_heard_us or 0
    silence_us = int(call.options.faces.silence_timeout_s * 1e6)
    for step in range(0, 4 * silence_us, 500_000):
        call._look_at(member, start + step)
    assert member.face.silent
    requests = [m for m in map(decode, call.publisher.channel.sent) if isinstance(m, SourceRequest) and m.feed == 8]
    period_s = call.options.faces.source_request_s
    assert len(requests) >= int(4 * silence_us / 1e6 / period_s) - 1, f"asked {len(requests)} times in 20 s"
