"""``pip install .`` works outside the checkout: the wheel carries its presets, weights and face model.

The wheel is built from this checkout, installed with ``--no-deps`` into a fresh venv that sees the
dependencies of the running interpreter's site-packages (a plain directory line in a ``.pth``: the
dependencies become importable, but the old venv's own ``.pth`` files, such as the editable install of
this project, are not run), and ``adasr animate`` runs from a directory outside the checkout with the
shipped defaults only.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import cv2
import pytest

from adasr.demo_media import astronaut_image, carphone_clip

PROJECT = Path(__file__).resolve().parents[1]
FRAMES = 4
#: Bound of each step (build, install, animate): generous for a loaded 2-core machine.
STEP_TIMEOUT_S = 600


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, check=False, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=STEP_TIMEOUT_S)
    assert result.returncode == 0, f"{command[:3]}… failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _build_wheel(out: Path, env: dict[str, str]) -> Path:
    """The wheel, built with the checkout untouched: setuptools' build and egg-info folders go to ``out``."""
    extra_config = out / "setup.cfg"
    extra_config.parent.mkdir(parents=True)
    extra_config.write_text(f"[build]\nbuild_base = {out / 'build'}\n[egg_info]\negg_base = {out}\n")
    _run([sys.executable, "-m", "pip", "wheel", str(PROJECT), "--no-deps", "--no-build-isolation",
          "-w", str(out / "dist"), "-q"], cwd=out, env={**env, "DIST_EXTRA_CONFIG": str(extra_config)})
    (wheel,) = (out / "dist").glob("adasr-*.whl")
    return wheel


def _fresh_venv(root: Path, wheel: Path, env: dict[str, str]) -> Path:
    """A venv holding only the wheel (installed by this interpreter's pip) plus the old site-packages on its path."""
    venv.EnvBuilder(with_pip=False).create(root)
    python = root / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
          str(wheel)], cwd=root, env=env)
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                   cwd=root, env=env).stdout.strip()
    (Path(purelib) / "outer_site_packages.pth").write_text("".join(f"{p}\n" for p in site.getsitepackages()))
    return root


@pytest.mark.slow
def test_the_wheel_animates_a_portrait_outside_the_checkout(tmp_path: Path) -> None:
    if not (PROJECT / "models" / "face_landmarker.task").is_file():
        pytest.skip("face model missing (make models/face_landmarker.task): the wheel would not carry it")
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "ADASR_FACE_MODEL", "ADASR_CHECKPOINT")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")

    wheel = _build_wheel(tmp_path / "wheel", env)
    names = set(zipfile.ZipFile(wheel).namelist())
    data = "adasr-0.1.0.data/data/share/adasr"
    assert {f"{data}/configs/lite.yaml", f"{data}/configs/degradation.yaml", f"{data}/weights/adasr-lite.pth",
            f"{data}/models/face_landmarker.task", "export/tensorrt_onnx_ops.txt"} <= names

    root = _fresh_venv(tmp_path / "venv", wheel, env)
    work = tmp_path / "work"
    work.mkdir()
    probe = _run([str(root / "bin" / "python"), "-c",
                  "import adasr, adasr.resources as r; print(adasr.__file__, r.data_dir(), r.cache_dir(), sep='\\n')"],
                 cwd=work, env=env).stdout.split("\n")
    module, data_dir, cache = (Path(line) for line in probe[:3])
    assert module.is_relative_to(root) and data_dir.is_relative_to(root), probe
    assert cache == tmp_path / "cache" / "adasr"

    # pip install --target DIR: the data files land in DIR/share/adasr, which RECORD's paths do not say
    target = tmp_path / "target"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)],
         cwd=work, env=env)
    found = _run([sys.executable, "-c", "import adasr.resources as r; print(r.data_dir(), r.default_checkpoint())"],
                 cwd=work, env={**env, "PYTHONPATH": str(target)}).stdout.split()
    assert Path(found[0]) == target / "share" / "adasr" and Path(found[1]).is_file(), found
    assert (Path(found[0]) / "configs" / "lite.yaml").is_file()

    portrait = work / "astronaut.png"
    cv2.imwrite(str(portrait), cv2.cvtColor(astronaut_image(), cv2.COLOR_RGB2BGR))
    output = work / "out.mp4"
    _run([str(root / "bin" / "adasr"), "animate", "--source", str(portrait), "--driving", str(carphone_clip()),
          "--output", str(output), "--max-frames", str(FRAMES)], cwd=work, env=env)
    capture = cv2.VideoCapture(str(output))
    ok, frame = capture.read()
    assert ok and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    assert frame.shape == (256, 512, 3)  # the shipped lite model at 256 px: driving crop | result
