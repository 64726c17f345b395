"""ONNX export of the three networks: verified against PyTorch on a real face, manifest, TensorRT graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from adasr.checkpoint import LoadedModel  # noqa: E402
from adasr.config import load_model_config  # noqa: E402
from adasr.expression_signal import NUM_FEATURES  # noqa: E402
from adasr.networks import AdaSRNetworks  # noqa: E402
from engines.manifest import GRAPH_NAMES, ManifestError, file_sha256, read_manifest  # noqa: E402
from export.graph_check import check_tensorrt_compatible, onnx_operator_report  # noqa: E402
from export.onnx_export import (  # noqa: E402
    OPSET,
    ExportError,
    ExportReport,
    VerificationError,
    _resolve_warp,
    _verify,
    export_model,
)
from export.ort_ops import grid_sample_3d_stacked  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lite() -> LoadedModel:
    """The lite preset with random weights at 128 (the smallest size its keypoint hourglass takes)."""
    cfg = load_model_config("lite")
    cfg.image_size = 128
    torch.manual_seed(0)
    nets = AdaSRNetworks(cfg).eval()
    torch.nn.init.normal_(nets.generator.decoder.detail_fusion.out.weight, std=0.1)  # zero at init: make it count
    return LoadedModel(nets, cfg, "lite-random-test", Path("random"))


@pytest.fixture(scope="module")
def tiny_trt(tiny_model: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> ExportReport:
    return export_model(tiny_model, tmp_path_factory.mktemp("tiny-trt"), trt=True)


@pytest.fixture(scope="module")
def lite_fp32(lite: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> ExportReport:
    return export_model(lite, tmp_path_factory.mktemp("lite-fp32"))


def test_tiny_official_trt_export_is_verified_and_parses_in_tensorrt(
        tiny_model: LoadedModel, tiny_trt: ExportReport) -> None:
    assert tiny_trt.trt and tiny_trt.warp == "trt" and tiny_trt.precision == "fp32"
    for name in GRAPH_NAMES:
        graph = tiny_trt.graphs[name]
        assert graph.path.is_file()
        assert check_tensorrt_compatible(graph.path) == [], name
        report = onnx_operator_report(graph.path)
        assert all(rank == 4 for rank in report.grid_sample_input_ranks), name  # no 5-D GridSample left
        assert report.opsets[""] == OPSET
        for out, diff in graph.max_abs_diff.items():
            assert diff <= graph.tolerance[out], (name, out, diff)
    assert tiny_trt.graphs["renderer"].max_abs_diff["frame"] < 1e-3
    assert tiny_trt.graphs["renderer"].trt_problems == ()


def test_lite_trt_export_with_the_detail_path_is_verified(lite: LoadedModel, tmp_path: Path) -> None:
    """The detail path's 2-D warp is a 4-D GridSample, which TensorRT's parser takes."""
    report = export_model(lite, tmp_path / "lite-trt", trt=True)
    renderer = report.graphs["renderer"]
    assert check_tensorrt_compatible(renderer.path) == []
    assert all(rank == 4 for rank in onnx_operator_report(renderer.path).grid_sample_input_ranks)
    assert renderer.max_abs_diff["frame"] < 1e-3


def test_manifest_describes_the_files(tiny_model: LoadedModel, tiny_trt: ExportReport) -> None:
    data = json.loads(tiny_trt.manifest_path.read_text())
    assert data["model_id"] == tiny_model.model_id
    assert data["opset"] == 20 and data["trt"] is True and data["precision"] == "fp32"
    assert data["exporter"]["torch"] == torch.__version__
    assert data["config"] == tiny_model.config.to_dict()
    manifest = read_manifest(tiny_trt.out_dir)
    assert manifest.model_config() == tiny_model.config
    size = tiny_model.config.image_size
    enc = manifest.graphs["source_encoder"]
    assert [(t.name, t.shape, t.dtype) for t in enc.inputs] == [("image", (1, 3, size, size), "float32")]
    assert [t.name for t in enc.outputs] == ["f_s", "x_c", "yaw", "pitch", "roll", "t", "delta"]
    assert enc.outputs[1].shape == (1, tiny_model.config.num_kp, 3)  # the tracer leaves it symbolic; fixed on export
    ren = manifest.graphs["renderer"]
    assert [t.name for t in ren.inputs] == ["f_s", "kp_source", "kp_driving", "anchors", "ratio_change"]
    assert ren.outputs[0].shape == (1, 3, size, size)
    for entry in manifest.graphs.values():
        assert entry.sha256 == file_sha256(tiny_trt.out_dir / entry.file)
        graph = onnx.load(str(tiny_trt.out_dir / entry.file), load_external_data=False)
        meta = {p.key: p.value for p in graph.metadata_props}
        assert meta["adasr.model_id"] == tiny_model.model_id


def test_changed_file_is_refused(lite_fp32: ExportReport, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(lite_fp32.out_dir, copy)
    with open(copy / "motion_extractor.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="SHA-256"):
        read_manifest(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(ManifestError, match="adasr export"):
        read_manifest(copy)


def test_lite_export_uses_the_fast_warp_and_matches_pytorch(lite_fp32: ExportReport) -> None:
    assert lite_fp32.warp == "stacked"
    renderer = lite_fp32.graphs["renderer"]
    assert renderer.max_abs_diff["frame"] < 1e-3
    assert all(rank == 4 for rank in onnx_operator_report(renderer.path).grid_sample_input_ranks)
    assert "max |ORT - torch|" in lite_fp32.summary()


def test_lite_fp16_export_keeps_float32_io(lite: LoadedModel, tmp_path: Path) -> None:
    report = export_model(lite, tmp_path / "fp16", fp16=True)
    assert report.precision == "fp16" and report.warp == "grid_sample"
    renderer = report.graphs["renderer"]
    assert all(t.dtype == "float32" for t in renderer.inputs + renderer.outputs)
    assert renderer.max_abs_diff["frame"] < 5e-2
    proto = onnx.load(str(renderer.path))
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in proto.graph.initializer)


def test_verification_fails_loudly(lite_fp32: ExportReport) -> None:
    path = lite_fp32.graphs["motion_extractor"].path
    inputs = (torch.rand(1, 3, 128, 128), torch.zeros(1, NUM_FEATURES))  # the lite graph takes the expression too
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"image": inputs[0].numpy(), "expression": inputs[1].numpy()})
    wrong = [torch.from_numpy(o) for o in outputs]
    wrong[3] = wrong[3] + 0.5  # t off by 0.5
    with pytest.raises(VerificationError, match="t: max"):
        _verify(path, "motion_extractor", inputs, tuple(wrong), "fp32")


def test_warp_choices() -> None:
    assert _resolve_warp("auto", trt=True, fp16=False)[0] == "trt"
    assert _resolve_warp("auto", trt=False, fp16=False)[0] == "stacked"
    assert _resolve_warp("auto", trt=False, fp16=True)[0] == "grid_sample"
    with pytest.raises(ExportError, match="5-D GridSample"):
        _resolve_warp("grid_sample", trt=True, fp16=False)
    with pytest.raises(ExportError, match="fp32"):
        _resolve_warp("stacked", trt=False, fp16=True)


@pytest.mark.parametrize("vshape,gshape", [
    ((1, 16, 8, 64, 64), (1, 8, 64, 64)),
    ((2, 3, 5, 7, 9), (2, 4, 6, 3)),
    ((1, 2, 1, 1, 3), (1, 2, 3, 4)),
])
def test_stacked_warp_equals_grid_sample(vshape: tuple[int, ...], gshape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(0)
    volume = torch.randn(*vshape, generator=gen)
    grid = (torch.rand(*gshape, 3, generator=gen) * 2 - 1) * 1.6  # a good share outside [-1, 1]
    grid.view(-1, 3)[:4] = torch.tensor([[-1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.5, 0.0, 0.0], [0.0, 0.0, 3.0]])
    expected = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    np.testing.assert_allclose(grid_sample_3d_stacked(volume, grid).numpy(), expected.numpy(), atol=2e-4)
