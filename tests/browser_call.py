"""A whole browser → Python call on this machine: ``serve_calls`` (the receiver ``adasr receive`` runs) serving the
page, and a headless browser (Chromium, or Firefox) opening its link with a fake camera and microphone. Shared by
tests/test_browser_peer.py and benchmarks/browser_peer.py."""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from adasr_cli.browser_page import page_options
from engines.talking_head import TalkingHead
from realtime.audio.playout import WavSink
from realtime.call import Answering, serve_calls
from realtime.http_signaling import OfferServer, OfferServerOptions, OfferServerStats, generate_token
from realtime.messages import DEFAULT_MAX_MESSAGE
from realtime.receiver import ReceiverOptions, ReceiverStats
from realtime.sinks import FrameInfo
from realtime.tls_identity import load_or_create_identity
from realtime.transport import LOOPBACK, TransportOptions
from realtime.web_page import add_page_routes
from tests.headless_chromium import BrowserPage, FakeMedia

#: What the page reports once it has ended, failed or been stopped (window.adasr).
PAGE_DONE = "['ended', 'failed'].includes(window.adasr?.phase) && window.adasr"


class Browser(Protocol):
    """A headless browser the test drives (``tests.headless_chromium.Chromium``, ``tests.headless_firefox.Firefox``)."""

    def open(self, url: str, media: FakeMedia, profile: Path) -> AbstractAsyncContextManager[BrowserPage]:
        """The page at ``url``, with ``media`` as its camera and microphone, in a fresh ``profile``."""


class RecordingSink:
    """The receiver's frames: how many, when the first came, and every ``keep_every``-th one."""

    def __init__(self, keep_every: int = 5) -> None:
        self.keep_every = keep_every
        self.count = 0
        self.first_at: float | None = None
        self.kept: list[np.ndarray] = []

    def show(self, frame: np.ndarray, info: FrameInfo) -> None:
        if self.first_at is None:
            self.first_at = time.monotonic()
        if self.count % self.keep_every == 0:
            self.kept.append(frame.copy())
        self.count += 1

    def close(self) -> None:
        """Nothing to release."""


@dataclass
class BrowserCall:
    """What one browser call did, on both sides."""

    page: dict[str, Any]
    """The page's ``window.adasr`` at the end (phase, error, frames sent, timings)."""
    receiver: list[ReceiverStats]
    """The receiver's statistics of each call it served (empty: no call got through)."""
    offers: OfferServerStats
    """What the offer endpoint did (401s included)."""
    sink: RecordingSink
    """The frames the receiver rendered."""
    link_to_first_face_s: float | None
    """From opening the link to the receiver's first rendered face."""
    voice_wav: Path
    """The caller's voice as the receiver played it."""
    screenshots: list[Path] = field(default_factory=list)
    """The page during the call, once ``screenshot_when`` (a JavaScript condition) held."""
    peer_sample: dict[str, Any] | None = None
    """The page's last frame of the receiver's face (``answering``): motion, reference, RGBA pixels (base64)."""


async def browser_call(head: TalkingHead, graphs: Path, browser: Browser, media: FakeMedia, workdir: Path, *,
                       query: str = "auto=1&frames=40&fps=10", link_token: str | None = None,
                       screenshot_when: str | None = None, timeout_s: float = 400.0,
                       answering: Answering | None = None, portrait: Path | None = None) -> BrowserCall:
    """Serve one call and open its link in ``browser`` (``link_token``: a different token in the link; ``answering``:
    the receiver's own face and voice back to the page); returns once the page has ended or failed and the
    receiver has finished with it. ``portrait``: picked in the page's file input once it asks for one (a query
    without ``auto=1``)."""
    token = generate_token()
    options = page_options(head, graphs, DEFAULT_MAX_MESSAGE)
    server = OfferServerOptions(token=token, port=0, tls=load_or_create_identity(workdir / "tls"),
                                page=lambda app, authorized: add_page_routes(app, options, authorized))
    sink = RecordingSink()
    voice_wav = workdir / "voice.wav"
    ready: asyncio.Future[OfferServer] = asyncio.get_running_loop().create_future()
    serving = asyncio.ensure_future(serve_calls(
        head, ReceiverOptions(), sink, server, TransportOptions(ice_hosts=LOOPBACK), max_calls=1,
        on_ready=ready.set_result, audio_sink=lambda: WavSink(voice_wav), answering=answering))
    offers = await asyncio.wait_for(ready, 60)
    link = f"{offers.url}/?{query}#token={link_token or token}"
    screenshots: list[Path] = []
    sample = None
    opened = time.monotonic()
    try:
        async with browser.open(link, media, workdir / "profile") as page:
            if portrait is not None:
                await page.wait_for("window.adasr?.phase === 'portrait'", timeout_s=timeout_s)
                await page.choose_file("#portrait-file", portrait)
            if screenshot_when is not None:
                await page.wait_for(f"({screenshot_when}) || ({PAGE_DONE})", timeout_s=timeout_s)
                screenshots.append(await page.screenshot(workdir / "page.png"))
            state = await page.wait_for(PAGE_DONE, timeout_s=timeout_s)
            sample = await page.evaluate("window.adasrPeerSample()")
        results = await asyncio.wait_for(asyncio.shield(serving), 60) if state["phase"] == "ended" else []
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
    first = None if sink.first_at is None else sink.first_at - opened
    return BrowserCall(state, list(results), offers.stats, sink, first, voice_wav, screenshots, sample)



def peer_frame_psnr(call: BrowserCall, head: TalkingHead, portrait: Path) -> float:
    """PSNR (dB) of the page's last frame of the receiver's face against Python's render of the same motion from
    the state the page received: the receiver's portrait crop, encoded, sent as a feature volume and decoded."""
    import base64
    import dataclasses

    from adasr.image_ops import tensor_to_image
    from adasr.keypoints import Motion
    from realtime.sender import locate_portrait
    from realtime.source_messages import SourceKind
    from realtime.source_state_codec import decode_state, encode_state

    sample = call.peer_sample
    if sample is None:
        raise ValueError("the page rendered no frame of the receiver's face")
    face = locate_portrait(portrait, head.size, True)[1]  # the crop the receiver's sender encodes
    sent = encode_state(head.prepare_source(face.crop, face.landmarks), head.backend.config)
    state = decode_state(sent, SourceKind.FEATURE_VOLUME, head)
    def motion(vector: list[float], ratios: list[float] | None) -> Motion:
        face_ratios = None if ratios is None else np.array(ratios, np.float32)
        return dataclasses.replace(Motion.from_vector(np.array(vector)), face_ratios=face_ratios)

    expected = tensor_to_image(head.render(state, motion(sample["vector"], sample["face_ratios"]),
                                           motion(sample["reference"], sample["reference_ratios"])))
    pixels = np.frombuffer(base64.b64decode(sample["pixels"]), np.uint8).reshape(*expected.shape[:2], 4)[..., :3]
    mse = float(np.mean((pixels.astype(np.float64) - expected.astype(np.float64)) ** 2))
    return float(10 * np.log10(255.0**2 / max(mse, 1e-9)))
