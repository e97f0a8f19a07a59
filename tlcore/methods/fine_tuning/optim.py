"""The seed's optimisers and gradient clipping, kept apart from the loop so a benchmark or a test
can build the exact optimiser a fine-tuning run steps.

tl-tradeoff trained with tf-addons' SGDW (decoupled weight decay, not L2) or Adam, and Keras
``clipnorm`` clips each gradient tensor on its own: neither is what ``torch.optim`` gives by default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from tlcore.specs import FineTuningParams


class SGDW(torch.optim.SGD):
    """SGD with momentum and decoupled weight decay, as tf-addons' ``SGDW`` that the seed used.

    Each step first shrinks the parameters, ``w <- w - weight_decay * w`` (tf-addons' rule: the decay
    is not scaled by the learning rate), then takes the momentum step on the loss gradient alone.
    ``torch.optim.SGD(weight_decay=...)`` instead adds ``weight_decay * w`` to the gradient (L2), which
    then flows through the momentum buffer: a different optimiser.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=0.0, nesterov=nesterov)
        self.defaults["decoupled_weight_decay"] = weight_decay
        for group in self.param_groups:
            group.setdefault("decoupled_weight_decay", weight_decay)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            decay = group["decoupled_weight_decay"]
            params = [p for p in group["params"] if p.grad is not None]
            if decay and params:
                torch._foreach_mul_(params, 1.0 - decay)
        super().step()
        return loss


def build_optimizer(params: FineTuningParams, trainable: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
    """``sgd``: SGDW (the seed); ``adam``: Adam without weight decay (the seed); ``adamw``: PyTorch's AdamW."""
    if params.optimizer == "sgd":
        return SGDW(trainable, lr=params.learning_rate, momentum=params.momentum, weight_decay=params.weight_decay)
    if params.optimizer == "adam":
        return torch.optim.Adam(trainable, lr=params.learning_rate)
    return torch.optim.AdamW(trainable, lr=params.learning_rate, weight_decay=params.weight_decay)


def clip_gradients_(trainable: Sequence[nn.Parameter], max_norm: float, mode: str = "per_tensor") -> None:
    """Clip gradients to ``max_norm``: each tensor on its own (Keras ``clipnorm``, the seed) or one global norm."""
    grads = [p.grad for p in trainable if p.grad is not None]
    if not grads:
        return
    if mode == "global":
        torch.nn.utils.clip_grad_norm_(trainable, max_norm)
        return
    norms = torch._foreach_norm(grads)
    scales = [torch.clamp(max_norm / (n + 1e-6), max=1.0) for n in norms]
    torch._foreach_mul_(grads, scales)

