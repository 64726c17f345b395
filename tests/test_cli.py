"""``adasr animate`` end to end, as a user runs it, including its one-line refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from adasr_cli.main import main
from adasr.demo_media import astronaut_portrait, carphone_clip

from .conftest import TINY_CHECKPOINT, TINY_CONFIG

TINY = ["--checkpoint", str(TINY_CHECKPOINT), "--config", str(TINY_CONFIG)]


@pytest.fixture(scope="module")
def face_crops(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A square source crop and a folder of square driving crops (for --no-crop)."""
    root = tmp_path_factory.mktemp("crops")
    source = root / "source.png"
    cv2.imwrite(str(source), cv2.imread(str(astronaut_portrait()))[10:178, 142:310])
    frames = root / "driving"
    frames.mkdir()
    capture = cv2.VideoCapture(str(carphone_clip()))
    for i in range(6):
        ok, frame = capture.read()
        assert ok
        cv2.imwrite(str(frames / f"{i:03d}.png"), frame[0:120, 30:150])
    return source, frames


def test_no_crop_writes_one_lossless_png_per_frame(face_crops, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source, frames = face_crops
    out = tmp_path / "frames"
    assert main(["animate", "--source", str(source), "--driving", str(frames), "--output", str(out),
                 "--no-crop", *TINY]) == 0
    written = sorted(out.iterdir())
    assert [p.name for p in written] == [f"{i:06d}.png" for i in range(6)]
    images = [cv2.imread(str(p)) for p in written]
    assert all(im.shape == (128, 128, 3) for im in images)
    assert not np.array_equal(images[0], images[5])  # the motion changes the frames


def test_relative_first_frame_keeps_the_source_pose_absolute_does_not(face_crops, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source, frames = face_crops
    rel, ab = tmp_path / "rel", tmp_path / "abs"
    main(["animate", "--source", str(source), "--driving", str(frames), "--output", str(rel), "--no-crop", *TINY])
    main(["animate", "--source", str(source), "--driving", str(frames), "--output", str(ab), "--no-crop",
          "--absolute", *TINY])
    assert not np.array_equal(cv2.imread(str(rel / "000000.png")), cv2.imread(str(ab / "000000.png")))


def test_face_cropped_side_by_side_mp4(tmp_path: Path) -> None:
    out = tmp_path / "demo.mp4"
    assert main(["animate", "--source", str(astronaut_portrait()), "--driving", str(carphone_clip()),
                 "--output", str(out), "--max-frames", "8", *TINY]) == 0
    capture = cv2.VideoCapture(str(out))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = capture.read()
    assert ok and count == 8
    assert frame.shape == (128, 256, 3)  # driving crop | result


@pytest.mark.parametrize("case, expected", [
    ("missing_source", "image not found"),
    ("text_source", "not a readable image"),
    ("empty_folder", "no images"),
    ("broken_video", "not a readable video"),
    ("no_face", "--no-crop"),
    ("wrong_config", "does not fit config 'lite'"),
])
def test_bad_input_is_one_line_and_non_zero(case: str, expected: str, face_crops, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source, frames = face_crops
    args = {"source": str(source), "driving": str(frames), "extra": [*TINY]}
    if case == "missing_source":
        args["source"] = str(tmp_path / "nope.png")
    elif case == "text_source":
        (tmp_path / "t.png").write_text("hello")
        args["source"] = str(tmp_path / "t.png")
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        args["driving"] = str(tmp_path / "empty")
    elif case == "broken_video":
        (tmp_path / "v.mp4").write_bytes(b"\x00" * 1000)
        args["driving"] = str(tmp_path / "v.mp4")
    elif case == "no_face":
        blank = tmp_path / "blank.png"
        cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
        args["source"] = str(blank)
        args["driving"] = str(carphone_clip())
    elif case == "wrong_config":
        args["extra"] = ["--checkpoint", str(TINY_CHECKPOINT), "--config", "lite"]
    result = subprocess.run([sys.executable, "-m", "adasr_cli", "animate", "--source", args["source"],
                             "--driving", args["driving"], "--output", str(tmp_path / "o.mp4"), *args["extra"]],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("adasr animate: error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_official_shaped_checkpoint_at_512_on_cpu(face_crops, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A random-weight checkpoint shaped like the released one runs end to end at 512."""
    from adasr.config import load_model_config
    from adasr.networks import AdaSRNetworks

    torch.manual_seed(0)
    nets = AdaSRNetworks(load_model_config("official"))
    ckpt = tmp_path / "released-shape.pth.tar"
    torch.save({part: getattr(nets, part).state_dict() for part in AdaSRNetworks.PARTS} | {"epoch": 1}, ckpt)
    del nets
    source, frames = face_crops
    single = tmp_path / "one"
    single.mkdir()
    (single / "000.png").write_bytes((frames / "000.png").read_bytes())
    out = tmp_path / "out"
    assert main(["animate", "--config", "official", "--checkpoint", str(ckpt), "--no-crop", "--source", str(source),
                 "--driving", str(single), "--output", str(out), "--backend", "torch"]) == 0  # not 900 MB of graphs
    assert cv2.imread(str(out / "000000.png")).shape == (512, 512, 3)
