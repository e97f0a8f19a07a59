"""What the CLI and the home page show about backbones, and the `predict` check.

Tables are built on the meta device: parameter counts and FLOPs need shapes, not values, so
listing every backbone takes a second instead of initialising 400 M random weights.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from tlcore.devices import resolve_device
from tlcore.errors import TLError
from tlcore.measure.flops import count_flops
from tlcore.models.base import _BUILDERS, Backbone, backbone_config, backbones, create_backbone, weights_status


def meta_backbone(name: str) -> Backbone:
    """The architecture without memory or weights (for counting)."""
    with torch.device("meta"):
        net = _BUILDERS[name]()
    return Backbone(net, backbone_config(name))


def backbone_table() -> list[dict]:
    rows = []
    for name in backbones.names():
        cfg = backbone_config(name)
        bb = meta_backbone(name)
        size = cfg.preprocessing.input_size
        flops = count_flops(bb, size).forward
        status = weights_status(name)
        if status:
            weights = ", ".join(f"{w}: {'yes' if ok else 'no (--weights FILE or --download-weights)'}"
                                for w, ok in status.items())
        else:
            weights = "none (trained from scratch: train-source)"
        rows.append({"name": name, "params_m": bb.count_parameters() / 1e6, "gflops": flops / 1e9,
                     "input_size": size, "taps": len(cfg.taps), "weights": weights,
                     "offline": any(status.values()), "description": cfg.description, "family": cfg.family,
                     "fixed_input_size": cfg.fixed_input_size})
    return rows


def tap_candidates(name: str) -> list[tuple[str, str, bool]]:
    """Every named module of a backbone, its type, and whether it is a default tap."""
    bb = meta_backbone(name)
    default = set(bb.cfg.taps)
    return [(n, type(m).__name__, n in default) for n, m in bb.net.named_modules() if n]


def predict_top_k(backbone: str, images: Sequence[str | Path], weights: str = "default", k: int = 5,
                  download: bool = False, device: str = "auto") -> list[tuple[str, list[tuple[str, float]]]]:
    """Top-k classes of the backbone's original head for each image (ImageNet for pretrained ones)."""
    from tlcore.data.images import read_image
    from tlcore.data.loading import normalize_batch

    cfg = backbone_config(backbone)
    w = cfg.default_weights if weights in ("default", None) else weights
    source = cfg.weights.get(w) if w else None
    if source is None or source.categories is None:
        raise TLError(f"predict needs weights with known classes; {backbone} with weights {weights!r} has none "
                      f"(use a pretrained backbone such as efficientnet_lite0).")
    bb = create_backbone(backbone, weights, download=download)
    dev = resolve_device(device)
    bb.to(dev).eval()
    prep = cfg.preprocessing
    transform = prep.center_crop_transform()
    out = []
    for path in images:
        x = transform(read_image(path)).unsqueeze(0)
        with torch.no_grad():
            probs = nn.functional.softmax(bb(normalize_batch(x, prep, dev)).float(), dim=-1)[0]
        top = probs.topk(k)
        labels = [source.categories[int(i)] for i in top.indices]
        out.append((str(path), list(zip(labels, top.values.tolist(), strict=True))))
    return out


@functools.lru_cache(maxsize=64)
def meta_flops(backbone: str, input_size: int, num_classes: int, configuration: int | str | None = None,
               bn_trainable: bool = False) -> tuple[int, int]:
    """(forward, backward) FLOPs per image, counted on the meta device (no weights, no memory); backward for
    what ``configuration`` trains (None: inference only; "lp-ft": the probe phase, only the head)."""
    bb = meta_backbone(backbone)
    with torch.device("meta"):
        bb.reset_classifier(num_classes)
    # batch 2: counted in train mode, BatchNorm refuses one value per channel (1x1 maps at small sizes)
    if configuration is None:
        return count_flops(bb, input_size, batch=2).forward, 0
    if configuration == "lp-ft":
        head = bb.head_parameter_names()
        for name, p in bb.named_parameters():
            p.requires_grad_(name in head)
    else:
        bb.apply_freezing(int(configuration), bn_trainable)
    count = count_flops(bb, input_size, train=True, batch=2)
    return count.forward, count.backward
