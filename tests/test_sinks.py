"""Sinks keep real time and refuse what cannot work before a call starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data

from adasr.errors import InputError
from adasr.video_io import FrameSource
from realtime.sinks import FileSink, FrameInfo, open_sink, require_display


def _frames(count: int) -> list[np.ndarray]:
    """Distinct frames: the astronaut, shifted, so each repeat can be told apart from its neighbours."""
    base = np.ascontiguousarray(data.astronaut()[::4, ::4])
    return [np.roll(base, 16 * i, axis=1) for i in range(count)]


def _show_at(sink: FileSink, frames: list[np.ndarray], times_ms: list[int]) -> None:
    for seq, (frame, ms) in enumerate(zip(frames, times_ms)):
        sink.show(frame, FrameInfo(seq, ms * 1000, 1.0))
    sink.close()


def test_file_sink_holds_each_frame_until_the_next_capture_time(tmp_path: Path) -> None:
    frames = _frames(3)
    sink = FileSink(tmp_path / "png", fps=30)
    _show_at(sink, frames, [0, 200, 400])  # 5 fps rendered from a 30 fps capture
    written = sorted((tmp_path / "png").glob("*.png"))
    assert len(written) == 6 + 6 + 1  # 0.2 s of frame 0, 0.2 s of frame 1, then the last frame once
    decoded = [f for f in FrameSource(tmp_path / "png")]
    assert all(np.array_equal(decoded[i], frames[0]) for i in range(6))
    assert all(np.array_equal(decoded[i], frames[1]) for i in range(6, 12))
    assert np.array_equal(decoded[12], frames[2])
    assert sink.frames_received == 3 and sink.count == 13


def test_file_sink_mp4_lasts_as_long_as_the_call(tmp_path: Path) -> None:
    frames = _frames(12)
    sink = FileSink(tmp_path / "call.mp4", fps=30)
    _show_at(sink, frames, [i * 2000 // 12 for i in range(12)])  # 12 frames over 2 s: 6 fps rendered
    source = FrameSource(tmp_path / "call.mp4")
    played_s = sum(1 for _ in source) / source.info.fps
    assert played_s == pytest.approx(2.0 - 2 / 12 + 1 / 30, abs=0.05)


def test_file_sink_same_slot_keeps_the_newer_frame_and_a_clock_reset_continues(tmp_path: Path) -> None:
    frames = _frames(4)
    sink = FileSink(tmp_path / "png", fps=10)
    # frames 0 and 1 share slot 0; then a new call whose clock starts over (frame 3 before frame 2's time)
    _show_at(sink, frames, [0, 20, 300, 10])
    decoded = [f for f in FrameSource(tmp_path / "png")]
    assert len(decoded) == 3 + 1 + 1
    assert all(np.array_equal(decoded[i], frames[1]) for i in range(3))
    assert np.array_equal(decoded[3], frames[2]) and np.array_equal(decoded[4], frames[3])


def test_file_sink_bounds_a_long_pause(tmp_path: Path) -> None:
    frames = _frames(2)
    sink = FileSink(tmp_path / "png", fps=10, max_hold_s=1.0)
    _show_at(sink, frames, [0, 3_600_000])  # the sender stalled for an hour
    assert len(list((tmp_path / "png").glob("*.png"))) == 10 + 1


def test_window_sink_is_refused_without_a_display() -> None:
    with pytest.raises(InputError, match="no display.*--sink file"):
        require_display("Linux", {})
    require_display("Linux", {"WAYLAND_DISPLAY": "wayland-0"})
    require_display("Windows", {})


def test_open_sink_checks_the_display_before_any_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("platform.system", lambda: "Linux")
    with pytest.raises(InputError, match="no display"):
        open_sink("window", width=64, height=64, fps=30)


def test_receive_refuses_the_window_sink_without_a_display_before_loading_the_model(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The checkpoint does not exist: had the model been loaded first, the error would name the checkpoint."""
    from adasr_cli.main import main

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("platform.system", lambda: "Linux")
    assert main(["receive", "--port", "0", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "adasr receive: error: no display" in capsys.readouterr().err
