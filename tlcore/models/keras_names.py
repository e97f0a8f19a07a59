"""Keras layer names (keras.applications VGG16 / ResNet50 / ResNet152) and the PyTorch modules they are.

The seed's model descriptions name TensorFlow tensors (``block4_conv2/Relu:0``); the seed's weight
files name Keras layers (``block4_conv2``). Both map onto the torchvision backbones here:

=============================  ===========================  =====================================
Keras tensor                   torchvision module (tap)     what it is
=============================  ===========================  =====================================
VGG16 ``blockB_convC/Relu:0``  ``features.<i>`` (ReLU)      the conv's activation (the seed's taps)
VGG16 ``blockB_convC/BiasAdd``  ``features.<i-1>`` (Conv2d)  the conv before its ReLU
VGG16 ``blockB_pool/MaxPool``  ``features.<i>`` (MaxPool)   the block's pooled output
VGG16 ``fc1/Relu:0``, ``fc2``  ``classifier.1``, ``.4``      the dense layers' activations
ResNet ``conv1_relu/Relu:0``   ``relu``                     the stem
ResNet ``pool1_pool/MaxPool``  ``maxpool``                  the stem's pooled output
ResNet ``convS_blockB_out``    ``layer<S-1>.<B-1>``          a residual block's output (after add+ReLU)
ResNet ``avg_pool/Mean:0``     ``avgpool``                  the global average pool
=============================  ===========================  =====================================

ResNet tensors inside a block (``conv2_block1_1_relu``) have no module of their own in torchvision
(its bottleneck reuses one ReLU three times) and are refused with the list of valid names.
"""

from __future__ import annotations

import re

from tlcore.errors import BackboneError

VGG16_BLOCKS = (2, 2, 3, 3, 3)
RESNET_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet152": (3, 8, 36, 3)}


def vgg16_conv_layers() -> list[tuple[str, int]]:
    """(Keras conv layer name, index of the Conv2d in torchvision's ``features``), in order."""
    out, i = [], 0
    for b, n in enumerate(VGG16_BLOCKS, 1):
        for c in range(1, n + 1):
            out.append((f"block{b}_conv{c}", i))
            i += 2  # conv, ReLU
        i += 1  # pool
    return out


def vgg16_pools() -> list[tuple[str, int]]:
    convs = dict(vgg16_conv_layers())
    return [(f"block{b}_pool", convs[f"block{b}_conv{n}"] + 2) for b, n in enumerate(VGG16_BLOCKS, 1)]


def tensor_table(backbone: str) -> dict[str, str]:
    """Every tensor name (``layer/op``) this backbone can take from a seed description -> its tap."""
    table: dict[str, str] = {}
    if backbone == "vgg16":
        for name, i in vgg16_conv_layers():
            table[f"{name}/Relu"] = f"features.{i + 1}"
        table.update({"fc1/Relu": "classifier.1", "fc2/Relu": "classifier.4"})
        for name, i in vgg16_pools():
            table[f"{name}/MaxPool"] = f"features.{i}"
        for name, i in vgg16_conv_layers():
            table[f"{name}/BiasAdd"] = f"features.{i}"
        table.update({"fc1/BiasAdd": "classifier.0", "fc2/BiasAdd": "classifier.3"})
    elif backbone in RESNET_BLOCKS:
        table.update({"conv1_relu/Relu": "relu", "pool1_pool/MaxPool": "maxpool", "avg_pool/Mean": "avgpool"})
        for s, n in enumerate(RESNET_BLOCKS[backbone], 2):
            for b in range(1, n + 1):
                table[f"conv{s}_block{b}_out/Relu"] = f"layer{s - 1}.{b - 1}"
    return table


def _layer_op(tensor: str) -> tuple[str, str | None]:
    name = tensor.split(":")[0].strip()
    layer, _, op = name.partition("/")
    return layer, (op or None)


def guess_backbone(tensors: list[str]) -> str | None:
    """The backbone a seed description was written for, from its tensor names (None: cannot tell)."""
    layers = [_layer_op(t)[0] for t in tensors]
    if layers and all(re.fullmatch(r"block\d_(conv\d|pool)|fc[12]|flatten|predictions", x) for x in layers):
        return "vgg16"
    blocks = [tuple(map(int, m.groups())) for x in layers if (m := re.match(r"conv(\d)_block(\d+)_", x))]
    if blocks or any(x in ("conv1_relu", "pool1_pool", "avg_pool") for x in layers):
        for s, b in blocks:
            if b > RESNET_BLOCKS["resnet50"][s - 2]:
                return "resnet152"
        return None  # ResNet-50 and ResNet-152 share these names
    return None


def valid_tensor_names(backbone: str) -> str:
    """The tensor names a description may give for ``backbone``, as one readable list."""
    if backbone in RESNET_BLOCKS:
        counts = ", ".join(map(str, RESNET_BLOCKS[backbone]))
        return ("conv1_relu/Relu:0, pool1_pool/MaxPool:0, convS_blockB_out/Relu:0 for stage S = 2..5 and block B = "
                f"1..{counts} (in that order), avg_pool/Mean:0")
    return ", ".join(k + ":0" for k in tensor_table(backbone))


def map_tensors(tensors: list[str], backbone: str) -> tuple[str, ...]:
    """Taps for a seed description's ``target_tensors``; a name with no module here is refused with
    the list of the names that map."""
    table = tensor_table(backbone)
    if not table:
        raise BackboneError(f"The seed's TensorFlow tensor names map onto vgg16, resnet50 and resnet152 only, not "
                            f"{backbone}; list {backbone}'s taps instead (python -m tlcore backbones --taps "
                            f"{backbone}).")
    default_op = {layer: op for layer, op in (k.split("/") for k in table) if op in ("Relu", "MaxPool", "Mean")}
    taps = []
    for t in tensors:
        layer, op = _layer_op(t)
        key = f"{layer}/{op or default_op.get(layer, '')}"
        if key not in table:
            raise BackboneError(f"Tensor {t!r} of the model description has no matching layer in {backbone}; valid "
                                f"tensor names are: {valid_tensor_names(backbone)}.")
        taps.append(table[key])
    return tuple(taps)
