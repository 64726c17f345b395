"""Parameters, FLOPs per deployable network and CPU ms per rendered frame, for a model preset.

FLOPs are torch FlopCounterMode counts (2×MAC; conv and matmul only, grid_sample not counted),
as in the reference measurements of the released model.

    python benchmarks/model_stats.py --config lite [--size 256] [--repeats 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from adasr.config import load_model_config
from adasr.deployable import example_calls
from adasr.folding import fold_for_inference
from adasr.networks import AdaSRNetworks


def count_flops(module: torch.nn.Module, *args: torch.Tensor) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(*args)
    return int(counter.get_total_flops())


def time_ms(module: torch.nn.Module, *args: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        for _ in range(3):
            module(*args)
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            module(*args)
            samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="lite")
    parser.add_argument("--size", type=int, default=None, help="image size (default: the preset's)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_model_config(args.config)
    size = args.size or cfg.image_size
    torch.manual_seed(0)
    nets = AdaSRNetworks(cfg)
    trained = {"kp_detector": nets.kp_detector, "he_estimator": nets.he_estimator, "generator": nets.generator}
    params_m = {k: sum(p.numel() for p in m.parameters()) / 1e6 for k, m in trained.items()}  # before folding
    fold_for_inference(nets)
    rows = example_calls(nets, size)
    report = {
        "config": cfg.name, "size": size, "threads": args.threads, "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "params_M": params_m,
        "gflops": {k: count_flops(m, *a) / 1e9 for k, (m, a) in rows.items()},
        "cpu_ms_p50": {k: time_ms(m, *a, repeats=args.repeats) for k, (m, a) in rows.items()},
        "f_s_shape": list(rows["renderer"][1][0].shape),
    }
    report["gflops"]["per_rendered_frame"] = report["gflops"]["motion_extractor"] + report["gflops"]["renderer"]
    cpu_ms = report["cpu_ms_p50"]
    cpu_ms["per_rendered_frame"] = cpu_ms["motion_extractor"] + cpu_ms["renderer"]
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
