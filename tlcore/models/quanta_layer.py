"""QUANTA layers (Orhand et al., KES 2021) and the source + target network that carries them.

A QUANTA layer mixes, at one layer, the output of a frozen pretrained *source* network (Z_S) with
the output of the same layer in a trainable, randomly initialised *target* (Z_T), both computed
from the same image::

    A_T = f(lambda_S * Z_S + lambda_T * Z_T),   (lambda_S, lambda_T) = softmax(w),  w = [1.1, -1.1] at start

lambda_S (0.9002 at start) rising means the target takes the source's features at that layer.

Where the mix happens (:class:`QuantaPoint`): the *output of a module* is replaced, in the
target, by the mix of that module's output in the source and in the target; ``f`` is whatever the
network applies next. On ``quanta_cnn`` the module is the convolution or dense layer before its ELU
(``layer{i}``), so ``f`` is that ELU, exactly the reference. On other backbones the points are the
backbone's taps: block outputs (EfficientNet-Lite MBConv blocks, ResNet blocks, ...), where the
mix is a convex combination of two block outputs and ``f`` is the identity. An MBConv block ends
linearly (projection conv + BatchNorm, plus the skip), so mixing its output is mixing
pre-activations, the same thing the reference does; ResNet blocks end in a ReLU, so there the two
post-activation maps are mixed (still a convex combination, still non-negative). The last tap of
EfficientNet-Lite, ``_bn1``, is pre-activation too (its ReLU6 follows).

The source sees the image only: it never sees the target's earlier layers. It is frozen and always
in eval mode (BatchNorm running statistics, no dropout), whatever mode the network is put in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from tlcore.errors import BackboneError
from tlcore.models.base import Backbone, BackboneConfig, capture_outputs

INITIAL_WEIGHTS = (1.1, -1.1)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum(a * b) in float32 without a temporary where the layout allows (one BLAS dot)."""
    if a.dtype in (torch.float32, torch.float64) and a.is_contiguous() and b.is_contiguous():
        return torch.vdot(a.reshape(-1), b.reshape(-1))
    return (a.float() * b.float()).sum()


