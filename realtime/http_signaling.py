"""Signaling over HTTP: the receiver serves ``POST /offer``, the sender posts its offer there.

Two people calling each other need one address and one secret, and no third-party server: the
receiver runs ``OfferServer`` (aiohttp) and prints its URL and token; the sender's
``HttpSignaling`` posts ``{"sdp", "type": "offer"}`` with ``Authorization: Bearer TOKEN`` and gets
``{"sdp", "type": "answer"}`` back. Both descriptions carry every ICE candidate (no trickle), so
one request is the whole exchange; WebRTC (DTLS-encrypted data channels) takes over from there.
The roles are the reverse of the TCP signaling's (``realtime.signaling``), where the sender listens.

What a stranger who finds the port gets:

* no token, or a wrong one: **401** before a byte of the body is read (tokens are compared with
  ``hmac.compare_digest``, in constant time);
* a body over ``max_body`` bytes (64 KiB; an offer with host candidates is 1–2 KiB): **413**;
* an offer while a call is in progress: **409** (one call at a time);
* anything that is not a JSON offer opening a data channel: **400**;
* a body that does not arrive within ``body_timeout_s`` (dribbled): **408**; one cut short or undecodable: **400**;
* headers that do not arrive within ``header_timeout_s``, or an idle keep-alive connection: closed;
* a connection past ``max_connections`` open at once: closed at once.

However a request ends (a dropped client, a bad ``Content-Encoding`` body, a timeout), the call slot
it took is released in a ``finally``: one bad upload never locks out the next caller.

The server binds to 127.0.0.1 by default. Across a network it serves HTTPS with the receiver's
self-signed certificate (``OfferServerOptions.tls``, from ``realtime.tls_identity``), and
``invitation`` is the one line to give the caller: URL, token and the certificate's SHA-256. The
client pins that fingerprint (``aiohttp.Fingerprint``): a wrong pin fails in the TLS handshake,
before the token or the offer is sent. aiohttp skips the pin on ``http://`` URLs, so the client
refuses to send a token over plain HTTP to anything but a loopback address, where it never leaves
the machine. The token and the SDP (whose DTLS fingerprint authenticates the media) are thus never
readable on the network; a fresh token per session limits what a leaked one is worth.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiortc import RTCSessionDescription
from aiortc.contrib.signaling import BYE

from realtime.errors import CallError
from realtime.peer_text import escaped
from realtime.settings import DEFAULT_PORT, TOKEN_ENV_VAR
from realtime.signaling import Signaling, is_loopback
from realtime.tls_identity import TlsIdentity

logger = logging.getLogger(__name__)

#: Path of the offer endpoint.
OFFER_PATH = "/offer"
#: Largest request body accepted: an aiortc offer with a few host candidates is 1–2 KiB.
DEFAULT_MAX_BODY = 64 * 1024
#: Connections open at once; one call needs one, a few more cover refusals and retries.
DEFAULT_MAX_CONNECTIONS = 32


def generate_token() -> str:
    """A fresh random token (32 URL-safe characters, 192 bits) for one receiver session."""
    return secrets.token_urlsafe(24)


def offer_url(url: str) -> str:
    """``https://HOST:PORT`` (or with a path; ``http://`` too) → the offer endpoint's URL; CallError for anything
    else."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallError(f"--url must look like https://HOST:PORT (the address `adasr receive` printed), got {url!r}")
    path = parts.path if parts.path not in ("", "/") else OFFER_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def parse_pin(pin: str) -> bytes:
    """A certificate pin as ``adasr receive`` prints it (64 hex digits, colons allowed) → the 32-byte SHA-256."""
    digits = pin.strip().replace(":", "").lower()
    try:
        digest = bytes.fromhex(digits)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise CallError(f"--pin must be the SHA-256 fingerprint `adasr receive` printed (64 hex digits), got {pin!r}")
    return digest


def invitation(url: str, token: str, pin: str | None) -> str:
    """The one line the receiver gives its caller: what to type to call it. The token goes in the environment
    (``$ADASR_TOKEN``), never on ``adasr send``'s command line, where the process list would show it."""
    return f"{TOKEN_ENV_VAR}={token} adasr send --url {url}" + (f" --pin {pin}" if pin else "")


