"""How far a model trusts the warped source photo: the source blend's mask and the frame's detail, per checkpoint.

The lite renderer's last step is ``out = m · warped photo + (1 − m) · decoded`` (``adasr.detail_path.SourceBlend``);
the photo carries the portrait's detail, the decoded picture is blurrier. A fine-tune that lowers m makes frames
blurrier even when PSNR rises (training through the expression rig did: benchmarks/RESULTS.md). This renders a
training config's held-out validation pairs (through the rig when the config says so) with each checkpoint and
prints the trainer's own validation, the mask's mean over the face and over the mouth and eyes, and the mean detail
ratio (``adasr.evaluation.metrics.detail``: 1 = as much fine detail as the real frame).

    python benchmarks/blend_mask.py --config configs/train_lite_rig.yaml CHECKPOINT [CHECKPOINT ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from adasr.evaluation.metrics import detail
from adasr.training.train_config import load_train_config
from adasr.training.trainer import Trainer, init_from

#: The face's part of a 256² crop (rows, columns) over which the mask is averaged.
FACE_ROWS, FACE_COLUMNS = slice(64, 224), slice(64, 192)


def _to_image(frame: torch.Tensor) -> np.ndarray:
    return (frame.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def blend_report(trainer: Trainer) -> dict[str, float]:
    """The trainer's validation figures, the mask's means and the detail ratio on its validation pairs, with its
    networks' current weights (the pairs rendered once, the mask read on the way)."""
    blend = trainer.networks.generator.decoder.source_blend
    if blend is None or trainer.val_batch is None:
        raise SystemExit("error: the model has no source blend, or the config no val_clips")
    masks: list[torch.Tensor] = []

    def keep_mask(module: torch.nn.Module, inputs: tuple[torch.Tensor, torch.nn.Conv2d, torch.Tensor],
                  _: torch.Tensor) -> None:
        logits = F.conv2d(inputs[0], module.mask.weight, module.mask.bias, padding=module.mask.padding)
        masks.append(torch.sigmoid(logits).cpu())

    hook = blend.register_forward_hook(keep_mask)
    try:
        frames = trainer.validation_frames()
    finally:
        hook.remove()
    batch = trainer.val_batch
    mask, regions = torch.cat(masks), batch["regions"]
    ratios = [detail(_to_image(p), _to_image(d)) for p, d in zip(frames, batch["driving"])]
    return {**trainer.validation_scores(frames), "mask_face": float(mask[..., FACE_ROWS, FACE_COLUMNS].mean()),
            "mask_mouth_and_eyes": float((mask * regions).sum() / regions.sum()), "detail": float(np.mean(ratios))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="+", help="weights to compare (our checkpoint format)")
    parser.add_argument("--config", type=Path, required=True, help="training config whose val_clips to render")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="adasr-blend-") as scratch:
        cfg = dataclasses.replace(load_train_config(args.config), run_dir=scratch, threads=args.threads)
        trainer = Trainer(cfg)
        rows = {}
        for checkpoint in args.checkpoints:
            init_from(trainer.networks, checkpoint)
            rows[str(checkpoint)] = blend_report(trainer)
            print(checkpoint, " ".join(f"{k} {v:.4f}" for k, v in rows[str(checkpoint)].items()), flush=True)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
