"""A slimmer lite's starting weights from a trained one: the feature volume's depth planes paired, the decoder's
middle blocks dropped.

Trained from scratch on a CPU a renderer takes days; most of a trained lite carries over to a slimmer one. Halving
the volume's depth D changes only the tensors that map between 2-D features and the D planes: the encoder's last
conv (``second``, C·D output channels) and the convs that read the D planes flattened into channels (``third``, the
dense motion's occlusion head, the detail flow's head). A new plane stands for two old ones: its channels are their
mean, and a conv that reads it gets the sum of the two planes' weights, so it answers as before where the two
planes agreed. The detail flow's head also picks a plane per pixel (a softmax over D logits): a new plane's logit
is the mean of its two. 3-D convs see depth only through their kernels and carry over as they are. A decoder
middle block is residual (x + f(x)): dropping it keeps x.

    python -m adasr.training.slimming --checkpoint weights/adasr-lite.pth --config configs/lite_fast.yaml \\
        --out runs/lite_fast_init.pth
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import torch

from adasr.checkpoint import LoadedModel, load_model, save_checkpoint
from adasr.config import ModelConfig, load_model_config
from adasr.errors import ConfigError
from adasr.networks import AdaSRNetworks

logger = logging.getLogger(__name__)

#: Convs whose input channels are the volume's planes flattened (c·D + d), by state-dict name.
_READ_PLANES = ("generator.third.conv.weight", "generator.dense_motion_network.occlusion.weight",
                "generator.detail_flow.head.weight")


def _pair_planes(x: torch.Tensor, dim: int, depth: int, factor: int, reduce: str) -> torch.Tensor:
    """``x`` with its axis ``dim`` (channels c·depth + d) reduced over each ``factor`` consecutive planes."""
    shape = list(x.shape)
    split = shape[:dim] + [shape[dim] // depth, depth // factor, factor] + shape[dim + 1:]
    grouped = x.reshape(split)
    merged = grouped.mean(dim + 2) if reduce == "mean" else grouped.sum(dim + 2)
    return merged.reshape(shape[:dim] + [shape[dim] // factor] + shape[dim + 1:])


def check_slimmable(old: ModelConfig, new: ModelConfig) -> int:
    """The depth factor old D / new D, once ``new`` is checked to be ``old`` with at most a shallower volume and
    fewer decoder middle blocks (anything else is not a slimming this module knows how to start)."""
    g, h = old.generator, new.generator
    factor = g.reshape_depth // h.reshape_depth if h.reshape_depth else 0
    if factor < 1 or factor * h.reshape_depth != g.reshape_depth or h.dense_motion_params.reshape_depth != \
            h.reshape_depth or g.dense_motion_params.reshape_depth != g.reshape_depth:
        raise ConfigError(f"{new.name}: the volume depth must divide {old.name}'s ({g.reshape_depth}), in the "
                          "generator and its dense motion alike")
    if h.decoder.num_middle_blocks > g.decoder.num_middle_blocks:
        raise ConfigError(f"{new.name} has more decoder middle blocks than {old.name}: nothing to start them from")
    return factor


def slim_state(model: LoadedModel, new: ModelConfig) -> dict[str, torch.Tensor]:
    """``model``'s weights mapped onto ``new``'s networks (see the module's docstring)."""
    old = model.config
    factor = check_slimmable(old, new)
    depth = old.generator.reshape_depth
    kept_middle = new.generator.decoder.num_middle_blocks
    state: dict[str, torch.Tensor] = {}
    for name, x in model.networks.state_dict().items():
        middle = re.match(r"generator\.decoder\.G_middle_(\d+)\.", name)
        if middle and int(middle.group(1)) >= kept_middle:
            continue
        if factor > 1 and name in ("generator.second.weight", "generator.second.bias"):
            x = _pair_planes(x, 0, depth, factor, "mean")
        if factor > 1 and name in _READ_PLANES:
            x = _pair_planes(x, 1, depth, factor, "sum")
        if factor > 1 and name.startswith("generator.detail_flow.head."):  # D plane logits, then the occlusion's
            planes, rest = x[:depth], x[depth:]
            x = torch.cat([_pair_planes(planes, 0, depth, factor, "mean"), rest])
        state[name] = x
    return state


def slim_model(model: LoadedModel, new: ModelConfig) -> AdaSRNetworks:
    """``new``'s networks holding ``model``'s weights, mapped; every tensor must fit (else ConfigError: ``new``
    changed more than the depth and the middle blocks, e.g. a width that ``max_features`` caps)."""
    networks = AdaSRNetworks(new)
    state, own = slim_state(model, new), networks.state_dict()
    misfits = sorted({k for k in own if k not in state or state[k].shape != own[k].shape} | (state.keys() - own.keys()))
    if misfits:
        raise ConfigError(f"{new.name} differs from {model.config.name} beyond the volume's depth and the decoder's "
                          f"middle blocks: {', '.join(misfits[:4])}" + (" …" if len(misfits) > 4 else ""))
    networks.load_state_dict(state, strict=True)
    return networks.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a trained model of the wider preset")
    parser.add_argument("--config", required=True, help="the slimmer preset (name or YAML)")
    parser.add_argument("--out", type=Path, required=True, help="where the slimmer model's checkpoint goes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = load_model(args.checkpoint)
    new = load_model_config(args.config)
    networks = slim_model(model, new)
    save_checkpoint(args.out, networks, {"slimmed_from": model.model_id})
    logger.info("wrote %s: %s's weights (%s) on %s", args.out, model.config.name, model.model_id, new.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
