"""PyTorch backend: eager modules on CPU or CUDA, folded for inference, optional reduced precision.

Speed options, each off by default because each has a cost or a condition:

* ``channels_last``: NHWC (NDHWC for the 3-D convs) weights and image input; cuDNN's fp16 tensor-core
  kernels and oneDNN prefer it, but on some CPUs the layout changes cost more than they save.
* ``compile``: ``torch.compile`` of the three modules; the first call of each compiles (tens of
  seconds; on CPU it needs a C++ compiler).
* ``cuda_graphs``: the per-frame networks (motion extractor, renderer) captured once in a CUDA graph
  and replayed, which removes the per-kernel launch cost that dominates small models on a fast GPU.
  CUDA only; inputs are copied into the captured buffers and outputs cloned out of them.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

import torch
from torch import nn

from adasr.checkpoint import LoadedModel
from adasr.deployable import MotionExtractor, MotionTensors, Renderer, SourceEncoder, SourceTensors, motion_inputs
from adasr.errors import ConfigError
from adasr.folding import fold_for_inference

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "bf16"]
_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class TorchOptions:
    """How the PyTorch backend runs."""

    device: str = "cpu"
    """'cpu', 'cuda' or 'cuda:N'."""
    precision: Precision = "fp32"
    """Precision of the renderer (autocast, weights stay fp32): fp32; fp16 on CUDA; bf16 on CUDA or CPU.
    Keypoints and motion always run in fp32: the renderer's sharp keypoint heatmaps turn
    reduced-precision keypoint error into visible image error, and those networks are cheap."""
    fold: bool = True
    """Fold spectral norm and batch norm into the convs (exact in eval mode)."""
    channels_last: bool = False
    """Channels-last memory format for conv weights and the image input."""
    compile: bool = False
    """torch.compile each network (the first call of each compiles)."""
    cuda_graphs: bool = False
    """Capture the motion extractor and the renderer in CUDA graphs (CUDA only)."""


def to_channels_last(model: nn.Module) -> nn.Module:
    """Conv weights to channels-last in place: NHWC for 4-D, NDHWC for 5-D (Module.to handles only 4-D)."""
    for param in model.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=torch.channels_last)
        elif param.dim() == 5:
            param.data = param.data.contiguous(memory_format=torch.channels_last_3d)
    return model


class CudaGraphRunner:
    """Replays one captured call of ``fn`` for inputs of the captured shapes; recaptures on a new shape.

    The graph reads fixed input buffers and writes fixed output buffers, so each call copies its
    inputs in and clones the outputs out (a SourceState or a queued frame must not be overwritten
    by the next replay).
    """

    def __init__(self, fn: Callable[..., Any], warmup: int = 3) -> None:
        self.fn = fn
        self.warmup = warmup
        self._graph: Any = None  # torch.cuda.CUDAGraph once captured
        self._inputs: list[torch.Tensor] = []
        self._outputs: tuple[torch.Tensor, ...] = ()

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> None:
        device = inputs[0].device
        self._inputs = [x.clone() for x in inputs]
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up off the capture: cuDNN autotuning, lazy allocations
            for _ in range(self.warmup):
                self.fn(*self._inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.fn(*self._inputs)
        self._graph = graph
        self._outputs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        logger.debug("captured a CUDA graph for input shapes %s", [tuple(x.shape) for x in inputs])

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self._graph is None or [x.shape for x in inputs] != [x.shape for x in self._inputs]:
            self._capture(inputs)
        for buffer, x in zip(self._inputs, inputs):
            buffer.copy_(x)
        self._graph.replay()
        return tuple(o.clone() for o in self._outputs)


class TorchBackend:
    """The three deployable networks as eager PyTorch modules."""

    def __init__(self, model: LoadedModel, options: TorchOptions = TorchOptions()) -> None:
        if options.precision not in _DTYPES:
            raise ConfigError(f"precision must be one of {sorted(_DTYPES)}, got '{options.precision}'")
        self.device = torch.device(options.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda asked for, but this PyTorch has no CUDA device; use --device cpu")
        if options.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("fp16 needs CUDA; on CPU use fp32 or bf16")
        if options.cuda_graphs and self.device.type != "cuda":
            raise ConfigError("CUDA graphs need --device cuda; drop --cuda-graphs on CPU")
        if options.cuda_graphs and options.compile:
            raise ConfigError("use either --compile or --cuda-graphs, not both: a compiled module's guards and "
                              "recompilations do not belong inside a captured graph")
        self.options = options
        self.config = model.config
        self.model_id = model.model_id
        networks = copy.deepcopy(model.networks).to(self.device)  # folding must not alter the caller's model
        if options.fold:
            fold_for_inference(networks)
        if options.channels_last:
            to_channels_last(networks)
        self.source_encoder: Callable[..., Any] = SourceEncoder(networks).eval()
        self.motion_extractor: Callable[..., Any] = MotionExtractor(networks).eval()
        self.renderer: Callable[..., Any] = Renderer(networks).eval()
        if options.compile:
            self.source_encoder = torch.compile(self.source_encoder, dynamic=False)
            self.motion_extractor = torch.compile(self.motion_extractor, dynamic=False)
            self.renderer = torch.compile(self.renderer, dynamic=False)
        self._motion_graph: CudaGraphRunner | None = None
        self._render_graph: CudaGraphRunner | None = None
        if options.cuda_graphs:
            self._motion_graph = CudaGraphRunner(self._in_mode(self.motion_extractor, reduced=False))
            self._render_graph = CudaGraphRunner(self._in_mode(self.renderer, reduced=True))

    @contextlib.contextmanager
    def _mode(self, reduced: bool) -> Iterator[None]:
        dtype = _DTYPES[self.options.precision] if reduced else torch.float32
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            yield

    def _in_mode(self, fn: Callable[..., Any], reduced: bool) -> Callable[..., Any]:
        """``fn`` run under this backend's inference/autocast mode (what a CUDA graph captures)."""
        def call(*inputs: torch.Tensor) -> Any:
            with self._mode(reduced=reduced):
                return fn(*inputs)
        return call

    def _image(self, image: torch.Tensor) -> torch.Tensor:
        image = image.to(self.device)
        return image.contiguous(memory_format=torch.channels_last) if self.options.channels_last else image

    def _motion_inputs(self, image: torch.Tensor, expression: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        return motion_inputs(self._image(image), None if expression is None else expression.to(self.device))

    def encode_source(self, image: torch.Tensor, expression: torch.Tensor | None = None) -> SourceTensors:
        with self._mode(reduced=False):
            return SourceTensors(*self.source_encoder(*self._motion_inputs(image, expression)))

    def extract_motion(self, image: torch.Tensor, expression: torch.Tensor | None = None) -> MotionTensors:
        inputs = self._motion_inputs(image, expression)
        if self._motion_graph is not None:
            return MotionTensors(*self._motion_graph(*inputs))
        with self._mode(reduced=False):
            return MotionTensors(*self.motion_extractor(*inputs))

    def render(self, f_s: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor, anchors: torch.Tensor,
               ratio_change: torch.Tensor) -> torch.Tensor:
        inputs = tuple(x.to(self.device) for x in (f_s, kp_source, kp_driving, anchors, ratio_change))
        if self._render_graph is not None:
            return self._render_graph(*inputs)[0].float()
        with self._mode(reduced=True):
            out = self.renderer(*inputs)
        return out.float()

    def describe(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        extras = [flag for flag, on in (("channels_last", self.options.channels_last),
                                        ("torch.compile", self.options.compile),
                                        ("CUDA graphs", self.options.cuda_graphs)) if on]
        return f"torch {torch.__version__} on {self.device} ({name}), {self.options.precision}" + "".join(
            f", {e}" for e in extras)
