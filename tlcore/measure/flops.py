"""FLOP counts per image, on the meta device (no memory, no real arithmetic).

``torch.utils.flop_counter.FlopCounterMode`` overcounts the backward of grouped and depthwise
convolutions in torch 2.15 (it ignores ``groups`` for the weight gradient: 14x on a whole
efficientnet_b0 training step). We register a corrected formula: each gradient of a convolution
costs what its forward costs, so a depthwise layer's training step is exactly 3x its forward.

Counts are per image: one forward (+ backward for training, which counts less automatically
when layers are frozen) for a (model, trainable set, resolution) key, cached, then multiplied
by the images processed. Models are counted in train mode: ViT's eval fast path hides its
attention from the counter.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

aten = torch.ops.aten


def conv_backward_flop_corrected(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                                 _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """grad_input and grad_weight each cost one forward of the convolution, groups included.

    ``w_shape`` is (C_out, C_in / groups, k, k), so the forward count already divides by groups;
    the stock formula rebuilt the weight gradient as an ungrouped convolution.
    """
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


CUSTOM_MAPPING = {aten.convolution_backward: conv_backward_flop_corrected}


def _meta_state(model: nn.Module) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        state[name] = torch.empty_like(p, device="meta").requires_grad_(p.requires_grad)
    for name, b in model.named_buffers():
        state[name] = torch.empty_like(b, device="meta")
    return state


@dataclass(frozen=True)
class FlopCount:
    forward: int  # per image
    backward: int  # per image, for the parameters that require grad
    by_module: dict[str, int] | None = None  # forward per image, by module path

    @property
    def train_step(self) -> int:
        return self.forward + self.backward


def count_flops(model: nn.Module, input_size: int | tuple[int, int], train: bool = False, channels: int = 3,
                batch: int = 2, per_module: bool = False) -> FlopCount:
    """FLOPs of one image through ``model`` (forward, and backward when ``train``).

    The model's own tensors are never touched: parameters and buffers are replaced by meta
    tensors with the same ``requires_grad`` for the call. Two images by default: in train mode a
    BatchNorm over a 1x1 map (small inputs) refuses a batch of one; counts are per image anyway.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    state = _meta_state(model)
    x = torch.empty(batch, channels, h, w, device="meta")
    was_training = model.training
    model.train()
    try:
        with FlopCounterMode(display=False, custom_mapping=CUSTOM_MAPPING) as fwd_counter:
            out = functional_call(model, state, (x,))
        forward = fwd_counter.get_total_flops()
        by_module = None
        if per_module:
            by_module = {k: int(sum(v.values())) // batch for k, v in fwd_counter.get_flop_counts().items()}
        backward = 0
        if train and out.requires_grad:
            with FlopCounterMode(display=False, custom_mapping=CUSTOM_MAPPING) as bwd_counter:
                out.float().sum().backward()
            backward = bwd_counter.get_total_flops()
    finally:
        model.train(was_training)
    return FlopCount(forward // batch, backward // batch, by_module)


_CACHE: dict[str, FlopCount] = {}


def flops_key(model: nn.Module, input_size, train: bool) -> str:
    h = hashlib.blake2b(digest_size=12)
    h.update(type(model).__name__.encode())
    for name, p in model.named_parameters():
        h.update(f"{name}:{tuple(p.shape)}:{int(p.requires_grad)};".encode())
    h.update(f"{input_size}:{train}".encode())
    return h.hexdigest()


def flops_per_image(model: nn.Module, input_size, train: bool = False) -> FlopCount:
    """:func:`count_flops`, cached per (architecture, trainable set, resolution, train)."""
    key = flops_key(model, input_size, train)
    if key not in _CACHE:
        _CACHE[key] = count_flops(model, input_size, train=train)
    return _CACHE[key]
