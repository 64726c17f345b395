"""Janus's HTTP API: a session, its plugin handles, and the long-poll that delivers their events.

Janus answers a request either at once (``success``) or with an ``ack`` followed later by an
``event`` carrying the same transaction; that event, and every unsolicited one (a publisher
joined, a peer hung up), arrives only through ``GET /janus/<session>?maxev=N``, which Janus holds
open until it has something to say (or 30 s, then a ``keepalive``). That poll is also what keeps
the session alive: Janus destroys a session that nobody polls for its ``session_timeout`` (60 s).

So a ``JanusSession`` runs one poll task for its whole life; it resolves the pending transactions
and hands every other event to the handle it names. Every request, and every wait for an
asynchronous reply, is bounded by ``JanusOptions.request_timeout_s``; an error reported by Janus
or its plugin becomes a ``JanusError`` with Janus's code and reason. When the poll fails, or Janus
says the session timed out, the session is *lost*: pending requests fail and ``on_lost`` runs once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from realtime.errors import CallError
from realtime.peer_text import escaped
from realtime.signaling import is_loopback

logger = logging.getLogger(__name__)

#: A JSON object as Janus sends it.
JsonObject = dict[str, Any]
#: Called with each unsolicited event of a handle (``event``, ``webrtcup``, ``hangup``, ``media``, ...).
EventHandler = Callable[[JsonObject], None]


class JanusError(CallError):
    """Janus, or one of its plugins, refused a request or could not be reached."""

    def __init__(self, request: str, reason: str, code: int | None = None) -> None:
        self.request = request
        """What was asked (``create``, ``attach``, a plugin request such as ``join``)."""
        self.code = code
        """Janus's error code (``janus.h`` for the core, the plugin's own, e.g. 426 no such room), None when
        the failure is ours (timeout, connection, malformed reply)."""
        self.reason = escaped(reason)
        """Janus's words (escaped: a terminal shows them), or ours."""
        suffix = f" (Janus error {code})" if code is not None else ""
        super().__init__(f"Janus refused {request!r}: {self.reason}{suffix}")


@dataclass(frozen=True)
class JanusOptions:
    """Where Janus is and how long to wait for it."""

    url: str
    """Base URL of the HTTP API, e.g. ``https://janus.example:8089/janus`` (``http://`` to loopback only, unless
    ``plain_http``)."""
    api_secret: str | None = None
    """Janus's ``api_secret`` (``janus.jcfg``), sent with every request when set."""
    request_timeout_s: float = 10.0
    """Bound on each request, and on the wait for each asynchronous reply."""
    max_events: int = 10
    """Events one long-poll answer may carry (``maxev``)."""
    poll_hold_s: float = 30.0
    """How long Janus holds a long-poll open with nothing to say (30 s in Janus 1.x); the poll's own bound
    is this plus ``request_timeout_s``."""
    plain_http: bool = False
    """Allow ``http://`` to a Janus that is not on this machine: anyone on the way reads the API secret and the
    room's PIN and can rewrite Janus's SDP (the DTLS fingerprints, so every stream). Only where the network is
    trusted end to end (a test namespace)."""

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"the Janus URL must be http(s)://host:port/path, got {self.url!r}")
        if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            if not self.plain_http:
                raise CallError(f"refusing plain http:// to the Janus at {parts.hostname}: anyone on the way could "
                                "read the API secret and the room's PIN and rewrite every stream; use its https:// "
                                "URL (or, on a network you trust end to end, --janus-plain-http)")
            logger.warning("talking to Janus at %s over plain http://: the API secret, the PIN and the streams' keys "
                           "cross the network in the clear", parts.hostname)
        if self.request_timeout_s <= 0 or self.poll_hold_s <= 0 or self.max_events < 1:
            raise ValueError("request_timeout_s and poll_hold_s must be > 0 and max_events ≥ 1")


@dataclass(frozen=True)
class PluginReply:
    """A plugin's answer to a message: its data, and the SDP it attached (an offer or an answer), if any."""

    data: JsonObject
    """``plugindata.data`` (for the VideoRoom: ``{"videoroom": "joined", ...}``)."""
    jsep: JsonObject | None
    """``{"type": "offer"|"answer", "sdp": ...}`` when the plugin sent a session description."""


def _janus_id(reply: JsonObject, request: str) -> int:
    """The ``data.id`` of a ``create``/``attach`` success, checked."""
    data = reply.get("data")
    ident = data.get("id") if isinstance(data, dict) else None
    if not isinstance(ident, int) or isinstance(ident, bool):
        raise JanusError(request, f"malformed reply {reply!r}")
    return ident


