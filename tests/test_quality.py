"""Run verdicts and the statistics behind them (tlcore.quality), on synthetic histories and known numbers."""

from __future__ import annotations

import math

import pytest

from tlcore import quality
from tlcore.quality import (
    CAPPED,
    CONVERGED,
    DIVERGED,
    NEAR_CHANCE,
    NO_SIGNAL,
    SIGNAL,
    chance_interval,
    judge_layer,
    judge_run,
    judge_training,
    summarize,
    t_interval,
    welch_interval,
)

# --- statistics on numbers worked out by hand ---------------------------------------------------


def _binom_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))


@pytest.mark.parametrize("n, classes", [(100, 10), (40, 2), (360, 10)])
def test_chance_interval_is_the_central_95_percent_of_guessing(n, classes):
    lo, hi = chance_interval(n, classes)
    p = 1 / classes
    k_lo, k_hi = round(lo * n), round(hi * n)
    # by the definition of the quantiles: P(X < k_lo) <= 2.5% < P(X <= k_lo), and likewise at the top
    assert _binom_cdf(k_lo - 1, n, p) <= 0.025 < _binom_cdf(k_lo, n, p)
    assert _binom_cdf(k_hi - 1, n, p) < 0.975 <= _binom_cdf(k_hi, n, p)


def test_chance_interval_known_values():
    # Binomial(100, 0.1): P(X <= 4) = 0.0237, P(X <= 5) = 0.0576, P(X > 15) = 0.0399, P(X > 16) = 0.0206, so the
    # 2.5% and 97.5% quantiles are 5 and 16; Binomial(40, 0.5): P(X <= 13) = 0.0192, P(X <= 14) = 0.0403 -> 14, 26
    assert chance_interval(100, 10) == pytest.approx((0.05, 0.16))
    assert chance_interval(40, 2) == pytest.approx((14 / 40, 26 / 40))


def test_t_interval_on_known_numbers():
    # mean 0.85, sd 0.05, n 3: half-width t(0.975, 2) * 0.05 / sqrt(3) = 4.302653 * 0.0288675 = 0.124207
    mean, lo, hi = t_interval([0.80, 0.85, 0.90])
    assert mean == pytest.approx(0.85)
    assert (hi - mean) == pytest.approx(0.124207, abs=1e-5) and (mean - lo) == pytest.approx(0.124207, abs=1e-5)
    one = t_interval([0.7])
    assert one[0] == 0.7 and math.isnan(one[1]) and math.isnan(one[2])


def _t_cdf(x: float, dof: float, steps: int = 20000) -> float:
    """Student t CDF by Simpson's rule on its density (independent of scipy)."""
    c = math.gamma((dof + 1) / 2) / (math.sqrt(dof * math.pi) * math.gamma(dof / 2))
    pdf = lambda u: c * (1 + u * u / dof) ** (-(dof + 1) / 2)
    h = x / steps
    area = pdf(0) + pdf(x) + sum((4 if i % 2 else 2) * pdf(i * h) for i in range(1, steps))
    return 0.5 + area * h / 3


def test_welch_interval_on_known_numbers():
    # a = (1, 2, 3), b = (4, 6, 8): diff -4; se = sqrt(1/3 + 4/3); dof = (5/3)^2 / ((1/3)^2 / 2 + (4/3)^2 / 2)
    diff, lo, hi = welch_interval([1, 2, 3], [4, 6, 8])
    se, dof = math.sqrt(5 / 3), (5 / 3) ** 2 / ((1 / 3) ** 2 / 2 + (4 / 3) ** 2 / 2)
    assert diff == pytest.approx(-4.0) and (hi - diff) == pytest.approx(diff - lo)
    assert _t_cdf((hi - diff) / se, dof) == pytest.approx(0.975, abs=1e-5)


# --- verdicts of one run -----------------------------------------------------------------------------


def test_early_stopped_training_converged():
    v = judge_training([1.0, 0.8, 0.7, 0.71, 0.72, 0.73], 6, 40, stopped_early=True)
    assert v.quality == CONVERGED and "Early stopping" in v.reason


def test_stopped_at_the_cap_while_improving_is_capped():
    v = judge_training([1.0, 0.9, 0.8, 0.7, 0.6, 0.5], 6, 6, stopped_early=False)
    assert v.quality == CAPPED and v.weak and "still falling" in v.reason


def test_stopped_at_the_cap_on_a_plateau_converged():
    # the last 3 epochs never beat the best before them (0.60 at epoch 4)
    v = judge_training([1.0, 0.8, 0.7, 0.60, 0.61, 0.62, 0.60], 7, 7, stopped_early=False)
    assert v.quality == CONVERGED and not v.weak


def test_a_new_low_inside_the_patience_window_is_still_improving():
    v = judge_training([1.0, 0.8, 0.7, 0.60, 0.61, 0.59, 0.62], 7, 7, stopped_early=False, patience=3)
    assert v.quality == CAPPED


def test_one_epoch_is_too_few_to_have_converged():
    v = judge_training([2.1], 1, 1, stopped_early=False)
    assert v.quality == CAPPED and "too few" in v.reason


