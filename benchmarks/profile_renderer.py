"""Where the renderer's time goes in ONNX Runtime: per module and per operator, on a real face.

benchmark_fps.py says how fast; this says what to make cheaper. The renderer is exported to a
temporary folder (as the ONNX Runtime backend runs it), fed the astronaut's source state and the
mirrored face's keypoints, run with ONNX Runtime's node profiler, and each node's time is charged to
the model module that produced it (the ONNX node names carry the module path) and to its operator.
Profiling adds a little overhead per node: read the shares, and take FPS from benchmark_fps.py.
``--onnx DIR`` profiles an export folder's renderer instead (the int8 graphs the backend runs by default live
in the graph cache, outputs/graphs/<model id>-int8), fed the same inputs.

    python benchmarks/profile_renderer.py [--checkpoint CK] [--onnx DIR] [--threads 2] [--iterations 50] [--json F]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adasr.checkpoint import DEFAULT_CHECKPOINT, load_model  # noqa: E402
from export.onnx_export import export_model, ort_cpu_session, verification_cases  # noqa: E402

#: ONNX Runtime's layout-conversion nodes belong to no module.
LAYOUT_OPS = ("ReorderInput", "ReorderOutput")


def module_of(node_name: str, depth: int) -> str:
    """'/module/decoder/up_0/conv_0/Conv_output_0_nchwc_kernel_time' → 'decoder/up_0' (depth 2); a node of the
    generator's own forward (its warps, reshapes) keeps its name: 'GridSample_1'."""
    parts = [p for p in node_name.removesuffix("_kernel_time").split("/") if p]
    if parts[:1] == ["module"]:  # the export wrapper
        parts = parts[1:]
    return "/".join(parts[:-1][:depth]) or (parts[-1] if parts else node_name)


def charge(events: list[dict], iterations: int, depth: int) -> tuple[dict[str, float], dict[str, float], float]:
    """Profiler events → ms per call by module, by operator, and in all."""
    by_module: Counter[str] = Counter()
    by_op: Counter[str] = Counter()
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        op = event["args"]["op_name"]
        module = "(layout conversion)" if op in LAYOUT_OPS else module_of(event["name"], depth)
        by_module[module] += event["dur"]
        by_op[op] += event["dur"]
    to_ms = 1 / (1000 * iterations)
    return ({k: v * to_ms for k, v in by_module.most_common()}, {k: v * to_ms for k, v in by_op.most_common()},
            sum(by_op.values()) * to_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--onnx", type=Path, help="an export folder of this checkpoint's model to profile "
                                                  "(default: export the checkpoint to a temporary folder)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--depth", type=int, default=2, help="module path depth to group by (default 2)")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")

    model = load_model(args.checkpoint)
    inputs, _ = verification_cases(model, model.networks, None)["renderer"]
    with tempfile.TemporaryDirectory(prefix="adasr-profile-") as tmp:
        if args.onnx is None:
            export_model(model, tmp)
        graph = (args.onnx or Path(tmp)) / "renderer.onnx"
        session = ort_cpu_session(graph, args.threads, profile_prefix=str(Path(tmp) / "prof"))
        feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
        for _ in range(5):  # warm-up: profiled too, so it counts as calls in the per-call average below
            session.run(None, feeds)
        for _ in range(args.iterations):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    by_module, by_op, total = charge(events, args.iterations + 5, args.depth)

    print(f"{args.onnx or args.checkpoint.name} ({model.model_id}), {platform.processor() or platform.machine()}, "
          f"{args.threads} threads: {total:.2f} ms of node time per frame")
    for title, table in (("module", by_module), ("operator", by_op)):
        print(f"\n{'by ' + title:32s} {'ms':>7s} {'share':>6s}")
        for name, ms in list(table.items())[:args.top]:
            print(f"{name:32s} {ms:7.2f} {ms / total:6.1%}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"checkpoint": str(args.checkpoint), "onnx": str(args.onnx or ""),
                                         "model_id": model.model_id,
                                         "threads": args.threads, "node_ms": total, "by_module_ms": by_module,
                                         "by_operator_ms": by_op}, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
