"""``adasr prepare`` and ``adasr train``: face crops of clips for training, and the training run."""

from __future__ import annotations

import argparse
from pathlib import Path

from adasr_cli.command import SubParsers


def add_prepare_parser(subparsers: SubParsers) -> argparse.ArgumentParser:
    """Register ``prepare``: face crops + metadata of video clips for training."""
    p = subparsers.add_parser("prepare",
                              help="track faces in clips (and portraits) and store stable crops for training",
                              description="Track faces in video clips and store stable face crops with "
                                          "landmarks and head pose (resumable). A still portrait becomes a "
                                          "short clip of synthetic in-plane head motion.")
    p.add_argument("--input", nargs="+", required=True, type=Path,
                   help="video files, portrait images and/or directories of them")
    p.add_argument("--out", required=True, type=Path, help="output directory (one sub-directory per clip)")
    p.add_argument("--size", type=int, default=256, choices=(128, 256, 512), help="crop side in pixels")
    p.add_argument("--crop-mode", choices=("tracked", "fixed"), default="tracked",
                   help="tracked: the tracker's stable crop per frame (as at inference); fixed: one box per shot")
    p.add_argument("--frame-step", type=int, default=1, help="keep every n-th frame")
    p.add_argument("--max-frames", type=int, default=None, help="read at most this many frames per clip")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_prepare)
    return p


def run_prepare(args: argparse.Namespace) -> int:
    from adasr.training.data import PrepareConfig, prepare

    cfg = PrepareConfig(size=args.size, crop_mode=args.crop_mode, frame_step=args.frame_step,
                        max_frames=args.max_frames)
    s = prepare(args.input, args.out, args.size, cfg, progress=not args.no_progress)
    print(f"prepared {len(s.prepared)} clip(s) ({s.frames_kept} frames, {s.frames_dropped} dropped); "
          f"already done {len(s.skipped_done)}; no face {len(s.no_face)} {s.no_face or ''}; "
          f"unreadable {len(s.unreadable)} {s.unreadable or ''}")
    return 0 if (s.prepared or s.skipped_done) else 1


def add_train_parser(subparsers: SubParsers) -> argparse.ArgumentParser:
    """Register ``train``: AdaSR (or plain) training from a YAML config."""
    p = subparsers.add_parser("train", help="train a model (AdaSR cross-quality or plain)",
                              description="Train from a training YAML (configs/train_lite.yaml).")
    p.add_argument("--config", required=True, type=Path, help="training YAML")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint.pt if present")
    p.add_argument("--steps", type=int, default=None, help="total steps (overrides the config)")
    p.add_argument("--init", type=Path, default=None, help="start from an inference checkpoint (ours or official)")
    p.add_argument("--mode", choices=("adasr", "plain"), default=None, help="override the config's mode")
    p.add_argument("--degradation-mode", choices=("realesrgan", "half"), default=None,
                   help="override the config's degradation_mode (e.g. a second stage with the milder 'half')")
    p.add_argument("--run-dir", default=None, help="override the config's run_dir")
    p.add_argument("--export", default=None, help="override the config's export_path")
    p.add_argument("--device", default=None, help="override the config's device (cpu, cuda, auto)")
    p.add_argument("--threads", type=int, default=None, help="override the config's torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)
    return p


def run_train(args: argparse.Namespace) -> int:
    from adasr.training.train_config import load_train_config
    from adasr.training.trainer import train

    cfg = load_train_config(args.config)
    for attr, key in (("mode", "mode"), ("run_dir", "run_dir"), ("export", "export_path"), ("device", "device"),
                      ("threads", "threads"), ("degradation_mode", "degradation_mode")):
        if getattr(args, attr) is not None:
            setattr(cfg, key, getattr(args, attr))
    result = train(cfg, resume=args.resume, steps=args.steps, init=args.init, progress=not args.no_progress)
    print(f"trained to step {result.step} in {result.seconds:.0f} s; weights {result.export_path}; "
          f"checkpoint {result.checkpoint_path}; validation {result.val}")
    return 0

