"""ICE across NATs: STUN/TURN options, and relay-only calls through a real coturn on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from realtime.call import connect_as_receiver, connect_as_sender
from realtime.connection import Connection
from realtime.errors import CallError
from realtime.ice import (
    TURN_PASSWORD_ENV,
    TURN_USER_ENV,
    CandidatePair,
    IceOptions,
    local_candidate_types,
    selected_candidate_pair,
)
from realtime.signaling import InProcessSignaling
from realtime.tls_identity import load_or_create_identity
from realtime.transport import LOOPBACK, TransportOptions
from tests.turn_server import TurnServer, running_coturn, turnserver_or_skip

MESSAGES = 30


# ---- options ------------------------------------------------------------------------------------

def test_ice_options_make_aiortcs_configuration() -> None:
    assert IceOptions().configuration().iceServers == []  # never aiortc's default Google STUN server
    options = IceOptions(stun="stun:stun.example.org", turn="turn:turn.example.org:3479?transport=tcp",
                         turn_user="u", turn_password="p", relay_only=True)
    config = options.configuration()
    assert config.iceTransportPolicy == RTCIceTransportPolicy.RELAY
    assert [(s.urls, s.username, s.credential) for s in config.iceServers or []] == [
        ("stun:stun.example.org", None, None), ("turn:turn.example.org:3479?transport=tcp", "u", "p")]
    assert IceOptions(turn="turn:h", turn_user="u", turn_password="p").configuration().iceTransportPolicy \
        == RTCIceTransportPolicy.ALL


@pytest.mark.parametrize("fields, says", [
    ({"stun": "stun:a.org stun:b.org"}, "takes one URL"),
    ({"turn": "turn:a.org,turn:b.org", "turn_user": "u", "turn_password": "p"}, "takes one URL"),
    ({"stun": "stuns:a.org"}, "must be a stun: URL"),
    ({"stun": "http://a.org"}, "must look like"),
    ({"turn": "turn:a.org?transport=tls", "turn_user": "u", "turn_password": "p"}, "udp or tcp only"),
    ({"turn": "turns:a.org?transport=udp", "turn_user": "u", "turn_password": "p"}, "tcp only"),
    ({"turn": "turn:a.org"}, "needs a user and a password"),
    ({"relay_only": True}, "needs a TURN server"),
    ({"turn": "turn:a.org", "turn_user": "u", "turn_password": "p", "turn_ca": Path("ca.pem")}, "turns: URL"),
    ({"turn": "turns:a.org", "turn_user": "u", "turn_password": "p", "turn_ca": Path("/no/such.pem")}, "not a file"),
])
def test_ice_options_refuse_what_aiortc_would_silently_ignore(fields: dict[str, object], says: str) -> None:
    with pytest.raises(CallError, match=says):
        IceOptions(**fields)  # type: ignore[arg-type]


def test_turn_credentials_come_from_the_environment_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TURN_USER_ENV, "env-user")
    monkeypatch.setenv(TURN_PASSWORD_ENV, "env-pass")
    options = IceOptions.with_environment(turn="turn:a.org")
    assert (options.turn_user, options.turn_password) == ("env-user", "env-pass")
    given = IceOptions.with_environment(turn="turn:a.org", turn_user="flag-user", turn_password="flag-pass")
    assert (given.turn_user, given.turn_password) == ("flag-user", "flag-pass")


def test_the_pair_kind_is_the_less_direct_end() -> None:
    assert CandidatePair("host", "host").kind == "host"
    assert CandidatePair("host", "srflx").kind == "srflx"
    assert CandidatePair("relay", "host").kind == "relay"


# ---- calls ------------------------------------------------------------------------------------

async def _call(sender: TransportOptions, receiver: TransportOptions) -> tuple[Connection, Connection]:
    side_a, side_b = InProcessSignaling.pair()
    return await asyncio.gather(connect_as_sender(side_a, sender), connect_as_receiver(side_b, receiver))


async def _exchange(conn_s: Connection, conn_r: Connection) -> int:
    """Send MESSAGES on the control channel; return how many arrived (waits for all, bounded)."""
    got: list[bytes] = []
    all_in = asyncio.Event()

    def on_message(data: bytes) -> None:
        got.append(data)
        if len(got) == MESSAGES:
            all_in.set()

    conn_r.channels.control.on("message", on_message)
    for i in range(MESSAGES):
        conn_s.channels.control.send(i.to_bytes(4, "little") * 12)
    await asyncio.wait_for(all_in.wait(), 20)
    return len(got)


def test_a_host_call_names_its_pair_host() -> None:
    async def scenario() -> tuple[CandidatePair | None, CandidatePair | None]:
        transport = TransportOptions(ice_hosts=LOOPBACK, connect_timeout_s=30)
        conn_s, conn_r = await _call(transport, transport)
        try:
            await _exchange(conn_s, conn_r)
            return selected_candidate_pair(conn_s.pc), selected_candidate_pair(conn_r.pc)
        finally:
            await conn_s.pc.close()
            await conn_r.pc.close()

    assert asyncio.run(scenario()) == (CandidatePair("host", "host"), CandidatePair("host", "host"))


@pytest.fixture
def coturn(tmp_path: Path):  # type: ignore[no-untyped-def]
    with running_coturn(tmp_path / "coturn") as server:
        yield server


def _relay_only(server: TurnServer, url: str | None = None, password: str | None = None,
                turn_ca: Path | None = None) -> TransportOptions:
    ice = IceOptions(turn=url or server.url, turn_user=server.user, turn_password=password or server.password,
                     turn_ca=turn_ca, relay_only=True)
    return TransportOptions(ice_hosts=LOOPBACK, ice=ice, connect_timeout_s=30)


def _relayed_call(transport: TransportOptions) -> tuple[int, list[CandidatePair | None], list[dict[str, int]]]:
    async def scenario() -> tuple[int, list[CandidatePair | None], list[dict[str, int]]]:
        conn_s, conn_r = await _call(transport, transport)
        try:
            arrived = await _exchange(conn_s, conn_r)
            pairs = [selected_candidate_pair(conn_s.pc), selected_candidate_pair(conn_r.pc)]
            return arrived, pairs, [local_candidate_types(conn_s.pc), local_candidate_types(conn_r.pc)]
        finally:
            await conn_s.pc.close()
            await conn_r.pc.close()

    return asyncio.run(scenario())


def test_a_relay_only_call_goes_through_coturn(coturn: TurnServer) -> None:
    arrived, pairs, gathered = _relayed_call(_relay_only(coturn))
    assert arrived == MESSAGES
    assert pairs == [CandidatePair("relay", "relay")] * 2
    assert gathered == [{"relay": 1}] * 2  # relay-only: no host address is offered to the peer


def test_relay_only_with_a_wrong_password_fails_with_the_reason(coturn: TurnServer) -> None:
    async def scenario() -> None:
        await _call(_relay_only(coturn, password="wrong"), _relay_only(coturn))

    with pytest.raises(CallError, match="gave no relay candidate.*--turn-user/--turn-password"):
        asyncio.run(scenario())


def test_turns_with_a_private_ca_relays_and_without_it_says_why(tmp_path: Path) -> None:
    turnserver_or_skip()
    identity = load_or_create_identity(tmp_path / "turn-cert", name="coturn test")
    with running_coturn(tmp_path / "coturn", certificate=(identity.certificate, identity.key)) as server:
        arrived, pairs, _ = _relayed_call(_relay_only(server, url=server.tls_url, turn_ca=identity.certificate))
        assert arrived == MESSAGES and pairs == [CandidatePair("relay", "relay")] * 2

        async def untrusted() -> None:
            transport = _relay_only(server, url=server.tls_url)
            await _call(transport, transport)

        with pytest.raises(CallError, match="--turn-ca"):
            asyncio.run(untrusted())
