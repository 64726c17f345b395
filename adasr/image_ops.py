"""Conversions between images (HWC RGB uint8/float numpy) and model tensors ([1, 3, S, S] in [0, 1])."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from adasr.errors import InputError


#: ITU-R BT.601 luma weights, as OpenCV's RGB → grey.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def luma(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] RGB → [B, 1, H, W] BT.601 luma (OpenCV's grey), in the images' dtype and device."""
    return (images[:, :3] * images.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)).sum(1, keepdim=True)


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Grey, RGB or RGBA, uint8 or float in [0, 1] → HWC RGB uint8 (alpha dropped)."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise InputError(f"expected an HxWx3 RGB image, got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating):
            arr = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
        else:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size×size (area when shrinking, cubic when enlarging); no-op at the right size."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    interp = cv2.INTER_AREA if min(h, w) > size else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interp)


def image_to_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """HWC RGB image → [1, 3, size, size] float32 in [0, 1] (resized only when needed).

    Converted by numpy, not torch: these run on every frame beside the graph runtimes, and torch's element-wise
    ops on a frame wake its OpenMP pool, whose spinning threads took the cores from ONNX Runtime and mediapipe
    (the same values: uint8 / 255 in float32)."""
    rgb = resize_square(as_rgb_uint8(image), size)
    chw = np.empty((1, 3, size, size), np.float32)
    np.divide(rgb.transpose(2, 0, 1)[None], np.float32(255), out=chw)
    return torch.from_numpy(chw)


def tensor_to_image(frame: torch.Tensor) -> np.ndarray:
    """[1, 3, S, S] (or [3, S, S]) in [0, 1] → HWC RGB uint8, rounded (numpy, as ``image_to_tensor``)."""
    t = frame[0] if frame.dim() == 4 else frame
    chw = t.detach().cpu().float().numpy()
    hwc = np.empty((chw.shape[1], chw.shape[2], chw.shape[0]), np.float32)
    np.clip(chw.transpose(1, 2, 0), 0, 1, out=hwc)
    hwc *= np.float32(255)
    hwc += np.float32(0.5)
    return hwc.astype(np.uint8)
