"""Two exported renderers timed against each other in ONNX Runtime, interleaved, on the same real inputs.

A change to the renderer's graph (issue #24's expression rig added two inputs and a flow) must cost at most
a stated fraction of a frame; on a shared 2-core machine two separate runs differ by more than that, so the
two graphs here run in alternating blocks in one process and only their ratio is read. Each export folder
(``adasr export --out DIR``, or a cache folder under outputs/graphs) is fed the inputs its graph names: the
astronaut's source state with its rig anchors, carphone's motion relative to its first frame, and a mouth
opening and a blink for the rig (a graph without those inputs ignores them). It also says how far apart their
frames are: the worst PSNR (dB, uint8 frames as shown) of the changed renderer's frames against the reference's on
those inputs, so a change meant to be a pure speed-up shows that it computes the same picture.

    python benchmarks/renderer_ab.py --before OLD_DIR --after NEW_DIR [--threads 2] [--iterations 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from adasr.demo_media import carphone_frames
from adasr.expression_signal import FEATURE_NAMES
from adasr.face_cropper import centre_crop
from engines.onnxruntime_backend import OnnxRuntimeBackend
from engines.talking_head import TalkingHead, astronaut_state
from export.int8 import psnr
from export.onnx_export import ort_cpu_session


def renderer_feeds(export_dir: Path, threads: int, frames: int) -> list[dict[str, np.ndarray]]:
    """Every input a renderer may take, per frame: keypoints from carphone, the rig's anchors and a changing
    mouth and eyes."""
    head = TalkingHead(OnnxRuntimeBackend(export_dir, threads=threads))
    state = astronaut_state(head)
    motions = [head.extract_motion(centre_crop(f, head.size).crop) for f in carphone_frames(frames)]
    feeds = []
    for i, motion in enumerate(motions):
        change = torch.zeros(1, len(FEATURE_NAMES))
        change[0, FEATURE_NAMES.index("mouth_open")] = 0.2 * (i % 4) / 3
        change[0, FEATURE_NAMES.index("right_eye_open")] = -0.2 * (i % 3) / 2
        inputs = {"f_s": state.f_s, "kp_source": state.kp_source,
                  "kp_driving": head.driving_keypoints(state, motion, motions[0]),
                  "anchors": state.anchors, "ratio_change": change}
        feeds.append({name: np.ascontiguousarray(x.cpu().numpy()) for name, x in inputs.items()})
    return feeds


def worst_psnr(before: list[np.ndarray], after: list[np.ndarray]) -> float:
    """The lowest PSNR (dB) of the changed renderer's frames against the reference's, as shown (uint8)."""
    def shown(frame: np.ndarray) -> np.ndarray:
        return np.round(np.clip(frame, 0, 1) * 255).astype(np.uint8)

    return min(psnr(shown(a), shown(b)) for a, b in zip(before, after))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="export folder of the reference renderer")
    parser.add_argument("--after", type=Path, required=True, help="export folder of the changed renderer")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=200, help="timed calls per renderer")
    parser.add_argument("--block", type=int, default=10, help="calls per renderer before switching")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    feeds = renderer_feeds(args.after, args.threads, 16)
    sessions = {}
    for label, folder in (("before", args.before), ("after", args.after)):
        session = ort_cpu_session(folder / "renderer.onnx", args.threads)
        names = [i.name for i in session.get_inputs()]
        sessions[label] = (session, [{n: feed[n] for n in names} for feed in feeds])
    times: dict[str, list[float]] = {label: [] for label in sessions}
    for session, inputs in sessions.values():  # warm-up
        for feed in inputs[:5]:
            session.run(None, feed)
    done = 0
    while done < args.iterations:
        for label, (session, inputs) in sessions.items():
            for k in range(args.block):
                feed = inputs[(done + k) % len(inputs)]
                start = time.perf_counter()
                session.run(None, feed)
                times[label].append((time.perf_counter() - start) * 1e3)
        done += args.block
    report = {label: {"ms_p50": statistics.median(t), "ms_mean": statistics.fmean(t), "calls": len(t)}
              for label, t in times.items()}
    report["after_over_before_p50"] = report["after"]["ms_p50"] / report["before"]["ms_p50"]
    frames = {label: [session.run(None, feed)[0] for feed in inputs] for label, (session, inputs) in sessions.items()}
    report["after_vs_before_worst_psnr_db"] = worst_psnr(frames["before"], frames["after"])
    report["threads"] = args.threads
    report["onnxruntime"] = ort.__version__
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
