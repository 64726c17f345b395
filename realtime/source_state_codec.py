"""SourceState ↔ source payload, for one model: which arrays it takes, and the test render on the way in.

* ``encode_state`` / ``encode_image`` / ``decode_state``: a SourceState or a portrait crop ↔ a
  payload of one of two kinds (``SourceKind``), checked against the receiving model's shapes
  (``expected_shapes``, from ``ModelConfig.sent_volume_shape``) before any array is decoded
  (``max_raw_bytes`` and a shape check handed to ``realtime.source_payload.unpack_source_state``);
* ``wire_model_id``: the identity both peers compare before a transfer.

The byte format itself is ``realtime.source_payload`` (torch-free, as is the rest of the wire format).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from adasr import motion_layout
from adasr.config import ModelConfig
from adasr.detail_path import with_photo_differences
from adasr.inference import SourceState
from adasr.keypoints import Motion
from engines.talking_head import TalkingHead
from realtime.errors import ProtocolError
from realtime.source_messages import MODEL_ID_SIZE, SourceKind, model_id_for
from realtime.source_payload import MAX_NAME_BYTES, MAX_NDIM, Compression, Quantization, ShapeCheck, \
    pack_source_state, unpack_source_state


#: Array names of a FEATURE_VOLUME payload.
FEATURE_ARRAYS = ("f_s", "x_c", "motion")
#: Array name of a SOURCE_IMAGE payload.
IMAGE_ARRAY = "image"
#: Smallest side of a SOURCE_IMAGE, and its largest as a multiple of the model's input size.
MIN_IMAGE_SIDE = 16
MAX_IMAGE_SCALE = 4


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The one shape of each FEATURE_VOLUME array of this model on the wire (f_s without the channels the
    receiver derives itself: ``ModelConfig.derived_volume_channels``)."""
    k = config.num_kp
    return {"f_s": (1, *config.sent_volume_shape()), "x_c": (1, k, 3), "motion": (motion_layout.vector_size(k),)}


def max_raw_bytes(kind: SourceKind, config: ModelConfig) -> int:
    """Most decompressed bytes a valid payload of ``kind`` can hold for this model (every array at its
    widest encoding, 4 bytes a value plus per-channel scales): anything claiming more is refused unread."""
    if kind == SourceKind.SOURCE_IMAGE:
        side = MAX_IMAGE_SCALE * config.image_size
        shapes: dict[str, tuple[int, ...]] = {IMAGE_ARRAY: (side, side, 3)}
    else:
        shapes = expected_shapes(config)
    per_array = 3 + MAX_NAME_BYTES + 4 * MAX_NDIM + 1  # name length, name, encoding, rank, dims, channel axis
    return 2 + sum(per_array + 4 * math.prod(shape) + 8 * max(shape) for shape in shapes.values())


def max_payload_bytes(config: ModelConfig) -> int:
    """Most bytes a valid payload of any kind can take on the wire for this model: the largest decompressed body
    plus the payload header and what zlib or xz add to data they cannot compress (well under 1 %)."""
    raw = max(max_raw_bytes(kind, config) for kind in SourceKind)
    return raw + raw // 100 + 4096


def _shape_check(kind: SourceKind, config: ModelConfig) -> ShapeCheck:
    """What ``unpack_source_state`` asks before decoding each array: is this name and shape what the model takes?"""
    expected = expected_shapes(config)
    biggest = MAX_IMAGE_SCALE * config.image_size

    def check(name: str, shape: tuple[int, ...]) -> None:
        if kind == SourceKind.SOURCE_IMAGE:
            if name != IMAGE_ARRAY:
                raise ProtocolError(f"SOURCE_IMAGE payload holds an array {name!r}, expected only '{IMAGE_ARRAY}'")
            if (len(shape) != 3 or shape[2] != 3
                    or not MIN_IMAGE_SIDE <= min(shape[:2]) <= max(shape[:2]) <= biggest):
                raise ProtocolError(f"SOURCE_IMAGE of shape {shape}: expected (H, W, 3) with sides in "
                                    f"[{MIN_IMAGE_SIDE}, {biggest}] "
                                    f"({MAX_IMAGE_SCALE}× the model's {config.image_size}²)")
        elif name not in expected:
            raise ProtocolError(f"FEATURE_VOLUME payload holds an array {name!r}, expected {sorted(expected)}")
        elif shape != expected[name]:
            raise ProtocolError(f"source array {name!r} of shape {shape}, this model takes {expected[name]}")

    return check


