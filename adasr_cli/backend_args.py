"""Command-line options that pick and configure a backend, shared by animate, eval, the call and the benchmarks,
and the talking head they build.

Nothing heavy loads while the options are added: the backend (and torch with it) is built when a
command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engines.factory import AUTO, BACKEND_NAMES, create_backend, fastest_backend

if TYPE_CHECKING:
    from adasr.inference import Backend
    from engines.talking_head import TalkingHead

_logger = logging.getLogger("adasr")

#: The cached graphs' precision where ONNX Runtime runs on a CPU (benchmarks/RESULTS.md, issue #27).
CPU_PRECISION = "int8"


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """--backend, --device, --precision, --onnx, --engine, --checkpoint, --config and the speed options."""
    g = parser.add_argument_group("backend")
    g.add_argument("--backend", default=AUTO, choices=(AUTO, *BACKEND_NAMES),
                   help="runtime: auto (default) = the fastest present: onnxruntime on a CPU, tensorrt (else "
                        "onnxruntime's CUDA provider) on a GPU; torch (eager); onnxruntime and tensorrt run --onnx "
                        "DIR, or else graphs of --checkpoint exported once and cached (tensorrt: engines in --engine)")
    add_checkpoint_argument(g, "weights for --backend torch")
    g.add_argument("--config", default=None,
                   help="preset name or YAML for the checkpoint (default: the one stored in it)")
    g.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cpu; cuda for tensorrt)")
    g.add_argument("--precision", default=None, choices=["fp32", "fp16", "bf16", "int8"],
                   help="torch: renderer precision fp32 (default), fp16 or bf16; onnxruntime: fp32, fp16 or int8 (the "
                        "renderer's convolutions), of the cached graphs or as exported in --onnx (default: "
                        f"{CPU_PRECISION} on a CPU, else fp32); tensorrt: fp16 (default) or fp32")
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


def resolve_backend_name(args: argparse.Namespace) -> str:
    """--backend, with ``auto`` replaced by the fastest backend present for --device; torch when an option only
    torch has is given (bf16, --channels-last, --compile, --cuda-graphs)."""
    if args.backend != AUTO:
        return str(args.backend)
    if args.precision == "bf16" or args.channels_last or args.compile or args.cuda_graphs:
        return "torch"
    return fastest_backend(_device(args))


def _device(args: argparse.Namespace) -> str:
    """--device, else a GPU where one is present (the graph runtimes use it), else the CPU."""
    if args.device is not None:
        return str(args.device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _say(message: str) -> None:
    print(f"adasr: {message}", file=sys.stderr, flush=True)


def backend_from_args(args: argparse.Namespace) -> Backend:
    """The backend the parsed options describe (see engines.factory.create_backend). A graph runtime without
    --onnx runs the checkpoint's graphs from the cache (export.graph_cache), exported there the first time."""
    name = resolve_backend_name(args)
    device = _device(args) if args.backend == AUTO else args.device
    onnx_dir = args.onnx
    if name != "torch" and onnx_dir is None:
        onnx_dir = _cached_graphs(args, name, device)
        name = name if onnx_dir is not None else "torch"
    return create_backend(
        name, checkpoint=checkpoint_of(args), config=args.config, device=device,
        precision=args.precision, onnx_dir=onnx_dir, engine_dir=args.engine, threads=args.threads,
        ort_provider=args.ort_provider, channels_last=args.channels_last, compile=args.compile,
        cuda_graphs=args.cuda_graphs,
    )


def _cached_graphs(args: argparse.Namespace, name: str, device: str | None) -> Path | None:
    """The cached graphs of --checkpoint for backend ``name``. With --backend auto a precision whose graphs cannot
    be made (int8 below its quality bar) gives way to fp32, and fp32 to torch (None), each said in one line."""
    from adasr.checkpoint import load_model
    from export.graph_cache import cached_export
    from export.onnx_export import ExportError

    if name == "tensorrt":
        precision = "fp32"  # TensorRT builds its fp16 engines from fp32 graphs
    else:
        precision = args.precision or (CPU_PRECISION if device in (None, "cpu") else "fp32")
    model = load_model(checkpoint_of(args), args.config)
    for attempt in dict.fromkeys([precision, "fp32"] if args.backend == AUTO else [precision]):
        try:
            return cached_export(model, precision=attempt, trt=name == "tensorrt", announce=_say)
        except ExportError as exc:
            if args.backend != AUTO:
                raise
            _say(f"{name} {attempt} graphs could not be made, trying {'fp32' if attempt != 'fp32' else 'torch'}: {exc}")
    return None


def head_from_args(args: argparse.Namespace) -> TalkingHead:
    """The talking head over the backend the --backend options describe; says which model and runtime it is."""
    from engines.talking_head import TalkingHead

    backend = backend_from_args(args)
    _logger.info("model %s (%s), %s", backend.config.name, backend.model_id, backend.describe())
    return TalkingHead(backend)
