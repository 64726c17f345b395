"""The SourceState as it crosses the network: to named arrays and back, with every check on the way in.

The wire format (``pack_source_state``, ``split_source``, ``SourceAssembler``) knows arrays and
bytes; this module knows what a SourceState is. Two kinds of payload (``SourceKind``):

* FEATURE_VOLUME (the default): f_s quantised (fp16 by default) and compressed, x_c and the
  source's motion as float32. The receiver renders at once, no encoder run.
* SOURCE_IMAGE: the portrait crop as raw uint8 (then compressed): about 10× fewer bytes, but the
  receiver runs the source encoder (hundreds of ms on a CPU) before the first frame.

A received state is only accepted after one test render from it succeeds, so a payload that
decodes but does not fit this renderer is refused with a message instead of failing every frame.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from adasr.keypoints import Motion
from adasr.pipeline import SourceState, TalkingHead
from realtime.errors import ProtocolError
from realtime.source_codec import (
    DEFAULT_MAX_RAW_BYTES,
    MODEL_ID_SIZE,
    Compression,
    Quantization,
    SourceKind,
    model_id_for,
    pack_source_state,
    unpack_source_state,
)

logger = logging.getLogger(__name__)

#: Array names of a FEATURE_VOLUME payload.
FEATURE_ARRAYS = ("f_s", "x_c", "motion")
#: Array name of a SOURCE_IMAGE payload.
IMAGE_ARRAY = "image"


def wire_model_id(head: TalkingHead) -> bytes:
    """The 32-byte model identity both peers compare: SHA-256 of the backend's weight hash and preset."""
    config = head.backend.config
    identity = f"{head.backend.model_id}:{config.name}:{config.image_size}:{config.num_kp}"
    digest = model_id_for(identity)
    assert len(digest) == MODEL_ID_SIZE
    return digest


def encode_state(state: SourceState, *, quantization: Quantization = "fp16", compression: Compression = "zlib") -> bytes:
    """SourceState → FEATURE_VOLUME payload."""
    arrays = {
        "f_s": state.f_s.detach().float().cpu().numpy(),
        "x_c": state.x_c.detach().float().cpu().numpy(),
        "motion": state.motion.to_vector(),
    }
    return pack_source_state(arrays, quantization=quantization, compression=compression)


def encode_image(crop: np.ndarray, *, compression: Compression = "zlib") -> bytes:
    """Portrait crop (HWC RGB uint8) → SOURCE_IMAGE payload."""
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"the source image must be HWC RGB uint8, got {crop.dtype} {crop.shape}")
    return pack_source_state({IMAGE_ARRAY: np.ascontiguousarray(crop)}, compression=compression)


def decode_state(payload: bytes, kind: SourceKind, head: TalkingHead,
                 *, max_raw_bytes: int = DEFAULT_MAX_RAW_BYTES) -> SourceState:
    """Payload → SourceState for this receiver's model; ProtocolError (with a reason) when it cannot be used.

    Blocking (decompression, maybe the source encoder, one test render): run it off the event loop.
    """
    arrays = unpack_source_state(payload, max_raw_bytes=max_raw_bytes)
    config = head.backend.config
    if kind == SourceKind.SOURCE_IMAGE:
        if set(arrays) != {IMAGE_ARRAY}:
            raise ProtocolError(f"SOURCE_IMAGE payload holds {sorted(arrays)}, expected ['{IMAGE_ARRAY}']")
        image = arrays[IMAGE_ARRAY]
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 16:
            raise ProtocolError(f"SOURCE_IMAGE is not an RGB image: {image.dtype} {image.shape}")
        if max(image.shape[:2]) > 4 * config.image_size:
            raise ProtocolError(f"SOURCE_IMAGE of {image.shape[1]}×{image.shape[0]} is far larger than the model's "
                                f"{config.image_size}² input")
        state = head.prepare_source(image)
    else:
        if set(arrays) != set(FEATURE_ARRAYS):
            raise ProtocolError(f"FEATURE_VOLUME payload holds {sorted(arrays)}, expected {sorted(FEATURE_ARRAYS)}")
        f_s, x_c, motion = arrays["f_s"], arrays["x_c"], arrays["motion"]
        k = config.num_kp
        if x_c.shape != (1, k, 3) or motion.shape != (6 + 3 * k,):
            raise ProtocolError(f"source keypoints {x_c.shape} / motion {motion.shape} do not fit K={k} "
                                f"(expected (1, {k}, 3) and ({6 + 3 * k},))")
        if f_s.ndim != 5 or f_s.shape[:2] != (1, config.feature_channel):
            raise ProtocolError(f"feature volume of shape {f_s.shape}, expected [1, {config.feature_channel}, D, H, W]")
        device = head.backend.device
        state = SourceState(torch.from_numpy(f_s).to(device), torch.from_numpy(x_c).to(device),
                            Motion.from_vector(motion, device), head.backend.model_id)
    try:
        frame = head.render(state, state.motion)
    except (RuntimeError, ValueError) as exc:
        raise ProtocolError(f"this renderer cannot use the source state ({type(exc).__name__}: {str(exc)[:200]})") from None
    if frame.shape[-2:] != (config.image_size, config.image_size) or not bool(torch.isfinite(frame).all()):
        raise ProtocolError("a test render from the source state is not a finite frame of the model's size")
    return state
