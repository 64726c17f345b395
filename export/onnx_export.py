"""PyTorch → ONNX for the three deployable networks, each verified against PyTorch on a real face.

``export_model`` writes ``source_encoder.onnx``, ``motion_extractor.onnx``, ``renderer.onnx`` and
``manifest.json`` (engines.manifest). Choices and why:

* Opset 20, the first with 5-D GridSample. The TorchScript exporter (``dynamo=False``) is used: it
  handles these static-shape graphs and is seconds faster than the dynamo one.
* Norms are folded first (adasr.folding, exact in eval mode), on a deep copy: the graphs get plain
  convs and the caller's model is untouched.
* Shapes are fixed (batch 1, the model's size): the call renders one frame at a time, and fixed
  shapes let ONNX Runtime and TensorRT plan memory once.
* The renderer's 3-D warp: ``trt`` (export.trt_ops, for TensorRT's parser, which has no 5-D
  GridSample), ``stacked`` (export.ort_ops, 4-D GridSample; ONNX Runtime's 5-D kernel is several
  times slower on CPU) or ``grid_sample`` (the plain 5-D op). All three are checked against the
  plain PyTorch warp, so the verification covers the substitution.
* fp16: the verified fp32 graph is converted with ONNX Runtime's float16 tool, inputs and outputs
  kept float32 (Casts at the boundary), so callers feed the same tensors whatever the precision.
  PyTorch cannot run this model in half on CPU (no half avg_pool3d), so the graph is converted
  rather than traced in half. ONNX Runtime's CPU provider runs such a graph by casting around the
  kernels it has only in fp32: the check then measures fp16 storage and most of its rounding,
  and on a CUDA machine it is the real thing.
* Verification runs ONNX Runtime's CPU provider with all graph optimisations (what the backend
  runs) on the face given, or the astronaut's face; the renderer gets the source keypoints of that
  face and driving keypoints from its mirror image, so every value is one a call would see.
"""

from __future__ import annotations

import copy
import datetime as _dt
import logging
import time
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from adasr.checkpoint import LoadedModel
from adasr.deployable import MotionExtractor, MotionTensors, Renderer, SourceEncoder, SourceTensors
from adasr.errors import AdaSRError
from adasr.folding import fold_for_inference
from adasr.image_ops import image_to_tensor
from adasr.keypoints import Motion, transform_keypoints
from adasr.networks import AdaSRNetworks
from adasr.warp import WarpFn, grid_sample_3d
from engines.manifest import (
    GRAPH_NAMES,
    GraphEntry,
    Manifest,
    MANIFEST_NAME,
    TensorSpec,
    file_sha256,
    write_manifest,
)

logger = logging.getLogger(__name__)

OPSET = 20
WarpName = Literal["auto", "grid_sample", "stacked", "trt"]

INPUT_NAMES: dict[str, tuple[str, ...]] = {
    "source_encoder": ("image", "expression"),
    "motion_extractor": ("image", "expression"),
    "renderer": ("f_s", "kp_source", "kp_driving", "anchors", "ratio_change"),
}
"""The graphs' input names; a model without an expression mapper takes the image alone (the first name)."""
OUTPUT_NAMES: dict[str, tuple[str, ...]] = {
    "source_encoder": SourceTensors._fields,
    "motion_extractor": MotionTensors._fields,
    "renderer": ("frame",),
}

#: Bound on max |ONNX − PyTorch| per output, scaled by max(1, max |reference|): unnormalised
#: features get a relative bound, the [0, 1] frame an absolute one (1e-3 is a quarter of a grey level).
TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2}
#: Head angles in degrees, absolute: an expectation over 66 bins of 3°, which fp16 rounds to ~0.3°.
ANGLE_TOLERANCE = {"fp32": 0.05, "fp16": 1.0}
ANGLES = ("yaw", "pitch", "roll")


class ExportError(AdaSRError):
    """The export could not be made or does not meet its checks."""


