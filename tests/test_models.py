"""Backbones: registry, real pretrained weights, weight files (good, mismatching, missing), freezing, taps."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tlcore.errors import BackboneError, WeightsError
from tlcore.models import backbone_config, backbones, create_backbone, load_description
from tlcore.models.catalog import meta_backbone, predict_top_k, tap_candidates
from tlcore.models.descriptions import DESCRIPTIONS_DIR, PERCENTS, default_description, select_taps

EXPECTED = {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet18", "resnet50", "resnet152",
            "vgg16", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny", "vit_b_16", "quanta_cnn"}


def test_every_shipped_backbone_is_registered_with_reachable_taps():
    assert set(backbones.names()) == EXPECTED
    for name in EXPECTED:
        bb = meta_backbone(name)
        bb.validate_taps(bb.cfg.taps)
        assert bb.get_classifier() is not None


def test_pretrained_efficientnet_lite0_sees_a_cat(tmp_path):
    from PIL import Image
    from skimage import data

    path = tmp_path / "chelsea.png"
    Image.fromarray(data.chelsea()).save(path)
    [(_, top)] = predict_top_k("efficientnet_lite0", [path], device="cpu")
    assert "cat" in top[0][0] or top[0][0] in ("tabby", "lynx")
    assert top[0][1] > 0.2


def test_offline_weights_status_is_honest():
    assert backbone_config("efficientnet_lite0").weights["imagenet"].available_offline()
    with pytest.raises(WeightsError, match="not on this machine.*--weights FILE"):
        create_backbone("resnet18", "imagenet")


def test_weights_file_roundtrip_and_mismatch_names_the_keys(tmp_path):
    src = create_backbone("resnet18", "random")
    good = tmp_path / "r18.pt"
    torch.save(src.net.state_dict(), good)
    loaded = create_backbone("resnet18", str(good))
    assert torch.equal(loaded.net.conv1.weight, src.net.conv1.weight)
    # a state dict saved from the Backbone wrapper (net. prefix) also loads
    torch.save(src.state_dict(), tmp_path / "wrapped.pt")
    assert torch.equal(create_backbone("resnet18", str(tmp_path / "wrapped.pt")).net.fc.weight, src.net.fc.weight)
    # a fine-tuned model's head of another size is skipped, the body loads
    src.reset_classifier(7)
    torch.save(src.net.state_dict(), tmp_path / "ft.pt")
    assert torch.equal(create_backbone("resnet18", str(tmp_path / "ft.pt")).net.layer1[0].conv1.weight,
                       src.net.layer1[0].conv1.weight)
    with pytest.raises(WeightsError, match=r"do not fit resnet50: .*conv1\.weight|do not fit resnet50: .*missing"):
        create_backbone("resnet50", str(good))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="could not be read"):
        create_backbone("resnet18", str(tmp_path / "junk.pt"))
    with pytest.raises(WeightsError, match="Unknown weights"):
        create_backbone("resnet18", str(tmp_path / "missing.pt"))


def test_unknown_backbone_suggests_a_close_name():
    with pytest.raises(BackboneError, match="Did you mean 'resnet18'"):
        create_backbone("resnet81")


def _frozen_modules(bb) -> set[str]:
    return {n.removeprefix("net.").rsplit(".", 1)[0] for n in bb.frozen_params}


def test_resnet50_configurations_freeze_the_seeds_conv_counts():
    bb = meta_backbone("resnet50")
    convs = [n for n, m in bb.net.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 53
    for config, n in ((1, 13), (2, 28), (3, 40)):
        bb.apply_freezing(config)
        frozen = _frozen_modules(bb)
        assert set(convs[:n]) <= frozen and not set(convs[n:]) & frozen
        assert all(p.requires_grad for p in bb.get_classifier().parameters())
    assert bb.apply_freezing(0) == []
    assert all(p.requires_grad for p in bb.parameters())


def test_efficientnet_lite0_freezes_whole_blocks_and_refuses_unknown_configurations():
    bb = meta_backbone("efficientnet_lite0")
    bb.apply_freezing(2)
    frozen = _frozen_modules(bb)
    assert "_conv_stem" in frozen and any(n.startswith("_blocks.7.") for n in frozen)
    assert not any(n.startswith("_blocks.8.") for n in frozen)
    sizes = [len(bb.apply_freezing(c)) for c in (1, 2, 3)]
    assert sizes == sorted(sizes) and sizes[0] > 0
    with pytest.raises(BackboneError, match="valid configurations are 0, 1, 2, 3"):
        bb.apply_freezing(4)


def test_frozen_batchnorm_keeps_running_statistics_unless_asked():
    bb = create_backbone("resnet18", "random")
    bb.apply_freezing(2)
    bb.train()
    frozen_bn = bb.net.bn1
    live_bn = bb.net.layer4[1].bn2
    assert not frozen_bn.training and live_bn.training
    before = frozen_bn.running_mean.clone()
    bb(torch.randn(2, 3, 64, 64))
    assert torch.equal(frozen_bn.running_mean, before)
    bb.apply_freezing(2, bn_trainable=True)
    bb.train()
    assert frozen_bn.training


def test_vgg16_head_is_the_seeds_and_others_get_a_linear_head():
    vgg = meta_backbone("vgg16")
    head = vgg.reset_classifier(5)
    assert [m.out_features for m in head if isinstance(m, nn.Linear)] == [256, 256, 5]
    r = meta_backbone("convnext_tiny")
    assert isinstance(r.reset_classifier(3), nn.Linear) and r.num_features == 768


def test_taps_pool_conv_maps_and_unknown_taps_list_the_valid_ones():
    bb = create_backbone("efficientnet_lite0", "random").eval()
    feats = bb.extract_taps(torch.randn(2, 3, 64, 64), ["_blocks.0", "_bn1"])
    assert [f.shape for f in feats] == [(2, 16), (2, 1280)]
    with pytest.raises(BackboneError, match="no layer 'conv9'.*_blocks.0"):
        bb.extract_taps(torch.randn(1, 3, 64, 64), ["conv9"])
    assert any(name == "_blocks.3._depthwise_conv" for name, _, _ in tap_candidates("efficientnet_lite0"))


def test_vgg16_full_network_embedding_has_12416_features():
    bb = meta_backbone("vgg16").eval()
    feats = bb.extract_taps(torch.empty(1, 3, 224, 224, device="meta"), bb.cfg.taps)
    assert len(feats) == 15 and sum(f.shape[1] for f in feats) == 12416  # the seed's count


def test_shipped_model_descriptions_match_the_registry():
    for name in EXPECTED:
        for pct in PERCENTS:
            path = DESCRIPTIONS_DIR / f"{name}_{pct}.json"
            data = json.loads(path.read_text())
            assert tuple(data["taps"]) == default_description(name, pct).taps, path
    d = load_description("efficientnet_lite0_25")
    assert d.taps[-1] == "_bn1" and len(d.taps) == 4


def test_select_taps_keeps_the_deepest_and_spaces_evenly():
    taps = tuple(f"t{i}" for i in range(16))
    assert select_taps(taps, 100) == taps
    assert select_taps(taps, 25) == ("t3", "t7", "t11", "t15")
    assert len(select_taps(taps, 75)) == 12 and select_taps(taps, 75)[-1] == "t15"


def test_bad_model_description_is_one_sentence(tmp_path):
    bad = tmp_path / "d.json"
    bad.write_text("{not json")
    with pytest.raises(BackboneError, match="not valid JSON"):
        load_description(bad)
    bad.write_text(json.dumps({"backbone": "vgg16", "taps": []}))
    with pytest.raises(BackboneError, match="non-empty list"):
        load_description(bad)


def test_weights_with_a_head_of_another_structure_reload_the_body():
    """A fine-tuned VGG16 (the seed's Dense 256 head) must load back into a VGG16 (original classifier)."""
    from tlcore.models import load_weights_into

    def net(head: nn.Module) -> nn.Module:
        m = nn.Module()
        m.features = nn.Conv2d(3, 4, 3)
        m.classifier = head
        return m

    original = net(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(), nn.Linear(8, 8), nn.ReLU(), nn.Dropout(),
                                 nn.Linear(8, 10)))
    tuned = net(nn.Sequential(nn.Linear(4, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 3)))
    notes = load_weights_into(original, tuned.state_dict(), "tuned.pt", "vgg-like", "classifier")
    assert torch.equal(original.features.weight, tuned.features.weight)
    assert notes and "head weights of another size" in notes[0]
    body_only = {k: v for k, v in tuned.state_dict().items() if k.startswith("features.")}
    body_only["features.extra"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="unexpected features.extra"):
        load_weights_into(original, body_only, "odd.pt", "vgg-like", "classifier")
