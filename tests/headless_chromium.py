"""Debian's chromium, headless, driven over the DevTools protocol (aiohttp's websocket client): the browser peer's
tests open the page with a fake camera (a y4m file) and a fake microphone (a wav file), read the page's state and
take screenshots. Nothing is downloaded: the browser is the system's, found on PATH."""

from __future__ import annotations

import abc
import asyncio
import base64
import itertools
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from tests.processes import stop_process

#: The browser the tests drive: Debian's package (apt-get install chromium).
CHROMIUM_NAMES = ("chromium", "chromium-browser")
#: No GPU at all (the default), or WebGPU on SwiftShader, Chromium's software Vulkan: slow, but a real WebGPU adapter
#: for the page's check of WebGPU against wasm.
NO_GPU_FLAGS = ("--disable-gpu",)
SOFTWARE_WEBGPU_FLAGS = ("--enable-unsafe-webgpu", "--enable-unsafe-swiftshader", "--use-angle=swiftshader")


def find_chromium() -> str | None:
    """Path of the system's chromium, or None."""
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def write_y4m(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    """RGB frames (even sides) → a y4m file Chromium's fake camera plays in a loop (4:2:0, header ``C420``)."""
    height, width = frames[0].shape[:2]
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420\n".encode())
        for frame in frames:
            rgb = frame.astype(np.float32)
            y = 16 + 0.257 * rgb[..., 0] + 0.504 * rgb[..., 1] + 0.098 * rgb[..., 2]
            u = 128 - 0.148 * rgb[..., 0] - 0.291 * rgb[..., 1] + 0.439 * rgb[..., 2]
            v = 128 + 0.439 * rgb[..., 0] - 0.368 * rgb[..., 1] - 0.071 * rgb[..., 2]
            planes = [y] + [c.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3)) for c in (u, v)]
            out.write(b"FRAME\n" + b"".join(np.clip(p, 0, 255).round().astype(np.uint8).tobytes() for p in planes))
    return path


@dataclass(frozen=True)
class FakeMedia:
    """What the fake camera and microphone play."""

    video: Path
    audio: Path


class PageNotReady(RuntimeError):
    """The page has no JavaScript context yet (it is loading)."""


class BrowserPage(abc.ABC):
    """A page a test drives, in whichever browser: evaluate expressions, wait for one, take screenshots."""

    @abc.abstractmethod
    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (PageNotReady while it has no context)."""

    @abc.abstractmethod
    async def screenshot(self, path: Path) -> Path:
        """A PNG of the page as shown."""

    async def choose_file(self, selector: str, path: Path) -> None:
        """Pick ``path`` in the page's file input ``selector``, as a person would (fires its change event)."""
        raise NotImplementedError(f"{type(self).__name__} cannot pick files")

    async def wait_for(self, expression: str, *, timeout_s: float, poll_s: float = 0.5) -> Any:
        """Poll until ``expression`` is truthy (bounded: ``timeout_s``); its value, or TimeoutError."""
        for _ in range(int(timeout_s / poll_s) + 1):
            try:
                value = await self.evaluate(expression)
            except PageNotReady:  # the page is still loading: no context to evaluate in yet
                value = None
            if value:
                return value
            await asyncio.sleep(poll_s)
        raise TimeoutError(f"{expression} stayed false for {timeout_s:.0f} s")


class Page(BrowserPage):
    """One Chromium page target over its DevTools websocket."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events that arrive meanwhile are skipped)."""
        message_id = next(self._ids)
        await self._socket.send_json({"id": message_id, "method": method, "params": params})
        while True:
            reply = await self._socket.receive_json()
            if reply.get("id") == message_id:
                if "error" in reply:
                    error = PageNotReady if "context" in str(reply["error"].get("message")) else RuntimeError
                    raise error(f"{method}: {reply['error']}")
                return dict(reply["result"])

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=f"JSON.stringify({expression})", returnByValue=True)
        value = result["result"].get("value")
        return None if value is None else json.loads(value)

    async def choose_file(self, selector: str, path: Path) -> None:
        document = await self.call("DOM.getDocument")
        node = await self.call("DOM.querySelector", nodeId=document["root"]["nodeId"], selector=selector)
        await self.call("DOM.setFileInputFiles", files=[str(path)], nodeId=node["nodeId"])

    async def screenshot(self, path: Path) -> Path:
        data = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(data["data"]))
        return path


@asynccontextmanager
async def open_page(chromium: str, url: str, media: FakeMedia, profile: Path, start_timeout_s: float = 60.0,
                    gpu_flags: tuple[str, ...] = NO_GPU_FLAGS) -> AsyncIterator[Page]:
    """Chromium headless on ``url`` with the fake camera and microphone; the page's DevTools handle."""
    flags = [
        "--headless=new", "--no-sandbox", *gpu_flags, "--no-first-run", "--no-default-browser-check",
        f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1000,900",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={media.video}", f"--use-file-for-fake-audio-capture={media.audio}",
        "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--autoplay-policy=no-user-gesture-required", "--ignore-certificate-errors",
    ]
    process = subprocess.Popen([chromium, *flags, url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(int(start_timeout_s / 0.2)):
            if port_file.is_file() and port_file.read_text().strip():
                break
            if process.poll() is not None:
                raise RuntimeError(f"chromium exited at start: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            await asyncio.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as reply:
                targets = await reply.json()
            target = next(t for t in targets if t.get("type") == "page")
            async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=64 << 20) as socket:
                yield Page(socket)
    finally:
        stop_process(process)


@dataclass(frozen=True)
class Chromium:
    """How tests/browser_call.py opens a page in Chromium."""

    path: str
    gpu_flags: tuple[str, ...] = NO_GPU_FLAGS
    """No GPU (the default), or ``SOFTWARE_WEBGPU_FLAGS``."""

    def open(self, url: str, media: FakeMedia, profile: Path) -> AbstractAsyncContextManager[BrowserPage]:
        """The page at ``url``, with ``media`` as the camera and microphone."""
        return open_page(self.path, url, media, profile, gpu_flags=self.gpu_flags)
