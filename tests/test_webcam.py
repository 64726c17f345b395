"""``adasr cam``: the local virtual webcam through pyvirtualcam's ``register_backend``, its framing and
commands, and the immediate, explained exit when there is no virtual camera device."""

from __future__ import annotations

import asyncio
import math
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adasr.demo_media import astronaut_portrait
from adasr.faces import paste_back
from adasr.video_io import FrameWriter
from realtime.capture import CaptureOptions
from realtime.motion_pipeline import MotionPipeline
from realtime.receiver.render_loop import RenderJob
from realtime.sender import locate_portrait
from realtime.sinks import FrameInfo, virtual_camera_fix
from realtime.thread_priority import BEHIND_THE_RENDERER
from realtime.webcam import LocalWebcam, WebcamOptions, cover, frame_portrait

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cam_clip(tmp_path_factory: pytest.TempPathFactory, carphone_frames: list[np.ndarray]) -> Path:
    """What the "camera" films: 16 carphone frames (a face), then 8 grey ones (no face)."""
    path = tmp_path_factory.mktemp("cam") / "camera.mp4"
    with FrameWriter(path, 10) as writer:
        for frame in carphone_frames[:16]:
            writer.write(frame)
        for _ in range(8):
            writer.write(np.full_like(carphone_frames[0], 128))
    return path


class FakeCamera:
    """A pyvirtualcam backend that keeps what it is sent (registered with ``pyvirtualcam.register_backend``)."""

    instances: list[FakeCamera] = []

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw: Any) -> None:
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self.frames: list[np.ndarray] = []
        self.closed = False
        FakeCamera.instances.append(self)

    def send(self, frame: np.ndarray) -> None:
        self.frames.append(frame.copy())

    def close(self) -> None:
        self.closed = True

    def device(self) -> str:
        return "fake0"

    def native_fourcc(self) -> int | None:
        return None


def test_the_fix_is_named_for_each_os() -> None:
    linux = virtual_camera_fix("Linux")
    assert "sudo modprobe v4l2loopback exclusive_caps=1 video_nr=" in linux and "card_label=" in linux
    for system in ("Windows", "Darwin"):
        fix = virtual_camera_fix(system)
        assert "install OBS Studio" in fix and "Start Virtual Camera" in fix


