"""SourceState ↔ source payload, for one model: which arrays it takes, and the test render on the way in.

* ``encode_state`` / ``encode_image`` / ``decode_state``: a SourceState or a portrait crop ↔ a
  payload of one of two kinds (``SourceKind``), checked against the receiving model's shapes
  (``expected_shapes``, from ``ModelConfig.sent_volume_shape``) before any array is decoded
  (``max_raw_bytes`` and a shape check handed to ``realtime.source_payload.unpack_source_state``);
* ``wire_model_id``: the identity both peers compare before a transfer.

Either kind may also carry the portrait's expression-rig anchors and face ratios (``RIG_ARRAYS``, both or
neither): without them a receiver's rig cannot move the portrait's mouth and eyes, and the receiver of an image
has no face tracker to find them itself.

The byte format itself is ``realtime.source_payload`` (torch-free, as is the rest of the wire format).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from adasr import motion_layout
from adasr.config import ModelConfig
from adasr.detail_path import with_photo_differences
from adasr.expression_rig import NUM_ANCHORS, anchors_from_landmarks
from adasr.expression_signal import NUM_FEATURES, raw_ratios
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
#: The portrait's expression-rig arrays, optional in both kinds (both or neither) and their one shape.
RIG_ARRAYS: dict[str, tuple[int, ...]] = {"anchors": (1, NUM_ANCHORS, 2), "face_ratios": (NUM_FEATURES,)}
#: Bounds a received anchor (normalised crop coordinates: a face inside the crop lies in −1…1) and face ratio
#: (``adasr.expression_signal.raw_ratios``: 0…0.8 on real faces) must respect.
ANCHOR_BOUND = 2.0
RATIO_BOUNDS = (-1.0, 2.0)
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
        shapes: dict[str, tuple[int, ...]] = {IMAGE_ARRAY: (side, side, 3), **RIG_ARRAYS}
    else:
        shapes = {**expected_shapes(config), **RIG_ARRAYS}
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
        if name in RIG_ARRAYS:
            if shape != RIG_ARRAYS[name]:
                raise ProtocolError(f"source array {name!r} of shape {shape}, expected {RIG_ARRAYS[name]}")
        elif kind == SourceKind.SOURCE_IMAGE:
            if name != IMAGE_ARRAY:
                raise ProtocolError(f"SOURCE_IMAGE payload holds an array {name!r}, expected only '{IMAGE_ARRAY}'")
            if (len(shape) != 3 or shape[2] != 3
                    or not MIN_IMAGE_SIDE <= min(shape[:2]) <= max(shape[:2]) <= biggest):
                raise ProtocolError(f"SOURCE_IMAGE of shape {shape}: expected (H, W, 3) with sides in "
                                    f"[{MIN_IMAGE_SIDE}, {biggest}] "
                                    f"({MAX_IMAGE_SCALE}× the model's {config.image_size}²)")
        elif name not in expected:
            raise ProtocolError(f"FEATURE_VOLUME payload holds an array {name!r}, expected {sorted(expected)} "
                                f"(and optionally {sorted(RIG_ARRAYS)})")
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
    anchors = None if state.anchors is None else state.anchors.detach().float().cpu().numpy()
    arrays.update(_rig_arrays(anchors, state.face_ratios))
    return pack_source_state(arrays, quantization=quantization, compression=compression)


def encode_image(crop: np.ndarray, landmarks: np.ndarray | None = None, *, compression: Compression = "zlib") -> bytes:
    """Portrait crop (HWC RGB uint8) → SOURCE_IMAGE payload, with the rig's anchors and face ratios measured from
    the tracker's ``landmarks`` [478, ≥2] (pixels of the crop) when given."""
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"the source image must be HWC RGB uint8, got {crop.dtype} {crop.shape}")
    arrays = {IMAGE_ARRAY: np.ascontiguousarray(crop)}
    if landmarks is not None:
        anchors = anchors_from_landmarks(landmarks, crop.shape[1], crop.shape[0])[None]
        arrays.update(_rig_arrays(anchors, raw_ratios(landmarks)))
    return pack_source_state(arrays, compression=compression)


def _rig_arrays(anchors: np.ndarray | None, face_ratios: np.ndarray | None) -> dict[str, np.ndarray]:
    """The payload's optional rig arrays: both, or none when the portrait has no landmarks; clipped to what a
    receiver accepts (a degenerate face's ratio, an eye a pixel wide, must not cost the call its portrait)."""
    if anchors is None or face_ratios is None:
        return {}
    anchors = np.clip(np.asarray(anchors, np.float32), -ANCHOR_BOUND, ANCHOR_BOUND)
    face_ratios = np.clip(np.asarray(face_ratios, np.float32), *RATIO_BOUNDS)
    return {"anchors": anchors.reshape(RIG_ARRAYS["anchors"]),
            "face_ratios": face_ratios.reshape(RIG_ARRAYS["face_ratios"])}


def _received_rig(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The payload's anchors and face ratios (both or neither), within their bounds; ProtocolError otherwise."""
    anchors, ratios = arrays.pop("anchors", None), arrays.pop("face_ratios", None)
    if (anchors is None) != (ratios is None):
        raise ProtocolError("source payload carries one of the expression rig's 'anchors' and 'face_ratios' "
                            "without the other")
    if anchors is not None and float(np.abs(anchors).max()) > ANCHOR_BOUND:
        raise ProtocolError(f"source anchors outside [−{ANCHOR_BOUND}, {ANCHOR_BOUND}] of the crop")
    if ratios is not None and not (RATIO_BOUNDS[0] <= float(ratios.min()) <= float(ratios.max()) <= RATIO_BOUNDS[1]):
        raise ProtocolError(f"source face ratios outside {list(RATIO_BOUNDS)}")
    return anchors, ratios


def decode_state(payload: bytes, kind: SourceKind, head: TalkingHead) -> SourceState:
    """Payload → SourceState for this receiver's model; ProtocolError (with a reason) when it cannot be used.

    Blocking (decompression, maybe the source encoder, one test render): run it off the event loop.
    """
    config = head.backend.config
    arrays = unpack_source_state(payload, max_raw_bytes=max_raw_bytes(kind, config), check=_shape_check(kind, config))
    anchors, ratios = _received_rig(arrays)  # finite already: unpack_source_state refuses NaN and infinity
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
    if anchors is not None:
        state = dataclasses.replace(state, anchors=torch.from_numpy(anchors).to(head.backend.device),
                                    face_ratios=ratios)
    try:
        frame = head.render(state, state.motion)
    except (RuntimeError, ValueError) as exc:
        raise ProtocolError(
            f"this renderer cannot use the source state ({type(exc).__name__}: {str(exc)[:200]})") from None
    if frame.shape[-2:] != (config.image_size, config.image_size) or not bool(torch.isfinite(frame).all()):
        raise ProtocolError("a test render from the source state is not a finite frame of the model's size")
    return state
