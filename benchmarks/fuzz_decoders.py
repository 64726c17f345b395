"""Fuzz every decoder a peer's bytes reach, and the receiver's handlers behind them.

    python benchmarks/fuzz_decoders.py                      # 100 000 cases (the issue's floor)
    python benchmarks/fuzz_decoders.py --cases 1000000 --seed 7 --json outputs/fuzz.json

Each case is one input built from real messages of every type (a mutation engine: bit flips, byte
sets, inserts, deletes, truncations, splices, random tails) or from scratch (random bytes, a valid
header with a random payload, oversized messages, text instead of bytes), and sent to one target:

* ``decode`` (must raise ``ProtocolError`` or nothing) and ``parse_or_count`` with a ``ReplayGuard``
  (must never raise and must count every input exactly once), on both channels;
* ``unpack_source_state`` on mutated SourceState payloads (must raise ``ProtocolError`` or nothing);
* a ``SourceAssembler`` fed mutated and shuffled transfers;
* a live ``Receiver`` (stub renderer): ``on_motion`` / ``on_control``, the whole receive path short of
  a network, including duplicated, replayed and reordered valid packets.

Any other exception is a bug: it is printed with the input that caused it and the exit status is 1.
hypothesis runs a few hundred of these per test in CI (tests/test_resilience.py); this script is
the long run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adasr import motion_layout  # noqa: E402
from adasr.expression_signal import NUM_FEATURES  # noqa: E402
from realtime.errors import ProtocolError  # noqa: E402
from realtime.messages import (MAGIC, PROTOCOL_VERSION, CallStats, GoodbyeReason, MessageType,  # noqa: E402
                               encode_goodbye, encode_reset_reference, encode_stats)
from realtime.motion_codec import MotionFlags, encode_motion  # noqa: E402
from realtime.protocol import ReceiverCounters, ReplayGuard, decode, parse_or_count  # noqa: E402
from realtime.receiver import Receiver, ReceiverOptions  # noqa: E402
from realtime.source_messages import SourceAssembler, SourceKind, split_source  # noqa: E402
from realtime.source_payload import pack_source_state, unpack_source_state  # noqa: E402
from realtime.source_state_codec import wire_model_id  # noqa: E402

K = 15
TYPE_BYTES = [int(t) for t in MessageType] + [0x00, 0x02, 0x12, 0x25, 0x7F, 0xFF]


class StubHead:
    """A TalkingHead stand-in: the receiver's checks need its config and identity; rendering is refused."""

    def __init__(self) -> None:
        config = SimpleNamespace(name="fuzz", image_size=64, num_kp=K, feature_channel=4)
        self.backend = SimpleNamespace(model_id="fuzz-model", config=config, device=torch.device("cpu"))
        self.size = 64

    def render(self, *args: object) -> torch.Tensor:
        raise RuntimeError("the fuzz stub does not render")

    def render_image(self, *args: object) -> np.ndarray:
        return np.zeros((64, 64, 3), np.uint8)

    def prepare_source(self, image: np.ndarray) -> object:
        raise RuntimeError("the fuzz stub does not encode")


def sample_state_payloads(rng: np.random.Generator) -> list[bytes]:
    """Small but complete SourceState payloads, in every quantisation and compression."""
    arrays = {"f_s": rng.standard_normal((1, 4, 2, 4, 4)).astype(np.float32),
              "x_c": rng.uniform(-1, 1, (1, K, 3)).astype(np.float32),
              "motion": rng.uniform(-0.3, 0.3, motion_layout.vector_size(K)).astype(np.float32)}
    out = [pack_source_state(arrays, quantization=q, compression=c, min_elements=64)  # type: ignore[arg-type]
           for q, c in [("fp32", "none"), ("fp16", "zlib"), ("int8", "lzma")]]
    out.append(pack_source_state({"image": rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)}, compression="zlib"))
    return out


@dataclass
class Corpus:
    """Valid messages of every type: the seeds the mutations start from."""

    motion: list[bytes]
    control: list[bytes]
    transfers: list[list[bytes]]
    payloads: list[bytes]

    @classmethod
    def build(cls, model_id: bytes, seed: int) -> Corpus:
        rng = np.random.default_rng(seed)
        size = motion_layout.vector_size(K)
        ratios = rng.uniform(-0.3, 1.0, (64, NUM_FEATURES)).astype(np.float32)
        motion = [encode_motion(seq, seq * 33_333, rng.uniform(-0.4, 0.4, size).astype(np.float32),
                                MotionFlags.FACE_LOST if seq % 7 == 0 else MotionFlags.NONE,
                                face_ratios=ratios[seq] if seq % 2 else None)  # half of them with the face ratios
                  for seq in range(64)]
        payloads = sample_state_payloads(rng)
        transfers = [split_source(p, model_id, SourceKind.SOURCE_IMAGE if i == 3 else SourceKind.FEATURE_VOLUME,
                                  max_message=256 + 64 * i, first_seq=100 * i) for i, p in enumerate(payloads)]
        control = [m for t in transfers for m in t]
        control += [encode_reset_reference(7, 1, 5), encode_goodbye(8, 2, GoodbyeReason.ERROR, "bye ✓"),
                    encode_stats(9, 3, CallStats(1, 2, 3, 4, 5, 6, 7, 8))]
        return cls(motion, control, transfers, payloads)


