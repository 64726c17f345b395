"""The browser peer's page, served by ``adasr receive`` beside ``/offer``: one server, one certificate, one token.

A person with only a browser opens ``https://HOST:PORT/#token=…`` (``page_link``): the token rides in the
URL fragment, which a browser never sends to a server nor writes to a log. The page (``web/src``) and what
it runs come from this server alone, no CDN:

* the page's ES modules, and the installed packages' runtimes (``web/node_modules``, pinned by
  ``web/package-lock.json``): onnxruntime-web's wasm build and mediapipe's tasks-vision with its wasm;
* behind the bearer token, like ``/offer``: the call's facts (``/call/config.json``: model id, crop size,
  K, the feature volume's layout), the receiver's own face-tracker model (the ``.task`` file the Python
  side uses, without the blendshapes model that nothing reads) and the graphs the Python side exported:
  the motion extractor (the page's face) and the renderer (the receiver's face, in a two-way call).

Every response is cross-origin isolated (COOP ``same-origin``, COEP ``require-corp``, CORP
``same-origin``), which wasm threads need (``SharedArrayBuffer``), and carries a content security
policy that allows this origin's scripts and wasm only. The files served are a fixed list: no path
from a request ever reaches the file system.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from adasr.expression_rig import ANCHORS
from adasr.faces import landmarker_bundle
from realtime.errors import CallError

logger = logging.getLogger(__name__)

#: Headers of every page response: cross-origin isolation (wasm threads), a strict CSP, no sniffing, no referrer.
SECURITY_HEADERS: Mapping[str, str] = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; "
        "connect-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; style-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
                  ".wasm": "application/wasm", ".json": "application/json"}

#: The page's own files (web/src), by URL path.
PAGE_FILES: Mapping[str, str] = {
    "/": "src/index.html",
    "/app/style.css": "src/style.css",
    "/app/app.js": "src/app.js",
    "/app/call.js": "src/call.js",
    "/app/checked_renderer.js": "src/checked_renderer.js",
    "/app/expression.js": "src/expression.js",
    "/app/face.js": "src/face.js",
    "/app/keypoints.js": "src/keypoints.js",
    "/app/motion.js": "src/motion.js",
    "/app/peer_face.js": "src/peer_face.js",
    "/app/render.js": "src/render.js",
    "/app/rig.js": "src/rig.js",
    "/app/source_state.js": "src/source_state.js",
    "/app/voice_meter.js": "src/voice_meter.js",
    "/app/voice_sync.js": "src/voice_sync.js",
    "/app/wire.js": "src/wire.js",
}
_ORT = "node_modules/onnxruntime-web/dist/"
_MEDIAPIPE = "node_modules/@mediapipe/tasks-vision/"
#: The packages' runtimes (web/node_modules), by URL path: onnxruntime-web's wasm build (threaded, SIMD), its WebGPU
#: build (fetched only by a browser with a WebGPU adapter) and mediapipe's vision tasks with the wasm builds its
#: loader picks from (SIMD or not).
PACKAGE_FILES: Mapping[str, str] = {
    "/ort/ort.wasm.min.mjs": _ORT + "ort.wasm.min.mjs",
    "/ort/ort-wasm-simd-threaded.mjs": _ORT + "ort-wasm-simd-threaded.mjs",
    "/ort/ort-wasm-simd-threaded.wasm": _ORT + "ort-wasm-simd-threaded.wasm",
    "/ort/ort.webgpu.min.mjs": _ORT + "ort.webgpu.min.mjs",
    "/ort/ort-wasm-simd-threaded.asyncify.mjs": _ORT + "ort-wasm-simd-threaded.asyncify.mjs",
    "/ort/ort-wasm-simd-threaded.asyncify.wasm": _ORT + "ort-wasm-simd-threaded.asyncify.wasm",
    "/mp/vision_bundle.mjs": _MEDIAPIPE + "vision_bundle.mjs",
    **{f"/mp/wasm/{name}": f"{_MEDIAPIPE}wasm/{name}" for name in (
        "vision_wasm_internal.js", "vision_wasm_internal.wasm",
        "vision_wasm_nosimd_internal.js", "vision_wasm_nosimd_internal.wasm")},
}
#: Paths under the token: the call's facts and the two models the page runs.
CONFIG_PATH = "/call/config.json"
FACE_MODEL_PATH = "/call/face_landmarker.task"
MOTION_GRAPH_PATH = "/call/motion_extractor.onnx"
RENDERER_GRAPH_PATH = "/call/renderer.onnx"


@dataclass(frozen=True)
class PageOptions:
    """What the page needs from this receiver: where its files are, and the model a caller must match."""

    web_dir: Path
    """The ``web`` folder: ``src/`` and the installed ``node_modules/`` (``npm ci``)."""
    face_model: Path
    """mediapipe's FaceLandmarker ``.task`` file (the one the Python side tracks faces with)."""
    graphs: Path
    """The receiver's exported graphs (``adasr export``'s folder): the page runs ``motion_extractor.onnx`` and
    ``renderer.onnx``."""
    model_id: bytes
    """The wire model id (``source_state_codec.wire_model_id``): a SOURCE_BEGIN from the page must carry it."""
    image_size: int
    """Side of the square face crop the networks take."""
    num_kp: int
    """Keypoints K of the model (a MOTION carries 6 + 3K numbers)."""
    max_message: int
    """Largest data-channel message the receiver accepts; the page cuts its source chunks to fit."""
    feature_channel: int
    """Where the packed photo starts in f_s (``ModelConfig.feature_channel``)."""
    detail_channels: int
    """Planes before the photo in the packed detail (``GeneratorConfig.detail_channels``)."""
    derived_channels: int
    """f_s channels a receiver derives rather than receives (``ModelConfig.derived_volume_channels``)."""

    @property
    def motion_graph(self) -> Path:
        """The page's motion extractor."""
        return self.graphs / "motion_extractor.onnx"

    @property
    def renderer_graph(self) -> Path:
        """The renderer of the other side's face."""
        return self.graphs / "renderer.onnx"

    def missing(self) -> list[Path]:
        """Files the page needs that are not there (empty: it can be served)."""
        needed = [self.web_dir / p for p in (*PAGE_FILES.values(), *PACKAGE_FILES.values())]
        return [p for p in (*needed, self.face_model, self.motion_graph, self.renderer_graph) if not p.is_file()]

    def check(self) -> None:
        """CallError naming what is missing and how to get it."""
        missing = self.missing()
        if missing:
            shown = ", ".join(str(p) for p in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3
                                                                 else "")
            raise CallError(f"cannot serve the browser page: {shown} missing (the page's packages come from "
                            f"`npm ci --prefix {self.web_dir}`, which `make` runs)")