@dataclass(frozen=True)
class OfferServerOptions:
    """Where and how the receiver accepts offers."""

    token: str
    """The secret a sender must present as ``Authorization: Bearer TOKEN`` (``generate_token`` makes one)."""
    host: str = "127.0.0.1"
    """Bind address; 127.0.0.1 keeps the endpoint on this machine, 0.0.0.0 offers it on every interface."""
    port: int = DEFAULT_PORT
    """TCP port; 0 picks a free one (see ``OfferServer.url``)."""
    max_body: int = DEFAULT_MAX_BODY
    """Largest request body, in bytes."""
    answer_timeout_s: float = 30.0
    """How long the answer may take (setting the offer, gathering candidates) before the request fails."""
    header_timeout_s: float = 10.0
    """A connection must deliver a request's headers within this long, and may idle no longer between requests."""
    body_timeout_s: float = 10.0
    """The whole body must arrive within this long (an offer is 1–2 KiB: a slow body is an attack, not a modem)."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Connections open at once; more are closed as they arrive, so half-sent requests cannot use up file handles."""
    tls: TlsIdentity | None = None
    """Serve HTTPS with this certificate (``load_or_create_identity``); None: plain HTTP (loopback use)."""
    page: Callable[[web.Application, Callable[[web.Request], bool]], None] | None = None
    """Adds further routes to the server, given its token check: the browser peer's page (``realtime.web_page``)."""

    def __post_init__(self) -> None:
        if len(self.token) < 8:
            raise ValueError("the offer server needs a token of at least 8 characters (generate_token() makes one)")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if min(self.header_timeout_s, self.body_timeout_s, self.answer_timeout_s) <= 0 or self.max_connections < 1:
            raise ValueError("the offer server's timeouts must be > 0 and max_connections ≥ 1")


@dataclass
class OfferServerStats:
    """What the offer endpoint did with the requests it got."""

    answered: int = 0
    """Offers answered (calls started)."""
    calls_ended: int = 0
    """Calls whose handler returned or failed."""
    call_errors: int = 0
    """Calls whose handler raised (logged)."""
    unauthorized: int = 0
    """401: missing or wrong token."""
    too_large: int = 0
    """413: body over the cap."""
    busy: int = 0
    """409: a call was in progress."""
    bad_request: int = 0
    """400: not a JSON offer, or an SDP the peer connection refused."""
    body_failed: int = 0
    """408 or 400: the body did not arrive whole (408: too slow; 400: the client dropped, or a body that
    does not decode)."""
    connections_refused: int = 0
    """Connections closed on arrival: ``max_connections`` were open."""


class OneShotSignaling:
    """The answerer's signaling for one HTTP request: ``receive`` gives the posted offer, ``send`` the answer back."""

    def __init__(self, offer: RTCSessionDescription) -> None:
        self._offer: RTCSessionDescription | None = offer
        self.answer: asyncio.Future[RTCSessionDescription] = asyncio.get_running_loop().create_future()
        """Resolved with the answer ``realtime.signaling.answer`` sends; the HTTP response carries it."""

    async def connect(self) -> None:
        """Nothing to connect: the request is the connection."""

    async def send(self, descr: Any) -> None:
        if isinstance(descr, RTCSessionDescription) and not self.answer.done():
            self.answer.set_result(descr)

    async def receive(self) -> Any:
        offer, self._offer = self._offer, None
        return offer if offer is not None else BYE

    async def close(self) -> None:
        """Nothing to close."""


#: What the server runs for each accepted offer: answer through the signaling object, then run the call.
CallHandler = Callable[[Signaling], Awaitable[object]]


