"""Write web/golden/rig-v1.json: the expression rig's inputs as ``adasr`` computes them from the landmarks of two
real faces (web/golden/expression-v1.json's): the raw face ratios a MOTION carries, the portrait's anchors in a
crop, and the ratio change ``target_ratios`` asks for several drivers. tests/test_web_wire.py checks the file
still holds what Python computes and web/test/rig.test.js checks the page's port against it. Rerun when the
ratios, the anchors or ``target_ratios`` change:
    .venv/bin/python scripts/make_rig_golden.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from adasr.expression_rig import ANCHORS, anchors_from_landmarks, target_ratios
from adasr.expression_signal import FEATURE_NAMES, raw_ratios

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "web" / "golden"
GOLDEN = GOLDEN_DIR / "rig-v1.json"
#: The crop the anchors are measured in: {x0, y0, size} in the landmarks' pixels.
BOX = {"x0": 10.0, "y0": 5.0, "size": 150.0}


def cases() -> dict[str, Any]:
    faces = json.loads((GOLDEN_DIR / "expression-v1.json").read_text(encoding="utf-8"))["cases"]
    ratios, anchors = {}, {}
    for face in faces:
        landmarks = np.array(face["landmarks"], np.float64)
        ratios[face["name"]] = raw_ratios(landmarks)
        shifted = landmarks - [BOX["x0"], BOX["y0"]]
        anchors[face["name"]] = anchors_from_landmarks(shifted, int(BOX["size"])).reshape(-1)
    source, driving = ratios["astronaut"], ratios["carphone-30"]
    blink, wide, closing = driving.copy(), driving.copy(), driving.copy()
    eyes = [FEATURE_NAMES.index("right_eye_open"), FEATURE_NAMES.index("left_eye_open")]
    blink[eyes] = 0.02
    wide[eyes] = 0.9
    closing[FEATURE_NAMES.index("mouth_open")] = 0.0
    reference = (driving + np.float32(0.03)).astype(np.float32)
    mid_blink, narrow = reference.copy(), source.copy()
    mid_blink[eyes] = 0.1  # below the open-eye floor
    narrow[eyes] = 0.12
    targets = []
    for name, portrait, drive, ref in (("absolute", source, driving, None), ("relative", source, driving, reference),
                                       ("blink", source, blink, reference), ("wide eyes", source, wide, reference),
                                       ("mouth closes past the reference", source, closing, reference),
                                       ("reference mid-blink", source, driving, mid_blink),
                                       ("narrow-eyed portrait", narrow, blink, reference)):
        targets.append({"name": name, "source": portrait.tolist(), "driving": drive.tolist(),
                        "reference": None if ref is None else ref.tolist(),
                        "target": target_ratios(portrait, drive, ref).tolist()})
    return {"box": BOX, "anchor_indices": list(ANCHORS), "ratios": {k: v.tolist() for k, v in ratios.items()},
            "anchors": {k: v.tolist() for k, v in anchors.items()}, "targets": targets}


def main() -> None:
    GOLDEN.write_text(json.dumps(cases()) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
