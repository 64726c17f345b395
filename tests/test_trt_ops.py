"""The TensorRT-compatible 3-D grid_sample: same numbers as PyTorch, and a graph TensorRT parses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from export.trt_ops import grid_sample_3d_trt

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from export.graph_check import (  # noqa: E402  (needs onnx, an optional dependency)
    check_tensorrt_compatible,
    load_tensorrt_ops,
    onnx_operator_report,
)

OPSET = 20

# (volume shape [N,C,D,H,W], grid shape [N,Do,Ho,Wo]): D=16 as in the models, odd sizes,
# singleton axes (a 1-voxel depth or width is the edge case of the hat weights / padding).
SHAPES = [
    ((1, 4, 16, 16, 16), (1, 16, 16, 16)),
    ((2, 3, 16, 9, 11), (2, 5, 7, 6)),
    ((1, 5, 7, 13, 5), (1, 3, 11, 9)),
    ((3, 2, 1, 4, 1), (3, 2, 3, 5)),
    ((1, 1, 2, 1, 3), (1, 1, 1, 17)),
]


def _reference(volume: Tensor, grid: Tensor) -> Tensor:
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _inputs(vshape: tuple[int, ...], gshape: tuple[int, ...], seed: int, spread: float = 1.5,
            ) -> tuple[Tensor, Tensor]:
    """Random volume and a grid uniform in [-spread, spread]: a good share falls outside."""
    gen = torch.Generator().manual_seed(seed)
    volume = torch.randn(*vshape, generator=gen)
    grid = (torch.rand(*gshape, 3, generator=gen) * 2.0 - 1.0) * spread
    return volume, grid


class _Warp(torch.nn.Module):
    """What the renderer does: warp a feature volume by a grid, then a little arithmetic."""

    def __init__(self, trt: bool) -> None:
        super().__init__()
        self.trt = trt

    def forward(self, volume: Tensor, grid: Tensor) -> Tensor:
        warped = grid_sample_3d_trt(volume, grid) if self.trt else _reference(volume, grid)
        return warped * 2.0 + 1.0


def _export(module: torch.nn.Module, args: tuple[Tensor, ...], path: Path) -> None:
    # TorchScript exporter (dynamo=False): one fast trace, no extra dependencies, and the
    # opset-20 GridSample it emits is the node TensorRT's parser understands. The dynamo
    # exporter yields the same operators (see test_dynamo_export_is_compatible).
    torch.onnx.export(module.eval(), args, str(path), opset_version=OPSET, dynamo=False,
                      input_names=["volume", "grid"], output_names=["out"])


@pytest.mark.parametrize(("vshape", "gshape"), SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_grid_sample_fp32(vshape: tuple[int, ...], gshape: tuple[int, ...], seed: int
                                  ) -> None:
    volume, grid = _inputs(vshape, gshape, seed)
    expected = _reference(volume, grid)
    actual = grid_sample_3d_trt(volume, grid)
    assert actual.shape == expected.shape and actual.dtype == torch.float32
    assert (actual - expected).abs().max().item() < 1e-5
    # The test means something only if both in-range and zero-padded samples occur.
    outside = (grid.abs() > 1.0).any(dim=-1)
    assert outside.any() and (~outside).any()


def test_far_outside_is_zero_and_exact_points_hit_voxels() -> None:
    volume = torch.randn(1, 2, 16, 6, 5)
    # Voxel centres with align_corners=False sit at (2i + 1)/size - 1: sampling there returns
    # the voxel itself; anything beyond one voxel outside the volume returns zero.
    d, h, w = 3, 4, 1
    centre = torch.tensor([(2 * w + 1) / 5 - 1, (2 * h + 1) / 6 - 1, (2 * d + 1) / 16 - 1])
    far = torch.tensor([0.0, 0.0, 1.2])  # z beyond the last plane by more than one voxel
    edge = torch.tensor([0.0, 0.0, 1.0])  # half a voxel past the last plane's centre: weight 1/2
    grid = torch.stack([centre, far, edge]).reshape(1, 1, 1, 3, 3)
    out = grid_sample_3d_trt(volume, grid)
    torch.testing.assert_close(out[0, :, 0, 0, 0], volume[0, :, d, h, w], rtol=0, atol=1e-6)
    assert out[0, :, 0, 0, 1].abs().max().item() == 0.0
    ref = _reference(volume, grid)
    torch.testing.assert_close(out[..., 2], ref[..., 2], rtol=0, atol=1e-6)
    assert ref[..., 2].abs().max().item() > 0.0


@pytest.mark.parametrize(("vshape", "gshape"), SHAPES[:3])
def test_fp16(vshape: tuple[int, ...], gshape: tuple[int, ...]) -> None:
    volume, grid = _inputs(vshape, gshape, seed=3)
    volume16, grid16 = volume.half(), grid.half()
    out = grid_sample_3d_trt(volume16, grid16)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    # Against fp32 arithmetic on the same fp16-rounded inputs, so only arithmetic rounding
    # counts. PyTorch's own fp16 kernel unnormalises coordinates in fp16 (spacing 1/64 voxel
    # at 16 voxels), so its error is the yardstick: ours must be no worse, within a margin.
    expected = _reference(volume16.float(), grid16.float())
    ours = (out.float() - expected).abs().max().item()
    native = (_reference(volume16, grid16).float() - expected).abs().max().item()
    assert ours <= 1.5 * native + 5e-3
    assert ours < 5e-2


def test_rejects_wrong_layout() -> None:
    with pytest.raises(ValueError):
        grid_sample_3d_trt(torch.zeros(1, 2, 3, 4, 5), torch.zeros(1, 2, 3, 4, 2))
    with pytest.raises(ValueError):
        grid_sample_3d_trt(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 3))


def test_ops_list_is_the_tensorrt_one() -> None:
    ops = load_tensorrt_ops()
    assert {"GridSample", "Reshape", "Relu", "ReduceSum", "Conv", "Resize"} <= ops
    assert not {"AffineGrid", "Unique", "SequenceAt", "GridSample3D"} & ops
    assert len(ops) > 120


def test_exported_trt_variant_is_compatible_and_matches(tmp_path: Path) -> None:
    volume, grid = _inputs((1, 4, 16, 9, 11), (1, 5, 7, 6), seed=5)
    path = tmp_path / "warp_trt.onnx"
    _export(_Warp(trt=True), (volume, grid), path)

    assert check_tensorrt_compatible(path) == []
    report = onnx_operator_report(path)
    assert report.grid_sample_input_ranks == [4]
    assert report.opsets[""] == OPSET

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"volume": volume.numpy(), "grid": grid.numpy()})
    expected = (_reference(volume, grid) * 2.0 + 1.0).numpy()
    assert out.shape == expected.shape
    assert np.abs(out - expected).max() < 1e-5


def test_exported_fp16_variant_is_compatible_and_matches(tmp_path: Path) -> None:
    volume, grid = _inputs((1, 4, 16, 9, 11), (1, 5, 7, 6), seed=8)
    volume16, grid16 = volume.half(), grid.half()
    path = tmp_path / "warp_trt_fp16.onnx"
    _export(_Warp(trt=True), (volume16, grid16), path)
    assert check_tensorrt_compatible(path) == []
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"volume": volume16.numpy(), "grid": grid16.numpy()})
    assert out.dtype == np.float16
    expected = (_reference(volume16.float(), grid16.float()) * 2.0 + 1.0).numpy()
    assert np.abs(out.astype(np.float32) - expected).max() < 2e-2


def test_checker_flags_5d_grid_sample(tmp_path: Path) -> None:
    volume, grid = _inputs((1, 2, 4, 5, 6), (1, 2, 3, 4), seed=6)
    path = tmp_path / "warp_5d.onnx"
    _export(_Warp(trt=False), (volume, grid), path)

    report = onnx_operator_report(onnx.load(str(path)))
    assert report.grid_sample_input_ranks == [5]
    problems = check_tensorrt_compatible(path)
    assert len(problems) == 1 and "GridSample" in problems[0] and "5-D" in problems[0]


def test_checker_flags_unknown_rank_and_unsupported_ops() -> None:
    helper = onnx.helper
    nodes = [
        helper.make_node("GridSample", ["x", "g"], ["y"]),  # x has no shape: rank unknown
        helper.make_node("Unique", ["y"], ["u"]),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None),
         helper.make_tensor_value_info("g", onnx.TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("u", onnx.TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    problems = check_tensorrt_compatible(model)
    assert any("Unique" in p for p in problems)
    assert any("GridSample" in p and "unknown" in p for p in problems)


def test_dynamo_export_is_compatible(tmp_path: Path) -> None:
    """The lead's exporter may use the dynamo path: it must give an equally clean graph."""
    pytest.importorskip("onnxscript")
    volume, grid = _inputs((1, 3, 16, 6, 7), (1, 4, 5, 6), seed=7)
    path = tmp_path / "warp_dynamo.onnx"
    torch.onnx.export(_Warp(trt=True).eval(), (volume, grid), str(path), opset_version=OPSET,
                      dynamo=True, input_names=["volume", "grid"], output_names=["out"])
    assert check_tensorrt_compatible(path) == []
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"volume": volume.numpy(), "grid": grid.numpy()})
    expected = (_reference(volume, grid) * 2.0 + 1.0).numpy()
    assert np.abs(out - expected).max() < 1e-5
