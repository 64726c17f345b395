"""ONNX Runtime backend: the exported graphs on the CPU, CUDA or TensorRT execution provider.

ONNX Runtime falls back to another provider without a word when the one asked for cannot load
(a CPU-only wheel, a missing CUDA library, an unsupported node): this backend reads back what each
session really got, reports that in ``describe()``, and logs a warning when it is not what was
asked. Tensors cross the boundary through I/O binding: inputs are read in place from the torch
tensors' memory and outputs are written straight into torch tensors allocated on the backend's
device, so neither side copies (on CUDA, nothing goes through the host).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from adasr.config import ModelConfig
from adasr.errors import ConfigError, InputError
from engines.base import GraphBackend
from engines.manifest import GraphEntry, Manifest, TensorSpec, read_manifest

logger = logging.getLogger(__name__)

#: Short names accepted on the command line → ONNX Runtime's provider names.
PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
#: Intra-op threads of the motion extractor's CPU session, whatever ``threads`` says: it runs on the thread that calls
#: it. Its 0.25 GFLOP take ~3 ms, mostly beside the renderer (the webcam, a call that also renders, the demo), where a
#: pool thread of its own only contends with the renderer's (benchmarks/RESULTS.md, issue #27).
MOTION_EXTRACTOR_THREADS = 1
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64, "int32": torch.int32}


def import_onnxruntime() -> Any:
    """The onnxruntime module, or an error that says how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ConfigError("the onnxruntime backend needs ONNX Runtime: pip install -e .[cpu] (CPU) or "
                          "pip install -e .[gpu] (CUDA/TensorRT providers; install exactly one)") from exc
    return onnxruntime


def provider_name(name: str) -> str:
    """'cpu' | 'cuda' | 'tensorrt' (or a full ONNX Runtime provider name) → the provider name."""
    if name in PROVIDERS:
        return PROVIDERS[name]
    if name in PROVIDERS.values():
        return name
    raise ConfigError(f"unknown ONNX Runtime provider '{name}'; choose from {sorted(PROVIDERS)}")


@dataclass(frozen=True)
class _Graph:
    session: Any
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


