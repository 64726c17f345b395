"""``adasr eval``: a model's quality measures against the copy-source baseline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from adasr_cli.backend_args import add_backend_arguments, checkpoint_of, head_from_args
from adasr_cli.command import SubParsers


def add_eval_parser(subparsers: SubParsers) -> argparse.ArgumentParser:
    """Register ``eval``: reconstruction and cross-identity metrics, model vs copy-source."""
    p = subparsers.add_parser(
        "eval", help="measure a model: PSNR/SSIM/AKD/AED(/FID) against the copy-source baseline",
        description="Same-identity reconstruction on each clip (its first face frame is the source, the next "
                    "--frames frames drive and are the ground truth) and, with --portraits, every portrait driven "
                    "by every clip. Each measure is also given for the baseline 'copy the source frame'.")
    p.add_argument("--clips", required=True, type=Path, help="folder of video clips (or one clip)")
    p.add_argument("--portraits", type=Path, default=None,
                   help="folder of portrait images (or one image) for cross-identity driving")
    p.add_argument("--frames", type=int, default=100, help="driving frames per clip after the source frame")
    p.add_argument("--json", type=Path, default=None, help="write the per-clip and mean numbers here")
    p.add_argument("--video", type=Path, default=None,
                   help="OUT.mp4: source | driving | output of the first clip's reconstruction")
    p.add_argument("--inception-weights", type=Path, default=None,
                   help="Inception-v3 state dict (torchvision layout, or pytorch-fid's pt_inception) to compute FID")
    p.add_argument("--no-aed", dest="identity", action="store_false",
                   help="skip the identity distance (dlib), the slowest measure")
    p.add_argument("--pose-source", choices=("model", "tracker"), default="model",
                   help="head rotation: the motion extractor's (default) or the face tracker's on the same crop")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_backend_arguments(p)
    p.set_defaults(func=run_eval)
    return p


def run_eval(args: argparse.Namespace) -> int:
    from adasr.errors import InputError
    from adasr.evaluation.evaluate import EvalOptions, evaluate, format_table

    if args.video is not None and args.video.suffix.lower() != ".mp4":
        raise InputError(f"--video must be an .mp4 file, got {args.video}")
    if args.frames < 1:
        raise InputError(f"--frames must be at least 1, got {args.frames}")
    for what, path in (("--clips", args.clips), ("--portraits", args.portraits),
                       ("--inception-weights", args.inception_weights)):
        if path is not None and not path.exists():
            raise InputError(f"{what}: not found: {path}")  # before loading a model
    head = head_from_args(args)
    options = EvalOptions(clips=args.clips, portraits=args.portraits, frames=args.frames, video=args.video,
                          inception_weights=args.inception_weights, identity=args.identity,
                          pose_source=args.pose_source,
                          show_progress=not args.no_progress)
    report = evaluate(head, options)
    if args.onnx is None:  # the checkpoint's own weights (through the cached graphs when not torch)
        report.model["checkpoint"] = str(checkpoint_of(args))
    print(format_table(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n")
        tmp.replace(args.json)
        print(f"wrote {args.json}")
    if args.video is not None:
        print(f"wrote {args.video}")
    return 0
