"""The FLOP counter against counts done by hand on tiny networks: forward, backward of what trains,
per image whatever the batch, rectangular inputs, per-module counts, and the model left as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tlcore.measure.flops import count_flops, flops_key, flops_per_image


def _tiny() -> nn.Sequential:
    # conv 3->4 (3x3, no bias) on HxW, then global pool, then a 4->2 linear layer
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2, bias=False))


def test_forward_and_backward_are_hand_counts_per_image_for_any_batch():
    h, w = 6, 10  # a rectangular input: every output pixel of the conv counts
    conv = 2 * 3 * 4 * 9 * h * w  # 2 FLOPs per multiply-add, 3*9 inputs per output, 4 channels
    linear = 2 * 4 * 2
    for batch in (1, 2, 4):
        f = count_flops(_tiny(), (h, w), train=True, batch=batch)
        assert f.forward == conv + linear, batch
        # backward: the first layer needs only its weight gradient (no input needs a gradient),
        # the linear layer its weight and its input gradient (one forward each)
        assert f.backward == conv + 2 * linear, batch
        assert f.train_step == f.forward + f.backward
        assert type(f.forward) is int and type(f.backward) is int  # whole FLOPs per image, not a float share
    for batch in (1, 2):
        assert count_flops(_tiny(), (h, w), train=False, batch=batch).backward == 0


def test_frozen_parameters_drop_their_weight_gradient_from_the_count():
    net = _tiny()
    net[0].weight.requires_grad_(False)
    f = count_flops(net, 5, train=True)
    assert f.backward == 2 * 4 * 2  # only the linear weight gradient; nothing flows back into the frozen conv
    net.requires_grad_(False)
    assert count_flops(net, 5, train=True).backward == 0  # nothing trains: no backward at all


def test_per_module_counts_name_each_layer():
    f = count_flops(_tiny(), 4, per_module=True)
    assert f.by_module["Global"] == f.forward
    assert f.by_module["Sequential.0"] == 2 * 3 * 4 * 9 * 16 and f.by_module["Sequential.3"] == 2 * 4 * 2
    assert all(type(v) is int for v in f.by_module.values())
    assert count_flops(_tiny(), 4).by_module is None


def test_counting_leaves_the_model_untouched():
    net = _tiny().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    count_flops(net, 8, train=True)
    assert not net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.device.type == "cpu" and p.grad is None for p in net.parameters())
    net.train()
    count_flops(net, 8)
    assert net.training


def test_cache_key_changes_with_what_trains_the_size_and_the_mode():
    net = _tiny()
    key = flops_key(net, 8, True)
    assert flops_key(_tiny(), 8, True) == key  # same architecture, other weights: same count
    assert flops_key(net, 9, True) != key and flops_key(net, 8, False) != key
    net[0].weight.requires_grad_(False)
    assert flops_key(net, 8, True) != key
    assert flops_per_image(net, 8, train=True).backward == 2 * 4 * 2
    assert flops_per_image(_tiny(), 8, train=True).backward == 2 * 3 * 4 * 9 * 64 + 2 * 2 * 4 * 2
    # the cache answers per size and per mode, and a forward-only count is the default
    assert flops_per_image(_tiny(), 8).backward == 0
    assert flops_per_image(_tiny(), 7, train=True).forward == 2 * 3 * 4 * 9 * 49 + 2 * 4 * 2


def test_cache_key_tells_architectures_with_the_same_parameters_apart():
    class Other(nn.Sequential):  # same parameter names and shapes, another network (e.g. another activation)
        pass

    a, b = _tiny(), Other(*_tiny())
    assert [(n, p.shape) for n, p in a.named_parameters()] == [(n, p.shape) for n, p in b.named_parameters()]
    assert flops_key(a, 8, True) != flops_key(b, 8, True)


def test_batchnorm_buffers_stay_on_the_meta_device_and_are_not_counted_twice():
    net = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4))
    running = net[1].running_mean.clone()
    f = count_flops(net, 3, train=True)
    assert f.forward == 2 * 3 * 4 * 9  # BatchNorm is not a matmul or a convolution: the counter leaves it out
    assert torch.equal(net[1].running_mean, running) and int(net[1].num_batches_tracked) == 0


def test_transposed_convolution_counts_over_its_input_pixels():
    # a stride-2, 2x2 transposed convolution scatters each of the 3x3 input pixels to a 2x2 patch
    net = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.ConvTranspose2d(4, 2, 2, stride=2, bias=False))
    f = count_flops(net, 3, train=True)
    pointwise = 2 * 3 * 4 * 9
    transposed = 2 * 4 * 2 * 4 * 9  # 2 FLOPs x C_in x C_out x k*k x input pixels (not the 6x6 output)
    assert f.forward == pointwise + transposed
    assert f.backward == pointwise + 2 * transposed


@pytest.mark.parametrize("groups", [1, 4])
def test_convolution_backward_costs_one_forward_per_gradient_groups_included(groups):
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=groups, bias=False),
                        nn.Conv2d(4, 4, 1, bias=False))
    f = count_flops(net, 5, train=True, channels=4)
    first = 2 * (4 // groups) * 4 * 9 * 25
    second = 2 * 4 * 4 * 25
    assert f.forward == first + second
    assert f.backward == first + 2 * second  # first: weight gradient only; second: weight and input
