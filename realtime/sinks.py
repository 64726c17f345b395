"""Where the receiver's frames go: a virtual camera, a preview window, an mp4 file, or nowhere.

A sink is called from one thread only (OpenCV windows must stay on one thread), once per frame,
with RGB uint8 frames; ``close`` is called from the same thread. That thread is the receiver's render
thread, or the dedicated output thread of a ``ThreadedSink`` (the virtual camera's: frames reach
pyvirtualcam from their own thread, latest wins, so the renderer never waits for the device).
"""

from __future__ import annotations

import logging
import os
import platform
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from adasr.errors import InputError
from adasr.video_io import FrameWriter
from realtime.latest import LatestSlot
from realtime.settings import SinkKind

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameInfo:
    """What the receiver knows about the frame it hands to a sink."""

    seq: int
    """Sequence number of the MOTION packet rendered."""
    timestamp_us: int
    """Capture time of the driving frame (sender clock)."""
    render_ms: float
    """Time the renderer took for this frame."""


class Sink(Protocol):
    """Takes rendered frames."""

    def show(self, frame: np.ndarray, info: FrameInfo) -> None: ...

    def close(self) -> None: ...


class NullSink:
    """Discards frames (benchmarks, headless receivers)."""

    def show(self, frame: np.ndarray, info: FrameInfo) -> None:
        """Nothing to do."""

    def close(self) -> None:
        """Nothing to release."""


class FileSink:
    """Writes frames to an mp4 (H.264) or a folder of PNGs (``adasr.video_io.FrameWriter``) in real time.

    A receiver renders fewer frames than the sender captured (a slow CPU renders 5 of 30): written
    one after another at ``fps`` the file would play a 2-second call in 0.4 s. So each frame is
    placed on the file's constant-rate timeline by its capture time and held until the next one
    (repeated), and the file lasts as long as the call did. A capture time that goes backwards (a
    new call on a sink kept open) continues the timeline after the last frame written; a pause
    longer than ``max_hold_s`` is cut to that, so a stalled sender cannot fill the disk.
    """

    def __init__(self, path: Path, fps: float, max_hold_s: float = 10.0) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path, self.fps = Path(path), fps
        self.max_hold_slots = max(1, round(max_hold_s * fps))
        self.frames_received = 0
        """Frames handed to the sink (each written at least once)."""
        self._writer: FrameWriter | None = None
        self._pending: tuple[np.ndarray, int] | None = None
        """The last frame received and its slot on the timeline, written when the next one says for how long."""
        self._origin_us: int | None = None

    def _slot(self, timestamp_us: int) -> int:
        """The frame's index on the file's timeline, from its capture time."""
        if self._origin_us is None:
            self._origin_us = timestamp_us
        slot = round((timestamp_us - self._origin_us) * self.fps / 1e6)
        if self._pending is not None and slot < self._pending[1]:  # clock went back: continue after the last one
            slot = self._pending[1] + 1
            self._origin_us = timestamp_us - round(slot * 1e6 / self.fps)
        return slot

    def show(self, frame: np.ndarray, info: FrameInfo) -> None:
        if self._writer is None:  # opened on the render thread, at the first frame
            self._writer = FrameWriter(self.path, self.fps)
        slot = self._slot(info.timestamp_us)
        self.frames_received += 1
        if self._pending is not None:
            held, held_slot = self._pending
            if slot == held_slot:  # two frames in one slot: the newer one wins it
                self._pending = (frame, slot)
                return
            for _ in range(min(slot - held_slot, self.max_hold_slots)):
                self._writer.write(held)
        self._pending = (frame, slot)

    @property
    def count(self) -> int:
        """Frames written to the file so far (repeats included)."""
        return 0 if self._writer is None else self._writer.count

    def close(self) -> None:
        if self._writer is not None:
            if self._pending is not None:
                self._writer.write(self._pending[0])
                self._pending = None
            self._writer.close()


