"""The uniform backbone interface and its registry.

Every registered backbone is one small function returning a :class:`Backbone`: the network,
its preprocessing, its named taps (for feature extraction and QUANTA), its freeze units (for
fine-tuning configurations 0-3), its head, and where its weights come from. Weights are data
(:class:`~tlcore.models.weights.WeightsSource`), as in torchvision: a local file, the torch hub
cache, a package that ships them, or a download when the user asks and the network exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlcore.data.loading import Preprocessing
from tlcore.errors import BackboneError, WeightsError
from tlcore.models.keras_weights import is_keras_file, load_keras_into
from tlcore.models.weights import (  # re-exported: the backbone modules, methods.quanta and models/__init__ use them
    RANDOM_WEIGHTS,
    WeightsSource,
    hub_cache_file,
    load_weights_into,
    read_weights_file,
)
from tlcore.registry import Registry

__all__ = [
    "RANDOM_WEIGHTS", "Backbone", "BackboneConfig", "WeightsSource", "backbone_config", "backbones", "capture_outputs",
    "create_backbone", "hub_cache_file", "load_weights_into", "pool_activation", "read_weights_file",
    "register_backbone", "weights_status",
]


@dataclass(frozen=True)
class BackboneConfig:
    name: str
    family: str
    preprocessing: Preprocessing
    taps: tuple[str, ...]
    head_path: str
    weights: dict[str, WeightsSource] = field(default_factory=dict)
    default_weights: str | None = "imagenet"
    freeze_units: Callable[[nn.Module], list[str]] | None = None
    freeze_counts: dict[int, int] | None = None  # configuration -> units frozen (the seed's counts)
    # "prefix": everything before the first unit left trainable is frozen; "units": only the frozen units
    # themselves (and the BatchNorm right after each), as the seed froze ResNet-152's main convolutions
    freeze_style: str = "prefix"
    head_kind: str = "linear"  # "linear" or "vgg" (two Dense 256 + ReLU, as the seed)
    quanta_points: tuple[tuple[str, str], ...] = ()  # (pre-activation module, activation module)
    fixed_input_size: bool = False  # True when the network cannot take another resolution (ViT)
    description: str = ""


class _StopForward(Exception):
    pass


def capture_outputs(net: nn.Module, x: torch.Tensor, modules: Sequence[nn.Module],
                    transform: Callable[[Any], torch.Tensor] | None = None) -> list[torch.Tensor | None]:
    """The outputs of ``modules`` (in the order given) during ``net(x)``; the forward stops as soon as
    the last of them has fired, so layers after it cost nothing. An entry the forward never reached
    stays None for the caller to report."""
    out: list[torch.Tensor | None] = [None] * len(modules)
    remaining = set(range(len(modules)))

    def capture(j: int):
        def hook(_m, _inp, output):
            out[j] = transform(output) if transform is not None else output
            remaining.discard(j)
            if not remaining:
                raise _StopForward

        return hook

    handles = [m.register_forward_hook(capture(j)) for j, m in enumerate(modules)]
    try:
        net(x)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return out


def pool_activation(t: torch.Tensor) -> torch.Tensor:
    """Spatial average of a conv map (N,C,H,W), token average of a transformer output (N,L,D)."""
    if t.dim() == 4:
        return t.mean(dim=(2, 3))
    if t.dim() == 3:
        return t.mean(dim=1)
    return t.flatten(1)


class Backbone(nn.Module):
    """A pretrained network with uniform access to taps, freezing and head.

    Example:
        >>> bb = create_backbone("efficientnet_lite0")          # ImageNet weights, offline
        >>> feats = bb.extract_taps(x, bb.cfg.taps)              # list of pooled (N, C_i) tensors
        >>> bb.reset_classifier(10); bb.apply_freezing(2)        # fine-tuning, configuration 2
    """

    def __init__(self, net: nn.Module, cfg: BackboneConfig, weights: str | None = None) -> None:
        super().__init__()
        self.net = net
        self.cfg = cfg
        self.weights_name = weights or "random"
        self.frozen_bn: list[nn.Module] = []
        self.frozen_params: list[str] = []
        self.preprocessing_override: Preprocessing | None = None  # Keras weights expect Keras' input

    # -- forward --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.preprocessing_override or self.cfg.preprocessing

    def module(self, path: str) -> nn.Module:
        try:
            return self.net.get_submodule(path)
        except AttributeError:
            raise BackboneError(
                f"{self.cfg.name} has no layer {path!r}; valid taps are: {', '.join(self.cfg.taps)} "
                f"(or any module path listed by `python -m tlcore backbones --taps {self.cfg.name}`)."
            ) from None

    def validate_taps(self, taps: Sequence[str]) -> None:
        for t in taps:
            self.module(t)

    def extract_taps(self, x: torch.Tensor, taps: Sequence[str], pool: bool = True) -> list[torch.Tensor]:
        """Activations at ``taps`` (in the order given), pooled; the forward stops after the last tap."""
        self.validate_taps(taps)

        def as_feature(output) -> torch.Tensor:
            if isinstance(output, tuple):
                output = output[0]
            return pool_activation(output) if pool else output

        out = capture_outputs(self.net, x, [self.module(t) for t in taps], as_feature)
        missing = sorted({t for t, o in zip(taps, out, strict=True) if o is None})
        if missing:  # pragma: no cover - a tap the forward never reached
            raise BackboneError(f"Taps {missing} of {self.cfg.name} were not reached by its forward pass.")
        return out  # type: ignore[return-value]

    # -- head -----------------------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        return self.net.get_submodule(self.cfg.head_path)

    def _set_module(self, path: str, module: nn.Module) -> None:
        parent_path, _, attr = path.rpartition(".")
        parent = self.net.get_submodule(parent_path) if parent_path else self.net
        setattr(parent, attr, module)

    @property
    def num_features(self) -> int:
        head = self.get_classifier()
        if isinstance(head, nn.Linear):
            return head.in_features
        linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
        return linears[0].in_features

    def reset_classifier(self, num_classes: int, head_kind: str | None = None) -> nn.Module:
        """Replace the head with a new, randomly initialised one for ``num_classes``."""
        kind = head_kind or self.cfg.head_kind
        n_in = self.num_features
        if kind == "vgg":
            head: nn.Module = nn.Sequential(nn.Linear(n_in, 256), nn.ReLU(inplace=True), nn.Linear(256, 256),
                                            nn.ReLU(inplace=True), nn.Linear(256, num_classes))
        else:
            head = nn.Linear(n_in, num_classes)
        ref = next(self.net.parameters())
        head = head.to(device=ref.device, dtype=ref.dtype)
        self._set_module(self.cfg.head_path, head)
        return head

    def head_parameter_names(self) -> set[str]:
        prefix = f"net.{self.cfg.head_path}."
        return {n for n, _ in self.named_parameters() if n.startswith(prefix)}

    # -- freezing -------------------------------------------------------------------------------
    def freeze_unit_names(self) -> list[str]:
        """Ordered units a freezing configuration counts (convs by default)."""
        if self.cfg.freeze_units is not None:
            return self.cfg.freeze_units(self.net)
        head = self.cfg.head_path
        return [n for n, m in self.net.named_modules()
                if isinstance(m, nn.Conv2d) and not (n == head or n.startswith(head + "."))]

    def frozen_unit_count(self, configuration: int) -> int:
        units = self.freeze_unit_names()
        if configuration == 0:
            return 0
        if self.cfg.freeze_counts and configuration in self.cfg.freeze_counts:
            return min(self.cfg.freeze_counts[configuration], len(units))
        return round(len(units) * configuration / 4)

    def configurations(self) -> list[int]:
        return [0, 1, 2, 3]

    def apply_freezing(self, configuration: int, bn_trainable: bool = False) -> list[str]:
        """Freeze the first units for a configuration (0 = train everything); returns frozen parameter names.

        Frozen parameters are those registered before the first parameter of the first unit
        left trainable, so the frozen part is always a prefix of the network; with the "units"
        style only the frozen units and the BatchNorm after each (ResNet-152: the seed's main
        convolutions, shortcut convolutions stay trainable). BatchNorm layers in the frozen part
        use their running statistics and keep their scale and shift unless ``bn_trainable`` (the
        seed: every BatchNorm trains).
        """
        if configuration not in self.configurations():
            raise BackboneError(
                f"Configuration {configuration!r} is not defined for {self.cfg.name}; valid configurations are "
                f"{', '.join(map(str, self.configurations()))} (0 = train everything, 3 = freeze about three quarters)."
            )
        for p in self.parameters():
            p.requires_grad_(True)
        self.frozen_bn = []
        self.frozen_params = []
        n = self.frozen_unit_count(configuration)
        if n == 0:
            return []
        units = self.freeze_unit_names()
        params = list(self.net.named_parameters())
        if self.cfg.freeze_style == "units":
            frozen_modules = set(units[:n])
            if not bn_trainable:
                frozen_modules |= {b for u in units[:n] if (b := self._bn_after(u))}
            frozen = {name for name, _ in params if name.rsplit(".", 1)[0] in frozen_modules}
            return self._freeze(frozen, bn_trainable)
        if n >= len(units):
            stop_at = next(i for i, (name, _) in enumerate(params)
                           if name.startswith(self.cfg.head_path + ".") or name == self.cfg.head_path)
        else:
            first = units[n]
            stop_at = next(i for i, (name, _) in enumerate(params) if name.startswith(first + "."))
        return self._freeze({name for name, _ in params[:stop_at]}, bn_trainable)

    def _bn_after(self, conv: str) -> str | None:
        """The BatchNorm that normalises a conv's output (``layer1.0.conv2`` -> ``layer1.0.bn2``)."""
        parent, _, leaf = conv.rpartition(".")
        name = (parent + "." if parent else "") + leaf.replace("conv", "bn", 1)
        try:
            m = self.net.get_submodule(name)
        except AttributeError:
            return None
        return name if isinstance(m, nn.modules.batchnorm._BatchNorm) else None

    def _freeze(self, frozen: set[str], bn_trainable: bool) -> list[str]:
        bn_modules = {name for name, m in self.net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
        if bn_trainable:  # the seed: BatchNorm layers keep training (scale, shift and batch statistics)
            frozen = {name for name in frozen if name.rsplit(".", 1)[0] not in bn_modules}
        for name, p in self.net.named_parameters():
            if name in frozen:
                p.requires_grad_(False)
        if not bn_trainable:
            self.frozen_bn = [m for mname, m in self.net.named_modules()
                              if isinstance(m, nn.modules.batchnorm._BatchNorm) and f"{mname}.weight" in frozen]
        self.frozen_params = [f"net.{n_}" for n_, _ in self.net.named_parameters() if n_ in frozen]
        self.train(self.training)
        return self.frozen_params

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        for m in self.frozen_bn:
            m.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def count_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------------------------------------
# Registry and factory

backbones: Registry = Registry("backbone", BackboneError)
_CONFIGS: dict[str, BackboneConfig] = {}
_BUILDERS: dict[str, Callable[[], nn.Module]] = {}


def register_backbone(cfg: BackboneConfig):
    """Register ``build() -> nn.Module`` (random init, original head) under ``cfg.name``."""

    def deco(build: Callable[[], nn.Module]):
        build.__name__ = cfg.name
        backbones.register(build)
        _CONFIGS[cfg.name] = cfg
        _BUILDERS[cfg.name] = build
        return build

    return deco


def backbone_config(name: str) -> BackboneConfig:
    backbones.get(name)
    return _CONFIGS[name]


def weights_status(name: str) -> dict[str, bool]:
    """``{weights name: available offline}`` for a backbone."""
    cfg = backbone_config(name)
    return {w: src.available_offline() for w, src in cfg.weights.items()}


def create_backbone(name: str, weights: str | None = "default", download: bool = False,
                    num_classes: int | None = None) -> Backbone:
    """Build a registered backbone with its weights.

    Args:
        name: a registered backbone (``python -m tlcore backbones`` lists them).
        weights: ``"default"`` (the backbone's pretrained weights), a weights name such as
            ``"imagenet"``, ``"random"`` for random initialisation, or a path to a state_dict file.
        download: allow fetching weights that are not on disk (needs network).
        num_classes: replace the head with a new one of this size.
    """
    cfg = backbone_config(name)
    net = _BUILDERS[name]()
    w = cfg.default_weights if weights in ("default", None, "") else weights
    if w is None or str(w).lower() in RANDOM_WEIGHTS:
        used = "random"
    elif w in cfg.weights:
        src = cfg.weights[w]
        path = src.local_file()
        if path is None or not Path(path).is_file():
            if not download or not src.url:
                where = f" (looked for {path})" if path else ""
                raise WeightsError(
                    f"{w} weights for {name} are not on this machine{where}; pass --weights FILE with a local "
                    f"copy, put the file in the torch hub cache, or allow a download (--download-weights, needs "
                    f"network). efficientnet_lite0/1/2 ship their weights and always work offline."
                )
            try:
                sd = torch.hub.load_state_dict_from_url(src.url, map_location="cpu", progress=True)
            except Exception as exc:
                raise WeightsError(f"Downloading {w} weights for {name} from {src.url} failed ({exc}); this machine "
                                   "may be offline: copy the file to the torch hub cache instead.") from None
        else:
            sd, _ = read_weights_file(path)
        load_weights_into(net, sd, f"{w} weights", name, cfg.head_path)
        used = w
    else:
        p = Path(str(w)).expanduser()
        if not p.exists():
            raise WeightsError(
                f"Unknown weights {w!r} for {name}: not a file and not one of "
                f"{', '.join([*list(cfg.weights), 'random'])}."
            )
        prep = None
        if is_keras_file(p):  # the seeds' Keras files (h5py is imported only when one is read)
            prep = load_keras_into(net, p, name, cfg.preprocessing.input_size, cfg.head_path)
        else:
            load_weights_into(net, read_weights_file(p)[0], str(p), name, cfg.head_path)
        used = str(p.resolve())
        bb = Backbone(net, cfg, used)
        bb.preprocessing_override = prep
        if num_classes is not None:
            bb.reset_classifier(num_classes)
        return bb
    bb = Backbone(net, cfg, used)
    if num_classes is not None:
        bb.reset_classifier(num_classes)
    return bb
