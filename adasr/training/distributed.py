"""Data-parallel training under ``torchrun``: process group, this rank's share of a batch, gradient averaging.

torchrun starts one process per device and sets RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous
(MASTER_ADDR/PORT, or --rdzv-endpoint across nodes). Every rank draws the same global batch of a step
(a pure function of seed and step, so resumption stays exact) and trains on its contiguous slice;
gradients are averaged over ranks before each optimizer step — DistributedDataParallel's rule, done
with one all-reduce per network because a training step calls the sub-networks several times (DDP's
wrapper supports one forward per backward). Rank 0 alone logs, validates, samples and writes files.

Two things stay per rank, so N ranks equal one process that accumulates the gradients of N
micro-batches (``micro_batches``, not one big batch): BatchNorm batch statistics (gloo on CPU has no
SyncBatchNorm) and the equivariance warp, drawn for a rank-sized batch. Buffers do not: every rank
starts a step from the same ones (BatchNorm running statistics, spectral-norm power-iteration vectors,
which advance once per forward) and ends it with rank 0's; the trainer runs its micro-batches the same
way. Every rank reads ``run_dir`` at start (resume, ``--init``): across nodes it must be a shared
filesystem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job (world_size 1: an ordinary single-process run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, samples and writes checkpoints."""
        return self.rank == 0

    def shard(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This rank's contiguous slice of a global batch (the trainer checks divisibility once, at start)."""
        return split_batch(batch, self.world_size)[self.rank]

    def average_gradients(self, module: nn.Module) -> None:
        """All-reduce the mean of every gradient (one flat buffer); parameters without one count as zero."""
        if not self.enabled:
            return
        params = [p for p in module.parameters() if p.requires_grad]
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics, spectral-norm vectors) everywhere, as DDP does."""
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer, 0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def split_batch(batch: dict[str, torch.Tensor], parts: int) -> list[dict[str, torch.Tensor]]:
    """``batch`` in ``parts`` equal contiguous slices (the caller checks divisibility)."""
    n = len(next(iter(batch.values()))) // parts
    return [{k: v[i * n:(i + 1) * n] for k, v in batch.items()} for i in range(parts)]


def from_environment(device: torch.device) -> Distributed:
    """Join torchrun's process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU); else single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world_size, local_rank)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
