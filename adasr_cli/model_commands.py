"""``adasr animate`` and ``adasr degrade``: the method's own jobs on images and video."""

from __future__ import annotations

import argparse
from pathlib import Path

from adasr import resources
from adasr_cli.backend_args import add_backend_arguments, head_from_args
from adasr_cli.command import SubParsers


def add_animate(sub: SubParsers) -> None:
    """Register ``animate``: a portrait driven by every frame of a video."""
    p = sub.add_parser("animate", help="drive a portrait with a video", description=(
        "Render the source portrait driven by every frame of the driving video."))
    p.add_argument("--source", required=True, type=Path, help="portrait image")
    p.add_argument("--driving", required=True, type=Path, help="driving video file or folder of frames")
    p.add_argument("--output", required=True, type=Path, help="OUT.mp4, or a folder for lossless PNG frames")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--relative", dest="relative", action="store_true", default=True,
                      help="motion relative to the first driving frame (default)")
    mode.add_argument("--absolute", dest="relative", action="store_false", help="absolute driving motion")
    p.add_argument("--no-crop", dest="crop", action="store_false",
                   help="use the images as given (square face crops), no face tracking")
    p.add_argument("--no-side-by-side", dest="side_by_side", action="store_false",
                   help="mp4 output with the result only")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N driving frames")
    add_backend_arguments(p)
    p.set_defaults(func=_run_animate)


def _run_animate(args: argparse.Namespace) -> int:
    from adasr.animate import AnimateOptions, animate
    from adasr.video_io import FrameSource, read_image

    read_image(args.source), FrameSource(args.driving)  # refuse bad inputs before loading a model
    head = head_from_args(args)
    summary = animate(head, AnimateOptions(args.source, args.driving, args.output, relative=args.relative,
                                           crop=args.crop, side_by_side=args.side_by_side,
                                           max_frames=args.max_frames))
    print(f"wrote {summary.frames} frames to {summary.output} in {summary.seconds:.1f} s ({summary.fps:.1f} FPS)")
    return 0


def add_degrade(sub: SubParsers) -> None:
    """Register ``degrade``: a grid of the training degradation's examples."""
    p = sub.add_parser("degrade", help="draw examples of the training degradation",
                       description="Write a PNG grid: each row a clean face, then degraded copies of it, "
                                   "so people can see what the appearance encoder trains on.")
    p.add_argument("--grid", required=True, type=Path, help="output PNG")
    p.add_argument("--config", type=Path, default=resources.config_dir() / "degradation.yaml")
    p.add_argument("--images", nargs="*", type=Path, default=[],
                   help="face crops (default: the astronaut and a carphone frame)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--samples", type=int, default=4, help="degraded copies per row")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_degrade)


def _run_degrade(args: argparse.Namespace) -> int:
    import torch

    from adasr.demo_media import astronaut_image, carphone_clip
    from adasr.image_ops import image_to_tensor
    from adasr.training.degradation import DegradationConfig, draw_grid
    from adasr.video_io import FrameSource, read_image

    if args.images:
        faces = [read_image(p) for p in args.images]
    else:
        faces = [astronaut_image()[10:178, 142:310], next(iter(FrameSource(carphone_clip())))[0:120, 30:150]]
    batch = torch.cat([image_to_tensor(face, args.size) for face in faces])
    path = draw_grid(batch, DegradationConfig.from_yaml(args.config), args.seed, args.grid, samples=args.samples)
    print(f"wrote {path}")
    return 0
