"""``adasr export`` (PyTorch → verified ONNX, in ``export``) and ``adasr build-engine`` (TensorRT engines from
that export, in ``engines``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from adasr_cli.backend_args import add_checkpoint_argument, checkpoint_of
from adasr_cli.command import SubParsers


def add_export_parser(subparsers: SubParsers) -> argparse.ArgumentParser:
    """``adasr export --checkpoint CK [--config CFG] --out DIR [--fp16] [--trt] [--warp W] [--verify-image IMG]``."""
    p = subparsers.add_parser(
        "export", help="export the three networks to ONNX, verified against PyTorch",
        description="Write source_encoder.onnx, motion_extractor.onnx, renderer.onnx and manifest.json "
                    "(opset 20). Each graph is run in ONNX Runtime on a real face and compared with PyTorch; "
                    "the export fails above tolerance.")
    add_checkpoint_argument(p, "weights")
    p.add_argument("--config", default=None, help="preset name or YAML (default: the one stored in the checkpoint)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--fp16", action="store_true", help="fp16 graphs (inputs and outputs stay float32)")
    p.add_argument("--trt", action="store_true",
                   help="graphs TensorRT's ONNX parser accepts (the 3-D warp without 5-D GridSample)")
    p.add_argument("--warp", default="auto", choices=["auto", "grid_sample", "stacked", "trt"],
                   help="renderer's 3-D warp: auto = trt with --trt, else stacked (fast in ONNX Runtime) "
                        "or grid_sample with --fp16")
    p.add_argument("--verify-image", type=Path, default=None,
                   help="face crop used to verify the graphs (default: the astronaut's face)")
    p.set_defaults(func=run_export)
    return p


def run_export(args: argparse.Namespace) -> int:
    from adasr.checkpoint import load_model
    from export.onnx_export import export_model

    image = None
    if args.verify_image is not None:
        from adasr.video_io import read_image

        image = read_image(args.verify_image)
    model = load_model(checkpoint_of(args), args.config)
    report = export_model(model, args.out, fp16=args.fp16, trt=args.trt, verify_image=image, warp=args.warp)
    print(report.summary())
    return 0


def add_build_engine_parser(subparsers: SubParsers) -> argparse.ArgumentParser:
    """``adasr build-engine --onnx DIR [--out DIR] [--precision fp16|fp32]``."""
    p = subparsers.add_parser(
        "build-engine", help="build TensorRT engines from an `adasr export --trt` directory",
        description="Build one TensorRT engine per graph (cached by model hash, ONNX hash, TensorRT "
                    "version and GPU name; rebuilt when any changes), where `--backend tensorrt --onnx DIR` "
                    "looks for them. Needs TensorRT 10 and a CUDA GPU.")
    p.add_argument("--onnx", type=Path, required=True, metavar="DIR", help="directory written by `adasr export --trt`")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="engine cache directory (default: DIR/trt-engines under --onnx, what --backend tensorrt "
                        "reads; pass the same --engine there otherwise)")
    p.add_argument("--precision", choices=["fp16", "fp32"], default=None,
                   help="renderer engine precision, the other two stay fp32 (default fp16, as --backend tensorrt)")
    p.add_argument("--workspace-gib", type=float, default=4.0, help="builder workspace limit")
    p.add_argument("--force", action="store_true", help="rebuild even when cached engines match")
    p.set_defaults(func=run_build_engine)
    return p


def run_build_engine(args: argparse.Namespace) -> int:
    from engines.tensorrt_backend import build_engines, engine_settings

    engine_dir, fp16 = engine_settings(args.onnx, args.out, args.precision)
    engines = build_engines(args.onnx, engine_dir, fp16, workspace_gib=args.workspace_gib, force=args.force)
    for graph, path in engines.items():
        print(f"{graph}: {path}")
    return 0
