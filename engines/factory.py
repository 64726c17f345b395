"""One place that turns a backend name and its settings into a Backend.

Explicit keyword arguments, no option bags: a misspelt setting is a TypeError here, not silently
ignored. Heavy imports (torch, onnxruntime, tensorrt) happen only for the backend asked for, so the
command line can offer ``BACKEND_NAMES`` without loading any of them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from adasr.errors import ConfigError

if TYPE_CHECKING:
    from adasr.checkpoint import LoadedModel
    from adasr.config import ModelConfig
    from adasr.inference import Backend

logger = logging.getLogger(__name__)

BACKEND_NAMES = ("torch", "onnxruntime", "tensorrt")
#: The command line's default: the fastest backend present (see :func:`fastest_backend`), resolved by the caller.
AUTO = "auto"


def fastest_backend(device: str) -> str:
    """The fastest backend present for ``device``: on a GPU TensorRT, else ONNX Runtime's CUDA provider, else
    torch; on a CPU ONNX Runtime, else torch (each measured faster than the next in benchmarks/RESULTS.md)."""
    import importlib.util

    has_ort = importlib.util.find_spec("onnxruntime") is not None
    if device.startswith("cuda"):
        if importlib.util.find_spec("tensorrt") is not None:
            return "tensorrt"
        if has_ort:
            import onnxruntime

            if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
                return "onnxruntime"
        return "torch"
    return "onnxruntime" if has_ort else "torch"


def _cuda_index(device: str) -> int:
    """'cuda' → 0, 'cuda:1' → 1."""
    _, _, index = device.partition(":")
    return int(index) if index else 0


def create_backend(
    name: str,
    *,
    checkpoint: str | Path | None = None,
    config: str | Path | ModelConfig | None = None,
    model: LoadedModel | None = None,
    device: str | None = None,
    precision: str | None = None,
    onnx_dir: str | Path | None = None,
    engine_dir: str | Path | None = None,
    threads: int | None = None,
    ort_provider: str | None = None,
    channels_last: bool = False,
    compile: bool = False,
    cuda_graphs: bool = False,
) -> Backend:
    """Build the named backend.

    torch: from ``model``, or ``checkpoint`` (default: the shipped demo checkpoint) and ``config``;
    ``device`` default cpu; ``precision`` fp32 | fp16 | bf16 (renderer only); ``threads`` sets
    torch's intra-op threads (process-wide). onnxruntime: from ``onnx_dir`` (``adasr export``);
    the provider follows ``device`` (cpu → CPU, cuda[:N] → CUDA) unless ``ort_provider`` names one
    (cpu | cuda | tensorrt); ``precision`` (fp32 | fp16 | int8), when given, must match the exported files. tensorrt:
    from ``onnx_dir`` exported with ``--trt``, engines cached in ``engine_dir``; fp16 renderer
    unless ``precision`` is fp32.
    """
    if name == "torch":
        from adasr.checkpoint import DEFAULT_CHECKPOINT, load_model
        from engines.torch_backend import TorchBackend, TorchOptions

        if model is None:
            path = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
            if checkpoint is None and not path.is_file():
                raise ConfigError(f"no checkpoint given and the default {path} is missing; pass --checkpoint")
            model = load_model(path, config)
        if threads:
            import torch

            torch.set_num_threads(threads)
        options = TorchOptions(device=device or "cpu", precision=precision or "fp32",  # type: ignore[arg-type]
                               channels_last=channels_last, compile=compile, cuda_graphs=cuda_graphs)
        return TorchBackend(model, options)

    if name in ("onnxruntime", "tensorrt") and onnx_dir is None:
        raise ConfigError(f"--backend {name} runs exported files: pass --onnx DIR "
                          f"(make one with `adasr export --checkpoint CK --out DIR"
                          f"{' --trt' if name == 'tensorrt' else ''}`)")
    if name in ("onnxruntime", "tensorrt") and (channels_last or compile or cuda_graphs):
        raise ConfigError("--channels-last, --compile and --cuda-graphs are options of --backend torch")

    if name == "onnxruntime":
        from engines.manifest import read_manifest
        from engines.onnxruntime_backend import OnnxRuntimeBackend

        assert onnx_dir is not None
        device = device or "cpu"
        if ort_provider is None:
            ort_provider = "cuda" if device.startswith("cuda") else "cpu"
        if precision is not None:
            exported = read_manifest(onnx_dir, verify_files=False).precision
            if precision != exported:
                remedy = {"fp16": "re-export with --fp16", "fp32": "re-export without --fp16",
                          "int8": "leave --onnx out to run the cached int8 graphs"}.get(
                              precision, "ONNX graphs are fp32, fp16 or int8")
                raise ConfigError(f"{onnx_dir} holds {exported} graphs, --precision {precision} was asked: {remedy}")
        return OnnxRuntimeBackend(onnx_dir, providers=[ort_provider], threads=threads,
                                  device_id=_cuda_index(device) if device.startswith("cuda") else 0)

    if name == "tensorrt":
        from engines.tensorrt_backend import TensorRTBackend, engine_settings

        assert onnx_dir is not None
        engine_dir, fp16 = engine_settings(onnx_dir, engine_dir, precision)
        return TensorRTBackend(onnx_dir, engine_dir, fp16=fp16, device=device or "cuda")

    raise ConfigError(f"unknown backend '{name}'; choose one of {', '.join(BACKEND_NAMES)}")
