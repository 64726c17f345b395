"""TensorRT backend: engines built from the ``--trt`` ONNX graphs, cached, run on device buffers.

Written against TensorRT 10's Python API (``trt.Builder``, ``OnnxParser``, ``build_serialized_network``,
``Runtime.deserialize_cuda_engine``, named I/O tensors with ``set_tensor_address`` and
``execute_async_v3``). TensorRT is imported only when used, so everything else runs without it.

* Cache: an engine is only valid for the ONNX file, the TensorRT version and the GPU it was built
  for, so each engine file is named by a digest of (model id, ONNX file SHA-256, TensorRT version,
  GPU name, fp16) with the key beside it as JSON; any change builds a new engine and removes the old.
  A timing cache (``timing.cache``) shared by all builds makes rebuilds fast.
* Precision: with ``fp16`` only the renderer is built with the FP16 flag (the per-frame cost).
  The source encoder and the motion extractor stay fp32, as in the PyTorch backend: they are
  cheap, and the renderer's sharp keypoint heatmaps turn small keypoint errors into visible ones.
* Execution: inputs and outputs are torch CUDA tensors whose pointers are handed to the execution
  context, enqueued on torch's current stream: no host round trip and no extra synchronisation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from adasr.config import ModelConfig
from adasr.errors import AdaSRError, ConfigError, InputError
from engines.base import GraphBackend
from engines.manifest import GRAPH_NAMES, Manifest, read_manifest

logger = logging.getLogger(__name__)

INSTALL_HINT = ("pip install tensorrt-cu12 (TensorRT 10 for CUDA 12; needs an NVIDIA GPU and driver). "
                "Without it, use --backend onnxruntime or --backend torch")
#: Graphs built with the FP16 flag when fp16 is asked for (see the module docstring).
FP16_GRAPHS = ("renderer",)
TIMING_CACHE = "timing.cache"
KEY_FORMAT = 1


class TensorRTMissingError(AdaSRError, ImportError):
    """TensorRT's Python package is not installed."""


class EngineBuildError(AdaSRError):
    """TensorRT could not parse a graph or build an engine."""


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or TensorRTMissingError naming the install command."""
    try:
        import tensorrt
    except ImportError as exc:
        raise TensorRTMissingError(f"TensorRT is not installed: {INSTALL_HINT}") from exc
    return tensorrt


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; any change means a rebuild."""

    graph: str
    model_id: str
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    fp16: bool
    format: int = KEY_FORMAT

    def digest(self) -> str:
        """Short stable hash of the key (part of the engine's file name)."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def stem(self) -> str:
        return f"{self.graph}-{self.digest()}"


def engine_key(manifest: Manifest, graph: str, tensorrt_version: str, gpu_name: str, fp16: bool) -> EngineKey:
    """The key of one graph's engine; fp16 only applies to the graphs in FP16_GRAPHS."""
    entry = manifest.graphs[graph]
    return EngineKey(graph=graph, model_id=manifest.model_id, onnx_sha256=entry.sha256,
                     tensorrt_version=tensorrt_version, gpu_name=gpu_name, fp16=fp16 and graph in FP16_GRAPHS)


def cached_engine(engine_dir: str | Path, key: EngineKey) -> Path | None:
    """The cached engine for ``key``, or None when it is missing or its recorded key differs."""
    engine_dir = Path(engine_dir)
    engine, sidecar = engine_dir / f"{key.stem}.engine", engine_dir / f"{key.stem}.json"
    if not engine.is_file() or not sidecar.is_file():
        return None
    try:
        recorded = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return engine if recorded == asdict(key) else None


def stale_engines(engine_dir: str | Path, key: EngineKey) -> list[Path]:
    """Other engines (and their keys) of the same graph: what a new build replaces."""
    engine_dir = Path(engine_dir)
    if not engine_dir.is_dir():
        return []
    keep = {f"{key.stem}.engine", f"{key.stem}.json"}
    return sorted(p for p in engine_dir.glob(f"{key.graph}-*")
                  if p.suffix in (".engine", ".json") and p.name not in keep)


DEFAULT_PRECISION = "fp16"
"""The renderer's engine precision unless asked otherwise (the other two graphs stay fp32)."""
ENGINE_FOLDER = "trt-engines"
"""The engine cache's folder inside an export, unless another is named."""


def engine_settings(onnx_dir: str | Path, engine_dir: str | Path | None = None,
                    precision: str | None = None) -> tuple[Path, bool]:
    """Where the engines of an export are cached, and whether the renderer's is fp16.

    ``adasr build-engine`` and ``--backend tensorrt`` both ask here, so engines built ahead of time
    are the ones a call finds (same folder, same precision in the cache key).
    """
    precision = precision or DEFAULT_PRECISION
    if precision not in ("fp16", "fp32"):
        raise ConfigError(f"TensorRT engines here are fp16 or fp32, not {precision}")
    return (Path(engine_dir) if engine_dir else Path(onnx_dir) / ENGINE_FOLDER), precision == "fp16"


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _require_cuda() -> str:
    if not torch.cuda.is_available():
        raise ConfigError("TensorRT needs a CUDA GPU and a CUDA build of PyTorch (for device buffers); "
                          "none is available here: use --backend onnxruntime or --backend torch")
    return torch.cuda.get_device_name(torch.cuda.current_device())


def _trt_manifest(onnx_dir: str | Path) -> Manifest:
    manifest = read_manifest(onnx_dir)
    if not manifest.trt:
        raise ConfigError(f"{onnx_dir} was exported without --trt: TensorRT's parser has no 5-D GridSample. "
                          f"Re-export with `adasr export --trt --out {onnx_dir} ...`")
    return manifest


