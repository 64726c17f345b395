"""Write web/golden/expression-v1.json: mediapipe's landmarks of two real faces and the expression features
``adasr.expression_signal`` computes from them, checked by tests/test_web_wire.py and web/test/expression.test.js
so the page feeds a model with an expression mapper what the Python sender feeds it. Rerun when the features
change (the Python test then fails until this file is rewritten):
    .venv/bin/python scripts/make_expression_golden.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from adasr.demo_media import carphone_clip
from adasr.expression_signal import expression_features
from adasr.faces import FaceTracker, FaceTrackerConfig
from adasr.video_io import FrameSource

GOLDEN = Path(__file__).resolve().parent.parent / "web" / "golden" / "expression-v1.json"


def main() -> None:
    from skimage import data

    faces = {"astronaut": data.astronaut()[10:178, 142:310]}
    for index, frame in enumerate(FrameSource(carphone_clip())):
        if index == 30:
            faces["carphone-30"] = frame
            break
    cases = []
    with FaceTracker(FaceTrackerConfig(mode="image")) as tracker:
        for name, image in faces.items():
            observation = tracker.track(image)
            assert observation is not None, name
            landmarks = observation.landmarks[:, :2].astype(np.float64)
            cases.append({"name": name, "landmarks": np.round(landmarks, 4).tolist(),
                          "features": expression_features(np.round(landmarks, 4)).tolist()})
    GOLDEN.write_text(json.dumps({"cases": cases}) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
