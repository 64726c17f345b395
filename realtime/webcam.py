"""``adasr cam``: the local virtual webcam. Camera → tracker → motion → render → virtual camera, one process.

It is the call's pipeline without the network (DESIGN.md): the sender's ``MotionStream`` (capture,
tracker, motion extractor, smoothing) feeds the receiver's ``PoseState`` and ``RenderLoop`` directly,
so the webcam behaves as the far end of a call would (FACE_LOST, reference resets, latest-wins
rendering) and a fix to one is a fix to both. Nothing goes through the wire format: the motion is
rendered as extracted and the source state installed as computed, never quantised.

**Overlap.** Tracking and motion of frame n+1 run on the stream's worker thread while frame n renders on
the render thread; the next camera frame is taken only once the renderer has taken the last motion
(``RenderLoop.taken``), so no motion is worked out only to be dropped, and a frame waits at most for the one
before it to finish rendering: at most one frame of latency more than the stages one after the other. The worker
thread (and the tracker's threads it starts) runs a few nice steps behind the renderer
(``realtime.thread_priority``): the renderer goes first, the tracking fills the cores' gaps.

**Output framing.** The renderer makes an S×S face crop; a webcam frame is, say, 1280×720 with a
person in it. The frame is built from the portrait's own framing: the portrait, scaled to cover the
output and centred on the face as far as its edges allow, is the background, and every rendered
crop is pasted back (``adasr.faces.paste_back``, feathered edges) where the face crop lies in it.
The portrait rather than the camera's room, because the far end sees the portrait's person: hair,
shoulders and background then match the render at the seams. The head moves inside its crop;
what lies outside the crop stays still (a limit of one-shot rendering, not hidden).

**Commands.** ``p`` passthrough (show the real camera instead), ``f`` freeze (keep showing the
current frame), ``r`` reset the reference pose (the current pose becomes the portrait's), ``q``
quit. The window sink takes them as keys; otherwise they are typed on the terminal (letter +
Enter); tests and other programs call the methods. While frozen or in passthrough no motion
reaches the renderer, so it costs no CPU. The output keeps a steady frame rate whatever happens
(``ThreadedSink`` repeats the last frame), which is what apps reading a camera expect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from adasr.faces import CropBox, FaceTrackerConfig, paste_back
from adasr.inference import SourceState
from engines.talking_head import TalkingHead
from realtime.call import unwatch_console, watch_console
from realtime.capture import CaptureOptions, CapturedFrame
from realtime.clock import monotonic_us
from realtime.motion_codec import MotionFlags
from realtime.motion_pipeline import MotionSample
from realtime.motion_stream import MotionStream
from realtime.receiver.pose import FaceLostPolicy, PoseOptions, PoseState
from realtime.receiver.render_loop import RenderCounters, RenderJob, RenderLoop
from realtime.sender import locate_portrait
from realtime.sinks import FrameInfo, Sink, ThreadedSink
from realtime.smoothing import SmoothingOptions
from realtime.stats import percentile
from realtime.tasks import PeerTasks
from realtime.thread_priority import lower_this_thread

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebcamOptions:
    """What the local webcam shows and how."""

    portrait: Path
    """The portrait whose face is shown."""
    capture: CaptureOptions
    """The real camera (or a video standing in for it)."""
    width: int = 1280
    """Output width in pixels."""
    height: int = 720
    """Output height in pixels."""
    fps: float = 30.0
    """Output frame rate: the last frame is repeated when nothing new is rendered in time."""
    source_crop: bool = True
    """Face-crop the portrait with the tracker (False: it already is a square face crop)."""
    crop: bool = True
    """Face-track the camera frames (False: they already are square face crops)."""
    smoothing: SmoothingOptions = SmoothingOptions()
    """Motion smoothing (One-Euro)."""
    relative: bool = True
    """Relative motion: the first pose (and each reset) maps to the portrait's own pose."""
    face_lost: FaceLostPolicy = "hold"
    """No face in the camera: hold the last frame, or ease to the portrait's neutral pose."""
    feather: float = 0.08
    """Width of the blend at the pasted crop's edges, as a fraction of its side."""
    tracker: FaceTrackerConfig | None = None
    """Face tracker settings (None: the defaults)."""
    console: bool = True
    """Read commands typed on the terminal (when stdin is one)."""

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16 or self.width % 2 or self.height % 2:
            raise ValueError(f"output size must be even and at least 16×16, got {self.width}×{self.height}")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")


