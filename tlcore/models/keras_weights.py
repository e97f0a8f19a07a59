"""Keras weight files (the seeds' ``vgg16.h5``, ``SourceModel.weights.h5``, ``source.keras``) read
with h5py and mapped onto the PyTorch backbones.

Layouts read: Keras 3 ``.weights.h5`` (``layers/<layer>/vars/<i>``, the layer's name in the
``name`` attribute), Keras 2 / legacy HDF5 (``[model_weights/]<layer>/<layer>/<weight>`` listed by
the ``layer_names`` and ``weight_names`` attributes, as keras.applications' downloads), and ``.keras``
archives (a zip holding ``model.weights.h5``).

Kernel layouts: a Keras Conv2D kernel is (kh, kw, in, out), PyTorch's (out, in, kh, kw); a Dense
kernel is (in, out), PyTorch's (out, in); a Dense after Flatten reads an NHWC map (rows in h, w, c
order) where PyTorch flattens NCHW (c, h, w), so its rows are permuted. keras.applications' VGG16
and ResNets take BGR images minus the ImageNet channel means (Caffe style): the first conv's input
channels are flipped so it takes RGB, and the backbone's preprocessing becomes that mean
subtraction. Keras' ResNets are v1 (stride 2 on a block's first 1x1 conv, biased convs, BatchNorm
eps 1.001e-5): the torchvision ResNet is set up the same way, conv biases folded into the
BatchNorm that follows. h5py is imported only when such a file is read.
"""

from __future__ import annotations

import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tlcore.data.loading import Preprocessing
from tlcore.errors import WeightsError
from tlcore.models.weights import load_weights_into

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: keras.applications' Caffe-style input: BGR, minus these means, no scaling (given here in RGB order)
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)


@dataclass
class KerasLayer:
    name: str
    arrays: list[np.ndarray]


