"""Exponential moving average of the generator side's weights, the model that is validated and exported.

With small, noisy batches and an adversarial term, the weights of any one step carry that step's noise:
fine texture that is not the truth's, which structural measures (SSIM) charge for. An average over the
last ~1/(1 − decay) steps keeps what the steps agree on. BatchNorm statistics are averaged like the
weights; integer buffers (counters) are copied.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


class WeightAverage:
    """EMA of a module's state: ``average ← decay·average + (1 − decay)·current`` after each step."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.average = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        """Move the average toward ``module``'s current state."""
        for key, value in module.state_dict().items():
            kept = self.average[key]
            if kept.is_floating_point():
                kept.lerp_(value.to(kept.dtype), 1.0 - self.decay)
            else:
                kept.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.average

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Take a saved average; it must cover exactly the module's state (same keys and shapes)."""
        if state.keys() != self.average.keys() or any(state[k].shape != v.shape for k, v in self.average.items()):
            raise ValueError("the saved weight average does not fit the model")
        for key, value in state.items():
            self.average[key].copy_(value)

    @contextmanager
    def applied(self, module: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """``module`` holding the averaged state inside the block, its own state again afterwards."""
        own = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(self.average)
        try:
            yield module
        finally:
            module.load_state_dict(own)
