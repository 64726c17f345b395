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
    return struct.pack("<4sBBHI", b"ASRC", 1, 0, 0, len(body) if raw_length is None else raw_length) + body


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
