"""The ``adasr`` command: one entry point, one subcommand per job.

Only this module installs logging handlers and turns domain errors into one-line messages with a
non-zero exit; the library raises and logs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from adasr import resources
from adasr.errors import AdaSRError
from engines.cli_args import add_backend_arguments
from adasr.evaluation.cli import add_eval_parser
from adasr.training.cli import add_prepare_parser, add_train_parser
from export.cli import add_build_engine_parser, add_export_parser
from realtime.cli import CALL_REGISTRARS

if TYPE_CHECKING:
    from adasr.pipeline import TalkingHead

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
    add_backend_arguments(p)
    p.set_defaults(func=_run_animate)


def head_from_args(args: argparse.Namespace) -> "TalkingHead":
    """The pipeline over the backend the shared --backend options describe."""
    from adasr.pipeline import TalkingHead
    from engines.cli_args import backend_from_args

    backend = backend_from_args(args)
    _logger.info("model %s (%s), %s", backend.config.name, backend.model_id, backend.describe())
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


def _add_degrade(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
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


REGISTRARS: list[Registrar] = [_add_animate, add_prepare_parser, add_train_parser, add_eval_parser, _add_degrade,
                               add_export_parser, add_build_engine_parser, *CALL_REGISTRARS]


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