def mutate(data: bytes, r: random.Random, corpus_pick: bytes) -> bytes:
    """1–4 random edits of ``data`` (flip, set, insert, delete, truncate, splice with another message)."""
    buf = bytearray(data)
    for _ in range(r.randint(1, 4)):
        op = r.randrange(7)
        pos = r.randrange(len(buf)) if buf else 0
        if op == 0 and buf:
            buf[pos] ^= 1 << r.randrange(8)
        elif op == 1 and buf:
            buf[pos] = r.randrange(256)
        elif op == 2:
            buf[pos:pos] = r.randbytes(r.randint(1, 8))
        elif op == 3 and buf:
            del buf[pos:pos + r.randint(1, 8)]
        elif op == 4:
            del buf[pos:]
        elif op == 5:
            cut = r.randrange(len(corpus_pick) + 1)
            buf[pos:] = corpus_pick[cut:]
        elif op == 6 and len(buf) >= 8:  # a plausible-looking integer in a length or count field
            at = r.randrange(len(buf) - 3)
            buf[at:at + 4] = r.choice([0, 1, 255, 65535, 2**31, 2**32 - 1, r.randrange(2**32)]).to_bytes(4, "little")
    return bytes(buf)


def generate(r: random.Random, pool: list[bytes], corpus: Corpus) -> tuple[str, object]:
    """One input for a channel whose valid messages are ``pool``: (kind, input)."""
    roll = r.random()
    if roll < 0.45:
        return "mutated", mutate(r.choice(pool), r, r.choice(pool + corpus.motion))
    if roll < 0.60:
        return "valid_header_random_payload", (MAGIC + bytes([PROTOCOL_VERSION, r.choice(TYPE_BYTES)])
                                               + r.randbytes(12) + r.randbytes(r.choice([0, 1, 2, 4, 16, 32, 84, 300])))
    if roll < 0.70:
        return "random_bytes", r.randbytes(r.randint(0, 120))
    if roll < 0.80:
        return "replayed_or_duplicated", r.choice(pool)  # valid, but seen before or older than the window
    if roll < 0.86:
        return "truncated", (lambda m: m[:r.randrange(len(m))])(r.choice(pool))
    if roll < 0.91:
        return "oversized", r.choice(pool) + r.randbytes(r.choice([16 * 1024, 40_000, 70_000]))
    if roll < 0.95:
        return "other_version", MAGIC + bytes([r.choice([0, 2, 3, 255])]) + r.choice(pool)[3:]
    if roll < 0.96:
        return "not_bytes", r.choice(["hello", "AS\x01\x01" + "x" * 40, 12345, None, ["AS"]])
    valid = r.choice(pool)  # a valid message under a new sequence number: about half are ahead of the guard
    return "valid_new_seq", valid[:4] + r.randrange(2**32).to_bytes(4, "little") + valid[8:]


@dataclass
class FuzzReport:
    """Counts of one run; ``escaped`` must be empty."""

    cases: int = 0
    seconds: float = 0.0
    by_target: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    receiver: dict[str, Any] = field(default_factory=dict)
    escaped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"cases": self.cases, "seconds": round(self.seconds, 3),
                "cases_per_second": round(self.cases / self.seconds) if self.seconds else None,
                "by_target": dict(self.by_target), "by_kind": dict(self.by_kind), "outcomes": dict(self.outcomes),
                "receiver": self.receiver, "exceptions_escaped": len(self.escaped), "escaped": self.escaped[:20]}


def _check_counted(counters: ReceiverCounters, before: int) -> None:
    if counters.received != before + 1 or counters.accepted + counters.dropped != counters.received:
        raise AssertionError(f"parse_or_count did not count the input exactly once: {counters.as_dict()}")


