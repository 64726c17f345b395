"""Debian's firefox-esr on a virtual display (Xvfb), driven over WebDriver BiDi (Firefox's own remote protocol on a
websocket: no geckodriver, nothing downloaded): the browser peer's Firefox test. Not ``--headless``: headless Firefox
gets no WebGL context on a machine without a display, and mediapipe's tracker needs one; on Xvfb it gets Mesa's
software GL (llvmpipe). A PulseAudio server of its own, with a null sink, is its speaker: without a sound device
Firefox's audio never starts (an AudioContext stays suspended), where Chromium headless has a fake output.

Firefox's fake camera (``media.navigator.streams.fake``) draws no face, so the driver hands the page a camera of its
own: a preload script, run before the page's code, makes ``getUserMedia`` return a canvas playing the test's clip
(the same y4m Chromium plays) beside Firefox's fake microphone. The hook lives here, in the driver; the page has
none."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from tests.headless_chromium import BrowserPage, FakeMedia, PageNotReady
from tests.processes import stop_process

FIREFOX_NAMES = ("firefox-esr", "firefox")
XVFB = "Xvfb"
PULSEAUDIO = "pulseaudio"
#: The profile's preferences: fake devices without a prompt, autoplay, loopback ICE candidates as they are (no mDNS
#: names), and none of a first run's distractions.
PREFS: dict[str, bool | int | str] = {
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    "media.autoplay.block-webaudio": False,
    "media.peerconnection.ice.loopback": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "webgl.force-enabled": True,  # Mesa's software GL is on Firefox's block list
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "app.update.disabledForTesting": True,
}
#: Frames of the clip the canvas camera loops (each is sent in the preload script as raw RGBA).
CAMERA_FRAMES = 8


def find_firefox() -> str | None:
    """Path of the system's Firefox, or None."""
    return next((path for name in FIREFOX_NAMES if (path := shutil.which(name))), None)


def missing() -> str | None:
    """Why the Firefox test cannot run here (None: it can)."""
    if find_firefox() is None:
        return "firefox-esr is not installed (apt-get install firefox-esr)"
    if shutil.which(XVFB) is None:
        return "Xvfb is not installed (apt-get install xvfb): Firefox needs a display for WebGL, which mediapipe needs"
    if shutil.which(PULSEAUDIO) is None:
        return "pulseaudio is not installed (apt-get install pulseaudio): Firefox plays no sound without a server"
    return None


