"""PyTorch backend: eager modules on CPU or CUDA, folded for inference, optional reduced precision."""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Iterator, Literal

import torch

from adasr.checkpoint import LoadedModel
from adasr.deployable import MotionExtractor, MotionTensors, Renderer, SourceEncoder, SourceTensors
from adasr.errors import ConfigError
from adasr.folding import fold_for_inference

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
        self.options = options
        self.config = model.config
        self.model_id = model.model_id
        networks = copy.deepcopy(model.networks).to(self.device)  # folding must not alter the caller's model
        if options.fold:
            fold_for_inference(networks)
        self.source_encoder = SourceEncoder(networks).eval()
        self.motion_extractor = MotionExtractor(networks).eval()
        self.renderer = Renderer(networks).eval()

    @contextlib.contextmanager
    def _mode(self, reduced: bool) -> Iterator[None]:
        dtype = _DTYPES[self.options.precision] if reduced else torch.float32
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            yield

    def encode_source(self, image: torch.Tensor) -> SourceTensors:
        with self._mode(reduced=False):
            return self.source_encoder(image.to(self.device))

    def extract_motion(self, image: torch.Tensor) -> MotionTensors:
        with self._mode(reduced=False):
            return self.motion_extractor(image.to(self.device))

    def render(self, f_s: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        with self._mode(reduced=True):
            out = self.renderer(f_s.to(self.device), kp_source.to(self.device), kp_driving.to(self.device))
        return out.float()

    def describe(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        return f"torch {torch.__version__} on {self.device} ({name}), {self.options.precision}"
