"""What the receiver's refusals cost: the hostile inputs of issue #15 that used to cost memory or time.

    python benchmarks/hostile_peers.py

On the random-weight lite model at 128 px (the shapes, not the weights, matter), in one process:

* the issue's F2 attack: a FEATURE_VOLUME whose f_s is 720×720 instead of the model's H×W, packed
  and compressed as a sender would (a few KB on the wire), through ``decode_state``;
* a payload declaring the right arrays but a wrong f_s shape, through ``decode_state``;
* 1000 SOURCE_BEGIN announcements of 60 MiB each, through ``Receiver.on_control`` (then 20 more
  under tracemalloc, for what they allocate);
* a checkpoint whose storages are deflated, through ``load_model``.

Then the offer endpoint with its default options (a stub call that answers at once), over raw
sockets on loopback: an upload dropped mid-body, a body whose gzip does not decode, undecodable
Authorization bytes, a body stalled after one byte, headers never finished, 300 idle connections;
after each, whether the next offer gets in. A probe that gets no answer waits ``PROBE_S`` at most.

Each line prints the median time and what the code answered. ``tests/test_hostile_peers.py`` asserts
the refusals; this script only measures them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import statistics
import tempfile
import time
import tracemalloc
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from aiortc import RTCSessionDescription

from adasr import motion_layout
from adasr.checkpoint import load_model, save_checkpoint
from adasr.config import load_model_config
from adasr.errors import CheckpointError
from adasr.networks import AdaSRNetworks
from engines.talking_head import TalkingHead
from engines.torch_backend import TorchBackend
from realtime.errors import ProtocolError
from realtime.http_signaling import OfferServer, OfferServerOptions
from realtime.messages import DEFAULT_MAX_MESSAGE
from realtime.receiver import Receiver, ReceiverOptions
from realtime.source_messages import SourceBegin, SourceKind, encode_source_begin, max_chunk_data
from realtime.source_payload import pack_source_state
from realtime.source_state_codec import decode_state, wire_model_id


def timed(action: Callable[[], object], repeats: int) -> tuple[float, str]:
    """Median milliseconds of ``action`` and what it raised (or returned)."""
    times, outcome = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        try:
            outcome = f"returned {type(action()).__name__}"
        except (ProtocolError, CheckpointError) as exc:
            outcome = f"{type(exc).__name__}: {str(exc)[:110]}"
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), outcome


#: Longest a probe of the offer endpoint waits for an answer.
PROBE_S = 15.0
TOKEN = "benchmark-token-0123456789"
OFFER = json.dumps({"sdp": "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n", "type": "offer"}).encode()


def head_of(length: int, *extra: bytes, auth: bytes = TOKEN.encode()) -> bytes:
    lines = [b"POST /offer HTTP/1.1", b"Host: 127.0.0.1", b"Authorization: Bearer " + auth,
             b"Content-Length: %d" % length, *extra]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def probe(port: int, data: bytes, *, abort: bool = False) -> tuple[float, str]:
    """Send ``data``; the server's answer (status line, a close, or nothing within PROBE_S) and its delay."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.perf_counter()
    writer.write(data)
    await writer.drain()
    try:
        if abort:
            await asyncio.sleep(0.2)
            writer.transport.abort()
            return (time.perf_counter() - start) * 1e3, "aborted by the client"
        try:
            line = await asyncio.wait_for(reader.readline(), PROBE_S)
        except asyncio.TimeoutError:
            return PROBE_S * 1e3, f"no answer in {PROBE_S:g} s"
        except ConnectionError as exc:
            line = type(exc).__name__.encode()
        return (time.perf_counter() - start) * 1e3, line.decode(errors="replace").strip() or "connection closed"
    finally:
        writer.close()


async def answer_at_once(signaling: Any) -> None:
    """The stub call: answer the offer with its own SDP and end, freeing the slot."""
    offer = await signaling.receive()
    await signaling.send(RTCSessionDescription(sdp=offer.sdp, type="answer"))


async def attack_then_offer(attack: Callable[[int], Awaitable[tuple[float, str]]]) -> tuple[float, str]:
    """One attack on a fresh endpoint, then a legitimate offer: the attack's result and what the offer got."""
    server = OfferServer(answer_at_once, OfferServerOptions(token=TOKEN, port=0))
    await server.start()
    try:
        elapsed_ms, result = await attack(server.port)
        await asyncio.sleep(0.2)
        _, following = await probe(server.port, head_of(len(OFFER)) + OFFER)
        return elapsed_ms, f"{result}; next offer: {following}"
    finally:
        await server.stop()


