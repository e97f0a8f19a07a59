"""The shipped guideline rules at their edges, with every expectation written out by hand from
data/guidelines.yaml's intent: 20 labels per class is "few" (feature extraction), 21 is "enough" to
fine-tune; a budget met exactly still fits; each domain's kind of shift picks the freezing depth.

These read the real rules file, so an edit of a threshold there (or of how a threshold is compared)
changes an answer here.
"""

from __future__ import annotations

import pytest

from tlcore.guidelines import (
    GPUS,
    Situation,
    Speed,
    condition_holds,
    gpu_speed,
    project_costs,
    recommend,
    situation_facts,
)

SPEED = Speed(flops_per_s_fe=1e11, flops_per_s_ft=5e10, watts=50.0, how="test speed")
FE_FLOPS = 1e9
FT_FLOPS = {0: 3e9, 1: 2.5e9, 2: 2e9, 3: 1.5e9, "lp-ft": 3e9}


def _rec(**kw):
    s = Situation(**{"num_classes": 10, **kw})
    return recommend(s, projection=project_costs(s, SPEED, FE_FLOPS, FT_FLOPS))


@pytest.mark.parametrize(("spc", "domain", "shift", "rule", "method", "configuration"), [
    # far from ImageNet: up to 20 labels per class, features from every layer (Head2Toe)
    (1, "medical", False, "far-domain-few-labels", "fe", None),
    (20, "medical", False, "far-domain-few-labels", "fe", None),
    (20, "documents", True, "far-domain-few-labels", "fe", None),
    # from 21 on, fine-tune (Kumar 2022), every layer for an input shift (Lee 2023)
    (21, "medical", False, "enough-labels-same-distribution", "ft", 0),
    (21, "satellite", True, "enough-labels-shifted-deployment", "ft", "lp-ft"),
    # close to ImageNet: the same edge, and the second half trains (configuration 2)
    (20, "imagenet_like", False, "close-domain-few-labels", "fe", None),
    (20, "scenes", True, "close-domain-few-labels", "fe", None),
    (21, "imagenet_like", False, "enough-labels-same-distribution", "ft", 2),
    (21, "fine_grained", True, "enough-labels-shifted-deployment", "ft", "lp-ft"),
    (5000, "art", False, "enough-labels-same-distribution", "ft", 0),
])
def test_twenty_labels_per_class_is_few_and_twenty_one_is_enough(spc, domain, shift, rule, method, configuration):
    rec = _rec(samples_per_class=spc, domain=domain, deployment_shift=shift)
    assert (rec.fired[0], rec.method, rec.configuration) == (rule, method, configuration)
    assert rec.layers == ("all" if method == "fe" else None)


@pytest.mark.parametrize(("domain", "configuration", "advice"), [
    ("imagenet_like", 2, "output-shift-freeze-early"), ("fine_grained", 2, "output-shift-freeze-early"),
    ("scenes", 2, "output-shift-freeze-early"), ("textures", 0, "input-shift-train-early"),
    ("medical", 0, "input-shift-train-early"), ("satellite", 0, "input-shift-train-early"),
    ("art", 0, "input-shift-train-early"), ("documents", 0, "input-shift-train-early"),
])
def test_each_domain_gets_the_freezing_depth_of_its_kind_of_shift(domain, configuration, advice):
    rec = _rec(samples_per_class=100, domain=domain)
    assert rec.method == "ft" and rec.configuration == configuration and advice in rec.fired


def test_a_budget_met_exactly_still_fits():
    # FT configuration 3, the cheapest: 1,000 images x 60 epochs x 1.5 GFLOP / 50 TFLOP/s = 1,800 s = 0.5 h
    # at 50 W: 50 x 1,800 / 3.6e6 = 0.025 kWh
    s = dict(samples_per_class=100, epochs=60)
    assert _rec(**s, budget_hours=0.5).method == "ft"
    assert _rec(**s, budget_hours=0.4999).fired[0] == "ft-over-budget"
    assert _rec(**s, budget_kwh=0.025).method == "ft"
    over = _rec(**s, budget_kwh=0.0249)
    assert over.fired[0] == "ft-over-budget" and over.method == "fe"
    # FE: 1,000 x 1 GFLOP / 100 TFLOP/s = 10 s; a budget below that leaves nothing within it: no forced FE
    tiny = _rec(samples_per_class=100, budget_hours=1 / 3600 / 2)
    assert "ft-over-budget" not in tiny.fired


def test_budget_facts_are_only_computed_when_there_is_a_budget():
    s = Situation(samples_per_class=100, num_classes=10, epochs=60)
    p = project_costs(s, SPEED, FE_FLOPS, FT_FLOPS)
    facts = situation_facts(s, p)
    assert facts == {"samples_per_class": 100, "num_classes": 10, "domain": "imagenet_like", "shift": "output",
                     "tuning_time": "hours", "deployment_shift": False, "gpu": False, "ft_fits_budget": True,
                     "fe_fits_budget": True}
    on_gpu = situation_facts(Situation(samples_per_class=5, num_classes=3, device="t4", budget_hours=1e-9), p)
    assert on_gpu["gpu"] is True and on_gpu["ft_fits_budget"] is False and on_gpu["fe_fits_budget"] is False


def test_conditions_compare_inclusively_at_both_ends():
    facts = {"samples_per_class": 21, "domain": "medical", "deployment_shift": False}
    assert condition_holds("samples_per_class", {"min": 21}, facts)
    assert not condition_holds("samples_per_class", {"min": 22}, facts)
    assert condition_holds("samples_per_class", {"max": 21}, facts)
    assert not condition_holds("samples_per_class", {"max": 20}, facts)
    assert condition_holds("samples_per_class", {"min": 21, "max": 21}, facts)
    assert not condition_holds("num_classes", {"min": 1}, facts)  # an unknown fact meets no range
    assert condition_holds("domain", ["art", "medical"], facts) and not condition_holds("domain", ["art"], facts)
    assert condition_holds("deployment_shift", False, facts) and not condition_holds("deployment_shift", True, facts)


@pytest.mark.parametrize(("key", "tflops", "watts"), [
    ("t4", 65, 70), ("l4", 121, 72), ("v100", 125, 300), ("a100", 312, 400), ("h100", 989, 700)])
def test_named_gpus_project_at_30_percent_of_their_published_dense_fp16_peak(key, tflops, watts):
    """Spec sheets: T4 65 TFLOP/s (70 W), L4 121 (72 W), V100 SXM2 125 (300 W), A100 SXM4 312 (400 W),
    H100 SXM5 989 (700 W), dense fp16/bf16 tensor throughput; the page assumes 30 % utilisation."""
    sp = gpu_speed(key)
    assert sp.flops_per_s_fe == sp.flops_per_s_ft == pytest.approx(tflops * 1e12 * 0.3)
    assert sp.watts == watts and f"{tflops} TFLOP/s" in sp.how and "30%" in sp.how
    assert GPUS[key].label in sp.how