def cover(image: np.ndarray, width: int, height: int, center: tuple[float, float] | None = None
          ) -> tuple[np.ndarray, float, int, int]:
    """``image`` scaled to cover width×height and cropped to it, the window centred on ``center``
    (image pixels; default the image's centre) as far as the image's edges allow.

    Returns (frame, scale, x0, y0): image pixel (x, y) lands at (x·scale − x0, y·scale − y0).
    """
    h, w = image.shape[:2]
    scale = max(width / w, height / h)
    sw, sh = max(width, math.ceil(w * scale)), max(height, math.ceil(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(image, (sw, sh), interpolation=interp)
    cx, cy = center if center is not None else (w / 2, h / 2)
    x0 = int(round(min(max(cx * scale - width / 2, 0), sw - width)))
    y0 = int(round(min(max(cy * scale - height / 2, 0), sh - height)))
    return np.ascontiguousarray(scaled[y0:y0 + height, x0:x0 + width]), scale, x0, y0


def frame_portrait(image: np.ndarray, box: CropBox, width: int, height: int) -> tuple[np.ndarray, CropBox]:
    """The output's background (the portrait covering width×height, centred on the face) and where the
    face crop ``box`` lies in it."""
    background, scale, x0, y0 = cover(image, width, height, box.center)
    cx, cy = box.center
    return background, CropBox.from_center(cx * scale - x0, cy * scale - y0, box.size * scale)


class WebcamCompositor:
    """The receiver's sink in the local webcam: each rendered crop pasted into the portrait's framing.

    Full frames go to ``output`` (a ``ThreadedSink``: the device, window or file is fed from its own
    thread, latest wins). Camera frames shown in passthrough take the same way.
    """

    def __init__(self, background: np.ndarray, box: CropBox, output: ThreadedSink, feather: float) -> None:
        self.background = background
        self.box = box
        self.output = output
        self.feather = feather
        self.paused = False
        """Frozen or in passthrough: rendered frames still in flight are not shown."""
        self.frames_composed = 0
        """Rendered frames pasted and handed to the output."""
        self.camera_frames = 0
        """Camera frames handed to the output (passthrough)."""

    @property
    def closed_by_user(self) -> bool:
        """The output's flag (a preview window closed with Esc or q)."""
        return self.output.closed_by_user

    def show(self, frame: np.ndarray, info: FrameInfo) -> None:
        """A rendered face crop (render thread)."""
        if self.paused:
            return
        self.output.show(paste_back(self.background, frame, self.box, self.feather), info)
        self.frames_composed += 1

    def show_camera(self, image: np.ndarray, info: FrameInfo) -> None:
        """A real camera frame, scaled to cover the output (passthrough)."""
        height, width = self.background.shape[:2]
        self.output.show(cover(image, width, height)[0], info)
        self.camera_frames += 1

    def close(self) -> None:
        self.output.close()


@dataclass
class WebcamStats:
    """What the local webcam did."""

    frames_captured: int = 0
    """Camera frames delivered (what ``--max-frames`` counts)."""
    frames_skipped: int = 0
    """Frames of a video standing in for the camera skipped because the webcam was late for them (a camera
    would have overwritten them): read from the file, never delivered."""
    frames_face_lost: int = 0
    """Camera frames without a face (FACE_LOST)."""
    frames_rendered: int = 0
    """Faces rendered."""
    frames_dropped: int = 0
    """Motions replaced by a newer one before the renderer took them (latest wins)."""
    frames_composed: int = 0
    """Rendered faces pasted into the output frame."""
    camera_frames: int = 0
    """Camera frames shown in passthrough."""
    frames_output: int = 0
    """Frames handed to the device, window or file (repeats included)."""
    frames_repeated: int = 0
    """Of those, repeats of the previous frame (nothing new in time: frozen, face lost, slow renderer)."""
    frames_output_replaced: int = 0
    """Frames replaced by a newer one before the output thread took them (the device was the slower)."""
    motions_paused: int = 0
    """Motions not rendered because the output was frozen or in passthrough."""
    resets: int = 0
    """Reference pose resets."""
    render_ms_p50: float | None = None
    """Median render time."""
    latency_ms_p50: float | None = None
    """Median capture → rendered latency."""
    wait_ms_p50: float | None = None
    """Median time a motion waited for the renderer to finish the frame before it: what overlapping the stages
    adds to the latency (run one after the other, nothing would wait)."""


class LocalWebcam:
    """One ``adasr cam`` session. Create it first (its ``press`` can be given to a window sink), then ``run``."""

    def __init__(self, options: WebcamOptions) -> None:
        self.options = options
        self.passthrough = False
        """Showing the real camera."""
        self.frozen = False
        """Showing the same frame until unfrozen."""
        self.stats = WebcamStats()
        self.pose: PoseState | None = None
        """Which pose each motion renders (reference pose, resets, a lost face), once ``run`` has started."""
        self.compositor: WebcamCompositor | None = None
        self.started = asyncio.Event()
        """Set once frames flow (source installed, camera streaming)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream: MotionStream | None = None
        self._stopping = False
        self._next_seq = 0  # the number the next camera frame takes

    # ---- commands (any thread) ---------------------------------------------------------------

    def set_passthrough(self, on: bool) -> None:
        """Show the real camera (True) or the rendered face (False)."""
        self.passthrough = on
        self._update_pause()
        logger.info("passthrough %s", "on: showing the real camera" if on else "off")

    def set_frozen(self, on: bool) -> None:
        """Keep showing the current frame (True), or go live again (False)."""
        self.frozen = on
        self._update_pause()
        logger.info("output %s", "frozen" if on else "live")

    def reset_reference(self) -> None:
        """Take the current pose as the new reference: it will show as the portrait's own pose."""
        self._on_loop(self._reset)

    def stop(self) -> None:
        """End the session after the frame in progress."""
        self._on_loop(self._stop)

    def press(self, key: str) -> None:
        """A key or a typed command: p passthrough, f freeze, r reset, q or Esc quit; others are ignored."""
        key = key.lower()
        if key == "p":
            self.set_passthrough(not self.passthrough)
        elif key == "f":
            self.set_frozen(not self.frozen)
        elif key == "r":
            self.reset_reference()
        elif key in ("q", "\x1b"):
            self.stop()

    def _update_pause(self) -> None:
        if self.compositor is not None:
            self.compositor.paused = self.passthrough or self.frozen

    def _on_loop(self, action: Callable[[], object]) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(action)

    def _reset(self) -> None:
        if self.pose is not None:
            self.pose.reset_from(self._next_seq)
            self.stats.resets += 1
            logger.info("reference pose reset from frame %d", self._next_seq)

    def _stop(self) -> None:
        self._stopping = True
        if self._stream is not None:
            self._stream.stop()

    # ---- the pipeline (event loop) -----------------------------------------------------------

    async def run(self, head: TalkingHead, sink: Sink) -> WebcamStats:
        """Run until the camera ends, ``stop()`` or q; closes ``sink`` (opened by the caller: the device check)."""
        opts = self.options
        loop = self._loop = asyncio.get_running_loop()
        output = sink if isinstance(sink, ThreadedSink) else ThreadedSink(sink, opts.fps)
        try:
            image, face = await loop.run_in_executor(None, locate_portrait, opts.portrait, head.size, opts.source_crop,
                                                     opts.tracker)
            state = await loop.run_in_executor(None, head.prepare_source, face.crop, face.landmarks)
        except BaseException:
            await loop.run_in_executor(None, output.close)
            raise
        background, out_box = frame_portrait(image, face.box, opts.width, opts.height)
        compositor = self.compositor = WebcamCompositor(background, out_box, output, opts.feather)
        self._update_pause()
        self.pose = PoseState(PoseOptions(relative=opts.relative, face_lost=opts.face_lost))
        self.pose.new_source(state)
        renderer = RenderLoop(head, compositor)
        pool = ThreadPoolExecutor(1, thread_name_prefix="adasr-cam", initializer=lower_this_thread)  # renderer first
        stream = self._stream = MotionStream(head, opts.capture, pool, smoothing=opts.smoothing, tracker=opts.tracker,
                                             crop=opts.crop)
        tasks = PeerTasks()
        renderer.start()
        commands = opts.console and watch_console({
            "p": ("passthrough on/off", lambda: self.press("p")), "f": ("freeze on/off", lambda: self.press("f")),
            "r": ("reset the reference pose", self.reset_reference), "q": ("quit", self.stop)})
        tasks.spawn(self._stop_when_window_closes(compositor), "adasr-cam-window")
        try:
            await stream.open()
            self.started.set()
            while not self._stopping:
                await renderer.taken()  # track frame n+1 while frame n renders, never a frame the slot would drop
                if self._stopping or (item := await stream.next()) is None:
                    break
                self._on_frame(*item, state, renderer)
            await renderer.drain(timeout_s=5.0)
        finally:
            await tasks.stop()
            if commands:
                unwatch_console()
            await stream.close()
            await loop.run_in_executor(None, pool.shutdown)
            await renderer.stop()  # closes the compositor, its output thread and the device
        return self._collect(stream, renderer.stats, output)

    def _on_frame(self, frame: CapturedFrame, sample: MotionSample, state: SourceState, renderer: RenderLoop) -> None:
        """One camera frame: shown as it is (passthrough), or its motion rendered directly (latest wins)."""
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        face_lost = bool(sample.flags & MotionFlags.FACE_LOST)
        self.stats.frames_face_lost += face_lost
        if self.passthrough or self.frozen:  # nothing rendered (and no CPU spent on it)
            self.stats.motions_paused += 1
            if self.passthrough and not self.frozen and self.compositor is not None:
                self.compositor.show_camera(frame.image, FrameInfo(seq, frame.timestamp_us, 0.0))
            return
        assert self.pose is not None
        now = monotonic_us()
        pose = self.pose.step(seq, sample.vector, face_lost, now, sample.face_ratios)
        if pose is not None:
            renderer.offer(RenderJob(seq, frame.timestamp_us, pose, state, now))

    async def _stop_when_window_closes(self, compositor: WebcamCompositor) -> None:
        while not compositor.closed_by_user:
            await asyncio.sleep(0.2)
        self._stop()

    def _collect(self, stream: MotionStream, render: RenderCounters, output: ThreadedSink) -> WebcamStats:
        s = self.stats
        s.frames_captured, s.frames_skipped = stream.frames_read - stream.frames_skipped, stream.frames_skipped
        s.frames_rendered, s.frames_dropped = render.frames_rendered, render.frames_dropped
        s.render_ms_p50, s.latency_ms_p50 = percentile(render.render_ms, 50), percentile(render.e2e_ms, 50)
        s.wait_ms_p50 = percentile(render.queue_ms, 50)
        if self.compositor is not None:
            s.frames_composed, s.camera_frames = self.compositor.frames_composed, self.compositor.camera_frames
        s.frames_output, s.frames_repeated = output.frames_shown, output.repeats
        s.frames_output_replaced = output.replaced
        return s

    def summary(self) -> dict[str, object]:
        """The stats as a flat dict, for the command's report."""
        return dataclasses.asdict(self.stats)