def page_link(base_url: str, token: str) -> str:
    """The link to give a caller who has only a browser: the page, with the token in the fragment."""
    return f"{base_url.rstrip('/')}/#token={token}"


Authorized = Callable[[web.Request], bool]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_page_routes(app: web.Application, options: PageOptions, authorized: Authorized) -> None:
    """Serve the page on ``app`` (the offer server's): public files, and the call's files behind ``authorized``."""
    options.check()
    for url, relative in (*PAGE_FILES.items(), *PACKAGE_FILES.items()):
        app.router.add_get(url, _file_handler(options.web_dir / relative))
    config = json.dumps({"model_id": options.model_id.hex(), "image_size": options.image_size,
                         "num_kp": options.num_kp, "max_message": options.max_message,
                         "feature_channel": options.feature_channel, "detail_channels": options.detail_channels,
                         "derived_channels": options.derived_channels,
                         # the landmarks the renderer's expression rig takes, in its order: the page measures them
                         "rig_anchors": list(ANCHORS)}).encode()
    private: dict[str, Callable[[], web.StreamResponse]] = {
        CONFIG_PATH: _bytes_response(config, "application/json"),
        FACE_MODEL_PATH: _bytes_response(landmarker_bundle(options.face_model), "application/octet-stream"),
        MOTION_GRAPH_PATH: _file_response(options.motion_graph, private=True),
        RENDERER_GRAPH_PATH: _file_response(options.renderer_graph, private=True),
    }
    for url, respond in private.items():
        app.router.add_get(url, _guarded(respond, authorized))


def _file_response(path: Path, private: bool = False) -> Callable[[], web.StreamResponse]:
    headers = {**SECURITY_HEADERS, "Content-Type": _CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
               "Cache-Control": "no-store" if private else "no-cache"}
    return lambda: web.FileResponse(path, headers=headers)


def _bytes_response(body: bytes, content_type: str) -> Callable[[], web.StreamResponse]:
    """A private file made in memory: the call's facts, or the tracker's bundle without the model nothing reads
    (adasr.faces.landmarker_bundle)."""
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
    return lambda: web.Response(body=body, content_type=content_type, headers=headers)


def _file_handler(path: Path) -> Handler:
    respond = _file_response(path)

    async def handle(request: web.Request) -> web.StreamResponse:
        return respond()

    return handle


def _guarded(respond: Callable[[], web.StreamResponse], authorized: Authorized) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        if not authorized(request):
            return web.json_response({"error": "missing or wrong token: send Authorization: Bearer TOKEN"},
                                     status=401, headers={**SECURITY_HEADERS, "WWW-Authenticate": "Bearer"})
        return respond()

    return handle