class OnnxRuntimeBackend(GraphBackend):
    """The three exported graphs in ONNX Runtime sessions, behind the Backend protocol."""

    def __init__(self, onnx_dir: str | Path, providers: Sequence[str] = ("cpu",), threads: int | None = None,
                 *, device_id: int = 0, trt_cache_dir: str | Path | None = None, trt_fp16: bool = True,
                 spin: bool = False) -> None:
        """``providers`` in priority order; CPU is always appended as the last resort.

        ``threads``: intra-op threads of the CPU provider for the renderer and the source encoder (None: ONNX
        Runtime's default, one per physical core; the motion extractor takes ``MOTION_EXTRACTOR_THREADS``).
        ``spin``: let idle worker threads busy-wait for the next run (ONNX Runtime's default); off here because
        in a call the same cores run face tracking, the keypoint math and video I/O between runs, which spinning
        threads starve. ``trt_cache_dir``: where the TensorRT provider keeps engines and timing caches (default
        ``<onnx_dir>/ort-trt-cache``).
        """
        ort = import_onnxruntime()
        self.onnx_dir = Path(onnx_dir)
        self.manifest: Manifest = read_manifest(self.onnx_dir)
        self.config: ModelConfig = self.manifest.model_config()
        self.model_id: str = self.manifest.model_id
        self.requested = [provider_name(p) for p in providers] or ["CPUExecutionProvider"]
        if "TensorrtExecutionProvider" in self.requested and not self.manifest.trt:
            logger.warning("%s holds graphs exported without --trt: TensorRT cannot take the 5-D GridSample, "
                           "so ONNX Runtime will split the renderer between providers; export with --trt", onnx_dir)
        available = set(ort.get_available_providers())
        missing = [p for p in self.requested if p not in available]
        if missing:  # asking for them anyway makes ORT print its own warning and fall back
            logger.warning("ONNX Runtime %s has no %s (available: %s); install onnxruntime-gpu for CUDA/TensorRT",
                           ort.__version__, ", ".join(missing), ", ".join(sorted(available)))
        provider_list: list[Any] = []
        for p in self.requested + ["CPUExecutionProvider"]:
            if p in available and p not in [x if isinstance(x, str) else x[0] for x in provider_list]:
                provider_list.append((p, self._provider_options(p, device_id, trt_cache_dir, trt_fp16)))

        self._graphs: dict[str, _Graph] = {}
        for name, entry in self.manifest.graphs.items():
            options = self._session_options(ort, MOTION_EXTRACTOR_THREADS if name == "motion_extractor" else threads,
                                            spin)
            session = ort.InferenceSession(str(self.onnx_dir / entry.file), options,
                                           providers=[p for p, _ in provider_list],
                                           provider_options=[o for _, o in provider_list])
            self._graphs[name] = _Graph(session, entry.inputs, entry.outputs)
        got = {name: list(g.session.get_providers()) for name, g in self._graphs.items()}
        self.providers: list[str] = got["renderer"]
        """What the sessions really got (the renderer's, in priority order)."""
        if any(v != self.providers for v in got.values()):
            logger.warning("ONNX Runtime sessions got different providers: %s", got)
        if self.providers[0] != self.requested[0]:
            logger.warning("asked ONNX Runtime for %s, the sessions got %s: running on %s",
                           self.requested, self.providers, self.providers[0])
        on_gpu = self.providers[0] in _GPU_PROVIDERS and torch.cuda.is_available()
        self.device = torch.device("cuda", device_id) if on_gpu else torch.device("cpu")
        self._ort_version = ort.__version__
        self._threads = threads

    @staticmethod
    def _session_options(ort: Any, threads: int | None, spin: bool) -> Any:
        """Full graph optimisation, quiet logs, ``threads`` intra-op threads (None: ONNX Runtime's default)."""
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        return options

    def _provider_options(self, provider: str, device_id: int, trt_cache_dir: str | Path | None,
                          trt_fp16: bool) -> dict[str, str]:
        """Options per provider, as documented for ONNX Runtime's CUDA and TensorRT providers."""
        if provider == "CUDAExecutionProvider":
            opts = {"device_id": str(device_id)}
            if torch.cuda.is_available():  # run on torch's stream: no cross-stream wait between the two
                opts["user_compute_stream"] = str(torch.cuda.current_stream(device_id).cuda_stream)
            return opts
        if provider == "TensorrtExecutionProvider":
            cache = Path(trt_cache_dir) if trt_cache_dir else self.onnx_dir / "ort-trt-cache"
            cache.mkdir(parents=True, exist_ok=True)
            return {"device_id": str(device_id), "trt_fp16_enable": str(trt_fp16 and self.manifest.precision == "fp32"),
                    "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache),
                    "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache)}
        return {}

    # -- Backend protocol -------------------------------------------------------------------------

    def describe(self) -> str:
        asked = "" if self.providers[0] == self.requested[0] else f" (asked for {', '.join(self.requested)})"
        counts = [f"{self._threads} threads"] if self._threads else []
        if self._threads != MOTION_EXTRACTOR_THREADS:
            counts.append(f"the motion extractor on {MOTION_EXTRACTOR_THREADS}")
        threads = "".join(f", {count}" for count in counts)
        return (f"onnxruntime {self._ort_version} on {', '.join(self.providers)}{asked}{threads}, "
                f"{self.manifest.precision} graphs (warp {self.manifest.warp}) from {self.onnx_dir}")

    # -- internals --------------------------------------------------------------------------------

    def _bind_place(self) -> tuple[str, int]:
        return ("cuda", self.device.index or 0) if self.device.type == "cuda" else ("cpu", 0)

    def _run(self, name: str, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        graph = self._graphs[name]
        if len(inputs) != len(graph.inputs):
            raise InputError(f"{name} takes {len(graph.inputs)} inputs, got {len(inputs)}")
        device_type, device_id = self._bind_place()
        binding = graph.session.io_binding()
        held: list[torch.Tensor] = []  # keep converted inputs alive until the run is over
        for spec, x in zip(graph.inputs, inputs):
            if tuple(x.shape) != spec.shape:
                raise InputError(f"{name} input '{spec.name}' must be {list(spec.shape)}, got {list(x.shape)} "
                                 f"(the files in {self.onnx_dir} were exported for image size "
                                 f"{self.config.image_size})")
            x = x.to(device=self.device, dtype=_TORCH_DTYPES[spec.dtype]).contiguous()
            held.append(x)
            binding.bind_input(spec.name, device_type, device_id, np.dtype(spec.dtype), list(spec.shape), x.data_ptr())
        outputs: list[torch.Tensor] = []
        for spec in graph.outputs:  # fresh tensors each call: callers may keep them (SourceState does)
            y = torch.empty(spec.shape, dtype=_TORCH_DTYPES[spec.dtype], device=self.device)
            binding.bind_output(spec.name, device_type, device_id, np.dtype(spec.dtype), list(spec.shape), y.data_ptr())
            outputs.append(y)
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # inputs made by torch kernels are complete
        graph.session.run_with_iobinding(binding)  # returns once the outputs are written
        return outputs

    def graph_entry(self, name: str) -> GraphEntry:
        """The manifest's entry of one graph (shapes, hash, export-time verification)."""
        return self.manifest.graphs[name]