def run(cases: int = 100_000, seed: int = 0) -> FuzzReport:
    """Run ``cases`` fuzz cases; deterministic for a seed."""
    r = random.Random(seed)
    head = StubHead()
    model_id = wire_model_id(head)  # type: ignore[arg-type]
    corpus = Corpus.build(model_id, seed)
    report = FuzzReport()
    motion_counters, control_counters = ReceiverCounters(), ReceiverCounters()
    motion_guard, control_guard = ReplayGuard(), ReplayGuard()
    assembler = SourceAssembler(model_id, max_total=1 << 20)
    loop = asyncio.new_event_loop()
    receiver = Receiver(head, ReceiverOptions(stats_interval_s=0, peer_timeout_s=0))  # type: ignore[arg-type]
    start = time.perf_counter()
    try:
        for index in range(cases):
            target = ("decode_motion", "decode_control", "state_payload", "assembler", "receiver")[index % 5]
            report.by_target[target] += 1
            if target == "state_payload":
                kind, data = "mutated_payload", mutate(r.choice(corpus.payloads), r, r.choice(corpus.payloads))
            elif target == "assembler":
                transfer = list(r.choice(corpus.transfers))
                r.shuffle(transfer)
                kind, data = "mutated_transfer", [mutate(m, r, m) if r.random() < 0.2 else m for m in transfer]
            else:
                on_motion = target == "decode_motion" or (target == "receiver" and r.random() < 0.5)
                kind, data = generate(r, corpus.motion if on_motion else corpus.control, corpus)
            report.by_kind[kind] += 1
            try:
                if target in ("decode_motion", "decode_control"):
                    try:
                        decode(data)  # type: ignore[arg-type]
                        report.outcomes["decoded"] += 1
                    except ProtocolError:
                        report.outcomes["protocol_error"] += 1
                    counters = motion_counters if target == "decode_motion" else control_counters
                    before = counters.received
                    parse_or_count(data, counters, motion_guard if target == "decode_motion" else control_guard)
                    _check_counted(counters, before)
                elif target == "state_payload":
                    try:
                        unpack_source_state(data, max_raw_bytes=1 << 20)  # type: ignore[arg-type]
                        report.outcomes["payload_unpacked"] += 1
                    except ProtocolError:
                        report.outcomes["payload_refused"] += 1
                elif target == "assembler":
                    for message in data:  # type: ignore[union-attr]
                        decoded = parse_or_count(message, ReceiverCounters())
                        if decoded is None or not hasattr(decoded, "transfer_id"):
                            continue
                        try:
                            if assembler.feed(decoded) is not None:  # type: ignore[arg-type]
                                report.outcomes["transfer_completed"] += 1
                        except ProtocolError:
                            report.outcomes["transfer_refused"] += 1
                else:
                    handler = receiver.on_motion if on_motion else receiver.on_control
                    loop.call_soon(handler, data)
                    if index % 50 == 4:
                        loop.run_until_complete(asyncio.sleep(0))  # let completed transfers be decoded
            except Exception as exc:  # the whole point: record, never stop
                report.escaped.append(f"{target}/{kind}: {exc!r} on {data!r:.200}\n{traceback.format_exc(limit=3)}")
        loop.run_until_complete(asyncio.sleep(0.05))
        loop.run_until_complete(receiver.stop())
    finally:
        loop.close()
    report.seconds = time.perf_counter() - start
    report.cases = cases
    s = receiver.stats
    for name, counters in (("motion", s.motion), ("control", s.control)):
        if counters.accepted + counters.dropped != counters.received:
            report.escaped.append(f"receiver {name} counters inconsistent: {counters.as_dict()}")
    report.receiver = {"motion": s.motion.as_dict(), "control": s.control.as_dict(),
                       "frames_accepted": s.frames_accepted, "source_errors": s.source_errors,
                       "source_chunks_ignored": s.source_chunks_ignored, "sources_superseded": s.sources_superseded}
    report.outcomes.update({f"motion_channel_{k}": v for k, v in motion_counters.as_dict().items()
                            if isinstance(v, int)})
    report.outcomes.update({f"control_channel_{k}": v for k, v in control_counters.as_dict().items()
                            if isinstance(v, int)})
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000, help="number of fuzz cases (default 100000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (a run is reproducible)")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument("--log", action="store_true", help="show the decoders' log lines (thousands of them)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.log else logging.CRITICAL)
    torch.set_num_threads(1)
    report = run(args.cases, args.seed)
    data = report.as_dict()
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    print(f"fuzz_decoders: {report.cases} cases in {report.seconds:.1f} s ({data['cases_per_second']} cases/s), "
          f"seed {args.seed}, {len(report.escaped)} exceptions escaped")
    print("  targets: " + ", ".join(f"{k}={v}" for k, v in sorted(report.by_target.items())))
    print("  inputs:  " + ", ".join(f"{k}={v}" for k, v in sorted(report.by_kind.items())))
    m = report.receiver["motion"]
    print(f"  receiver motion: received={m['received']} accepted={m['accepted']} malformed={m['malformed']} "
          f"oversized={m['oversized']} version={m['version_mismatch']} duplicate={m['duplicate']} "
          f"out_of_order={m['out_of_order']} replayed={m['replayed']}")
    for line in report.escaped[:5]:
        print(line, file=sys.stderr)
    return 1 if report.escaped else 0


if __name__ == "__main__":
    sys.exit(main())
