"""Signaling that never shows the token: HTTPS with a kept self-signed certificate, pinned by the caller."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCSessionDescription

from realtime.call import connect_as_receiver, connect_as_sender
from realtime.errors import CallError
from realtime.http_signaling import (HttpSignaling, OfferServer, OfferServerOptions, OfferServerStats, generate_token,
                                     invitation, parse_pin)
from realtime.tls_identity import CERTIFICATE_FILE, KEY_FILE, TlsIdentity, default_config_dir, load_or_create_identity
from realtime.transport import LOOPBACK, TransportOptions

TRANSPORT = TransportOptions(ice_hosts=LOOPBACK, connect_timeout_s=30)


def test_the_certificate_is_made_once_and_kept(tmp_path: Path) -> None:
    first = load_or_create_identity(tmp_path / "adasr")
    pem = first.certificate.read_bytes()
    assert stat.S_IMODE(os.stat(first.key).st_mode) == 0o600
    assert len(first.fingerprint) == 64 and parse_pin(first.fingerprint).hex() == first.fingerprint
    second = load_or_create_identity(tmp_path / "adasr")
    assert second == first and second.certificate.read_bytes() == pem  # a second start reuses it


def test_the_config_folder_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_config_dir() == tmp_path / "adasr"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert default_config_dir() == Path.home() / ".config" / "adasr"


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path: Path) -> None:
    load_or_create_identity(tmp_path / "a")
    load_or_create_identity(tmp_path / "b")
    (tmp_path / "a" / KEY_FILE).write_bytes((tmp_path / "b" / KEY_FILE).read_bytes())
    with pytest.raises(CallError, match="is not the key of"):
        load_or_create_identity(tmp_path / "a")
    (tmp_path / "b" / CERTIFICATE_FILE).write_text("not a certificate")
    with pytest.raises(CallError, match="delete"):
        load_or_create_identity(tmp_path / "b")


def test_pins_are_read_with_or_without_colons_and_anything_else_is_refused() -> None:
    digest = bytes(range(32))
    assert parse_pin(digest.hex()) == digest
    assert parse_pin(":".join(f"{b:02X}" for b in digest)) == digest
    for bad in ("", "abc", digest.hex()[:-2], digest.hex() + "00", "zz" * 32):
        with pytest.raises(CallError, match="64 hex digits"):
            parse_pin(bad)


@pytest.mark.parametrize("url", ["http://192.0.2.7:8765", "http://example.org:8765", "http://10.0.0.1"])
def test_a_token_is_never_sent_over_plain_http_off_loopback(url: str) -> None:
    with pytest.raises(CallError, match="refusing to send the token over plain http"):
        HttpSignaling(url, generate_token())  # refused when built: nothing was connected


def test_plain_http_on_loopback_and_pins_only_on_https() -> None:
    for url in ("http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765"):
        assert HttpSignaling(url, generate_token()).url.endswith("/offer")
    with pytest.raises(CallError, match="--pin needs an https:// URL"):
        HttpSignaling("http://127.0.0.1:8765", generate_token(), pin="00" * 32)


async def _stub_answer(signaling: Any) -> None:
    """A call handler that answers with the offer's own SDP and ends (signaling only, no media)."""
    offer = await signaling.receive()
    await signaling.send(RTCSessionDescription(sdp=offer.sdp, type="answer"))


class _Served:
    def __init__(self, tls: TlsIdentity, on_call: Any = _stub_answer) -> None:
        self.token = generate_token()
        self.server = OfferServer(on_call, OfferServerOptions(token=self.token, port=0, tls=tls))

    async def __aenter__(self) -> OfferServer:
        await self.server.start()
        return self.server

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()


OFFER = RTCSessionDescription(sdp="v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n", type="offer")


def test_the_right_pin_makes_a_call(tmp_path: Path) -> None:
    identity = load_or_create_identity(tmp_path)
    arrived = asyncio.Event()

    async def receive_call(signaling: Any) -> None:
        connection = await connect_as_receiver(signaling, TRANSPORT)
        connection.channels.control.on("message", lambda data: arrived.set())
        try:
            await asyncio.wait_for(arrived.wait(), 20)
        finally:
            await connection.pc.close()

    token = ""

    async def scenario() -> tuple[str, OfferServerStats]:
        nonlocal token
        served = _Served(identity, receive_call)
        token = served.token
        async with served as server:
            line = invitation(server.url, served.token, server.pin)
            connection = await connect_as_sender(HttpSignaling(server.url, served.token, pin=server.pin), TRANSPORT)
            try:
                connection.channels.control.send(b"hello")
                await asyncio.wait_for(arrived.wait(), 20)
            finally:
                await connection.pc.close()
            return line, server.stats

    line, stats = asyncio.run(scenario())
    assert line.startswith(f"ADASR_TOKEN={token} adasr send --url https://127.0.0.1:")
    assert line.endswith(f"--pin {identity.fingerprint}") and "--token" not in line
    assert stats.answered == 1


def test_a_wrong_pin_fails_before_anything_is_sent(tmp_path: Path) -> None:
    identity = load_or_create_identity(tmp_path / "receiver")
    impostor = load_or_create_identity(tmp_path / "impostor")

    async def scenario() -> tuple[str, OfferServerStats]:
        async with _Served(identity) as server:
            with pytest.raises(CallError) as refused:
                await HttpSignaling(server.url, "any-token-at-all", pin=impostor.fingerprint).send(OFFER)
            return str(refused.value), server.stats

    message, stats = asyncio.run(scenario())
    assert "does not match --pin" in message and identity.fingerprint in message and "nothing was sent" in message
    assert "\n" not in message
    assert stats == OfferServerStats()  # the server saw no request at all


def test_https_without_a_pin_refuses_the_self_signed_certificate_and_a_wrong_token_is_401(tmp_path: Path) -> None:
    identity = load_or_create_identity(tmp_path)

    async def scenario() -> tuple[str, str, OfferServerStats]:
        async with _Served(identity) as server:
            with pytest.raises(CallError) as untrusted:
                await HttpSignaling(server.url, "any-token-at-all").send(OFFER)
            with pytest.raises(CallError) as wrong_token:
                await HttpSignaling(server.url, "not-the-token", pin=identity.fingerprint).send(OFFER)
            return str(untrusted.value), str(wrong_token.value), dataclasses.replace(server.stats)

    untrusted, wrong_token, stats = asyncio.run(scenario())
    assert "not trusted" in untrusted and "--pin" in untrusted
    assert "refused the token (401)" in wrong_token
    assert stats == OfferServerStats(unauthorized=1)


def test_plain_http_to_the_https_endpoint_gets_no_answer(tmp_path: Path) -> None:
    identity = load_or_create_identity(tmp_path)

    async def scenario() -> tuple[bytes, OfferServerStats]:
        served = _Served(identity)
        async with served as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            body = b'{"sdp": "v=0\\r\\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\\r\\n", "type": "offer"}'
            writer.write(b"POST /offer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + served.token.encode()
                         + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
            reply = await asyncio.wait_for(reader.read(), 20)  # the server closes: not a TLS handshake
            writer.close()
            return reply, server.stats

    reply, stats = asyncio.run(scenario())
    assert b"v=0" not in reply and b"answer" not in reply
    assert stats.answered == 0