@pytest.mark.skipif(any(Path("/dev").glob("video*")), reason="this machine has video devices (maybe a loopback one)")
def test_cam_without_a_virtual_camera_exits_at_once_with_the_fix(cam_clip: Path) -> None:
    # the checkpoint does not exist: had a model been loaded before the device was checked, the error would name it
    result = subprocess.run([sys.executable, "-m", "adasr_cli", "cam", "--source", str(astronaut_portrait()),
                             "--camera", str(cam_clip), "--sink", "virtualcam", "--checkpoint", "missing.pth"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "adasr cam: error: no virtual camera device" in result.stderr
    assert virtual_camera_fix() in result.stderr


def test_cam_sends_frames_of_the_configured_size_to_a_registered_backend(
        monkeypatch: pytest.MonkeyPatch, cam_clip: Path, fast_checkpoint: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`adasr cam --camera VIDEO --sink virtualcam` with a fake backend: RGB frames of 320×240 reach it from the
    output thread, the face pasted into the portrait's framing; the grey frames are signalled as FACE_LOST."""
    import pyvirtualcam
    import pyvirtualcam.camera
    from pyvirtualcam.util import encode_fourcc

    from adasr_cli.main import main

    monkeypatch.setattr(pyvirtualcam.camera, "BACKENDS", {})  # only the fake, whatever this machine has
    pyvirtualcam.register_backend("fake", FakeCamera)
    FakeCamera.instances.clear()
    portrait = astronaut_portrait()
    assert main(["cam", "--source", str(portrait), "--camera", str(cam_clip), "--sink", "virtualcam",
                 "--width", "320", "--height", "240", "--fps", "10", "--checkpoint", str(fast_checkpoint),
                 "--threads", "1"]) == 0
    (camera,) = FakeCamera.instances
    assert (camera.width, camera.height, camera.fps) == (320, 240, 10.0) and camera.closed
    assert camera.fourcc == encode_fourcc(pyvirtualcam.PixelFormat.RGB.value)
    assert len(camera.frames) >= 8
    assert all(f.dtype == np.uint8 and f.shape == (320 * 240 * 3,) for f in camera.frames)
    image, face = locate_portrait(portrait, 64, crop=True)
    background, box = frame_portrait(image, face.box, 320, 240)
    last = camera.frames[-1].reshape(240, 320, 3)
    outside = np.ones((240, 320), bool)
    outside[max(box.y0, 0):box.y1, max(box.x0, 0):box.x1] = False
    assert np.array_equal(last[outside], background[outside])  # the portrait's framing around the face
    assert not np.array_equal(last[~outside], background[~outside])  # and a rendered face inside it
    out = capsys.readouterr().out
    summary = dict(re.findall(r"(\w+)=([\w.]+)", out.split("adasr cam:")[-1]))
    assert int(summary["frames_rendered"]) > 0 and int(summary["frames_face_lost"]) > 0
    assert int(summary["frames_output"]) == len(camera.frames)


class RecordingSink:
    """Keeps every frame the output thread shows."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def show(self, frame: np.ndarray, info: FrameInfo) -> None:
        self.frames.append(frame)

    def close(self) -> None:
        """Nothing to release."""


async def _wait(predicate: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_webcam_passthrough_freeze_reset_and_quit(fast_head, cam_clip: Path) -> None:  # type: ignore[no-untyped-def]
    sink = RecordingSink()
    webcam = LocalWebcam(WebcamOptions(portrait=astronaut_portrait(),
                                       capture=CaptureOptions(video=cam_clip, fps=10, loop=True),
                                       width=160, height=120, fps=20, console=False))

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        run = asyncio.ensure_future(webcam.run(fast_head, sink))
        await asyncio.wait_for(webcam.started.wait(), 30)
        compositor, pose = webcam.compositor, webcam.pose
        assert compositor is not None and pose is not None
        await _wait(lambda: compositor.frames_composed >= 3)
        webcam.press("p")  # passthrough: the real camera, nothing rendered
        composed = compositor.frames_composed
        await _wait(lambda: compositor.camera_frames >= 3)
        seen["composed_in_passthrough"] = compositor.frames_composed - composed
        seen["camera_frame"] = sink.frames[-1]
        webcam.press("p")
        webcam.press("f")  # frozen: the same frame, repeated at the output rate
        await asyncio.sleep(0.15)  # a frame composed before the freeze may still be on its way out
        count = len(sink.frames)
        await _wait(lambda: len(sink.frames) >= count + 5)  # repeats at the output rate, however busy the machine
        seen["frozen"] = sink.frames[count:]
        webcam.press("f")
        references = pose.stats.references_set
        webcam.press("r")
        await _wait(lambda: pose.stats.references_set > references)
        seen["face_lost_events"] = pose.stats.face_lost_events
        webcam.press("q")
        seen["stats"] = await asyncio.wait_for(run, 20)
        return seen

    seen = asyncio.run(scenario())
    assert seen["composed_in_passthrough"] <= 1  # at most one render already in flight
    assert seen["camera_frame"].shape == (120, 160, 3)
    frozen = seen["frozen"]
    assert len(frozen) >= 5 and all(np.array_equal(f, frozen[0]) for f in frozen)
    stats = seen["stats"]
    assert stats.resets == 1 and stats.camera_frames >= 3 and stats.motions_paused > 0 and stats.frames_repeated > 0
    assert stats.frames_output == len(sink.frames) and all(f.shape == (120, 160, 3) for f in sink.frames)


def test_max_frames_counts_the_frames_the_camera_delivered(fast_head, cam_clip: Path) -> None:  # type: ignore[no-untyped-def]
    """A video paced far faster than the webcam works skips frames, as a camera overwrites them: the summary's
    frames_captured is what --max-frames bounds, the skipped ones are named apart."""
    capture = CaptureOptions(video=cam_clip, fps=1000, max_frames=12, loop=True)
    webcam = LocalWebcam(WebcamOptions(portrait=astronaut_portrait(), capture=capture, width=160, height=120,
                                       fps=10, console=False))
    stats = asyncio.run(webcam.run(fast_head, RecordingSink()))
    assert stats.frames_captured == 12 and stats.frames_skipped > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_tracking_runs_behind_the_renderer(fast_head, cam_clip: Path,  # type: ignore[no-untyped-def]
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The tracker and motion extractor work a few nice steps behind the render thread (realtime.thread_priority),
    and the render thread keeps the process's priority."""
    niceness: dict[str, set[int]] = {"tracking": set(), "rendering": set()}

    def nice_now() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def noting(original: Any, name: str) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            niceness[name].add(nice_now())
            return original(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(MotionPipeline, "process", noting(MotionPipeline.process, "tracking"))
    monkeypatch.setattr(RenderJob, "render", noting(RenderJob.render, "rendering"))
    capture = CaptureOptions(video=cam_clip, fps=1000, max_frames=6, loop=True, drop_late=False)
    webcam = LocalWebcam(WebcamOptions(portrait=astronaut_portrait(), capture=capture, width=160, height=120,
                                       fps=10, console=False))
    asyncio.run(webcam.run(fast_head, RecordingSink()))
    base = nice_now()
    assert niceness == {"tracking": {min(19, base + BEHIND_THE_RENDERER)}, "rendering": {base}}


def test_cover_and_framing_keep_the_face_in_view() -> None:
    image = np.zeros((400, 300, 3), np.uint8)
    image[300:, :] = 255  # a marker at the bottom
    frame, scale, x0, y0 = cover(image, 160, 90, center=(150, 350))
    assert frame.shape == (90, 160, 3) and scale == pytest.approx(160 / 300)
    assert y0 == math.ceil(400 * scale) - 90  # pushed against the bottom edge, never past it
    assert frame[-1, 80].tolist() == [255, 255, 255]
    from adasr.faces import CropBox

    background, box = frame_portrait(image, CropBox(100, 300, 100), 160, 90)
    assert box.size == round(100 * scale) and box.y1 <= 90 + 1
    crop = np.full((64, 64, 3), 7, np.uint8)
    pasted = paste_back(background, crop, box, feather=0.0)
    assert (pasted[box.y0 + 2:box.y1 - 2, box.x0 + 2:box.x1 - 2] == 7).all()
