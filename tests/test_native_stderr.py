"""mediapipe's native log lines stay out of the terminal (they go to the debug log)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from adasr.faces import FaceTrackerConfig

SCRIPT = """
import logging, sys
from skimage import data
from adasr.faces import FaceTracker, FaceTrackerConfig
logging.basicConfig(level=logging.DEBUG if sys.argv[1] == "debug" else logging.WARNING, stream=sys.stdout)
with FaceTracker(FaceTrackerConfig(mode="image")) as tracker:
    seen = tracker.track(data.astronaut())
print("face" if seen is not None else "no face")
"""


@pytest.mark.skipif(not FaceTrackerConfig().resolved_model_path().is_file(), reason="face model not fetched")
@pytest.mark.parametrize("level", ["quiet", "debug"])
def test_tracker_native_chatter_goes_to_the_log_not_stderr(level: str) -> None:
    run = subprocess.run([sys.executable, "-c", SCRIPT, level], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert run.returncode == 0, run.stderr
    assert "face" in run.stdout.splitlines()[-1]
    assert "XNNPACK" not in run.stderr and "W0000" not in run.stderr, run.stderr
    if level == "debug":  # nothing is lost: -v shows it
        assert "mediapipe: " in run.stdout and "XNNPACK" in run.stdout
