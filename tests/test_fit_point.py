"""One feature-extraction point on a hand-made feature bank (no network): what the classifier gets, the
score, and the standalone cost, every figure worked out by hand. The meter is a stand-in with known
laps, so the arithmetic of the cost columns is exact; a point's energy is its images' extraction plus its
share of the sweep's tracker (``point_energy``), also worked out by hand."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest
import torch

from tlcore.errors import DatasetError
from tlcore.measure.meter import CostReport
from tlcore.methods import feature_extraction as fe
from tlcore.methods.common import SplitPoint
from tlcore.specs import FeatureExtractionParams

# 6 images; feature 0: train 0, 0 | 10, 10 (mean 5, std 5); feature 1 is constant in training (std 0 -> 0)
FEATURES = np.array([[0.0, 3.0], [0.0, 3.0], [10.0, 3.0], [10.0, 3.0], [2.0, 9.0], [6.0, 1.0], [12.0, 3.0]],
                    dtype=np.float32)
LABELS = np.array([0, 0, 1, 1, 0, 1, 0])
TRAIN, EVAL = np.array([0, 1, 2, 3]), np.array([4, 5, 6])
COST = fe.ExtractionCost(seconds_per_image=0.01, kwh_per_image=1e-6, energy_method="estimate: test",
                         carbon_intensity_g_per_kwh=40.0, basis="measured in this sweep over 7 images")


class Meter:
    """A cost meter whose post-processing took 0.25 s, whose fit took 0.5 s, and which measured 2e-6 kWh."""

    intensity: float | None = 60.0
    energy: float | None = 2e-6
    made: ClassVar[list] = []  # (device, energy settings) of every meter

    def __init__(self, device, energy) -> None:
        self.report = None
        self.names: list[str] = []
        Meter.made.append((device, energy))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        took = {"postprocess": 0.25, "classifier": 0.5}
        self.report = CostReport(0.75, "cpu", 0.75 / 3600, 0, 0.0, self.energy, None, "estimate: test",
                                 self.intensity, {name: took[name] for name in self.names})

    @contextmanager
    def lap(self, name):
        self.names.append(name)
        yield


@pytest.fixture
def spy(monkeypatch):
    seen = {}
    real = fe.fit_predict

    def fit(name, x_train, y_train, x_eval, **kw):
        seen.update(name=name, x_train=x_train, y_train=y_train, x_eval=x_eval, kw=kw)
        return real(name, x_train, y_train, x_eval, **kw)

    monkeypatch.setattr(fe, "fit_predict", fit)
    monkeypatch.setattr(fe, "CostMeter", Meter)
    return seen



def _fit(params=None, available=None, train=TRAIN, eval_=EVAL, n_crops=1, cost=COST):
    bank = fe.FeatureBank(np.arange(7), FEATURES, np.ones(7, bool) if available is None else available)
    point = SplitPoint(2, 0, train, "test", eval_, np.array([], int), eval_)
    ds = SimpleNamespace(labels=LABELS, name="toy")
    return fe.fit_point(point, bank, ds, params or FeatureExtractionParams(), 3, torch.device("cpu"),
                        cost, 1000, n_crops)


def test_the_classifier_gets_codes_from_the_training_statistics(spy):
    _, run_params, converged = _fit()
    # feature 0 with mean 5 and std 5: train -1 -1 1 1; eval 2 -> -0.6 -> -1, 6 -> 0.2 -> 1, 12 -> 1.4 -> 1
    # feature 1 is constant in training: 0 everywhere, whatever the eval value
    assert spy["x_train"].tolist() == [[-1, 0], [-1, 0], [1, 0], [1, 0]]
    assert spy["x_eval"].tolist() == [[-1, 0], [1, 0], [1, 0]]
    assert spy["y_train"].tolist() == [0, 0, 1, 1] and spy["name"] == "auto"
    assert spy["kw"] == {"random_state": 3, "device": "cpu"}  # the run's device: a torch classifier fits there
    assert converged and run_params["classifier_converged"] is True
    # the point's own meter times it on its device and starts no energy tracker: the sweep's one tracker does
    assert Meter.made[-1] == (torch.device("cpu"), fe.TIMING_ONLY) and not fe.TIMING_ONLY.enabled


def test_per_set_statistics_and_raw_z_scores_when_asked(spy):
    _fit(FeatureExtractionParams(standardize="per_set"))
    # eval's own statistics: feature 0 (2, 6, 12): mean 6.67, std 4.11 -> z -1.13, -0.16, 1.30;
    # feature 1 (9, 1, 3): mean 4.33, std 3.40 -> z 1.37, -0.98, -0.39
    assert spy["x_eval"][:, 0].tolist() == [-1, 0, 1] and spy["x_eval"][:, 1].tolist() == [1, -1, -1]
    _fit(FeatureExtractionParams(discretize=False))
    np.testing.assert_allclose(spy["x_eval"], [[-0.6, 0.0], [0.2, 0.0], [1.4, 0.0]], atol=1e-6)
    _fit(FeatureExtractionParams(threshold_high=0.3, threshold_low=-0.7))
    assert spy["x_eval"][:, 0].tolist() == [0, 0, 1]  # -0.6 is not below -0.7; 0.2 is not above 0.3


def test_the_embedding_defaults_and_its_refusal():
    train = np.array([[0.0], [10.0]], dtype=np.float32)  # mean 5, std 5
    _, out = fe.full_network_embedding(train, [np.array([[7.5], [4.0]], dtype=np.float32)])
    assert out.tolist() == [[1], [0]]  # z 0.5 > 0.15; z -0.2 is not below -0.25
    with pytest.raises(ValueError, match=r"^statistics must be 'train' or 'per_set', got 'test'$"):
        fe.full_network_embedding(train, [], statistics="test")


def test_score_and_standalone_cost_by_hand(spy):
    metrics, run_params, _ = _fit()
    # a linear SVM on the codes: [-1, 0] is class 0, [1, 0] class 1
    # eval labels 0, 1, 0; predictions 0, 1, 1: plain 2/3, balanced (1/2 + 1) / 2 = 3/4
    assert metrics["test_accuracy"] == pytest.approx(0.75) and metrics["test_plain_accuracy"] == pytest.approx(2 / 3)
    images = 4 + 3
    assert metrics["time_extract_s"] == pytest.approx(images * 0.01)
    assert (metrics["time_postprocess_s"], metrics["time_classifier_s"]) == (0.25, 0.5)
    assert metrics["time_total_s"] == pytest.approx(0.07 + 0.75)
    assert metrics["device_hours"] == pytest.approx(0.82 / 3600)
    assert (metrics["images_processed"], metrics["flops_total"]) == (7.0, 7000.0)
    assert (metrics["n_train_images_used"], metrics["n_eval_images"]) == (4.0, 3.0)
    assert "energy_kwh" not in metrics  # known once the sweep's tracker stops
    # 7 images x 1e-6 kWh + a 2e-6 kWh share of the sweep's other energy, at the sweep's 60 g/kWh
    energy = fe.point_energy(metrics, COST, 2e-6, 60.0)
    assert energy["energy_kwh"] == pytest.approx(7e-6 + 2e-6)
    assert energy["co2_kg"] == pytest.approx(9e-6 * 60 / 1000) and energy["carbon_intensity_g_per_kwh"] == 60.0
    assert run_params["energy_method"] == "estimate: test; fit apportioned from the sweep's tracker by time"
    assert run_params["cost_basis"] == ("standalone: 7 images x extraction cost per image (measured in this sweep "
                                        "over 7 images) + this run's measured post-processing and classifier fit "
                                        "(its energy: the sweep's energy outside extraction, shared by fit time)")


def test_crops_count_every_crop_as_an_input_and_energy_falls_back_on_the_extractions_intensity(spy):
    metrics, _, _ = _fit(n_crops=10)
    assert metrics["images_processed"] == 70.0 and metrics["flops_total"] == 70000.0
    assert metrics["time_extract_s"] == pytest.approx(0.07)  # the per-image cost already holds the crops
    energy = fe.point_energy(metrics, COST, 2e-6, None)  # the sweep's tracker gave no intensity: the extraction's
    assert energy["co2_kg"] == pytest.approx(9e-6 * 40 / 1000) and energy["carbon_intensity_g_per_kwh"] == 40.0
    assert fe.point_energy(metrics, COST, None, 60.0) == {}  # no sweep measurement: missing, not zero
    no_energy_cost = fe.ExtractionCost(0.01, None, "unavailable: energy measurement turned off", None, "x")
    assert fe.point_energy(metrics, no_energy_cost, 2e-6, 60.0) == {}
    _, run_params, _ = _fit(cost=no_energy_cost)
    assert run_params["energy_method"] == "unavailable: energy measurement turned off"  # nothing apportioned


def test_unreadable_images_are_left_out_and_a_point_needs_two_classes_and_an_eval_set(spy):
    skipped = np.ones(7, bool)
    skipped[5] = False  # image 5 (an eval image) could not be read
    metrics, _, _ = _fit(available=skipped)
    assert metrics["n_eval_images"] == 2.0 and metrics["images_processed"] == 6.0
    one_class = np.ones(7, bool)
    one_class[[2, 3]] = False
    with pytest.raises(DatasetError, match=r"training split spc=2 split=0 of toy holds 1 class; a classifier needs "
                                           r"at least two"):
        _fit(available=one_class)
    no_eval = np.ones(7, bool)
    no_eval[[4, 5, 6]] = False
    with pytest.raises(DatasetError, match=r"^After skipping unreadable images the test set of toy is empty\.$"):
        _fit(available=no_eval)
