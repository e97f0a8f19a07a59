"""The default FE classifier scales with the data, and a fit that stops at its cap is a verdict the user sees.

The default, `auto`, fits the seed's LinearSVC on few-shot sets (where it is the more accurate, docs/benchmarks.md)
and `linear` above 1,000 training rows; LinearSVC took 3.6 s against 2.0 s of extraction at 1,440 rows here."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tlcore import classifiers as classifier_module
from tlcore import experiments
from tlcore.classifiers import AUTO_LINEARSVC_MAX_ROWS, build_classifier, fit_predict
from tlcore.classifiers.linear_svm import DeviceLinearSVM
from tlcore.quality import CAPPED, QUALITY_REASON_TAG, QUALITY_TAG
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec, FeatureExtractionParams
from tlcore.tracking import Tracker

N_CLASSES = 8


def write_pattern_folder(root, train_per_class: int, test_per_class: int, size: int = 16):
    """Seed-layout PNGs: class c is a stripe pattern at its own angle and frequency, random phase,
    colours and noise, so the classes are learnable but not trivially separable."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c in range(N_CLASSES):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            angle = np.pi * c / N_CLASSES + rng.normal(0, 0.15, n)
            freq = (0.35 + 0.25 * (c % 2)) * rng.uniform(0.85, 1.15, n)
            phase = rng.uniform(0, 2 * np.pi, n)
            for j in range(n):
                wave = np.sin(freq[j] * (np.cos(angle[j]) * xx + np.sin(angle[j]) * yy) + phase[j])
                fg, bg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
                rgb = (wave[..., None] > 0) * fg + (wave[..., None] <= 0) * bg + rng.normal(0, 0.25, (size, size, 3))
                Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB").save(folder / f"{j:04d}.png")
    return root


def test_auto_fits_linearsvc_up_to_its_row_limit_and_linear_above():
    from sklearn.svm import LinearSVC

    assert AUTO_LINEARSVC_MAX_ROWS == 1000
    assert isinstance(build_classifier("auto", 0, 1000), LinearSVC)
    assert isinstance(build_classifier("auto", 0, 1001), DeviceLinearSVM)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)), np.repeat([0, 1], 20)
    x[y == 1] += 2.0
    assert fit_predict("auto", x, y, x[:3]).fitted == "linearsvc"
    assert fit_predict("linear", x, y, x[:3]).fitted == "linear"


@pytest.mark.slow
def test_the_default_classifier_fits_the_largest_point_faster_than_its_extraction(tmp_path, store_dir):
    root = write_pattern_folder(tmp_path / "patterns", train_per_class=270, test_per_class=60)
    tracker = Tracker(str(store_dir))
    spec = ExperimentSpec("fe", str(root), backbone="efficientnet_lite0", resolution=32, samples_per_class=(10, 260),
                          splits=1, batch_size=128, measure_energy=False, params=FeatureExtractionParams(cache=False))
    result = experiments.run(spec, Reporter(), tracker)
    runs = sorted((tracker.get_run(r) for r in result.run_ids), key=lambda r: int(r.data.params["samples_per_class"]))
    smallest, largest = runs[0].data.params, runs[-1]
    assert smallest["classifier"] == "auto" and smallest["classifier_fitted"] == "linearsvc"  # 80 rows
    m, p = largest.data.metrics, largest.data.params
    assert p["classifier"] == "auto" and int(p["n_train_images"]) == 260 * N_CLASSES  # 2,080 rows: above the limit
    assert p["classifier_fitted"] == "linear"
    assert p["classifier_converged"].lower() == "true" and largest.data.tags[QUALITY_TAG] == "converged"
    assert m["time_classifier_s"] < m["time_extract_s"], (m["time_classifier_s"], m["time_extract_s"])
    assert m["test_accuracy"] > 0.6  # chance is 12.5 %


def test_a_fit_stopped_at_its_cap_is_a_capped_verdict_on_the_run(monkeypatch, store_dir, digits_folder):
    monkeypatch.setitem(classifier_module.classifiers._entries, "linear",
                        lambda random_state, n_samples: DeviceLinearSVM(max_iter=1, random_state=random_state))
    messages: list[tuple[str, str]] = []

    class Recorder(Reporter):
        def message(self, text, level="info"):
            messages.append((level, text))

    tracker = Tracker(str(store_dir))
    spec = ExperimentSpec("fe", str(digits_folder), resolution=32, samples_per_class=(4,), splits=1, num_workers=0,
                          measure_energy=False, params=FeatureExtractionParams(classifier="linear"))
    result = experiments.run(spec, Recorder(), tracker)
    run = tracker.get_run(result.run_ids[0])
    assert run.data.params["classifier_converged"].lower() == "false"
    assert run.data.tags[QUALITY_TAG] == CAPPED and "max_iter" in run.data.tags[QUALITY_REASON_TAG]
    assert any(level == "warning" and "did not converge" in text for level, text in messages)
