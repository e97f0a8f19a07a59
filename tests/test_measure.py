"""Cost meter: FLOP counts (hand counts, the depthwise correction, frozen layers), energy fields, timing."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from tlcore.measure import CostMeter, EnergySettings, count_flops, flops_per_image
from tlcore.models.catalog import meta_backbone


def test_resnet18_forward_is_3_6_gflops_at_224():
    f = count_flops(meta_backbone("resnet18"), 224)
    assert f.forward == pytest.approx(3.63e9, rel=0.01)  # 1.8 G multiply-adds
    assert f.backward == 0


def test_depthwise_conv_training_flops_match_a_hand_count():
    c, h, k = 32, 16, 3
    net = nn.Sequential(nn.Conv2d(3, c, 1, bias=False), nn.Conv2d(c, c, k, padding=1, groups=c, bias=False))
    f = count_flops(net, h, train=True)
    pointwise = 2 * 3 * c * h * h
    depthwise = 2 * c * h * h * k * k  # each output: k*k multiply-adds over one channel
    assert f.forward == pointwise + depthwise
    # backward: depthwise needs grad_input and grad_weight (one forward each), the first conv only grad_weight
    assert f.backward == 2 * depthwise + pointwise
    # the stock formula ignores groups: the correction must change the answer
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 3, h, h)
    with FlopCounterMode(display=False) as stock:
        net(x).sum().backward()
    assert stock.get_total_flops() > f.train_step


def test_frozen_layers_make_training_cheaper_and_efficientnet_lite_is_not_overcounted():
    bb = meta_backbone("efficientnet_lite0")
    full = count_flops(bb, 224, train=True)
    assert full.train_step == pytest.approx(3 * full.forward, rel=0.05)
    bb.apply_freezing(3)
    frozen = count_flops(bb, 224, train=True)
    assert frozen.forward == full.forward and frozen.backward < full.backward / 2


def test_flops_cache_keys_on_the_trainable_set():
    bb = meta_backbone("resnet18")
    a = flops_per_image(bb, 64, train=True)
    bb.apply_freezing(2)
    b = flops_per_image(bb, 64, train=True)
    assert b.backward < a.backward


def test_cost_meter_reports_every_field_and_labels_estimates():
    with CostMeter(torch.device("cpu"), EnergySettings(country_iso_code="FRA")) as meter:
        with meter.lap("work"):
            t = time.perf_counter()
            while time.perf_counter() - t < 0.3:
                sum(range(1000))
        meter.add_images(10)
        meter.add_flops(1e9)
    r = meter.report
    assert r.time_total_s >= 0.3 and r.laps["work"] >= 0.3
    assert r.device == "cpu" and r.device_hours == pytest.approx(r.time_total_s / 3600)
    assert r.images_processed == 10 and r.flops_total == 1e9
    assert r.energy_kwh is not None and r.energy_kwh > 0 and r.co2_kg > 0
    assert r.energy_method.startswith("estimate:")  # no RAPL or NVML here: never presented as measured
    m = r.metrics()
    assert {"time_total_s", "flops_total", "energy_kwh", "co2_kg", "images_processed", "time_work_s"} <= set(m)


def test_energy_off_is_missing_not_zero():
    with CostMeter(torch.device("cpu"), EnergySettings(enabled=False)) as meter:
        pass
    assert meter.report.energy_kwh is None and "energy_kwh" not in meter.report.metrics()
    assert meter.report.energy_method.startswith("unavailable")


def test_forced_carbon_intensity_is_used():
    with CostMeter(torch.device("cpu"), EnergySettings(carbon_intensity_g_per_kwh=1000.0)) as meter:
        time.sleep(0.2)
    r = meter.report
    assert r.co2_kg == pytest.approx(r.energy_kwh * 1.0, rel=0.05)
