"""Command-line options that pick and configure a backend, shared by animate, eval, the call and the benchmarks,
and the talking head they build.

Nothing heavy loads while the options are added: the backend (and torch with it) is built when a
command runs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from engines.factory import BACKEND_NAMES, create_backend

if TYPE_CHECKING:
    from adasr.inference import Backend
    from engines.talking_head import TalkingHead

_logger = logging.getLogger("adasr")


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """--backend, --device, --precision, --onnx, --engine, --checkpoint, --config and the speed options."""
    g = parser.add_argument_group("backend")
    g.add_argument("--backend", default="torch", choices=BACKEND_NAMES,
                   help="runtime: torch (from --checkpoint), onnxruntime (from --onnx), tensorrt (from --onnx "
                        "exported with --trt; engines cached in --engine)")
    add_checkpoint_argument(g, "weights for --backend torch")
    g.add_argument("--config", default=None,
                   help="preset name or YAML for the checkpoint (default: the one stored in it)")
    g.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cpu; cuda for tensorrt)")
    g.add_argument("--precision", default=None, choices=["fp32", "fp16", "bf16"],
                   help="torch: renderer precision (default fp32); onnxruntime: must match the export; "
                        "tensorrt: fp16 (default) or fp32")
    g.add_argument("--onnx", type=Path, default=None, metavar="DIR", help="directory written by `adasr export`")
    g.add_argument("--engine", type=Path, default=None, metavar="DIR",
                   help="TensorRT engine cache (default: DIR/trt-engines under --onnx)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads (torch intra-op, ONNX Runtime intra-op)")
    g.add_argument("--ort-provider", default=None, choices=["cpu", "cuda", "tensorrt"],
                   help="ONNX Runtime execution provider (default: from --device)")
    g.add_argument("--channels-last", action="store_true", help="torch: channels-last memory format")
    g.add_argument("--compile", action="store_true", help="torch: torch.compile the networks")
    g.add_argument("--cuda-graphs", action="store_true", help="torch on CUDA: replay CUDA graphs per frame")


def add_checkpoint_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    """--checkpoint; its default, the shipped demo weights, is resolved by :func:`checkpoint_of` when a command
    runs (the module that names them loads torch)."""
    parser.add_argument("--checkpoint", type=Path, default=None, help=f"{what} (default: the shipped demo weights)")


def checkpoint_of(args: argparse.Namespace) -> Path:
    """--checkpoint, else the shipped demo weights."""
    from adasr.checkpoint import DEFAULT_CHECKPOINT

    return Path(args.checkpoint) if args.checkpoint is not None else DEFAULT_CHECKPOINT


def backend_from_args(args: argparse.Namespace) -> Backend:
    """The backend the parsed options describe (see engines.factory.create_backend)."""
    return create_backend(
        args.backend, checkpoint=checkpoint_of(args), config=args.config, device=args.device,
        precision=args.precision, onnx_dir=args.onnx, engine_dir=args.engine, threads=args.threads,
        ort_provider=args.ort_provider, channels_last=args.channels_last, compile=args.compile,
        cuda_graphs=args.cuda_graphs,
    )


def head_from_args(args: argparse.Namespace) -> TalkingHead:
    """The talking head over the backend the --backend options describe; says which model and runtime it is."""
    from engines.talking_head import TalkingHead

    backend = backend_from_args(args)
    _logger.info("model %s (%s), %s", backend.config.name, backend.model_id, backend.describe())
    return TalkingHead(backend)
