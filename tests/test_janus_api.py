"""The Janus HTTP client against a scripted stand-in for Janus (runs everywhere, Janus installed or not).

The stand-in speaks Janus's HTTP API the way Janus 1.1.2 does: ``success`` at once for session and
handle requests, ``ack`` then an ``event`` through the long-poll for asynchronous plugin requests.
The real Janus is exercised by tests/test_janus_room.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from realtime.janus.api import JanusError, JanusOptions, JanusSession
from realtime.janus.videoroom import departed_feed, feeds_in

SESSION, HANDLE = 11, 22
SECRET = "s3cret"


class FakeJanus:
    """Janus's HTTP API, scripted: plugin ``body.request`` picks the behaviour."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.secrets_seen: list[str | None] = []
        self.destroyed = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/janus", self.root)
        app.router.add_post(f"/janus/{SESSION}", self.session)
        app.router.add_get(f"/janus/{SESSION}", self.poll)
        app.router.add_post(f"/janus/{SESSION}/{HANDLE}", self.handle)
        return app

    async def _body(self, request: web.Request) -> dict[str, Any]:
        body: dict[str, Any] = await request.json()
        self.secrets_seen.append(body.get("apisecret"))
        return body

    @staticmethod
    def _error(body: dict[str, Any], code: int, reason: str) -> web.Response:
        return web.json_response({"janus": "error", "transaction": body["transaction"],
                                  "error": {"code": code, "reason": reason}})

    async def root(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if body.get("apisecret") != SECRET:
            return self._error(body, 403, "Unauthorized request (wrong or missing secret/token)")
        return web.json_response({"janus": "success", "transaction": body["transaction"], "data": {"id": SESSION}})

    async def session(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if body["janus"] == "destroy":
            self.destroyed.set()
            await self.events.put({"janus": "keepalive"})  # ends the poll still held open: the server stops at once
            return web.json_response({"janus": "success", "transaction": body["transaction"]})
        return web.json_response({"janus": "success", "transaction": body["transaction"], "data": {"id": HANDLE}})

    async def poll(self, request: web.Request) -> web.Response:
        self.secrets_seen.append(request.query.get("apisecret"))
        assert request.query["maxev"] == "10"
        events = [await self.events.get()]
        while not self.events.empty():
            events.append(self.events.get_nowait())
        return web.json_response(events)

    async def handle(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        transaction, asked = body["transaction"], body["body"]["request"]
        plugindata = {"plugin": "janus.plugin.videoroom", "data": {"videoroom": "success", "exists": True}}
        if asked == "exists":
            return web.json_response({"janus": "success", "transaction": transaction, "sender": HANDLE,
                                      "plugindata": plugindata})
        if asked == "join":
            data = {"videoroom": "joined", "id": 5, "publishers": [{"id": 6, "display": "Bob"}]}
            await self.events.put({"janus": "event", "sender": HANDLE, "transaction": transaction,
                                   "plugindata": {"plugin": "janus.plugin.videoroom", "data": data},
                                   "jsep": {"type": "offer", "sdp": "v=0"}})
        elif asked == "refused":
            await self.events.put({"janus": "event", "sender": HANDLE, "transaction": transaction,
                                   "plugindata": {"plugin": "janus.plugin.videoroom",
                                                  "data": {"videoroom": "event", "error_code": 433,
                                                           "error": "Unauthorized (wrong pin)"}}})
        elif asked == "lose":
            await self.events.put({"janus": "error", "error": {"code": 458, "reason": "No such session"}})
        # "unanswered": the ack and nothing after it
        return web.json_response({"janus": "ack", "transaction": transaction, "session_id": SESSION})


async def _serve(fake: FakeJanus) -> tuple[web.AppRunner, JanusOptions]:
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, JanusOptions(f"http://{host}:{port}/janus", api_secret=SECRET, request_timeout_s=5.0)


def test_replies_come_at_once_or_through_the_long_poll_and_unsolicited_events_reach_their_handle() -> None:
    async def scenario() -> tuple[list[Any], list[dict[str, Any]], FakeJanus]:
        fake = FakeJanus()
        runner, options = await _serve(fake)
        events: list[dict[str, Any]] = []
        got_event = asyncio.Event()

        def on_event(event: dict[str, Any]) -> None:
            events.append(event)
            got_event.set()

        try:
            session = await JanusSession.create(options)
            handle = await session.attach("janus.plugin.videoroom", on_event)
            at_once = await handle.message({"request": "exists", "room": 1})
            later = await handle.message({"request": "join", "room": 1})
            await fake.events.put({"janus": "event", "sender": HANDLE, "plugindata": {
                "plugin": "janus.plugin.videoroom", "data": {"videoroom": "event", "unpublished": 6}}})
            await asyncio.wait_for(got_event.wait(), 10)
            await session.destroy()
            await asyncio.wait_for(fake.destroyed.wait(), 10)
            return [at_once, later], events, fake
        finally:
            await runner.cleanup()

    (at_once, later), events, fake = asyncio.run(scenario())
    assert at_once.data["exists"] is True and at_once.jsep is None
    assert later.data["id"] == 5 and later.jsep == {"type": "offer", "sdp": "v=0"}
    assert feeds_in(later.data)[0].display == "Bob"
    assert [departed_feed(e["plugindata"]["data"]) for e in events] == [6]
    assert set(fake.secrets_seen) == {SECRET}  # every request and every poll carried the API secret


def test_janus_refusals_become_janus_errors_with_their_code_and_a_lost_session_fails_what_waits() -> None:
    async def scenario() -> dict[str, Any]:
        fake = FakeJanus()
        runner, options = await _serve(fake)
        out: dict[str, Any] = {"lost": []}
        try:
            with pytest.raises(JanusError) as wrong_secret:
                await JanusSession.create(JanusOptions(options.url, api_secret="wrong"))
            out["secret"] = wrong_secret.value
            options = JanusOptions(options.url, api_secret=SECRET, request_timeout_s=2.0)  # "unanswered" waits this
            session = await JanusSession.create(options, on_lost=out["lost"].append)
            handle = await session.attach("janus.plugin.videoroom", lambda event: None)
            with pytest.raises(JanusError) as refused:
                await handle.message({"request": "refused"})
            out["refused"] = refused.value
            with pytest.raises(JanusError) as unanswered:
                await handle.message({"request": "unanswered"})
            out["unanswered"] = unanswered.value
            with pytest.raises(JanusError) as lost:
                await handle.message({"request": "lose"})
            out["lost_request"] = lost.value
            with pytest.raises(JanusError) as after:
                await handle.message({"request": "exists"})
            out["after"] = after.value
            await session.destroy()
            return out
        finally:
            await runner.cleanup()

    out = asyncio.run(scenario())
    assert out["secret"].code == 403 and "wrong or missing secret" in str(out["secret"])
    assert out["refused"].code == 433 and "wrong pin" in str(out["refused"]) and out["refused"].request == "refused"
    assert out["unanswered"].code is None and "no reply within" in str(out["unanswered"])
    assert "No such session" in str(out["lost_request"]) and out["lost"] == ["Janus: No such session"]
    assert "the session is gone" in str(out["after"])
