"""Torchvision backbones. Weights come from ``--weights FILE``, the torch hub cache, or a download
when the user asks and the network exists; nothing downloads by default."""

from __future__ import annotations

from collections.abc import Callable

import torchvision.models as tvm
from torch import nn

from tlcore.data.loading import Preprocessing
from tlcore.models.base import BackboneConfig, WeightsSource, hub_cache_file, register_backbone
from tlcore.models.imagenet import IMAGENET_CATEGORIES


def _imagenet(weights_enum) -> dict[str, WeightsSource]:
    w = weights_enum.DEFAULT
    top1 = w.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
    return {"imagenet": WeightsSource("imagenet", f"torchvision {w}", lambda: hub_cache_file(w.url), w.url,
                                      IMAGENET_CATEGORIES, top1)}


def _block_units(prefix: str) -> Callable[[nn.Module], list[str]]:
    """Units = blocks: each child of ``prefix``, split into its blocks when it is a Sequential stage."""

    def units(net: nn.Module) -> list[str]:
        out = []
        for name, child in net.get_submodule(prefix).named_children():
            if isinstance(child, nn.Sequential) and len(child) > 1 and not isinstance(child[0], nn.Conv2d):
                out += [f"{prefix}.{name}.{i}" for i in range(len(child))]
            else:
                out.append(f"{prefix}.{name}")
        return out

    return units


def _resnet_taps(blocks: tuple[int, int, int, int]) -> tuple[str, ...]:
    return tuple(f"layer{s + 1}.{b}" for s, n in enumerate(blocks) for b in range(n))


_IMNET = Preprocessing(224)


def _cfg(name: str, family: str, weights_enum, taps, head: str, description: str, **kw) -> BackboneConfig:
    return BackboneConfig(name=name, family=family, preprocessing=kw.pop("preprocessing", _IMNET), taps=tuple(taps),
                          head_path=head, weights=_imagenet(weights_enum), description=description, **kw)


@register_backbone(_cfg("resnet18", "resnet", tvm.ResNet18_Weights, _resnet_taps((2, 2, 2, 2)), "fc",
                        "ResNet-18: 11.7 M parameters, 224x224"))
def resnet18() -> nn.Module:
    return tvm.resnet18()


@register_backbone(_cfg("resnet50", "resnet", tvm.ResNet50_Weights, _resnet_taps((3, 4, 6, 3)), "fc",
                        "ResNet-50: 25.6 M parameters, 224x224", freeze_counts={1: 13, 2: 28, 3: 40}))
def resnet50() -> nn.Module:
    return tvm.resnet50()


def _main_convs(net: nn.Module) -> list[str]:
    """ResNet-152's units as the seed counted them: the 151 main-path convolutions, no shortcut."""
    return [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d) and ".downsample." not in n]


@register_backbone(_cfg("resnet152", "resnet", tvm.ResNet152_Weights, _resnet_taps((3, 8, 36, 3)), "fc",
                        "ResNet-152: 60.2 M parameters, 224x224", freeze_counts={1: 38, 2: 76, 3: 114},
                        freeze_units=_main_convs, freeze_style="units"))
def resnet152() -> nn.Module:
    return tvm.resnet152()


_VGG_RELUS = (1, 3, 6, 8, 11, 13, 15, 18, 20, 22, 25, 27, 29)


@register_backbone(_cfg("vgg16", "vgg", tvm.VGG16_Weights,
                        [f"features.{i}" for i in _VGG_RELUS] + ["classifier.1", "classifier.4"], "classifier",
                        "VGG16: the seed's network; 13 convs + 2 FC give 12,416 FNE features",
                        freeze_counts={1: 4, 2: 8, 3: 12}, head_kind="vgg"))
def vgg16() -> nn.Module:
    return tvm.vgg16()


@register_backbone(_cfg("mobilenet_v3_large", "mobilenet", tvm.MobileNet_V3_Large_Weights,
                        [f"features.{i}" for i in range(1, 17)], "classifier",
                        "MobileNetV3-Large: 5.5 M parameters, 224x224", freeze_units=_block_units("features")))
def mobilenet_v3_large() -> nn.Module:
    return tvm.mobilenet_v3_large()


@register_backbone(_cfg("efficientnet_b0", "efficientnet", tvm.EfficientNet_B0_Weights,
                        [f"features.{s}.{b}" for s, n in ((1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 1))
                         for b in range(n)] + ["features.8"], "classifier.1",
                        "EfficientNet-B0: 5.3 M parameters, 224x224", freeze_units=_block_units("features")))
def efficientnet_b0() -> nn.Module:
    return tvm.efficientnet_b0()


@register_backbone(_cfg("convnext_tiny", "convnext", tvm.ConvNeXt_Tiny_Weights,
                        [f"features.{s}.{b}" for s, n in ((1, 3), (3, 3), (5, 9), (7, 3)) for b in range(n)],
                        "classifier.2", "ConvNeXt-Tiny: 28.6 M parameters, 224x224",
                        freeze_units=_block_units("features")))
def convnext_tiny() -> nn.Module:
    return tvm.convnext_tiny()


def _vit_units(net: nn.Module) -> list[str]:
    return ["conv_proj"] + [f"encoder.layers.encoder_layer_{i}" for i in range(len(net.encoder.layers))]


@register_backbone(_cfg("vit_b_16", "vit", tvm.ViT_B_16_Weights,
                        [f"encoder.layers.encoder_layer_{i}" for i in range(12)], "heads.head",
                        "ViT-B/16: 86.6 M parameters, fixed 224x224 input", freeze_units=_vit_units,
                        fixed_input_size=True))
def vit_b_16() -> nn.Module:
    return tvm.vit_b_16()
