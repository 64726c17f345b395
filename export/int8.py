"""int8 graphs for the CPU: the verified fp32 export with the renderer's convolutions quantised.

The renderer is the per-frame cost of a call and of the local webcam; about half of its time in ONNX Runtime is
convolutions (``benchmarks/profile_renderer.py``), which ONNX Runtime runs in int8 on a CPU. This module
quantises them statically (ONNX Runtime's ``quantize_static``: QDQ, weights int8 per output channel,
activations uint8 with ranges calibrated by min/max), keeping every other operator (the warps, resizes and
blends) and the thin convolutions at the frame's resolution (``THIN_CHANNELS``) in float32. The source encoder
runs once per call and the motion extractor is small: they stay fp32.

Calibration and the check use real faces from the wheels (the astronaut as the source, carphone frames as the
drivers), their keypoints made by the fp32 graphs as a call makes them, relative to the first frame; the
frames alternate between the two sets. The int8 renderer must give the fp32 one's frames back at
``MIN_PSNR_DB`` or better on every check frame, else nothing is written that a backend would load.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from adasr.demo_media import carphone_frames
from adasr.face_cropper import centre_crop
from engines.manifest import read_manifest, write_manifest

logger = logging.getLogger(__name__)

#: The frames of the int8 renderer against the fp32 one's, on every check frame (issue #27's bar).
MIN_PSNR_DB = 35.0
#: Driving frames from the carphone clip: even ones calibrate, odd ones check.
FACES = 40
#: Convs at the frame's resolution with this many output channels or fewer stay float32: ONNX Runtime's int8
#: kernels, and the layout changes and (de)quantisations around them, cost more there than its float NCHWc convs
#: (the lite renderer's detail fusion and source blend, 8 and 4 channels at 256²: 3 % of the renderer's time).
THIN_CHANNELS = 8


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two uint8 images; infinite when equal."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _renderer_feeds(fp32_dir: Path, threads: int | None) -> list[dict[str, np.ndarray]]:
    """The renderer's inputs on real faces, as the call makes them (relative to the first driving frame)."""
    from engines.onnxruntime_backend import OnnxRuntimeBackend
    from engines.talking_head import TalkingHead, astronaut_state

    backend = OnnxRuntimeBackend(fp32_dir, threads=threads)
    head = TalkingHead(backend)
    state = astronaut_state(head)
    motions = [head.extract_motion(centre_crop(frame, head.size).crop) for frame in carphone_frames(FACES)]
    names = [spec.name for spec in backend.graph_entry("renderer").inputs]
    feeds = []
    for motion in motions:
        inputs = (state.f_s, state.kp_source, head.driving_keypoints(state, motion, motions[0]),
                  *head.rig_inputs(state, motion, motions[0]))
        feeds.append({name: x.cpu().numpy() for name, x in zip(names, inputs)})
    return feeds


def _frames(path: Path, feeds: list[dict[str, np.ndarray]], threads: int | None) -> list[np.ndarray]:
    """The renderer's frames as uint8 images (what is shown), one per feed."""
    from export.onnx_export import ort_cpu_session

    session = ort_cpu_session(path, threads)
    return [np.round(np.clip(session.run(None, feed)[0], 0, 1) * 255).astype(np.uint8) for feed in feeds]


def thin_full_resolution_convs(path: Path, size: int) -> list[str]:
    """The Conv nodes of a shape-inferred graph that output at most ``THIN_CHANNELS`` channels at ``size`` ×
    ``size`` (the frame's resolution): they stay float32."""
    import onnx

    graph = onnx.load(str(path)).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*graph.value_info, *graph.output)}

    def thin_and_full(name: str) -> bool:
        shape = shapes.get(name, [])
        return len(shape) == 4 and shape[2:] == [size, size] and 0 < shape[1] <= THIN_CHANNELS

    return [n.name for n in graph.node if n.op_type == "Conv" and thin_and_full(n.output[0])]


def quantize_export(fp32_dir: str | Path, out_dir: str | Path, threads: int | None = None) -> float:
    """Write ``out_dir``: ``fp32_dir``'s export with an int8 renderer, checked against the fp32 one; returns the
    lowest PSNR (dB) over the check frames. Raises VerificationError below ``MIN_PSNR_DB``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from engines.manifest import file_sha256
    from export.onnx_export import VerificationError

    fp32_dir, out_dir = Path(fp32_dir), Path(out_dir)
    manifest = read_manifest(fp32_dir)
    if manifest.precision != "fp32" or manifest.trt:
        raise VerificationError(f"{fp32_dir}: int8 is made from an fp32 ONNX Runtime export, not {manifest.precision}"
                                f"{' for TensorRT' if manifest.trt else ''}")
    feeds = _renderer_feeds(fp32_dir, threads)
    calibration, check = feeds[0::2], feeds[1::2]

    class Faces(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    out_dir.mkdir(parents=True, exist_ok=True)
    entry = manifest.graphs["renderer"]
    with tempfile.TemporaryDirectory(prefix="adasr-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_dir / entry.file), str(prepared), skip_symbolic_shape=True)
        thin = thin_full_resolution_convs(prepared, manifest.model_config().image_size)
        quantize_static(str(prepared), str(out_dir / entry.file), Faces(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["Conv"], nodes_to_exclude=thin, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    reference, got = _frames(fp32_dir / entry.file, check, threads), _frames(out_dir / entry.file, check, threads)
    worst = min(psnr(a, b) for a, b in zip(reference, got))
    max_diff = max(float(np.max(np.abs(a.astype(np.int16) - b.astype(np.int16)))) for a, b in zip(reference, got))
    if not worst >= MIN_PSNR_DB:
        raise VerificationError(f"the int8 renderer gives the fp32 frames back at {worst:.1f} dB on its worst check "
                                f"frame, under the {MIN_PSNR_DB:.0f} dB bar: run fp32")
    for name, graph in manifest.graphs.items():
        if name != "renderer":
            shutil.copyfile(fp32_dir / graph.file, out_dir / graph.file)
    renderer = replace(entry, sha256=file_sha256(out_dir / entry.file), max_abs_diff={"frame": max_diff / 255},
                       tolerance={}, verified_with=f"int8 Conv (ONNX Runtime static quantisation, {len(calibration)} "
                                                   f"calibration faces) against the fp32 graph: worst PSNR "
                                                   f"{worst:.1f} dB over {len(check)} faces (bar {MIN_PSNR_DB:.0f})")
    write_manifest(out_dir, replace(manifest, precision="int8", graphs={**manifest.graphs, "renderer": renderer}))
    logger.info("int8 renderer: worst PSNR %.1f dB against fp32 over %d faces", worst, len(check))
    return worst
