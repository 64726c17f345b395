"""What a slimmer lite renderer would cost per frame, before anyone trains one: candidate configurations timed.

Issue #27's goals need about a third less renderer CPU than the shipped lite (benchmarks/RESULTS.md). A slimmer
network must be trained, and judged on held-out people, before it can ship; what it would cost need not wait for
that. Each variant is the lite preset with some settings changed, built with random weights (a graph's cost does
not depend on them), exported and verified as the commands export, and its renderer timed against lite's own, in
alternating blocks on the same real inputs, in ONNX Runtime fp32 (int8 graphs need trained weights to pass their
quality bar; int8 made the shipped lite 15 % faster), on one thread and on two: ms per frame, and the ratio to lite.

    python benchmarks/renderer_variants.py \\
        --variant bilinear generator.source_interpolation=bilinear \\
        --variant detail4 generator.detail_channels=4 [--iterations 100] [--json F]

A setting is a dotted path into the preset's ``model`` section and a YAML value.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from adasr.checkpoint import LoadedModel
from adasr.config import CONFIG_DIR, model_config_from_dict
from adasr.deployable import example_calls
from adasr.errors import ConfigError
from adasr.networks import AdaSRNetworks
from export.onnx_export import export_model, ort_cpu_session
from model_stats import count_flops
from renderer_ab import renderer_feeds

#: The preset the variants change.
BASE = "lite"


def variant_config(name: str, settings: list[str]) -> dict[str, Any]:
    """The base preset's ``model`` section with each ``path.to.key=yaml-value`` applied, named ``lite-<name>``."""
    data = copy.deepcopy(yaml.safe_load((CONFIG_DIR / f"{BASE}.yaml").read_text())["model"])
    for setting in settings:
        path, sep, value = setting.partition("=")
        if not sep:
            raise ConfigError(f"variant {name}: '{setting}' is not path.to.key=value")
        *parents, key = path.split(".")
        node = data
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"variant {name}: {path}: '{part}' is not a section of the {BASE} preset")
            node = node[part]
        if key not in node:
            raise ConfigError(f"variant {name}: {path}: the {BASE} preset has no '{key}' there")
        node[key] = yaml.safe_load(value)
    data["name"] = f"{BASE}-{name}"
    return data


def random_model(name: str, settings: list[str]) -> LoadedModel:
    """The variant's networks with seeded random weights."""
    cfg = model_config_from_dict(variant_config(name, settings), f"variant {name}")
    torch.manual_seed(0)
    return LoadedModel(AdaSRNetworks(cfg).eval(), cfg, f"random-{cfg.name}", Path("random"))


def renderer_gflops(model: LoadedModel) -> float:
    """GFLOP of one render (the deployable renderer on its example inputs)."""
    module, inputs = example_calls(model.networks, model.config.image_size)["renderer"]
    return count_flops(module, *inputs) / 1e9


def time_renderers(folders: dict[str, Path], threads: int, iterations: int, block: int) -> dict[str, list[float]]:
    """ms per render call of each folder's renderer on ``threads`` threads, timed in alternating blocks."""
    runs = {}
    for name, folder in folders.items():
        session = ort_cpu_session(folder / "renderer.onnx", threads)
        names = [i.name for i in session.get_inputs()]
        feeds = [{n: feed[n] for n in names} for feed in renderer_feeds(folder, threads, 8)]
        for feed in feeds[:3]:  # warm-up
            session.run(None, feed)
        runs[name] = (session, feeds)
    samples: dict[str, list[float]] = {name: [] for name in folders}
    while any(len(x) < iterations for x in samples.values()):
        for name, (session, feeds) in runs.items():
            for i in range(min(block, iterations - len(samples[name]))):
                start = time.perf_counter()
                session.run(None, feeds[i % len(feeds)])
                samples[name].append((time.perf_counter() - start) * 1e3)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar=("NAME", "SETTING"),
                        help="a name, then path.to.key=value settings of the lite preset (repeatable)")
    parser.add_argument("--iterations", type=int, default=100, help="timed calls per renderer and thread count")
    parser.add_argument("--block", type=int, default=10, help="calls per renderer before switching")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    variants = {BASE: []} | {v[0]: v[1:] for v in args.variant}
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="adasr-variants-") as tmp:
        folders = {}
        for name, settings in variants.items():
            model = random_model(name, settings)
            export_model(model, Path(tmp) / name)
            folders[name] = Path(tmp) / name
            rows[name] = {"settings": settings, "renderer_gflop": renderer_gflops(model),
                          "source_volume": list(model.config.source_volume_shape())}
            print(f"exported {name}: {' '.join(settings) or 'the preset as it is'}", flush=True)
        for threads in (1, 2):
            samples = time_renderers(folders, threads, args.iterations, args.block)
            for name, x in samples.items():
                rows[name][f"ms_p50_{threads}t"] = statistics.median(x)
    base = rows[BASE]
    print(f"\n{'variant':<14} {'GFLOP':>6} {'f_s C':>5} {'1 thread ms':>12} {'vs lite':>8} {'2 threads ms':>13} "
          f"{'vs lite':>8}  settings")
    for name, row in rows.items():
        print(f"{name:<14} {row['renderer_gflop']:6.2f} {row['source_volume'][0]:5d} {row['ms_p50_1t']:12.2f} "
              f"{row['ms_p50_1t'] / base['ms_p50_1t']:8.2f} {row['ms_p50_2t']:13.2f} "
              f"{row['ms_p50_2t'] / base['ms_p50_2t']:8.2f}  {' '.join(row['settings'])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "iterations": args.iterations,
                                         "onnxruntime_fp32": True}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