class _Mix(torch.autograd.Function):
    """``lambda_S * z_s + (1 - lambda_S) * z_t`` in one pass (``lerp``), with a lean backward.

    Autograd through the two products kept both inputs and made three full-size temporaries per
    layer; here the backward is one product for z_t and two dot products for lambda_S. With a
    QUANTA layer at every layer of ``quanta_cnn`` that took the step from ~1.6x a plain step to
    under 1.5x (``bench/quanta_step.py``).
    """

    @staticmethod
    def forward(ctx, lam_s: torch.Tensor, z_s: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(z_s.dtype, z_t.dtype)
        z_s, z_t = z_s.to(dtype), z_t.to(dtype)
        ctx.save_for_backward(lam_s, z_s, z_t)
        return torch.lerp(z_t, z_s, lam_s.to(dtype))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        lam_s, z_s, z_t = ctx.saved_tensors
        grad_lam = grad_s = grad_t = None
        if ctx.needs_input_grad[0]:
            grad_lam = (_dot(grad, z_s) - _dot(grad, z_t)).to(lam_s.dtype).reshape(lam_s.shape)
        if ctx.needs_input_grad[1]:
            grad_s = grad * lam_s.to(grad.dtype)
        if ctx.needs_input_grad[2]:
            grad_t = grad * (1 - lam_s).to(grad.dtype)
        return grad_lam, grad_s, grad_t


class QuantaLayer(nn.Module):
    """Two weights ``w = (w_S, w_T)``; output ``f(lambda_S * z_source + lambda_T * z_target)``.

    With a 2-way softmax the gradients on ``w_S`` and ``w_T`` are always opposite, so ``w`` stays
    ``(a, -a)`` and ``lambda_S = sigmoid(2a)``. The weights are kept in float32 even under autocast.

    Example:
        >>> q = QuantaLayer(nn.ELU())
        >>> round(q.lambda_source, 4)
        0.9002
    """

    def __init__(self, activation: nn.Module | None = None,
                 initial_weights: tuple[float, float] = INITIAL_WEIGHTS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(initial_weights, dtype=torch.float32))
        self.activation = activation if activation is not None else nn.Identity()

    def lambdas(self) -> torch.Tensor:
        """``(lambda_S, lambda_T)``, differentiable."""
        return torch.softmax(self.weight.float(), dim=0)

    @property
    def lambda_source(self) -> float:
        return float(self.lambdas()[0].detach())

    def forward(self, z_source: torch.Tensor, z_target: torch.Tensor) -> torch.Tensor:
        return self.activation(_Mix.apply(self.lambdas()[0], z_source, z_target))

    def extra_repr(self) -> str:
        return f"lambda_S={self.lambda_source:.4f}"


@dataclass(frozen=True)
class QuantaPoint:
    """Where one QUANTA layer sits.

    ``key`` names it in MLflow (``quanta_source/<key>``) and in export files: the transfer index
    on ``quanta_cnn`` (``"0"``..``"6"``), the tap name elsewhere. ``module`` is the module whose
    output is mixed; ``activation`` is the module that applies ``f`` next (None: identity).
    """

    key: str
    index: int
    module: str
    activation: str | None = None

    @property
    def description(self) -> str:
        f = f"f = {self.activation}" if self.activation else "f = identity"
        return f"QUANTA {self.key}: mixes the output of {self.module} ({f})"


def quanta_points(cfg: BackboneConfig) -> list[QuantaPoint]:
    """Every place a QUANTA layer can go on a backbone, in network order."""
    if cfg.quanta_points:
        return [QuantaPoint(str(i), i, pre, act) for i, (pre, act) in enumerate(cfg.quanta_points)]
    return [QuantaPoint(tap, i, tap, None) for i, tap in enumerate(cfg.taps)]


def select_points(cfg: BackboneConfig, layer: int | str) -> list[QuantaPoint]:
    """The points for ``--layer_to_transfer``: an index, a tap (or module) name, or -1 for all.

    Anything else is refused (the reference silently inserted nothing for an index past the end).
    """
    points = quanta_points(cfg)
    if not points:
        raise BackboneError(f"{cfg.name} declares no layers where QUANTA can mix; pick another --architecture.")
    valid = (f"use 0..{len(points) - 1} (one layer), -1 (all {len(points)} at once), or a layer name "
             f"such as {points[0].module}")
    if isinstance(layer, str):
        text = layer.strip()
        try:
            layer = int(text)
        except ValueError:
            for p in points:
                if text in (p.key, p.module, p.activation):
                    return [p]
            names = ", ".join(p.module for p in points[:8]) + (", ..." if len(points) > 8 else "")
            raise BackboneError(f"Layer {text!r} is not a QUANTA point of {cfg.name}; {valid} (names: {names}).") \
                from None
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise BackboneError(f"Layer {layer!r} is not a QUANTA point of {cfg.name}; {valid}.")
    if layer < 0:
        return points
    if layer >= len(points):
        raise BackboneError(f"Layer {layer} is out of range for {cfg.name}, which has {len(points)} QUANTA "
                            f"points; {valid}.")
    return [points[layer]]


def layer_label(points: Sequence[QuantaPoint], all_points: int) -> str:
    """The ``_l_{label}`` of export files: ``all`` for every point, else the point's key."""
    if len(points) == all_points and all_points > 1:
        return "all"
    return "+".join(p.key for p in points)


class QuantaNetwork(nn.Module):
    """A frozen source and a trainable target of the same architecture, mixed at ``points``.

    ``forward(x)`` runs the source (no grad, eval mode, stopped after the last point), then the
    target with each point's output replaced by its QUANTA layer's mix; it returns the target's
    logits. ``source_logits(x)`` runs the whole source for its own head. Hooks live only for the
    duration of a call: ``self.target`` alone is a plain network.
    """

    def __init__(self, source: Backbone, target: Backbone, points: Sequence[QuantaPoint]) -> None:
        super().__init__()
        if source.cfg.name != target.cfg.name:
            raise BackboneError(f"QUANTA needs a source and a target of the same architecture; got "
                                f"{source.cfg.name} and {target.cfg.name}.")
        if not points:
            raise BackboneError("QUANTA needs at least one layer to mix.")
        self.source = source
        self.target = target
        self.points = list(points)
        self.quanta = nn.ModuleList(QuantaLayer() for _ in self.points)
        source.requires_grad_(False)
        source.eval()
        for p in self.points:  # fail now, not in the middle of a forward
            source.module(p.module)
            target.module(p.module)

    def train(self, mode: bool = True) -> QuantaNetwork:
        super().train(mode)
        self.source.eval()
        return self

    def lambda_source(self) -> torch.Tensor:
        """lambda_S of every QUANTA layer, in point order (detached, float32)."""
        return torch.stack([q.lambdas()[0] for q in self.quanta]).detach()

    def quanta_parameters(self) -> list[nn.Parameter]:
        return [q.weight for q in self.quanta]

    def source_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Z_S at every point; the source's forward stops after the last one."""
        with torch.no_grad():
            out = capture_outputs(self.source, x, [self.source.module(p.module) for p in self.points])
        missing = [p.module for p, o in zip(self.points, out, strict=True) if o is None]
        if missing:  # pragma: no cover - a point the source's forward never reached
            raise BackboneError(f"The forward pass of {self.source.cfg.name} never reached {missing}.")
        return out  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z_source = self.source_activations(x)
        handles = []

        def mix(j: int):
            def hook(_m, _inp, output):
                return self.quanta[j](z_source[j], output)

            return hook

        for j, p in enumerate(self.points):
            handles.append(self.target.module(p.module).register_forward_hook(mix(j)))
        try:
            return self.target(x)
        finally:
            for h in handles:
                h.remove()

    def source_logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.source(x)