class OfferServer:
    """``POST /offer`` with a bearer token, one call at a time; ``on_call`` runs each accepted call to its end."""

    def __init__(self, on_call: CallHandler, options: OfferServerOptions) -> None:
        self.on_call = on_call
        self.options = options
        self.stats = OfferServerStats()
        self._token = options.token.encode("utf-8")
        self._busy = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self.port = options.port
        """The port actually bound (differs from the options' when they say 0)."""

    @property
    def url(self) -> str:
        """Base URL a sender passes as ``--url`` (the bind address; 0.0.0.0 means any of this machine's)."""
        scheme = "https" if self.options.tls is not None else "http"
        return f"{scheme}://{self.options.host}:{self.port}"

    @property
    def pin(self) -> str | None:
        """SHA-256 fingerprint of the certificate served, for the caller's ``--pin``; None over plain HTTP."""
        return self.options.tls.fingerprint if self.options.tls is not None else None

    async def start(self) -> None:
        """Bind and serve (returns once listening)."""
        app = web.Application(client_max_size=self.options.max_body)
        app.router.add_post(OFFER_PATH, self._handle_offer)
        app.router.add_get(OFFER_PATH, self._handle_probe)
        if self.options.page is not None:
            self.options.page(app, self.authorized)
        # aiohttp's keep-alive timer runs from the moment a connection opens and closes it while no full
        # request has arrived: it is the header timeout as well as the idle one.
        self._runner = web.AppRunner(app, access_log=None, keepalive_timeout=self.options.header_timeout_s)
        await self._runner.setup()
        handlers = self._runner.server
        assert handlers is not None
        tls = self.options.tls.server_context() if self.options.tls is not None else None
        try:
            self._server = await asyncio.get_running_loop().create_server(
                _ConnectionCap(handlers, self.options.max_connections, self.stats), self.options.host,
                self.options.port, ssl=tls, ssl_handshake_timeout=self.options.header_timeout_s if tls else None)
        except OSError as exc:
            await self._runner.cleanup()
            raise CallError(f"cannot listen on {self.options.host}:{self.options.port} ({exc.strerror or exc}): "
                            "pick another --port, or stop what uses this one") from None
        self.port = int(self._server.sockets[0].getsockname()[1])
        logger.info("offer endpoint listening on %s%s", self.url, OFFER_PATH)

    async def stop(self) -> None:
        """Stop listening and cancel a call in progress."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def authorized(self, request: web.Request) -> bool:
        """Whether ``request`` carries this server's token (``Authorization: Bearer TOKEN``)."""
        return self._authorized(request.headers.get("Authorization", ""))

    def _authorized(self, header: str) -> bool:
        """Constant-time token check that cannot raise: aiohttp hands undecodable header bytes over as surrogates."""
        scheme, _, credentials = header.partition(" ")
        # a token is ASCII: a replaced byte never matches
        presented = credentials.strip().encode("utf-8", errors="replace")
        return scheme.lower() == "bearer" and hmac.compare_digest(presented, self._token)

    def _refuse(self, status: int, counter: str, message: str, request: web.Request) -> web.Response:
        count = getattr(self.stats, counter) + 1
        setattr(self.stats, counter, count)
        (logger.warning if count == 1 else logger.debug)("refused an offer from %s (%d): %s", request.remote, status,
                                                         escaped(message))
        headers = {"WWW-Authenticate": 'Bearer realm="adasr"'} if status == 401 else None
        return web.json_response({"error": message}, status=status, headers=headers)

    async def _handle_probe(self, request: web.Request) -> web.Response:
        """``GET /offer``: a caller checks address, certificate and token before it loads its model; no SDP."""
        if not self._authorized(request.headers.get("Authorization", "")):
            return self._refuse(401, "unauthorized", "missing or wrong token: send Authorization: Bearer TOKEN",
                                request)
        if self._busy:
            return web.json_response({"error": "a call is in progress"}, status=409)
        return web.Response(status=204)

    async def _handle_offer(self, request: web.Request) -> web.Response:
        if not self._authorized(request.headers.get("Authorization", "")):
            return self._refuse(401, "unauthorized", "missing or wrong token: send Authorization: Bearer TOKEN",
                                request)
        if request.content_length is not None and request.content_length > self.options.max_body:
            return self._refuse(413, "too_large", f"an offer is at most {self.options.max_body} bytes", request)
        if self._busy:
            return self._refuse(409, "busy", "a call is in progress; try again when it has ended", request)
        self._busy = True  # before the first await: two offers racing cannot both get in
        call_started = False
        try:
            try:
                body = await asyncio.wait_for(request.read(), self.options.body_timeout_s)
            except web.HTTPRequestEntityTooLarge:
                return self._refuse(413, "too_large", f"an offer is at most {self.options.max_body} bytes", request)
            except asyncio.TimeoutError:
                return self._refuse(408, "body_failed", f"the body took over {self.options.body_timeout_s:g} s",
                                    request)
            except _BODY_ERRORS as exc:  # the client dropped, or a body that does not decode
                return self._refuse(400, "body_failed", f"the body did not arrive whole ({type(exc).__name__})",
                                    request)
            try:
                offer = _parse_offer(body)
            except ValueError as exc:
                return self._refuse(400, "bad_request", str(exc), request)
            signaling = OneShotSignaling(offer)
            task = asyncio.ensure_future(self._run_call(signaling))
            call_started = True  # from here the call task owns the slot and releases it when it ends
        finally:
            if not call_started:
                self._release()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        either: set[asyncio.Future[Any]] = {signaling.answer, task}
        await asyncio.wait(either, timeout=self.options.answer_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if signaling.answer.done():
            answer = signaling.answer.result()
            self.stats.answered += 1
            logger.info("answered an offer from %s", request.remote)
            return web.json_response({"sdp": answer.sdp, "type": answer.type})
        if not task.done():
            task.cancel()
            return web.json_response({"error": "no answer within the time limit"}, status=503)
        error = task.exception() if not task.cancelled() else None
        if isinstance(error, ValueError):  # aiortc refused the SDP
            return self._refuse(400, "bad_request", f"unusable offer: {escaped(str(error))}", request)
        return web.json_response({"error": f"the receiver could not answer: {escaped(str(error))}"}, status=500)

    async def _run_call(self, signaling: OneShotSignaling) -> None:
        try:
            await self.on_call(signaling)
        except Exception:
            if not signaling.answer.done():
                raise  # no answer yet: the request handler reports it to the sender
            self.stats.call_errors += 1  # the call was up: nobody else will see this failure
            logger.exception("the call failed")
        finally:
            self.stats.calls_ended += 1
            self._release()

    def _release(self) -> None:
        self._busy = False


#: What reading a body raises when the client drops mid-way or sends a body its Content-Encoding cannot decode.
_BODY_ERRORS = (OSError, aiohttp.ClientError, web.RequestPayloadError, HttpProcessingError)


class _ConnectionCap:
    """Protocol factory in front of aiohttp's: past ``limit`` open connections, a new one is closed on arrival.

    Counted here, from the moment a connection is accepted to the moment it is lost: aiohttp registers a
    connection only once the loop gets round to it, so a burst accepted at once would all fit its count.
    """

    def __init__(self, handlers: web.Server, limit: int, stats: OfferServerStats) -> None:
        self._handlers, self._limit, self._stats = handlers, limit, stats
        self._open = 0

    def __call__(self) -> asyncio.BaseProtocol:
        if self._open >= self._limit:
            self._stats.connections_refused += 1
            (logger.warning if self._stats.connections_refused == 1 else logger.debug)(
                "refused a connection: %d are open already", self._limit)
            return _Refused()
        self._open += 1
        return _Counted(self._handlers(), self._closed)

    def _closed(self) -> None:
        self._open -= 1


class _Counted(asyncio.Protocol):
    """aiohttp's handler for one connection, every transport callback passed on; says when the connection ends."""

    def __init__(self, inner: asyncio.Protocol, on_lost: Callable[[], None]) -> None:
        self._inner, self._on_lost = inner, on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost()
        self._inner.connection_lost(exc)


class _Refused(asyncio.Protocol):
    """A connection over the cap: closed as soon as it is made, before it reads a byte."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def _parse_offer(body: bytes) -> RTCSessionDescription:
    """The request body as an offer; ValueError with the reason otherwise."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the body is not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("sdp"), str) or data.get("type") != "offer":
        raise ValueError('expected a JSON object {"sdp": "...", "type": "offer"}')
    if "\nm=application " not in "\n" + data["sdp"].replace("\r\n", "\n"):
        raise ValueError("the offer opens no data channel (no m=application line): not an AdaSR sender")
    return RTCSessionDescription(sdp=data["sdp"], type="offer")


class HttpSignaling:
    """The offerer's signaling against an ``OfferServer``: ``send(offer)`` posts it, ``receive()`` gives the answer."""

    def __init__(self, url: str, token: str, timeout_s: float = 30.0, pin: str | None = None,
                 token_source: str = "--token") -> None:
        """Refuses (CallError), before connecting, to send the token where it could be read: over ``http://``
        to anything but a loopback address. ``pin``: the receiver's certificate fingerprint (``https://`` only);
        without it an ``https://`` receiver must have a certificate the system trusts. ``token_source`` names
        where the token came from, for the message when the receiver refuses it."""
        if not token:
            raise CallError(f"calling over HTTP needs the receiver's token: --token TOKEN (or ${TOKEN_ENV_VAR})")
        if pin is not None and not pin.strip():
            raise CallError("--pin is empty (an unset shell variable?): give the SHA-256 fingerprint `adasr receive` "
                            "printed, or leave --pin out to trust the system's certificate authorities instead")
        self.url = offer_url(url)
        parts = urlsplit(self.url)
        self._tls: aiohttp.Fingerprint | bool
        if parts.scheme == "https":
            self._tls = aiohttp.Fingerprint(parse_pin(pin)) if pin is not None else True
        elif pin is not None:
            raise CallError(f"--pin needs an https:// URL (a pin cannot protect {self.url})")
        elif not is_loopback(parts.hostname or ""):
            raise CallError(f"refusing to send the token over plain http:// to {parts.hostname}: anyone on the way "
                            "could read it; use the https:// URL and the --pin that `adasr receive` printed")
        else:
            self._tls = False  # loopback: nothing leaves this machine
        self.token = token
        self.token_source = token_source
        self.timeout_s = timeout_s
        self._answer: RTCSessionDescription | None = None

    async def connect(self) -> None:
        """Nothing to connect: each offer is one request."""

    async def probe(self) -> None:
        """``GET /offer``: reach the receiver, check its certificate and have it accept the token, sending no offer;
        CallError saying what is wrong (a caller runs this before it spends seconds loading its model)."""
        status, text = await self._request("GET", None)
        self._check_status(status, text, expected=204)

    async def send(self, descr: Any) -> None:
        if not isinstance(descr, RTCSessionDescription) or descr.type != "offer":
            return  # candidates travel inside the SDP; nothing else goes over this signaling
        status, text = await self._request("POST", {"sdp": descr.sdp, "type": descr.type})
        self._check_status(status, text, expected=200)
        try:
            data = json.loads(text)
            if data.get("type") != "answer" or not isinstance(data.get("sdp"), str):
                raise ValueError("not an answer")
        except (ValueError, AttributeError):
            raise CallError(f"the receiver's reply is not a JSON answer: {text[:200]!r}") from None
        self._answer = RTCSessionDescription(sdp=data["sdp"], type="answer")

    async def _request(self, method: str, body: dict[str, str] | None) -> tuple[int, str]:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.request(method, self.url, json=body, headers=headers, ssl=self._tls) as reply:
                    return reply.status, await reply.text()
        except aiohttp.ServerFingerprintMismatch as exc:
            raise CallError(f"the receiver's certificate does not match --pin (it has SHA-256 {exc.got.hex()}): "
                            "nothing was sent; check the pin `adasr receive` printed, or someone is in between"
                            ) from None
        except aiohttp.ClientConnectorCertificateError:
            raise CallError(f"the receiver's certificate at {self.url} is not trusted by this system (self-signed): "
                            "pass --pin with the fingerprint `adasr receive` printed; nothing was sent") from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise CallError(f"cannot reach the receiver at {self.url} ({type(exc).__name__}: {exc}): is "
                            "`adasr receive` running there, and are the address and port right?") from None

    def _check_status(self, status: int, text: str, expected: int) -> None:
        if status == 401:
            raise CallError(f"the receiver refused the token (401) given by {self.token_source}: it must be the one "
                            "this receiver printed at start (a restarted receiver has a new one)")
        if status == 409:
            raise CallError("the receiver is in another call (409): try again when it has ended")
        if status == 413:
            raise CallError("the receiver refused the offer as too large (413)")
        if status != expected:
            raise CallError(f"the receiver answered HTTP {status}: {_error_text(text)}")

    async def receive(self) -> Any:
        answer, self._answer = self._answer, None
        return answer if answer is not None else BYE

    async def close(self) -> None:
        """Nothing to close."""


def _error_text(text: str) -> str:
    """The receiver's error message, escaped: it goes into a CallError that a terminal shows."""
    try:
        return escaped(str(json.loads(text)["error"]))
    except (ValueError, KeyError, TypeError):
        return escaped(text)
