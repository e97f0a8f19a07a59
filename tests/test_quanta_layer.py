"""The QUANTA layer module in small pieces, each against a value worked out by hand: the fused mix and
its gradients, dtypes, where layers can go and how a choice is refused, the export label, and the
network's hooks, which live only for one call."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tlcore.errors import BackboneError
from tlcore.models import backbone_config, create_backbone
from tlcore.models.quanta_layer import (
    QuantaLayer,
    QuantaNetwork,
    QuantaPoint,
    _dot,
    _Mix,
    layer_label,
    quanta_points,
    select_points,
)


def test_dot_is_the_sum_of_products_for_every_layout_and_dtype():
    a = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    b = torch.full((3, 4), 0.5)
    assert _dot(a, b).item() == 33.0  # (0 + ... + 11) / 2
    assert _dot(a.t(), b.t()).item() == 33.0  # not contiguous
    half = _dot(a.half(), b.half())
    assert half.dtype == torch.float32 and half.item() == 33.0  # summed in float32
    double = _dot(a.double(), b.double())
    assert double.dtype == torch.float64 and double.item() == 33.0


def test_the_mix_is_lambda_s_times_source_plus_the_rest_times_target():
    z_s, z_t = torch.tensor([2.0, -1.0, 4.0]), torch.tensor([0.0, 3.0, 4.0])
    out = _Mix.apply(torch.tensor(0.25), z_s, z_t)
    assert out.tolist() == [0.5, 2.0, 4.0]  # 0.25 z_s + 0.75 z_t
    mixed = _Mix.apply(torch.tensor(0.5), z_s.half(), z_t)
    assert mixed.dtype == torch.float32 and mixed.tolist() == [1.0, 1.0, 4.0]
    other_way = _Mix.apply(torch.tensor(0.5), z_s, z_t.half())  # either input may be the narrower one
    assert other_way.dtype == torch.float32 and other_way.tolist() == [1.0, 1.0, 4.0]


def test_the_mix_gradients_by_hand():
    z_s = torch.tensor([2.0, -1.0], requires_grad=True)
    z_t = torch.tensor([0.0, 3.0], requires_grad=True)
    lam = torch.tensor(0.25, requires_grad=True)
    (_Mix.apply(lam, z_s, z_t) * torch.tensor([1.0, 2.0])).sum().backward()
    assert z_s.grad.tolist() == [0.25, 0.5] and z_t.grad.tolist() == [0.75, 1.5]
    assert lam.grad.item() == (1 * 2 + 2 * -1) - (1 * 0 + 2 * 3)  # g . z_s - g . z_t = 0 - 6
    # only lambda trains (the source's activations never need a gradient)
    lam2 = torch.tensor(0.25, requires_grad=True)
    (g,) = torch.autograd.grad(_Mix.apply(lam2, z_s.detach(), z_t.detach()).sum(), [lam2])
    assert g.item() == (2 - 1) - (0 + 3)
    # only the source side needs a gradient
    zs_only = torch.tensor([2.0, -1.0], requires_grad=True)
    (g_s,) = torch.autograd.grad(_Mix.apply(torch.tensor(0.25), zs_only, z_t.detach()).sum(), [zs_only])
    assert g_s.tolist() == [0.25, 0.25]


def test_a_layer_without_activation_is_the_plain_mix_and_weights_stay_float32():
    q = QuantaLayer()
    assert q.weight.dtype == torch.float32 and q.weight.tolist() == pytest.approx([1.1, -1.1])
    z_s, z_t = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 5.0])
    lam = q.lambda_source
    assert q(z_s, z_t).tolist() == pytest.approx([lam * 1 + (1 - lam) * 3, lam * -2 + (1 - lam) * 5])
    assert q.extra_repr() == "lambda_S=0.9002"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert QuantaLayer().weight.dtype == torch.float32  # whatever the default dtype
    finally:
        torch.set_default_dtype(previous)
    even = QuantaLayer(torch.nn.ReLU(), initial_weights=(0.0, 0.0))
    assert even.lambda_source == 0.5 and even(z_s, z_t).tolist() == [2.0, 1.5]
    assert even.lambdas().tolist() == [0.5, 0.5]


def test_points_on_the_reference_network_and_on_a_backbone_with_taps():
    cnn = backbone_config("quanta_cnn")
    points = quanta_points(cnn)
    assert [(p.key, p.index, p.module, p.activation) for p in points[:2]] == [("0", 0, "layer0", "act0"),
                                                                             ("1", 1, "layer1", "act1")]
    assert points[6].description == "QUANTA 6: mixes the output of layer6 (f = act6)"
    lite = quanta_points(backbone_config("efficientnet_lite0"))
    assert [p.index for p in lite] == list(range(17)) and lite[2] == QuantaPoint("_blocks.2", 2, "_blocks.2", None)
    assert lite[2].description == "QUANTA _blocks.2: mixes the output of _blocks.2 (f = identity)"


def test_select_points_by_index_text_name_or_all_and_its_refusals():
    cnn = backbone_config("quanta_cnn")
    assert select_points(cnn, " 3 ") == select_points(cnn, 3) == select_points(cnn, "act3")
    assert [p.key for p in select_points(cnn, "-1")] == [str(i) for i in range(7)]
    assert select_points(cnn, 6)[0].module == "layer6" and select_points(cnn, 0)[0].module == "layer0"
    with pytest.raises(BackboneError, match=r"^Layer True is not a QUANTA point of quanta_cnn; use 0\.\.6 "
                                            r"\(one layer\), -1 \(all 7 at once\), or a layer name such as layer0\.$"):
        select_points(cnn, True)
    with pytest.raises(BackboneError, match=r"^Layer 'fc' is not a QUANTA point of quanta_cnn; .*\(names: layer0, "
                                            r"layer1, layer2, layer3, layer4, layer5, layer6\)\.$"):
        select_points(cnn, "fc")
    with pytest.raises(BackboneError, match=r"^Layer 7 is out of range for quanta_cnn, which has 7 QUANTA points"):
        select_points(cnn, 7)
    lite = backbone_config("efficientnet_lite0")
    with pytest.raises(BackboneError, match=r"\(names: _blocks\.0, .*_blocks\.7, \.\.\.\)\.$"):
        select_points(lite, "nope")  # 17 points: the first 8 named
    with pytest.raises(BackboneError, match="declares no layers where QUANTA can mix"):
        select_points(dataclasses.replace(cnn, quanta_points=(), taps=()), 0)
    eight = dataclasses.replace(cnn, quanta_points=tuple((f"layer{i}", f"act{i}") for i in range(8)))
    with pytest.raises(BackboneError, match=r"\(names: layer0, .*, layer7\)\.$"):  # all eight named: no "..."
        select_points(eight, "nope")
    nine = dataclasses.replace(cnn, quanta_points=tuple((f"layer{i}", f"act{i}") for i in range(9)))
    with pytest.raises(BackboneError, match=r"layer7, \.\.\.\)\.$"):
        select_points(nine, "nope")


def test_the_file_label_names_all_points_or_the_chosen_ones():
    cnn = backbone_config("quanta_cnn")
    everything = select_points(cnn, -1)
    assert layer_label(everything, 7) == "all"
    assert layer_label(everything[2:3], 7) == "2"
    assert layer_label([everything[1], everything[3]], 7) == "1+3"
    assert layer_label(everything[:1], 1) == "0"  # the only point of a one-point network is not "all"
    assert layer_label(everything[:2], 2) == "all"


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    return (create_backbone("quanta_cnn", "random", num_classes=3),
            create_backbone("quanta_cnn", "random", num_classes=3))


def test_the_network_refuses_other_architectures_and_no_points(pair):
    source, target = pair
    cnn = backbone_config("quanta_cnn")
    with pytest.raises(BackboneError, match="same architecture; got quanta_cnn and efficientnet_lite0"):
        QuantaNetwork(source, create_backbone("efficientnet_lite0", "random"), select_points(cnn, 0))
    with pytest.raises(BackboneError, match=r"^QUANTA needs at least one layer to mix\.$"):
        QuantaNetwork(source, target, [])


def test_hooks_live_for_one_call_and_the_source_never_trains(pair):
    source, target = pair
    net = QuantaNetwork(source, target, select_points(backbone_config("quanta_cnn"), -1)).train()
    assert not source.training and target.training and not any(p.requires_grad for p in source.parameters())
    assert [p.requires_grad for p in net.quanta_parameters()] == [True] * 7
    assert net.lambda_source().tolist() == pytest.approx([0.9002] * 7, abs=1e-4)
    assert not net.lambda_source().requires_grad
    x = torch.rand(2, 3, 32, 32)
    net.eval()
    with torch.no_grad():
        net.quanta[0].weight.copy_(torch.tensor([-30.0, 30.0]))  # lambda_S ~ 0 everywhere: the target alone
        for q in net.quanta[1:]:
            q.weight.copy_(torch.tensor([-30.0, 30.0]))
        mixed = net(x)
        plain = target(x)
    assert torch.allclose(mixed, plain, atol=1e-5)
    assert all(len(target.module(p.module)._forward_hooks) == 0 for p in net.points)  # removed after the call
    with torch.no_grad():
        assert torch.equal(net.source_logits(x), source(x))
    z = net.source_activations(x)
    assert [t.shape[1] for t in z] == [64, 64, 128, 128, 512, 512, 2048]