class WindowSink:
    """A preview window (``cv2.imshow``); Esc or q sets ``closed_by_user``, and every key goes to ``on_key``.

    ``on_key`` gets the key as a one-character string ("\x1b" for Esc), on the thread that calls ``show``:
    the local webcam maps keys to its commands (passthrough, freeze, reset) this way.
    """

    def __init__(self, title: str = "adasr receive", on_key: Callable[[str], None] | None = None) -> None:
        self.title = title
        self.on_key = on_key
        self.closed_by_user = False

    def show(self, frame: np.ndarray, info: FrameInfo) -> None:
        cv2.imshow(self.title, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        if key == 0xFF:
            return
        if key in (27, ord("q")):
            self.closed_by_user = True
        if self.on_key is not None:
            self.on_key(chr(key))

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass


def require_display(system: str | None = None, environ: Mapping[str, str] | None = None) -> None:
    """Refuse a preview window at start where none can open.

    On Linux without an X11 or Wayland display, OpenCV's Qt backend aborts the whole process
    (SIGABRT, no summary) at the first ``imshow``, which is the first frame of a call: checking
    here turns that into one line before any model is loaded or any peer is waiting.
    """
    system = system or platform.system()
    environ = os.environ if environ is None else environ
    if system == "Linux" and not (environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")):
        raise InputError("no display for the preview window (neither DISPLAY nor WAYLAND_DISPLAY is set): "
                         "use --sink file --output OUT.mp4, --sink virtualcam or --sink none")


class NoVirtualCamera(InputError):
    """No virtual camera device exists (or none can be opened): the message says how to get one on this OS."""


def virtual_camera_fix(system: str | None = None) -> str:
    """How to get a virtual camera device on ``system`` (``platform.system()`` by default)."""
    system = system or platform.system()
    if system == "Linux":
        return ("load the v4l2loopback kernel module (package v4l2loopback-dkms): sudo modprobe v4l2loopback "
                'exclusive_caps=1 video_nr=10 card_label="AdaSR Camera" (exclusive_caps=1 lets Chrome, Zoom and '
                "Meet list the device), then run again, with --vcam-device /dev/video10 if several exist")
    if system in ("Windows", "Darwin"):
        return ("install OBS Studio (obsproject.com; 26.1 or newer on Windows, 30 or newer on macOS), open it and "
                "click Start Virtual Camera once (then stop it: the device stays installed), then run again")
    return f"pyvirtualcam has no virtual camera backend for {system}: use Linux (v4l2loopback), Windows or macOS (OBS)"


class VirtualCameraSink:
    """A virtual webcam (pyvirtualcam: v4l2loopback on Linux, OBS on Windows/macOS) for Zoom/Meet.

    Opening it is the check that a device exists, so callers open it before loading a model and
    fail at once with ``NoVirtualCamera`` (which names the fix for this OS) when there is none.
    ``show`` blocks on the device: wrap it in ``ThreadedSink`` so the renderer never waits for it.
    """

    def __init__(self, width: int, height: int, fps: float, device: str | None = None) -> None:
        try:
            import pyvirtualcam
        except ImportError as exc:
            raise InputError("the virtual camera needs pyvirtualcam: pip install -e .[vcam]") from exc
        try:
            self.camera = pyvirtualcam.Camera(width=width, height=height, fps=fps, device=device)
        except RuntimeError as exc:
            detail = " / ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            raise NoVirtualCamera(f"no virtual camera device{f' {device!r}' if device else ''} ({detail}); to fix it, "
                                  f"{virtual_camera_fix()}") from None
        self.width, self.height = width, height
        logger.info("virtual camera %s (%s backend), %dx%d at %.0f fps", self.camera.device, self.camera.backend,
                    width, height, fps)

    def show(self, frame: np.ndarray, info: FrameInfo) -> None:
        if frame.shape[:2] != (self.height, self.width):
            frame = cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        self.camera.send(np.ascontiguousarray(frame))

    def close(self) -> None:
        self.camera.close()


class ThreadedSink:
    """Runs another sink on a dedicated thread, latest wins, optionally repeating the last frame.

    The renderer (or the local webcam's compositor) hands a frame over and goes on at once; a frame
    the output thread has not taken yet is replaced by a newer one, never queued. A virtual camera
    also wants a steady stream while nothing new is rendered (a frozen picture, a lost face, a slow
    renderer): with ``repeat_last`` the last frame is shown again every 1/``fps`` s until a new one comes.
    """

    def __init__(self, inner: Sink, fps: float, *, repeat_last: bool = True, name: str = "adasr-output") -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.inner = inner
        self.period_s = 1.0 / fps
        self.repeat_last = repeat_last
        self.frames_shown = 0
        """Frames handed to the inner sink, repeats included."""
        self.repeats = 0
        """Of those, repeats of the previous frame."""
        self.errors = 0
        """Frames the inner sink raised on (logged; the thread goes on)."""
        self._slot: LatestSlot[tuple[np.ndarray, FrameInfo]] = LatestSlot()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def replaced(self) -> int:
        """Frames replaced by a newer one before the output thread took them."""
        return self._slot.replaced

    @property
    def closed_by_user(self) -> bool:
        """The inner sink's flag (a preview window closed with Esc or q)."""
        return bool(getattr(self.inner, "closed_by_user", False))

    def show(self, frame: np.ndarray, info: FrameInfo) -> None:
        """Hand ``frame`` to the output thread (never blocks)."""
        self._slot.put((frame, info))

    def _run(self) -> None:
        last: tuple[np.ndarray, FrameInfo] | None = None
        try:
            while True:
                to_repeat = last if self.repeat_last else None
                item = self._slot.get(timeout=self.period_s if to_repeat is not None else 0.25)
                if item is None:
                    if self._slot.closed:
                        return
                    if to_repeat is None:
                        continue
                    item = to_repeat
                    self.repeats += 1
                last = item
                try:
                    self.inner.show(*item)
                except Exception:  # a device hiccup must not end the output thread: count, log once loudly
                    self.errors += 1
                    (logger.exception if self.errors == 1 else logger.debug)("the output sink failed on a frame")
                self.frames_shown += 1
        finally:
            try:
                self.inner.close()
            except Exception:
                logger.exception("closing the output sink failed")

    def close(self) -> None:
        """Show the frame still waiting, then stop the thread and close the inner sink."""
        self._slot.close()
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            logger.warning("the output thread did not stop within 10 s")


class BorrowedSink:
    """Lends a long-lived sink to one call: the call's ``close`` leaves it open for the next call.

    A receiver that serves call after call keeps one virtual camera (or window, or file) open
    across them, so the apps reading it never see the device disappear between calls.
    """

    def __init__(self, inner: Sink) -> None:
        self.inner = inner

    @property
    def closed_by_user(self) -> bool:
        """The inner sink's flag (a preview window closed with Esc or q)."""
        return bool(getattr(self.inner, "closed_by_user", False))

    def show(self, frame: np.ndarray, info: FrameInfo) -> None:
        self.inner.show(frame, info)

    def close(self) -> None:
        """The owner closes the inner sink, not the call."""


def open_sink(kind: SinkKind, *, width: int, height: int, fps: float, output: Path | None = None,
              device: str | None = None, on_key: Callable[[str], None] | None = None) -> Sink:
    """The sink of that kind (``vcam`` is short for ``virtualcam``); ``file`` needs ``output``.

    A virtual camera comes wrapped in a ``ThreadedSink``: frames reach the device from their own
    thread and keep coming at ``fps`` while nothing new is rendered.
    """
    if kind == "none":
        return NullSink()
    if kind == "file":
        if output is None:
            raise InputError("the file sink needs --output PATH (.mp4 or a folder)")
        return FileSink(output, fps)
    if kind == "window":
        require_display()
        return WindowSink(on_key=on_key)
    if kind in ("virtualcam", "vcam"):
        return ThreadedSink(VirtualCameraSink(width, height, fps, device), fps)
    raise InputError(f"unknown sink {kind!r}: choose virtualcam, window, file or none")


def draw_overlay(frame: np.ndarray, lines: list[str]) -> np.ndarray:
    """A copy of ``frame`` with ``lines`` of statistics drawn top-left, legible on any background."""
    out = frame.copy()
    scale = max(0.3, frame.shape[0] / 700)
    step = int(22 * scale / 0.6)
    for i, text in enumerate(lines):
        org = (6, step * (i + 1))
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out
