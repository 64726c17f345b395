"""The ``adasr`` command: one entry point, one subcommand per job.

Only this module installs logging handlers and turns domain errors into one-line messages with a
non-zero exit; the library raises and logs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable

from adasr.checkpoint import DEFAULT_CHECKPOINT
from adasr.errors import AdaSRError

_logger = logging.getLogger("adasr")

#: Registration functions of every subcommand, in the order ``--help`` lists them.
Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _add_animate(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
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
    add_model_arguments(p)
    p.set_defaults(func=_run_animate)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--checkpoint/--config/--backend/--device/--precision, shared by every job that renders."""
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                   help=f"weights (ours or the official format; default {DEFAULT_CHECKPOINT.name})")
    p.add_argument("--config", default=None,
                   help="preset name, our YAML, or an official YAML (default: the one stored in the checkpoint)")
    p.add_argument("--backend", default="torch", choices=["torch"], help="runtime")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])


def head_from_args(args: argparse.Namespace) -> "TalkingHead":
    from adasr.checkpoint import load_model
    from adasr.pipeline import TalkingHead
    from engines.torch_backend import TorchBackend, TorchOptions

    model = load_model(args.checkpoint, args.config)
    backend = TorchBackend(model, TorchOptions(device=args.device, precision=args.precision))
    _logger.info("model %s (%s), %s", model.config.name, model.model_id, backend.describe())
    return TalkingHead(backend)


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


def _add_demo(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("demo", help="the shipped demo: the astronaut portrait driven by the carphone clip")
    p.add_argument("--output", type=Path, default=Path("outputs/demo.mp4"))
    p.add_argument("--max-frames", type=int, default=None)
    add_model_arguments(p)
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from adasr.animate import AnimateOptions, animate
    from adasr.demo_media import astronaut_portrait, carphone_clip

    head = head_from_args(args)
    summary = animate(head, AnimateOptions(astronaut_portrait(), carphone_clip(), args.output,
                                           max_frames=args.max_frames))
    print(f"demo: wrote {summary.frames} frames to {summary.output} in {summary.seconds:.1f} s "
          f"({summary.fps:.1f} FPS)")
    return 0


def _add_degrade(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("degrade", help="draw examples of the training degradation",
                       description="Write a PNG grid: each row a clean face, then degraded copies of it, "
                                   "so people can see what the appearance encoder trains on.")
    p.add_argument("--grid", required=True, type=Path, help="output PNG")
    p.add_argument("--config", type=Path, default=Path(__file__).resolve().parent.parent / "configs" / "degradation.yaml")
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


REGISTRARS: list[Registrar] = [_add_animate, _add_demo, _add_degrade]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adasr", description="AdaSR one-shot talking heads")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except AdaSRError as exc:
        print(f"adasr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adasr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