def is_keras_file(path: str | Path) -> bool:
    """An HDF5 file, or a ``.keras`` zip archive (both are what the seeds' Keras code writes)."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return head == HDF5_SIGNATURE or (head[:2] == b"PK" and zipfile.is_zipfile(p) and
                                      "model.weights.h5" in zipfile.ZipFile(p).namelist())


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _read_h5(f) -> list[KerasLayer]:
    layers: list[KerasLayer] = []
    group = f.get("model_weights", f)
    if "layer_names" in group.attrs:  # Keras 2 / legacy HDF5
        for raw in group.attrs["layer_names"]:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            g = group[name]
            names = [w.decode() if isinstance(w, bytes) else str(w) for w in g.attrs.get("weight_names", [])]
            if names:
                layers.append(KerasLayer(name, [np.asarray(g[w]) for w in names]))
        return layers

    def walk(g, path: str) -> None:  # Keras 3: .../<layer>/vars/0, 1, ...
        if "vars" in g and len(g["vars"]):
            v = g["vars"]
            name = v.attrs.get("name", path.rsplit("/", 1)[-1])
            layers.append(KerasLayer(name.decode() if isinstance(name, bytes) else str(name),
                                     [np.asarray(v[k]) for k in sorted(v, key=int)]))
        for key in sorted(g, key=_natural):
            if key != "vars" and hasattr(g[key], "keys") and not key.startswith("optimizer"):
                walk(g[key], f"{path}/{key}")

    walk(group.get("layers", group), "")
    return layers


def read_keras_layers(path: str | Path) -> list[KerasLayer]:
    """Every layer with weights in a Keras file, in the file's order (its arrays in Keras' order)."""
    import h5py

    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z, tempfile.TemporaryDirectory() as tmp:
                inner = z.extract("model.weights.h5", tmp)
                with h5py.File(inner, "r") as f:
                    return _read_h5(f)
        with h5py.File(path, "r") as f:
            return _read_h5(f)
    except (OSError, KeyError) as exc:
        raise WeightsError(f"Keras file {path} could not be read ({exc}); give a .h5, .weights.h5 or .keras file "
                           "written by Keras.") from None


def _found(path: Path, layers: list[KerasLayer]) -> str:
    names = [layer.name for layer in layers]
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    return f"Keras file {path} holds {len(names)} layer(s) with weights ({shown or 'none'})"


def _conv(k: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))


def _dense(k: np.ndarray, nhwc: tuple[int, int, int] | None = None) -> torch.Tensor:
    if nhwc is not None:  # rows in (h, w, c) order -> columns in PyTorch's (c, h, w) flatten order
        h, w, c = nhwc
        return torch.from_numpy(np.ascontiguousarray(k.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(
            k.shape[1], -1)))
    return torch.from_numpy(np.ascontiguousarray(k.T))


def _bn(sd: dict, prefix: str, arrays: list[np.ndarray], conv_bias: np.ndarray | None = None) -> None:
    gamma, beta, mean, var = arrays
    if conv_bias is not None:  # BN(conv(x) + b) == BN'(conv(x)) with the running mean shifted by b
        mean = mean - conv_bias
    for key, value in zip(("weight", "bias", "running_mean", "running_var"), (gamma, beta, mean, var), strict=True):
        sd[f"{prefix}.{key}"] = torch.from_numpy(np.asarray(value, dtype=np.float32))
    sd[f"{prefix}.num_batches_tracked"] = torch.tensor(0)


def _vgg16(by: dict[str, list[np.ndarray]]) -> dict[str, torch.Tensor]:
    from tlcore.models.keras_names import vgg16_conv_layers

    sd: dict[str, torch.Tensor] = {}
    for j, (name, i) in enumerate(vgg16_conv_layers()):
        k, b = by[name]
        sd[f"features.{i}.weight"] = _conv(k[:, :, ::-1, :] if j == 0 else k)  # BGR -> RGB input
        sd[f"features.{i}.bias"] = torch.from_numpy(b)
    for name, idx, nhwc in (("fc1", 0, (7, 7, 512)), ("fc2", 3, None), ("predictions", 6, None)):
        if name in by:
            k, b = by[name]
            sd[f"classifier.{idx}.weight"] = _dense(k, nhwc)
            sd[f"classifier.{idx}.bias"] = torch.from_numpy(b)
    return sd


def _resnet(by: dict[str, list[np.ndarray]], blocks: tuple[int, ...]) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}

    def conv_bn(keras: str, conv: str, bn: str, first: bool = False) -> None:
        k, b = by[f"{keras}_conv"]
        sd[f"{conv}.weight"] = _conv(k[:, :, ::-1, :] if first else k)
        _bn(sd, bn, by[f"{keras}_bn"], conv_bias=b)

    conv_bn("conv1", "conv1", "bn1", first=True)
    for s, n in enumerate(blocks, 2):
        for b in range(1, n + 1):
            t = f"layer{s - 1}.{b - 1}"
            for i in (1, 2, 3):
                conv_bn(f"conv{s}_block{b}_{i}", f"{t}.conv{i}", f"{t}.bn{i}")
            if f"conv{s}_block{b}_0_conv" in by:
                conv_bn(f"conv{s}_block{b}_0", f"{t}.downsample.0", f"{t}.downsample.1")
    if "predictions" in by:
        k, b = by["predictions"]
        sd["fc.weight"], sd["fc.bias"] = _dense(k), torch.from_numpy(b)
    return sd


def _quanta_cnn(layers: list[KerasLayer], input_size: int = 32) -> dict[str, torch.Tensor]:
    """The QUANTA reference network: Keras names its layers conv2d, conv2d_1, ..., so they are taken
    in order; a QUANTA target file also holds its source's layers first, so the last ones are its own."""
    convs = [x for x in layers if len(x.arrays) == 2 and x.arrays[0].ndim == 4]
    bns = [x for x in layers if len(x.arrays) == 4 and x.arrays[0].ndim == 1]
    dense = [x for x in layers if len(x.arrays) == 2 and x.arrays[0].ndim == 2]
    if len(convs) < 6 or len(bns) < 6 or len(dense) < 2:
        raise KeyError(f"{len(convs)} Conv2D, {len(bns)} BatchNormalization and {len(dense)} Dense layers where the "
                       "QUANTA network has 6, 6 and 2")
    convs, bns, dense = convs[-6:], bns[-6:], dense[-2:]
    sd: dict[str, torch.Tensor] = {}
    for i in range(6):
        sd[f"layer{i}.weight"], sd[f"layer{i}.bias"] = _conv(convs[i].arrays[0]), torch.from_numpy(convs[i].arrays[1])
        _bn(sd, f"bn{i}", bns[i].arrays)
    k, b = dense[0].arrays
    side = input_size // 8
    sd["layer6.weight"] = _dense(k, (side, side, k.shape[0] // (side * side)))
    sd["layer6.bias"] = torch.from_numpy(b)
    sd["fc.weight"], sd["fc.bias"] = _dense(dense[1].arrays[0]), torch.from_numpy(dense[1].arrays[1])
    return sd


def quanta_weights(path: str | Path) -> list[list[float]]:
    """The raw (w_S, w_T) of each QUANTA layer of a seed's target ``.keras`` file, in order."""
    return [[float(v) for v in x.arrays[0].ravel()] for x in read_keras_layers(path)
            if len(x.arrays) == 1 and x.arrays[0].size == 2]


def keras_state_dict(path: str | Path, arch: str) -> dict[str, torch.Tensor]:
    """A PyTorch state dict for ``arch`` from a Keras file; one sentence saying what the file holds
    when it does not map."""
    from tlcore.models.keras_names import RESNET_BLOCKS

    path = Path(path)
    layers = read_keras_layers(path)
    by = {x.name: x.arrays for x in layers}
    try:
        if arch == "vgg16":
            return _vgg16(by)
        if arch in RESNET_BLOCKS:
            return _resnet(by, RESNET_BLOCKS[arch])
        if arch == "quanta_cnn":
            return _quanta_cnn(layers)
    except (KeyError, ValueError) as exc:
        what = exc.args[0] if isinstance(exc, KeyError) and " " in str(exc.args[0]) else f"no layer {exc}"
        raise WeightsError(f"{_found(path, layers)}, which do not map onto {arch}: {what}.") from None
    raise WeightsError(f"{_found(path, layers)}; Keras files map onto vgg16, resnet50, resnet152 and quanta_cnn "
                       f"only, not {arch}.")


def adapt_to_keras(net: nn.Module, arch: str, input_size: int) -> Preprocessing | None:
    """Make a torchvision network compute what the Keras one did; returns the preprocessing to use."""
    from tlcore.models.keras_names import RESNET_BLOCKS

    caffe = Preprocessing(input_size, mean=tuple(m / 255 for m in CAFFE_MEAN_RGB), std=(1 / 255,) * 3)
    if arch in RESNET_BLOCKS:
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = 1.001e-5
        for stage in (net.layer2, net.layer3, net.layer4):  # ResNet v1: the stride on the first 1x1 conv
            stage[0].conv1.stride, stage[0].conv2.stride = (2, 2), (1, 1)
        return caffe
    if arch == "vgg16":
        return caffe
    return None


def load_keras_into(net: nn.Module, path: str | Path, arch: str, input_size: int,
                    head_path: str) -> Preprocessing | None:
    """Load a Keras file into ``net`` (adapted to Keras' computation); returns the preprocessing."""
    sd = keras_state_dict(path, arch)
    prep = adapt_to_keras(net, arch, input_size)
    load_weights_into(net, sd, f"Keras file {path}", arch, head_path)
    return prep
