"""The backend contract: three calls, the same whatever runs them.

Inputs and outputs are torch tensors on the backend's device (no host round trip between the
keypoint math and the renderer); ``describe`` says what actually runs, so callers can report it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

import torch

from adasr.config import ModelConfig
from adasr.deployable import MotionTensors, SourceTensors


class Backend(Protocol):
    """What the pipeline, the call and the benchmark need from any runtime."""

    config: ModelConfig
    """The model's configuration (image size, K, …)."""
    model_id: str
    """Identity of the weights (a SourceState made by other weights is refused)."""
    device: torch.device
    """Where inputs should live and outputs come back."""

    def encode_source(self, image: torch.Tensor) -> SourceTensors:
        """[1, 3, S, S] float32 in [0, 1] → SourceTensors."""
        ...

    def extract_motion(self, image: torch.Tensor) -> MotionTensors:
        """[1, 3, S, S] float32 in [0, 1] → MotionTensors."""
        ...

    def render(self, f_s: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        """f_s, x_s, x_d → [1, 3, S, S] float32 in [0, 1]."""
        ...

    def describe(self) -> str:
        """One line: backend, device/provider actually used, precision."""
        ...


class GraphBackend(ABC):
    """The three Backend calls over named graphs (the exported files' names), for runtimes that
    execute exported graphs (ONNX Runtime, TensorRT): a subclass supplies only ``_run``."""

    @abstractmethod
    def _run(self, name: str, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """Run graph ``name`` on device tensors; outputs in the graph's order."""

    def encode_source(self, image: torch.Tensor) -> SourceTensors:
        return SourceTensors(*self._run("source_encoder", (image,)))

    def extract_motion(self, image: torch.Tensor) -> MotionTensors:
        return MotionTensors(*self._run("motion_extractor", (image,)))

    def render(self, f_s: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        return self._run("renderer", (f_s, kp_source, kp_driving))[0]