def _raise_if_error(reply: JsonObject, request: str) -> None:
    """Janus's core errors (``{"janus": "error", "error": {"code", "reason"}}``) as JanusError."""
    if reply.get("janus") == "error":
        error = reply.get("error")
        error = error if isinstance(error, dict) else {}
        code = error.get("code")
        raise JanusError(request, str(error.get("reason", "unknown error")), code if isinstance(code, int) else None)


def plugin_reply(reply: JsonObject, request: str) -> PluginReply:
    """The plugin's data and SDP out of a ``success``/``event`` reply; a plugin error as JanusError."""
    _raise_if_error(reply, request)
    plugindata = reply.get("plugindata")
    data = plugindata.get("data") if isinstance(plugindata, dict) else None
    if not isinstance(data, dict):
        raise JanusError(request, f"malformed reply {reply!r}")
    if "error_code" in data or "error" in data:
        code = data.get("error_code")
        raise JanusError(request, str(data.get("error", "unknown error")), code if isinstance(code, int) else None)
    jsep = reply.get("jsep")
    return PluginReply(data, jsep if isinstance(jsep, dict) else None)


async def server_info(options: JanusOptions, http: aiohttp.ClientSession | None = None) -> JsonObject:
    """``GET /info``: Janus's version, plugins and transports (answers without a session)."""
    own = http is None
    client = aiohttp.ClientSession() if http is None else http
    try:
        async with client.get(options.url.rstrip("/") + "/info",
                              timeout=aiohttp.ClientTimeout(total=options.request_timeout_s)) as response:
            reply = await response.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
        raise JanusError("info", f"no answer from {options.url}: {error!r}") from None
    finally:
        if own:
            await client.close()
    if not isinstance(reply, dict):
        raise JanusError("info", f"malformed reply {reply!r}")
    _raise_if_error(reply, "info")
    return reply


class JanusHandle:
    """One plugin handle: plugin messages, and the handle's unsolicited events to ``on_event``."""

    def __init__(self, session: JanusSession, handle_id: int, plugin: str, on_event: EventHandler) -> None:
        self.session = session
        self.id = handle_id
        """Janus's handle id."""
        self.plugin = plugin
        """The plugin's package name, e.g. ``janus.plugin.videoroom``."""
        self.on_event = on_event

    async def message(self, body: JsonObject, jsep: JsonObject | None = None) -> PluginReply:
        """Send ``body`` (and an SDP) to the plugin; return its reply, synchronous or asynchronous."""
        payload: JsonObject = {"janus": "message", "body": body}
        if jsep is not None:
            payload["jsep"] = jsep
        request = str(body.get("request", "message"))
        return plugin_reply(await self.session.transact(f"/{self.id}", payload, request), request)

    async def detach(self) -> None:
        """Tell Janus to drop the handle (its PeerConnection is hung up)."""
        try:
            await self.session.transact(f"/{self.id}", {"janus": "detach"}, "detach")
        finally:
            self.session.forget(self.id)