class VerificationError(ExportError):
    """An exported graph does not reproduce PyTorch within tolerance."""


@dataclass(frozen=True)
class GraphReport(GraphEntry):
    """A graph's manifest entry plus what only the export run knows: its path, the TensorRT check, time."""

    path: Path = Path()
    trt_problems: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True)
class ExportReport:
    """What ``export_model`` wrote and measured."""

    out_dir: Path
    manifest_path: Path
    precision: str
    trt: bool
    warp: str
    graphs: dict[str, GraphReport] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        """Human-readable lines: one per graph output with its difference to PyTorch."""
        lines = [f"exported to {self.out_dir} ({self.precision}, warp={self.warp}, trt={self.trt}, "
                 f"opset {OPSET}) in {self.seconds:.1f} s"]
        for g in self.graphs.values():
            diffs = ", ".join(f"{k} {v:.2e}" for k, v in g.max_abs_diff.items())
            lines.append(f"  {g.path.name}: max |ORT - torch| {diffs}  [{g.verified_with}]")
        return "\n".join(lines)


class _Graph(nn.Module):
    """A deployable module as a graph: fixed positional inputs, a flat tuple of outputs."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.module(*inputs)
        return (out,) if isinstance(out, torch.Tensor) else tuple(out)


def _resolve_warp(warp: WarpName, trt: bool, fp16: bool) -> tuple[str, WarpFn]:
    from export.ort_ops import grid_sample_3d_stacked
    from export.trt_ops import grid_sample_3d_trt

    if trt:
        if warp not in ("auto", "trt"):
            raise ExportError(f"--trt needs the TensorRT warp; warp '{warp}' has a 5-D GridSample TensorRT rejects")
        return "trt", grid_sample_3d_trt
    if warp == "auto":  # the stacked form is for fp32: fp16 cannot resolve its tall image's rows
        warp = "grid_sample" if fp16 else "stacked"
    if warp == "stacked" and fp16:
        raise ExportError("warp 'stacked' is exact only in fp32; use warp 'grid_sample' or 'trt' with --fp16")
    table: dict[str, WarpFn] = {"grid_sample": grid_sample_3d, "stacked": grid_sample_3d_stacked,
                                "trt": grid_sample_3d_trt}
    if warp not in table:
        raise ExportError(f"unknown warp '{warp}'; choose one of {sorted(table)} or 'auto'")
    return warp, table[warp]


def verification_cases(model: LoadedModel, nets: AdaSRNetworks, verify_image: np.ndarray | None,
                       ) -> dict[str, tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]]:
    """(inputs, PyTorch outputs) per graph, on a face and the keypoints the pipeline would derive from it.

    PyTorch outputs come from the plain modules (the plain 3-D warp), whatever the exported warp.
    """
    from adasr.demo_media import ASTRONAUT_FACE_ANCHORS, astronaut_face

    size = model.config.image_size
    face = verify_image if verify_image is not None else astronaut_face(size)
    source = image_to_tensor(face, size)
    driving = torch.flip(source, dims=[3])  # the mirrored face: another head pose, still a face
    inputs_s: tuple[torch.Tensor, ...] = (source,)
    inputs_d: tuple[torch.Tensor, ...] = (driving,)
    features = model.config.he_estimator.expression_inputs
    if features:  # an expression far from neutral on both sides, so the mapper's path is checked too
        expression = torch.linspace(-1.5, 1.5, features)[None]
        inputs_s, inputs_d = (source, expression), (driving, expression.flip(-1))
    with torch.no_grad():  # not inference_mode: the tracer must be able to record these tensors
        src = SourceEncoder(nets)(*inputs_s)
        drv = MotionExtractor(nets)(*inputs_d)
        x_s = transform_keypoints(src.x_c, Motion(src.yaw, src.pitch, src.roll, src.t, src.delta))
        x_d = transform_keypoints(src.x_c, Motion(*drv))
        # the rig checked on the astronaut's own lips and lids, with a wide-open mouth, a wink and raised brows
        anchors = torch.from_numpy(ASTRONAUT_FACE_ANCHORS)[None]
        change = torch.tensor([[0.2, -0.05, 0.1, 0.02, -0.25, 0.0, 0.03, 0.03]])
        frame = Renderer(nets)(src.f_s, x_s, x_d, anchors, change)
    return {"source_encoder": (inputs_s, tuple(src)),
            "motion_extractor": (inputs_d, tuple(drv)),
            "renderer": ((src.f_s, x_s, x_d, anchors, change), (frame,))}


def _toposort(graph: Any) -> None:
    """Order nodes so each comes after its inputs' producers (the fp16 tool appends its Casts last)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ExportError("the fp16 graph has a cycle or a dangling input; export fp32 instead")
        for n in ready:
            available.update(n.output)
        ready_ids = {id(n) for n in ready}
        ordered += ready
        pending = [n for n in pending if id(n) not in ready_ids]
    copies = [type(n)() for n in ordered]
    for dst, src in zip(copies, ordered):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(copies)