async def idle_connections(port: int, count: int = 300) -> tuple[float, str]:
    start = time.perf_counter()
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]
    opened_ms = (time.perf_counter() - start) * 1e3
    await asyncio.sleep(0.5)
    closed = sum(1 for reader, _ in idle if reader.at_eof())
    for _, writer in idle:
        writer.close()
    return opened_ms, f"{closed} of {count} closed by the server within 0.5 s"


async def endpoint_rows() -> list[tuple[str, float, str]]:
    not_gzip = b"\x1f\x8b\x08\x00 not a gzip stream"
    attacks: list[tuple[str, Callable[[int], Awaitable[tuple[float, str]]]]] = [
        ("F1 upload dropped mid-body", lambda port: probe(port, head_of(4096) + b"{", abort=True)),
        ("F1 body that does not gunzip",
         lambda port: probe(port, head_of(len(not_gzip), b"Content-Encoding: gzip") + not_gzip)),
        ("F5 Authorization: Bearer \\xff\\xfe\\xfd",
         lambda port: probe(port, head_of(2, auth=b"\xff\xfe\xfd") + b"{}")),
        ("F3 body stalled after 1 of 1000 bytes", lambda port: probe(port, head_of(1000) + b"{")),
        ("F3 headers never finished", lambda port: probe(port, b"POST /offer HTTP/1.1\r\nHost: 127.0.0.1\r\n")),
        ("F3 300 idle connections (ms: to open them)", idle_connections),
    ]
    return [(what, *await attack_then_offer(attack)) for what, attack in attacks]


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = dataclasses.replace(load_model_config("lite"), image_size=128, name="lite-128-bench")
    work = Path(tempfile.mkdtemp())
    checkpoint = save_checkpoint(work / "lite128.pth", AdaSRNetworks(config))
    head = TalkingHead(TorchBackend(load_model(checkpoint)))
    c, d, h, w = config.sent_volume_shape()
    k = config.num_kp
    rng = np.random.default_rng(0)
    x_c = rng.standard_normal((1, k, 3)).astype(np.float32)
    motion = np.zeros(motion_layout.vector_size(k), np.float32)
    huge = pack_source_state({"f_s": np.zeros((1, c, d, 720, 720), np.float32), "x_c": x_c, "motion": motion})
    wrong = pack_source_state({"f_s": np.zeros((1, c, d, h + 4, w), np.float32), "x_c": x_c, "motion": motion})
    rows = [(f"F2 f_s (1, {c}, {d}, 720, 720), {len(huge)} B payload",
             *timed(lambda: decode_state(huge, SourceKind.FEATURE_VOLUME, head), 5)),
            (f"F2 f_s (1, {c}, {d}, {h + 4}, {w}), {len(wrong)} B payload",
             *timed(lambda: decode_state(wrong, SourceKind.FEATURE_VOLUME, head), 5))]

    chunk = max_chunk_data(DEFAULT_MAX_MESSAGE)
    announced = 60 * 1024 * 1024
    begins = [encode_source_begin(SourceBegin(i, 0, i, announced, chunk, -(-announced // chunk),
                                              SourceKind.FEATURE_VOLUME, bytes(32), wire_model_id(head)))
              for i in range(1000)]

    async def announce(messages: list[bytes]) -> float:
        receiver = Receiver(head, ReceiverOptions(stats_interval_s=0, peer_timeout_s=0))
        start = time.perf_counter()
        for message in messages:
            receiver.on_control(message)
        elapsed = time.perf_counter() - start
        assert receiver.stats.control.accepted == len(messages)
        await receiver.stop()
        return elapsed

    per_begin_ms = asyncio.run(announce(begins)) / len(begins) * 1e3
    tracemalloc.start()
    asyncio.run(announce(begins[:20]))
    peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    rows.append((f"F4 SOURCE_BEGIN of {announced} B, ×{len(begins)}", per_begin_ms,
                 f"all accepted; peak traced allocation over 20 of them {peak_mib:.1f} MiB"))

    deflated = work / "deflated.pth"
    with zipfile.ZipFile(checkpoint) as source, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as out:
        for entry in source.infolist():
            out.writestr(entry.filename, source.read(entry))
    rows.append((f"F9 checkpoint with deflated storages, {deflated.stat().st_size} B",
                 *timed(lambda: load_model(deflated), 5)))

    rows += asyncio.run(endpoint_rows())
    width = max(len(row[0]) for row in rows)
    for what, ms, outcome in rows:
        print(f"{what:<{width}}  {ms:9.3f} ms  {outcome}")


if __name__ == "__main__":
    main()
