"""Static checks of an exported ONNX graph against what TensorRT's ONNX parser accepts.

Catching an unsupported operator here, on any machine, is cheaper than finding it when
``trtexec`` fails on the GPU box. The operator list is ``tensorrt_onnx_ops.txt`` next to this
file (transcribed from onnx-tensorrt's ``docs/operators.md``); the one restriction enforced
beyond membership is the one this project hits: GridSample must have a 4-D input.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Collection, Iterator, Union

import onnx
from onnx import shape_inference

__all__ = [
    "OperatorReport",
    "check_tensorrt_compatible",
    "load_tensorrt_ops",
    "onnx_operator_report",
]

ModelLike = Union[str, Path, onnx.ModelProto]

TENSORRT_OPS_FILE = Path(__file__).with_name("tensorrt_onnx_ops.txt")
_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class OperatorReport:
    """What a model is made of: enough to see at a glance why an engine build would fail."""

    op_counts: dict[str, int]
    """Node count per operator; non-default domains are written ``domain::OpType``."""
    opsets: dict[str, int]
    """Opset version per imported domain (``""`` is the default ONNX domain)."""
    grid_sample_input_ranks: list[int | None] = field(default_factory=list)
    """Rank of each GridSample's ``X`` input after shape inference; ``None`` where unknown."""

    @property
    def op_types(self) -> list[str]:
        """Sorted operator names used anywhere in the model (subgraphs and functions included)."""
        return sorted(self.op_counts)


def _load(model: ModelLike) -> onnx.ModelProto:
    """Read a model without its external weights: only the graph structure matters here."""
    if isinstance(model, onnx.ModelProto):
        return model
    return onnx.load(str(model), load_external_data=False)


def _prepare(model: ModelLike) -> onnx.ModelProto:
    """Inline local functions (dynamo exports may use them) and run shape inference for ranks."""
    proto = _load(model)
    if len(proto.functions) > 0:
        from onnx import inliner

        proto = inliner.inline_local_functions(proto)
    try:
        return shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception:  # inference failure only costs rank information, reported as unknown
        return proto


def _op_name(node: onnx.NodeProto) -> str:
    """Operator name as the list spells it, qualified by domain outside the default one."""
    return node.op_type if node.domain in _DEFAULT_DOMAINS else f"{node.domain}::{node.op_type}"


def _walk(graph: onnx.GraphProto) -> Iterator[tuple[onnx.NodeProto, onnx.GraphProto]]:
    """Every node with its enclosing graph, descending into If/Loop/Scan bodies."""
    for node in graph.node:
        yield node, graph
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _walk(sub)


def _tensor_ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Rank of every value whose type carries a shape, across the graph and its subgraphs."""
    ranks: dict[str, int] = {}

    def visit(graph: onnx.GraphProto) -> None:
        for init in graph.initializer:
            ranks[init.name] = len(init.dims)
        for info in (*graph.input, *graph.output, *graph.value_info):
            tensor_type = info.type.tensor_type
            if info.type.HasField("tensor_type") and tensor_type.HasField("shape"):
                ranks[info.name] = len(tensor_type.shape.dim)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        visit(sub)

    visit(model.graph)
    return ranks


def _report(model: onnx.ModelProto) -> OperatorReport:
    """Build the report from a model that has already been inlined and shape-inferred."""
    ranks = _tensor_ranks(model)
    counts: Counter[str] = Counter()
    grid_ranks: list[int | None] = []
    for node, _graph in _walk(model.graph):
        counts[_op_name(node)] += 1
        if node.op_type == "GridSample" and node.domain in _DEFAULT_DOMAINS:
            grid_ranks.append(ranks.get(node.input[0]) if node.input else None)
    opsets = {imp.domain: int(imp.version) for imp in model.opset_import}
    return OperatorReport(op_counts=dict(sorted(counts.items())), opsets=opsets,
                          grid_sample_input_ranks=grid_ranks)


def onnx_operator_report(model: ModelLike) -> OperatorReport:
    """Operators (with counts), opsets and GridSample input ranks of an ONNX model or file."""
    return _report(_prepare(model))


@lru_cache(maxsize=8)
def _read_ops(path: Path) -> frozenset[str]:
    """Parse the list file once: one name per line, ``#`` starts a comment."""
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.add(name.split()[0])
    return frozenset(names)


def load_tensorrt_ops(path: str | Path | None = None) -> frozenset[str]:
    """ONNX operators TensorRT's parser supports, from ``tensorrt_onnx_ops.txt`` by default."""
    return _read_ops(Path(path) if path is not None else TENSORRT_OPS_FILE)


def check_tensorrt_compatible(
    model: ModelLike, supported: Collection[str] | None = None
) -> list[str]:
    """Problems that would stop TensorRT parsing ``model``; an empty list means none were found.

    Flags operators absent from ``supported`` (default: :func:`load_tensorrt_ops`), operators
    from non-default domains, and every GridSample whose input is not known to be 4-D
    (TensorRT has no 5-D GridSample; an unknown rank cannot be shown to be safe).
    """
    allowed = frozenset(supported) if supported is not None else load_tensorrt_ops()
    report = onnx_operator_report(model)
    problems: list[str] = []
    for op, count in report.op_counts.items():
        if op not in allowed:
            problems.append(
                f"operator {op} ({count} node(s)) is not supported by TensorRT's ONNX parser"
            )
    for index, rank in enumerate(report.grid_sample_input_ranks):
        if rank is None:
            problems.append(
                f"GridSample #{index}: input rank unknown after shape inference; TensorRT needs 4-D"
            )
        elif rank != 4:
            problems.append(
                f"GridSample #{index}: {rank}-D input; TensorRT supports only 4-D GridSample "
                "(use export.trt_ops.grid_sample_3d_trt for volumes)"
            )
    return problems