def _export_graph(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on frozen sizes and the exporter's deprecation notice
        torch.onnx.export(
            _Graph(module).eval(), inputs, str(path), opset_version=OPSET, dynamo=False,
            input_names=list(INPUT_NAMES[name][:len(inputs)]), output_names=list(OUTPUT_NAMES[name]),
            do_constant_folding=True,
        )


def _finish_graph(path: Path, model_id: str, name: str, fp16: bool, output_shapes: list[tuple[int, ...]]) -> None:
    """Fix output shapes the tracer left symbolic, convert to fp16 when asked, stamp the model identity."""
    import onnx

    proto = onnx.load(str(path))
    for value, shape in zip(proto.graph.output, output_shapes):  # e.g. x_c comes out as [?, ?, ?]
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for size in shape:
            dims.add().dim_value = size
    if fp16:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        proto = convert_float_to_float16(proto, keep_io_types=True)
        _toposort(proto.graph)
    for key, value in (("adasr.model_id", model_id), ("adasr.graph", name)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _specs(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    import onnx
    from onnx import helper

    graph = onnx.load(str(path), load_external_data=False).graph

    def spec(v: Any) -> TensorSpec:
        t = v.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name
        return TensorSpec(v.name, tuple(int(d.dim_value) for d in t.shape.dim), dtype)

    return tuple(spec(v) for v in graph.input), tuple(spec(v) for v in graph.output)


def ort_cpu_session(path: str | Path, threads: int | None = None, profile_prefix: str | None = None) -> Any:
    """An ONNX Runtime CPU session with every graph optimisation and no spinning threads, as the backend makes it
    (on a loaded 2-core machine a spinning renderer measured 1.8× slower than one whose threads sleep).

    ``profile_prefix``: also record each node's time (``end_profiling()`` writes the JSON there).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # fp16 graphs make the optimiser warn about every constant it keeps
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _verify(path: Path, name: str, inputs: tuple[torch.Tensor, ...], reference: tuple[torch.Tensor, ...],
            precision: str) -> tuple[dict[str, float], dict[str, float], str]:
    import onnxruntime as ort

    session = ort_cpu_session(path, threads=torch.get_num_threads())  # as many as torch: both share the cores
    feed = {n: x.detach().numpy() for n, x in zip(INPUT_NAMES[name], inputs)}
    outputs = session.run(list(OUTPUT_NAMES[name]), feed)
    diffs: dict[str, float] = {}
    tols: dict[str, float] = {}
    failures: list[str] = []
    for out_name, got, ref in zip(OUTPUT_NAMES[name], outputs, reference):
        ref_np = ref.detach().float().numpy()
        if got.shape != ref_np.shape:
            failures.append(f"{out_name}: shape {got.shape}, PyTorch {ref_np.shape}")
            continue
        diff = float(np.max(np.abs(got.astype(np.float32) - ref_np))) if got.size else 0.0
        if out_name in ANGLES:
            tol = ANGLE_TOLERANCE[precision]
        else:
            tol = TOLERANCE[precision] * max(1.0, float(np.max(np.abs(ref_np))) if ref_np.size else 1.0)
        diffs[out_name], tols[out_name] = diff, tol
        if not diff <= tol:  # also catches NaN
            failures.append(f"{out_name}: max |ORT - torch| = {diff:.3g} > tolerance {tol:.3g}")
    if failures:
        raise VerificationError(
            f"{path.name} does not reproduce PyTorch on the verification face ({precision}): "
            + "; ".join(failures)
            + ". The files were written but no manifest: nothing will load them. Try another --warp, "
              "or fp32 if this was --fp16, and report the model config if it persists.")
    return diffs, tols, f"onnxruntime {ort.__version__} CPUExecutionProvider"


def export_model(
    model: LoadedModel,
    out_dir: str | Path,
    fp16: bool = False,
    trt: bool = False,
    verify_image: np.ndarray | None = None,
    *,
    warp: WarpName = "auto",
) -> ExportReport:
    """Export, verify and describe the three deployable networks of ``model`` into ``out_dir``.

    Raises VerificationError when a graph's outputs differ from PyTorch beyond tolerance and
    ExportError when a ``trt`` graph would not parse in TensorRT. ``verify_image``: an RGB face
    (HWC uint8) used for tracing and verification; default, the astronaut's face.
    """
    start = time.perf_counter()
    precision = "fp16" if fp16 else "fp32"
    warp_name, warp_fn = _resolve_warp(warp, trt, fp16)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)  # a failed export must not leave a stale manifest

    nets = fold_for_inference(copy.deepcopy(model.networks).float().cpu())
    cases = verification_cases(model, nets, verify_image)
    modules: dict[str, nn.Module] = {"source_encoder": SourceEncoder(nets), "motion_extractor": MotionExtractor(nets),
                                     "renderer": Renderer(nets, warp=warp_fn)}
    reports: dict[str, GraphReport] = {}
    entries: dict[str, GraphEntry] = {}
    for name in GRAPH_NAMES:
        t0 = time.perf_counter()
        logger.info("exporting %s", name)
        inputs, reference = cases[name]
        path = out_dir / f"{name}.onnx"
        _export_graph(modules[name].eval(), inputs, path, name)
        _finish_graph(path, model.model_id, name, fp16, [tuple(r.shape) for r in reference])
        problems: tuple[str, ...] = ()
        if trt:
            from export.graph_check import check_tensorrt_compatible

            problems = tuple(check_tensorrt_compatible(path))
            if problems:
                raise ExportError(f"{path.name} would not parse in TensorRT: " + "; ".join(problems))
        diffs, tols, verified_with = _verify(path, name, inputs, reference, precision)
        in_specs, out_specs = _specs(path)
        entries[name] = entry = GraphEntry(name, path.name, file_sha256(path), in_specs, out_specs, diffs, tols,
                                           verified_with)
        reports[name] = GraphReport(**{f.name: getattr(entry, f.name) for f in fields(GraphEntry)}, path=path,
                                    trt_problems=problems, seconds=time.perf_counter() - t0)
        logger.info("%s: max |ORT - torch| %s", path.name, {k: f"{v:.2e}" for k, v in diffs.items()})

    import onnx

    manifest = Manifest(
        model_id=model.model_id, config=model.config.to_dict(), precision=precision, trt=trt, warp=warp_name,
        opset=OPSET,
        exporter={"torch": torch.__version__, "onnx": onnx.__version__,
                  "method": "torch.onnx.export (TorchScript tracer, dynamo=False)"
                            + (", onnxruntime.transformers.float16 (fp32 I/O)" if fp16 else "")},
        graphs=entries,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    manifest_path = write_manifest(out_dir, manifest)
    report = ExportReport(out_dir, manifest_path, precision, trt, warp_name, reports)
    return replace(report, seconds=time.perf_counter() - start)