@pytest.mark.parametrize("accuracy, n, classes, near", [
    (0.12, 360, 10, True),    # guessing scores 6.9-13.3% on 360 images of 10 classes
    (0.158, 360, 10, False),  # the quick examples' FT at 15.8%: above guessing, but see capped
    (0.55, 40, 2, True),      # 2 classes, 40 images: guessing reaches 35-65%
    (0.70, 40, 2, False),
    (0.60, 400, 2, False),    # 400 images: guessing stays within 45-55%
])
def test_near_chance_depends_on_classes_and_test_size(accuracy, n, classes, near):
    v = judge_run("fe", "FINISHED", {"num_classes": str(classes)}, {"test_accuracy": accuracy, "n_eval_images": n})
    assert (v.quality == NEAR_CHANCE) == near
    if near:
        assert v.weak and f"{n} test images of {classes} classes" in v.reason


def test_near_chance_wins_over_converged_for_training_runs():
    v = judge_run("ft", "FINISHED", {"num_classes": "10", "epochs": "40"},
                  {"test_accuracy": 0.10, "n_eval_images": 300, "stopped_early": 1.0, "epochs_run": 14.0},
                  val_losses=[2.3] * 14)
    assert v.quality == NEAR_CHANCE


def test_feature_extraction_converges_unless_the_classifier_hit_its_cap():
    ok = judge_run("fe", "FINISHED", {"num_classes": "10", "classifier": "linearsvc"},
                   {"test_accuracy": 0.9, "n_eval_images": 300})
    assert ok.quality == CONVERGED
    capped = judge_run("fe", "FINISHED", {"num_classes": "10", "classifier": "linearsvc",
                                          "classifier_converged": "false"}, {"test_accuracy": 0.9})
    assert capped.quality == CAPPED and "max_iter" in capped.reason


def test_fine_tuning_verdict_from_what_the_run_logged():
    params = {"num_classes": "10", "epochs": "6", "patience": "3"}
    capped = judge_run("ft", "FINISHED", params, {"test_accuracy": 0.7, "n_eval_images": 300, "epochs_run": 6.0,
                                                  "stopped_early": 0.0},
                       val_losses=[2.0, 1.5, 1.2, 1.0, 0.9, 0.8])
    assert capped.quality == CAPPED
    stopped = judge_run("ft", "FINISHED", {**params, "epochs": "40"},
                        {"test_accuracy": 0.9, "n_eval_images": 300, "epochs_run": 20.0, "stopped_early": 1.0},
                        val_losses=[1.0] * 20)
    assert stopped.quality == CONVERGED


def test_diverged_runs_are_labelled_even_though_they_failed():
    v = judge_run("ft", "FAILED", {}, {}, error_type="TrainingDiverged")
    assert v.quality == DIVERGED and v.weak and "learning rate" in v.reason
    v = judge_run("quanta", "FAILED", {}, {"train_loss": float("nan")})
    assert v.quality == DIVERGED
    assert judge_run("ft", "KILLED", {}, {"test_accuracy": 0.9}) is None  # unfinished: no verdict
    assert judge_run("ft", "FAILED", {}, {}, error_type="DeviceOutOfMemory") is None


def test_a_sweep_is_converged_only_when_every_point_is():
    assert summarize([CONVERGED, CONVERGED]).quality == CONVERGED
    v = summarize([CONVERGED, CAPPED, CAPPED, NEAR_CHANCE])
    assert v.quality == CAPPED and v.reason.startswith("3 of 4 runs are weak evidence")
    assert summarize([None, "nonsense"]) is None


# --- QUANTA: a layer against its control -------------------------------------------------------------


def test_layer_signal_needs_the_interval_to_exclude_zero():
    up = judge_layer("0", [0.95, 0.94, 0.96], [0.90, 0.91, 0.905])
    assert up.quality == SIGNAL and up.direction == 1 and up.meaning == "the target keeps the source's features"
    down = judge_layer("3", [0.80, 0.81, 0.79], [0.90, 0.91, 0.905])
    assert down.quality == SIGNAL and down.direction == -1 and "prefers its own" in down.meaning
    overlap = judge_layer("1", [0.95, 0.85, 0.92], [0.90, 0.91, 0.88])
    assert overlap.quality == NO_SIGNAL and "includes 0" in overlap.reason


def test_layer_with_one_run_a_side_uses_the_measured_margin():
    m = quality.LAMBDA_SINGLE_RUN_MARGIN
    assert judge_layer("0", [0.90 + m + 0.005], [0.90]).quality == SIGNAL
    assert judge_layer("0", [0.90 + m - 0.005], [0.90]).quality == NO_SIGNAL


def test_lambda_that_did_not_move_is_no_signal():
    v = judge_layer("0", [0.9004], [0.9003], trained_start=[quality.LAMBDA_START])
    assert v.quality == NO_SIGNAL and "hardly moved" in v.reason


def test_no_control_means_no_verdict():
    v = judge_layer("0", [0.99], [])
    assert v.quality == NO_SIGNAL and "No random-source control" in v.reason
