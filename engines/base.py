"""What the graph runtimes share: the backend contract's three calls over named exported graphs.

The contract itself (``Backend``) belongs to the method, in ``adasr.inference``; the runtimes here
implement it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from adasr.deployable import MotionTensors, SourceTensors, motion_inputs


class GraphBackend(ABC):
    """The three ``adasr.inference.Backend`` calls over named graphs (the exported files' names), for runtimes that
    execute exported graphs (ONNX Runtime, TensorRT): a subclass supplies only ``_run``."""

    @abstractmethod
    def _run(self, name: str, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """Run graph ``name`` on device tensors; outputs in the graph's order."""

    def encode_source(self, image: torch.Tensor, expression: torch.Tensor | None = None) -> SourceTensors:
        return SourceTensors(*self._run("source_encoder", motion_inputs(image, expression)))

    def extract_motion(self, image: torch.Tensor, expression: torch.Tensor | None = None) -> MotionTensors:
        return MotionTensors(*self._run("motion_extractor", motion_inputs(image, expression)))

    def render(self, f_s: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor, anchors: torch.Tensor,
               ratio_change: torch.Tensor) -> torch.Tensor:
        return self._run("renderer", (f_s, kp_source, kp_driving, anchors, ratio_change))[0]