def _build_one(trt: Any, onnx_path: Path, fp16: bool, timing_cache: Path, workspace_gib: float) -> bytes:
    """Parse one ONNX file and build a serialized engine, reading and updating the timing cache."""
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine for {onnx_path.name} (see its log above)")
    _write_atomic(timing_cache, bytes(memoryview(cache.serialize())))
    return bytes(memoryview(serialized))


def build_engines(onnx_dir: str | Path, engine_dir: str | Path, fp16: bool = True, *,
                  workspace_gib: float = 4.0, force: bool = False) -> dict[str, Path]:
    """Build (or reuse) one engine per graph of a ``--trt`` export; returns graph → engine file.

    Used by ``adasr build-engine`` and, lazily, by TensorRTBackend.
    """
    trt = import_tensorrt()
    gpu_name = _require_cuda()
    manifest = _trt_manifest(onnx_dir)
    engine_dir = Path(engine_dir)
    engine_dir.mkdir(parents=True, exist_ok=True)
    engines: dict[str, Path] = {}
    for graph in GRAPH_NAMES:
        key = engine_key(manifest, graph, trt.__version__, gpu_name, fp16)
        found = None if force else cached_engine(engine_dir, key)
        if found is not None:
            logger.info("TensorRT engine for %s is cached: %s", graph, found.name)
            engines[graph] = found
            continue
        logger.info("building the TensorRT engine for %s (%s) ...", graph, "fp16" if key.fp16 else "fp32")
        data = _build_one(trt, Path(onnx_dir) / manifest.graphs[graph].file, key.fp16,
                          engine_dir / TIMING_CACHE, workspace_gib)
        for old in stale_engines(engine_dir, key):
            old.unlink(missing_ok=True)
        path = engine_dir / f"{key.stem}.engine"
        _write_atomic(path, data)
        _write_atomic(engine_dir / f"{key.stem}.json", json.dumps(asdict(key), indent=2).encode())
        engines[graph] = path
    return engines


@dataclass(frozen=True)
class _IOTensor:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass
class _Engine:
    engine: Any
    context: Any
    inputs: list[_IOTensor]
    outputs: list[_IOTensor]


class TensorRTBackend(GraphBackend):
    """The three networks as TensorRT engines on one GPU, behind the Backend protocol."""

    def __init__(self, onnx_dir: str | Path, engine_dir: str | Path | None = None, fp16: bool = True,
                 device: str = "cuda") -> None:
        """``engine_dir`` defaults to ``<onnx_dir>/trt-engines`` (``engine_settings``); missing or stale engines
        are built."""
        trt = import_tensorrt()
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ConfigError(f"TensorRT runs on CUDA devices only, not '{device}'")
        _require_cuda()
        torch.cuda.set_device(self.device)
        self.onnx_dir = Path(onnx_dir)
        self.engine_dir = engine_settings(onnx_dir, engine_dir)[0]
        self.manifest = _trt_manifest(self.onnx_dir)
        self.config: ModelConfig = self.manifest.model_config()
        self.model_id: str = self.manifest.model_id
        self.fp16 = fp16
        self._trt_version = trt.__version__
        paths = build_engines(self.onnx_dir, self.engine_dir, fp16)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engines = {name: self._load(trt, name, path) for name, path in paths.items()}

    def _load(self, trt: Any, name: str, path: Path) -> _Engine:
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise EngineBuildError(f"TensorRT could not load {path}; delete it to rebuild")
        inputs: list[_IOTensor] = []
        outputs: list[_IOTensor] = []
        for i in range(engine.num_io_tensors):
            tensor = engine.get_tensor_name(i)
            io = _IOTensor(tensor, tuple(engine.get_tensor_shape(tensor)),
                           _torch_dtype(trt, engine.get_tensor_dtype(tensor)))
            (inputs if engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT else outputs).append(io)
        order = {n: k for k, n in enumerate(spec.name for spec in self.manifest.graphs[name].outputs)}
        outputs.sort(key=lambda t: order.get(t.name, len(order)))  # the manifest's (= the namedtuples') order
        in_order = {n: k for k, n in enumerate(spec.name for spec in self.manifest.graphs[name].inputs)}
        inputs.sort(key=lambda t: in_order.get(t.name, len(in_order)))
        return _Engine(engine, engine.create_execution_context(), inputs, outputs)

    def _run(self, name: str, tensors: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        eng = self._engines[name]
        held = []
        for spec, x in zip(eng.inputs, tensors):
            if tuple(x.shape) != spec.shape:
                raise InputError(f"{name} input '{spec.name}' must be {list(spec.shape)}, got {list(x.shape)}")
            x = x.to(device=self.device, dtype=spec.dtype).contiguous()
            held.append(x)  # freed after enqueueing: the caching allocator reuses memory in stream order
            eng.context.set_tensor_address(spec.name, x.data_ptr())
        outputs = [torch.empty(spec.shape, dtype=spec.dtype, device=self.device) for spec in eng.outputs]
        for spec, y in zip(eng.outputs, outputs):
            eng.context.set_tensor_address(spec.name, y.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not eng.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT failed to enqueue {name}")
        return [y.float() for y in outputs]

    def describe(self) -> str:
        precision = f"fp16 ({', '.join(FP16_GRAPHS)}) + fp32" if self.fp16 else "fp32"
        return (f"tensorrt {self._trt_version} on {self.device} ({torch.cuda.get_device_name(self.device)}), "
                f"{precision}, engines in {self.engine_dir}")


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
             trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64, trt.DataType.BOOL: torch.bool}
    if dtype not in table:
        raise EngineBuildError(f"unexpected TensorRT I/O type {dtype}")
    return table[dtype]