class JanusSession:
    """A Janus session: create it with ``JanusSession.create``, end it with ``destroy``."""

    def __init__(self, options: JanusOptions, http: aiohttp.ClientSession, session_id: int,
                 on_lost: Callable[[str], None] | None) -> None:
        self.options = options
        self.id = session_id
        """Janus's session id."""
        self.lost_reason: str | None = None
        """Why the session is gone (poll failed, Janus timed it out, destroyed), None while it lives."""
        self._http = http
        self._on_lost = on_lost
        self._handles: dict[int, JanusHandle] = {}
        self._pending: dict[str, asyncio.Future[JsonObject]] = {}
        self._poller: asyncio.Task[None] | None = None

    @classmethod
    async def create(cls, options: JanusOptions, on_lost: Callable[[str], None] | None = None) -> JanusSession:
        """A new session on Janus with its long-poll running; ``on_lost(reason)`` runs once if it is lost."""
        http = aiohttp.ClientSession()
        try:
            reply = await cls._post(http, options, options.url, {"janus": "create"}, "create")
            session = cls(options, http, _janus_id(reply, "create"), on_lost)
        except BaseException:
            await http.close()
            raise
        session._poller = asyncio.ensure_future(session._poll())
        return session

    @property
    def url(self) -> str:
        """This session's endpoint."""
        return f"{self.options.url.rstrip('/')}/{self.id}"

    async def attach(self, plugin: str, on_event: EventHandler) -> JanusHandle:
        """A new handle on ``plugin``; its unsolicited events go to ``on_event``."""
        reply = await self.transact("", {"janus": "attach", "plugin": plugin}, "attach")
        handle = JanusHandle(self, _janus_id(reply, "attach"), plugin, on_event)
        self._handles[handle.id] = handle
        return handle

    def forget(self, handle_id: int) -> None:
        """Stop dispatching events to a handle that was detached."""
        self._handles.pop(handle_id, None)

    async def transact(self, path: str, payload: JsonObject, request: str) -> JsonObject:
        """POST ``payload`` under this session; an ``ack`` is followed by waiting for the event of the same
        transaction (bounded). Returns Janus's ``success``/``event`` reply, errors raised."""
        if self.lost_reason is not None:
            raise JanusError(request, f"the session is gone: {self.lost_reason}")
        transaction = secrets.token_hex(8)
        waiter: asyncio.Future[JsonObject] = asyncio.get_running_loop().create_future()
        self._pending[transaction] = waiter  # before posting: the event may overtake the ack
        try:
            reply = await self._post(self._http, self.options, self.url + path, payload, request, transaction)
            if reply.get("janus") != "ack":
                return reply
            try:
                event = await asyncio.wait_for(waiter, self.options.request_timeout_s)
            except asyncio.TimeoutError:
                raise JanusError(request, f"no reply within {self.options.request_timeout_s:.0f} s") from None
            _raise_if_error(event, request)
            return event
        finally:
            self._pending.pop(transaction, None)
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # mark it retrieved: when the POST itself failed, that error is the one raised

    async def destroy(self) -> None:
        """Leave: ask Janus to destroy the session (its handles hang up, the room sees us leave), stop the
        poll and close the HTTP client. Idempotent; a Janus that is already gone is not an error here."""
        if self._http.closed:
            return
        if self.lost_reason is None:
            try:
                await self.transact("", {"janus": "destroy"}, "destroy")
            except JanusError as error:
                logger.warning("%s", error)
            self._lose("destroyed", notify=False)
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        await self._http.close()

    @staticmethod
    async def _post(http: aiohttp.ClientSession, options: JanusOptions, url: str, payload: JsonObject,
                    request: str, transaction: str | None = None) -> JsonObject:
        body = dict(payload, transaction=transaction or secrets.token_hex(8))
        if options.api_secret is not None:
            body["apisecret"] = options.api_secret
        try:
            async with http.post(url, json=body,
                                 timeout=aiohttp.ClientTimeout(total=options.request_timeout_s)) as response:
                reply = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
            raise JanusError(request, f"no answer from {url}: {error!r}") from None
        if not isinstance(reply, dict):
            raise JanusError(request, f"malformed reply {reply!r}")
        _raise_if_error(reply, request)
        return reply

    async def _poll(self) -> None:
        """The long-poll loop: one GET at a time, for as long as the session lives."""
        params: dict[str, str] = {"maxev": str(self.options.max_events)}
        if self.options.api_secret is not None:
            params["apisecret"] = self.options.api_secret
        timeout = aiohttp.ClientTimeout(total=self.options.poll_hold_s + self.options.request_timeout_s)
        while self.lost_reason is None:
            try:
                async with self._http.get(self.url, params=params, timeout=timeout) as response:
                    reply = await response.json(content_type=None)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
                self._lose(f"the long-poll to Janus failed: {error!r}")
                return
            try:
                for event in reply if isinstance(reply, list) else [reply]:
                    if isinstance(event, dict):
                        self._dispatch(event)
                    else:
                        logger.warning("ignoring a malformed Janus event %r", event)
            except Exception as error:  # a reply we failed to read: the session is lost, said so, never silently
                logger.exception("reading Janus's events failed")
                self._lose(f"reading Janus's events failed: {error!r}")
                return

    def _dispatch(self, event: JsonObject) -> None:
        kind = event.get("janus")
        if kind == "keepalive":
            return
        if kind == "error" and "transaction" not in event:
            error = event.get("error")
            self._lose(f"Janus: {error.get('reason') if isinstance(error, dict) else error}")
            return
        if kind == "timeout":
            self._lose("Janus timed the session out")
            return
        waiter = self._pending.get(str(event.get("transaction")))
        if waiter is not None and kind != "ack":
            if not waiter.done():
                waiter.set_result(event)
            return
        sender = event.get("sender")
        handle = self._handles.get(sender) if isinstance(sender, int) else None
        if handle is None:
            logger.debug("Janus event for no known handle: %r", event)
            return
        try:
            handle.on_event(event)
        except Exception:  # a handler's bug must not stop the poll that every handle depends on
            logger.exception("handler of Janus handle %s failed on %r", handle.id, kind)

    def _lose(self, reason: str, *, notify: bool = True) -> None:
        if self.lost_reason is not None:
            return
        self.lost_reason = reason
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(JanusError("pending request", f"the session is gone: {reason}"))
        if notify:
            logger.warning("Janus session %s lost: %s", self.id, reason)
            if self._on_lost is not None:
                self._on_lost(reason)
