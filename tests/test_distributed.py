"""Data-parallel training under torchrun: 2 CPU ranks (gloo) for a few steps of the tiny model.

The ranks must end with identical weights and buffers, equal to one process that takes each global
batch as two micro-batches (``micro_batches: 2``): the same training step, gradients averaged over the
parts instead of the ranks (BatchNorm batch statistics are per part in both).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from adasr.training.trainer import Trainer

from .training_fixtures import _tiny_cfg

STEPS = 3
RANK_SCRIPT = """
import os, sys, torch
from adasr_cli.main import main
from adasr.training import trainer as T
made = []
init = T.Trainer.__init__
def keep(self, *a, **k):
    init(self, *a, **k)
    made.append(self)
T.Trainer.__init__ = keep
code = main(["train", "--config", sys.argv[1], "--no-progress"])
torch.save({**made[0].networks.state_dict(),
            **{"discriminator." + k: v for k, v in made[0].discriminator.state_dict().items()}},
           os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.pt"))
sys.exit(code)
"""


def _config(prepared: Path, run_dir: Path) -> dict[str, object]:
    # GAN from the second step: both the reconstruction-only and the discriminator path.
    return {**_tiny_cfg(prepared, run_dir, steps=STEPS, gan_start_step=1, threads=1).to_dict(),
            "checkpoint_every": 1}


def _one_process(cfg_dict: dict[str, object]) -> dict[str, torch.Tensor]:
    """One process, the ranks' two shards as two micro-batches of the same training step."""
    from adasr.training.train_config import train_config_from_dict

    trainer = Trainer(train_config_from_dict({**cfg_dict, "micro_batches": 2}))
    for _ in range(STEPS):
        trainer.train_step()
    return {**trainer.networks.state_dict(),
            **{"discriminator." + k: v for k, v in trainer.discriminator.state_dict().items()}}


@pytest.mark.slow
def test_two_cpu_ranks_hold_identical_weights_equal_to_one_process(prepared: Path, tmp_path: Path) -> None:
    cfg = _config(prepared, tmp_path / "run")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(cfg))
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(script), str(config), str(tmp_path)]
    done = subprocess.run(command, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, value in ranks[0].items():
        assert torch.equal(value, ranks[1][name]), f"{name} differs between the ranks"
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == STEPS  # rank 0 wrote it
    expected = _one_process(cfg)
    for name, value in expected.items():
        torch.testing.assert_close(ranks[0][name], value, rtol=1e-4, atol=1e-5,
                                   msg=lambda m, name=name: f"{name}: {m}")