@asynccontextmanager
async def sound_server(folder: Path, start_timeout_s: float = 30.0) -> AsyncIterator[str]:
    """A PulseAudio server of its own whose only sink is a null one, its socket in ``folder``: PULSE_SERVER's value."""
    folder.mkdir(parents=True, exist_ok=True)
    socket_path = folder / "native"
    process = subprocess.Popen(
        [PULSEAUDIO, "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit", "--load=module-null-sink",
         f"--load=module-native-protocol-unix socket={socket_path} auth-anonymous=1"],
        env={**os.environ, "HOME": str(folder), "XDG_RUNTIME_DIR": str(folder)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(int(start_timeout_s / 0.1)):
            if socket_path.exists() or process.poll() is not None:
                break
            await asyncio.sleep(0.1)
        if not socket_path.exists():
            raise RuntimeError(f"pulseaudio did not start (exit code {process.poll()})")
        yield f"unix:{socket_path}"
    finally:
        stop_process(process)


@asynccontextmanager
async def virtual_display(start_timeout_s: float = 30.0) -> AsyncIterator[str]:
    """An Xvfb display of its own (the first free number, which Xvfb reports): its DISPLAY value."""
    read_end, write_end = os.pipe()
    process = subprocess.Popen([XVFB, "-displayfd", str(write_end), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                               pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as reader:
            number = await asyncio.wait_for(asyncio.to_thread(reader.readline), start_timeout_s)
        if not number.strip():
            raise RuntimeError(f"Xvfb exited at start (code {process.poll()})")
        yield f":{number.strip()}"
    finally:
        stop_process(process)


def read_y4m(path: Path) -> tuple[list[np.ndarray], int]:
    """A y4m file as ``tests.headless_chromium.write_y4m`` writes it (4:2:0) → RGB frames and the frame rate."""
    data = path.read_bytes()
    header, _, body = data.partition(b"\n")
    fields = {part[:1]: part[1:] for part in header.split()[1:]}
    width, height = int(fields[b"W"]), int(fields[b"H"])
    fps = int(fields[b"F"].split(b":")[0])
    size = width * height
    frames = []
    for chunk in body.split(b"FRAME\n")[1:]:
        planes = np.frombuffer(chunk[: size * 3 // 2], np.uint8).astype(np.float32)
        y = planes[:size].reshape(height, width) - 16
        u, v = (planes[size + i * size // 4: size + (i + 1) * size // 4].reshape(height // 2, width // 2)
                .repeat(2, 0).repeat(2, 1) - 128 for i in (0, 1))
        rgb = np.stack([1.164 * y + 1.596 * v, 1.164 * y - 0.392 * u - 0.813 * v, 1.164 * y + 2.017 * u], axis=-1)
        frames.append(np.clip(rgb, 0, 255).round().astype(np.uint8))
    return frames, fps


def camera_script(frames: list[np.ndarray], fps: int) -> str:
    """A BiDi preload script: ``getUserMedia`` answers with a canvas looping ``frames`` as the camera and Firefox's
    fake microphone as the voice."""
    height, width = frames[0].shape[:2]
    rgba = [base64.b64encode(np.dstack([f, np.full((height, width), 255, np.uint8)]).tobytes()).decode()
            for f in frames]
    return """() => {
  if (!navigator.mediaDevices) return; // not a secure context: no camera to replace
  const [frames, width, height, fps] = %s;
  const devices = navigator.mediaDevices;
  const firefoxFake = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints) => {
    const canvas = document.createElement('canvas');
    Object.assign(canvas, { width, height });
    const context = canvas.getContext('2d');
    const images = frames.map((b64) => new ImageData(
      Uint8ClampedArray.from(atob(b64), (c) => c.charCodeAt(0)), width, height));
    let next = 0;
    const draw = () => { context.putImageData(images[next %% images.length], 0, 0); next += 1; };
    draw();
    setInterval(draw, 1000 / fps);
    const voice = constraints.audio ? (await firefoxFake({ audio: true })).getAudioTracks() : [];
    return new MediaStream([...canvas.captureStream(fps).getVideoTracks(), ...voice]);
  };
}""" % json.dumps([rgba, width, height, fps])


class BidiPage(BrowserPage):
    """One Firefox tab over a WebDriver BiDi session."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self.context = ""

    async def command(self, method: str, **params: Any) -> dict[str, Any]:
        """One BiDi command; its result (events are not subscribed to)."""
        command_id = next(self._ids)
        await self._socket.send_json({"id": command_id, "method": method, "params": params})
        while True:
            reply = await self._socket.receive_json()
            if reply.get("id") == command_id:
                if reply.get("type") == "error":
                    raise RuntimeError(f"{method}: {reply.get('error')}: {reply.get('message')}")
                return dict(reply["result"])

    async def evaluate(self, expression: str) -> Any:
        result = await self.command("script.evaluate", expression=f"JSON.stringify({expression})",
                                    target={"context": self.context}, awaitPromise=False, resultOwnership="none")
        if result["type"] == "exception":  # the page's document is being replaced, or its script is not there yet
            raise PageNotReady(str(result["exceptionDetails"].get("text")))
        value = result["result"].get("value")
        return None if value is None else json.loads(value)

    async def screenshot(self, path: Path) -> Path:
        data = await self.command("browsingContext.captureScreenshot", context=self.context)
        path.write_bytes(base64.b64decode(data["data"]))
        return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def open_firefox_page(firefox: str, url: str, media: FakeMedia, profile: Path,
                            start_timeout_s: float = 60.0) -> AsyncIterator[BidiPage]:
    """Firefox on ``url`` on a display and a sound server of its own, its camera the clip of ``media.video`` (its
    microphone Firefox's fake one)."""
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "user.js").write_text("".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n"
                                             for k, v in PREFS.items()))
    port = _free_port()
    log = profile / "firefox.log"
    async with virtual_display() as display, sound_server(profile / "pulse") as speaker:
        with log.open("wb") as output:
            process = subprocess.Popen([firefox, "--no-remote", "--profile", str(profile),
                                        f"--remote-debugging-port={port}", "about:blank"], stdout=output,
                                       stderr=subprocess.STDOUT,
                                       env={**os.environ, "DISPLAY": display, "PULSE_SERVER": speaker})
        try:
            for _ in range(int(start_timeout_s / 0.2)):
                if "WebDriver BiDi listening" in log.read_text(errors="replace"):
                    break
                if process.poll() is not None:
                    raise RuntimeError(f"firefox exited at start: {log.read_text(errors='replace')[-2000:]}")
                await asyncio.sleep(0.2)
            frames, fps = read_y4m(media.video)
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"ws://127.0.0.1:{port}/session", max_msg_size=64 << 20) as ws:
                    page = BidiPage(ws)
                    await page.command("session.new", capabilities={"alwaysMatch": {"acceptInsecureCerts": True}})
                    page.context = (await page.command("browsingContext.getTree"))["contexts"][0]["context"]
                    await page.command("script.addPreloadScript",
                                       functionDeclaration=camera_script(frames[:CAMERA_FRAMES], fps))
                    await page.command("browsingContext.navigate", context=page.context, url=url, wait="none")
                    yield page
        finally:
            stop_process(process)


@dataclass(frozen=True)
class Firefox:
    """How tests/browser_call.py opens a page in Firefox."""

    path: str

    def open(self, url: str, media: FakeMedia, profile: Path) -> AbstractAsyncContextManager[BrowserPage]:
        """The page at ``url``, with ``media``'s clip as the camera (Firefox's fake microphone)."""
        return open_firefox_page(self.path, url, media, profile)