def wire_model_id(head: TalkingHead) -> bytes:
    """The 32-byte model identity both peers compare: SHA-256 of the backend's weight hash and preset."""
    config = head.backend.config
    identity = f"{head.backend.model_id}:{config.name}:{config.image_size}:{config.num_kp}"
    digest = model_id_for(identity)
    assert len(digest) == MODEL_ID_SIZE
    return digest


def encode_state(
    state: SourceState, config: ModelConfig, *, quantization: Quantization = "fp16", compression: Compression = "zlib"
) -> bytes:
    """SourceState of the model ``config`` describes → FEATURE_VOLUME payload, without the f_s channels the
    receiver derives (a cubic source warp's second differences: a quarter of the lite state's bytes)."""
    sent_channels = config.sent_volume_shape()[0]
    arrays = {
        "f_s": state.f_s[:, :sent_channels].detach().float().cpu().numpy(),
        "x_c": state.x_c.detach().float().cpu().numpy(),
        "motion": state.motion.to_vector(),
    }
    return pack_source_state(arrays, quantization=quantization, compression=compression)


def encode_image(crop: np.ndarray, *, compression: Compression = "zlib") -> bytes:
    """Portrait crop (HWC RGB uint8) → SOURCE_IMAGE payload."""
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"the source image must be HWC RGB uint8, got {crop.dtype} {crop.shape}")
    return pack_source_state({IMAGE_ARRAY: np.ascontiguousarray(crop)}, compression=compression)


def decode_state(payload: bytes, kind: SourceKind, head: TalkingHead) -> SourceState:
    """Payload → SourceState for this receiver's model; ProtocolError (with a reason) when it cannot be used.

    Blocking (decompression, maybe the source encoder, one test render): run it off the event loop.
    """
    config = head.backend.config
    arrays = unpack_source_state(payload, max_raw_bytes=max_raw_bytes(kind, config), check=_shape_check(kind, config))
    if kind == SourceKind.SOURCE_IMAGE:
        image = arrays.get(IMAGE_ARRAY)
        if image is None or image.dtype != np.uint8:
            raise ProtocolError(f"SOURCE_IMAGE payload without a uint8 '{IMAGE_ARRAY}' array")
        state = head.prepare_source(image)  # the neutral expression: only the motion's changes reach the render
    else:
        if set(arrays) != set(FEATURE_ARRAYS):
            raise ProtocolError(f"FEATURE_VOLUME payload holds {sorted(arrays)}, expected {sorted(FEATURE_ARRAYS)}")
        f_s, x_c, motion = torch.from_numpy(arrays["f_s"]), arrays["x_c"], arrays["motion"]
        if config.derived_volume_channels:
            f_s = with_photo_differences(f_s, config.feature_channel, config.generator.detail_channels)
        device = head.backend.device
        state = SourceState(f_s.to(device), torch.from_numpy(x_c).to(device),
                            Motion.from_vector(motion, device), head.backend.model_id)
    try:
        frame = head.render(state, state.motion)
    except (RuntimeError, ValueError) as exc:
        raise ProtocolError(
            f"this renderer cannot use the source state ({type(exc).__name__}: {str(exc)[:200]})") from None
    if frame.shape[-2:] != (config.image_size, config.image_size) or not bool(torch.isfinite(frame).all()):
        raise ProtocolError("a test render from the source state is not a finite frame of the model's size")
    return state
