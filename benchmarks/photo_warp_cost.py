"""What resampling the source photo costs per frame in ONNX Runtime, bilinear against cubic, and how sharp each is.

The lite renderer warps the source photo (3 × 256²) every frame. Three ways, each exported as a graph
of its own and timed in ONNX Runtime on the CPU (the backend's session options):

* ``bilinear``: one bilinear GridSample (the source blend before ``source_interpolation: cubic``);
* ``cubic_gridsample``: one cubic GridSample (ONNX's own cubic, coefficient −0.75);
* ``catmull_rom``: what the renderer does: a bilinear GridSample of the photo and its three second
  differences (12 channels, made once per source), then four multiply-adds (``adasr.detail_path``).

Sharpness on a real photo: the astronaut moved by half a pixel against the same photo filmed
half a pixel over (box-filtered from twice the resolution at the other phase): mean absolute error
and ``detail`` (Laplacian energy relative to that truth, 1 = as sharp), as the evaluation measures.

    python benchmarks/photo_warp_cost.py [--threads 2] [--iterations 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adasr.detail_path import (catmull_rom, catmull_rom_weights, clamp_to_centres, pixel_centre_grid,  # noqa: E402
                               sample_border, second_differences)
from adasr.evaluation.metrics import detail  # noqa: E402
from benchmark_fps import machine_description, matmul_gflops_per_s  # noqa: E402
from export.onnx_export import OPSET, ort_cpu_session  # noqa: E402

SIZE = 256


class PhotoWarp(nn.Module):
    """(photo [1, C, S, S], grid [1, S, S, 2]) → the warped photo [1, 3, S, S], one of the three ways."""

    def __init__(self, method: str) -> None:
        super().__init__()
        self.method = method

    def forward(self, photo: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        if self.method == "bilinear":
            return sample_border(photo, grid)
        if self.method == "cubic_gridsample":
            return F.grid_sample(photo, clamp_to_centres(grid, SIZE), mode="bicubic", padding_mode="border",
                                 align_corners=False)
        return catmull_rom(sample_border(photo, grid), *catmull_rom_weights(grid, SIZE))


def photo_input(method: str, photo: torch.Tensor) -> torch.Tensor:
    """The tensor each method samples: the photo, or the photo and its second differences."""
    return torch.cat([photo, second_differences(photo)], dim=1) if method == "catmull_rom" else photo


def time_graph(method: str, photo: torch.Tensor, grid: torch.Tensor, threads: int, iterations: int,
               folder: Path) -> tuple[float, float]:
    """Median ms per call in ONNX Runtime, and the largest difference from the same module in PyTorch."""
    module, inputs = PhotoWarp(method).eval(), (photo_input(method, photo), grid)
    path = folder / f"{method}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on frozen sizes and the exporter's deprecation notice
        torch.onnx.export(module, inputs, str(path), opset_version=OPSET, dynamo=False,
                          input_names=["photo", "grid"], output_names=["warped"])
    session = ort_cpu_session(path, threads=threads)
    feed = {"photo": inputs[0].numpy(), "grid": inputs[1].numpy()}
    out = session.run(None, feed)[0]
    with torch.no_grad():
        error = float(np.abs(out - module(*inputs).numpy()).max())
    for _ in range(10):
        session.run(None, feed)
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        session.run(None, feed)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), error


def half_pixel_sharpness(method: str) -> dict[str, float]:
    """Error and detail of the astronaut moved half a pixel, against the photo filmed half a pixel over."""
    from skimage.data import astronaut

    fine = torch.from_numpy(astronaut()).permute(2, 0, 1)[None].double() / 255  # 512², twice SIZE
    photo = F.avg_pool2d(fine, 2)
    truth = F.avg_pool2d(fine[..., 1:-1], 2)[..., 1:-1]  # pixel k of this is the photo at k + ½ (k ≥ 1)
    grid = pixel_centre_grid(SIZE, photo).unsqueeze(0) + torch.tensor([1 / SIZE, 0.0], dtype=photo.dtype)
    with torch.no_grad():
        moved = PhotoWarp(method)(photo_input(method, photo), grid)[..., 1:-2]

    def image(t: torch.Tensor) -> np.ndarray:
        return (t[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()

    return {"mean_abs_error": float((moved - truth).abs().mean()), "detail": detail(image(moved), image(truth))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    p.add_argument("--iterations", type=int, default=200, help="timed calls per graph (default 200)")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    if args.threads < 1 or args.iterations < 1:
        p.error("--threads and --iterations must be at least 1")
    torch.manual_seed(0)
    photo = torch.rand(1, 3, SIZE, SIZE)
    grid = pixel_centre_grid(SIZE, photo).unsqueeze(0) + (torch.rand(1, SIZE, SIZE, 2) - 0.5) * 0.1
    reference = matmul_gflops_per_s(args.threads)
    results: dict[str, Any] = {"machine": machine_description(), "threads": args.threads,
                               "matmul_gflops_per_s": reference, "methods": {}}
    print(f"machine: {results['machine']}; {args.threads} thread(s); fp32 1024² matmul {reference:.1f} GFLOP/s")
    print(f"{'method':18s} {'ms p50':>8s} {'ORT vs torch':>13s} {'½-px error':>11s} {'½-px detail':>12s}")
    with tempfile.TemporaryDirectory(prefix="adasr-photo-warp-") as folder:
        for method in ("bilinear", "cubic_gridsample", "catmull_rom"):
            ms, error = time_graph(method, photo, grid, args.threads, args.iterations, Path(folder))
            sharp = half_pixel_sharpness(method)
            results["methods"][method] = {"ms_p50": ms, "max_abs_diff_ort_torch": error, **sharp}
            print(f"{method:18s} {ms:8.2f} {error:13.1e} {sharp['mean_abs_error']:11.5f} {sharp['detail']:12.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
