"""A feature-extraction sweep's per-point overhead (issue 14.5): one energy tracker for the whole sweep, its
energy shared among the points by their fit time, and each point's run written in one batch, with the same
keys as before. CodeCarbon is replaced by a stand-in that counts its starts and reports a known energy."""

from __future__ import annotations

import time
from collections import Counter
from types import SimpleNamespace

import codecarbon
import numpy as np
import pytest

from tests.test_feature_extraction import Recorder
from tlcore import experiments, quality
from tlcore.measure import CostReport, apportion
from tlcore.methods import feature_extraction as fe
from tlcore.methods.common import SplitPoint
from tlcore.specs import ExperimentSpec
from tlcore.tracking import Tracker

KWH_PER_S = 1e-5  # the stand-in tracker's power: its energy is this x the seconds since it started
G_PER_KWH = 50.0


class FakeTracker:
    """CodeCarbon's offline tracker as the meter uses it, counting starts and stops."""

    starts = 0
    stops = 0

    def __init__(self, **kwargs) -> None:
        self._hardware = []
        self._t0 = None

    def _data(self):
        kwh = (time.perf_counter() - self._t0) * KWH_PER_S
        return SimpleNamespace(energy_consumed=kwh, emissions=kwh * G_PER_KWH / 1000, cpu_energy=kwh,
                               gpu_energy=0.0, ram_energy=0.0)

    def start(self) -> None:
        FakeTracker.starts += 1
        self._t0 = time.perf_counter()

    def _measure_power_and_energy(self) -> None:
        pass

    def _prepare_emissions_data(self):
        return self._data()

    def stop(self) -> None:
        FakeTracker.stops += 1
        self.final_emissions_data = self._data()


@pytest.fixture
def fake_codecarbon(monkeypatch):
    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", FakeTracker)
    FakeTracker.starts = FakeTracker.stops = 0
    return FakeTracker


class CountingClient:
    """An MlflowClient that remembers each store call: (method, run id or experiment id)."""

    def __init__(self, client) -> None:
        self._client = client
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            self.calls.append((name, str(args[0]) if args else ""))
            return attr(*args, **kwargs)

        return call

    def of(self, run_id: str) -> Counter:
        return Counter(name for name, target in self.calls if target == run_id)


# Every key a point's run and the sweep's parent logged before the change (read off a run of the previous code).
CHILD_PARAMS = {"backbone", "batch_size", "classifier", "classifier_converged", "classifier_fitted", "cost_basis",
                "crops_per_image", "dataset", "device", "discretize", "energy_method", "eval_set", "feature_cache",
                "job", "layers", "method", "model_selection", "n_features", "n_taps", "n_train_images",
                "num_classes", "resolution", "samples_per_class", "seed", "split", "split_origin", "standardize",
                "taps", "threshold_high", "threshold_low", "train_hash", "use_crops", "weights", "weights_used"}
CHILD_METRICS = {"carbon_intensity_g_per_kwh", "co2_kg", "device_hours", "energy_kwh", "flops_total",
                 "images_processed", "n_eval_images", "n_train_images_used", "test_accuracy", "test_plain_accuracy",
                 "time_classifier_s", "time_extract_s", "time_postprocess_s", "time_total_s"}
CHILD_TAGS = {"job", "method", "mlflow.parentRunId", "mlflow.runName", "quality", "quality_reason", "sweep_id",
              "sweep_point", "tlcore.heartbeat", "tlcore.host", "tlcore.pid", "tlcore.process_start", "tlcore_version"}
PARENT_METRICS = {"carbon_intensity_g_per_kwh", "children_time_total_s", "co2_kg", "curve_test_accuracy_mean",
                  "curve_test_accuracy_std", "device_hours", "energy_kwh", "feature_cache_hits", "feature_cache_misses",
                  "flops_total", "images_needed", "images_processed", "images_skipped", "job_time_s",
                  "time_classifier_s", "time_extract_s", "time_postprocess_s", "time_total_s"}


def _spec(dataset: str, **kw) -> ExperimentSpec:
    defaults = dict(backbone="efficientnet_lite0", resolution=32, samples_per_class=(2, 4), splits=2, num_workers=0,
                    batch_size=64, measure_energy=True, job="job-1")
    return ExperimentSpec("fe", dataset, **{**defaults, **kw})


def test_the_shares_add_up_to_what_the_sweep_measured_outside_extraction_in_proportion_to_fit_time():
    assert apportion(6.0, [1.0, 2.0, 3.0]) == pytest.approx([1.0, 2.0, 3.0])
    assert apportion(6.0, [0.0, 0.0]) == [3.0, 3.0]  # nothing timed: equal shares, never a lost remainder
    report = CostReport(10.0, "cpu", 0.0, 0, 0.0, 1e-3, 5e-5, "estimate: x", 50.0)
    stats = fe.ExtractionStats(needed=10, hits=0, extracted=10, energy_kwh=4e-4)
    empty = np.array([], int)
    times = [(0.1, 0.2), (0.3, 0.0), (0.2, 0.4)]
    outcomes = [fe.PointOutcome(SplitPoint(1, k, empty, "test", empty, empty, empty), f"r{k}",
                                {"time_postprocess_s": p, "time_classifier_s": c}) for k, (p, c) in enumerate(times)]
    shares = fe.fit_shares(report, stats, outcomes)
    assert shares == pytest.approx([1.5e-4, 1.5e-4, 3e-4])  # 6e-4 kWh outside extraction, split 0.3 : 0.3 : 0.6
    assert sum(shares) + stats.energy_kwh == pytest.approx(report.energy_kwh, rel=1e-12)
    off = CostReport(10.0, "cpu", 0.0, 0, 0.0, None, None, "unavailable: energy measurement turned off", None)
    assert fe.fit_shares(off, stats, outcomes) is None


def test_a_sweep_starts_one_energy_tracker_and_shares_its_energy_among_the_points(store_dir, digits_folder,
                                                                                   fake_codecarbon):
    tracker = Tracker(str(store_dir))
    result = experiments.run(_spec(str(digits_folder)), Recorder(), tracker)
    assert (fake_codecarbon.starts, fake_codecarbon.stops) == (1, 1)  # not one per point, nor one for extraction
    parent = tracker.get_run(result.parent_run_id).data
    children = [tracker.get_run(r).data for r in result.run_ids]
    assert len(children) == 4
    # the logged figures, read back: child energy = its images x the per-image extraction energy + its share
    n = np.array([c.metrics["n_train_images_used"] + c.metrics["n_eval_images"] for c in children])
    energy = np.array([c.metrics["energy_kwh"] for c in children])
    fit_s = np.array([c.metrics["time_postprocess_s"] + c.metrics["time_classifier_s"] for c in children])
    extracted = parent.metrics["images_processed"]
    total = parent.metrics["energy_kwh"]
    # sum(energy) = kwh_per_image x sum(n) + (total - kwh_per_image x extracted): solve for kwh_per_image
    kwh_per_image = (energy.sum() - total) / (n.sum() - extracted)
    shares = energy - n * kwh_per_image
    assert kwh_per_image > 0 and (shares > 0).all()
    assert shares.sum() + kwh_per_image * extracted == pytest.approx(total, rel=1e-9)  # nothing lost or counted twice
    assert shares / fit_s == pytest.approx([shares.sum() / fit_s.sum()] * 4, rel=1e-6)  # in proportion to fit time
    for c in children:
        assert c.params["energy_method"] == "estimate: unknown; fit apportioned from the sweep's tracker by time"
        assert c.metrics["co2_kg"] == pytest.approx(c.metrics["energy_kwh"] * G_PER_KWH / 1000)
    assert parent.params["energy_method"] == "estimate: unknown"  # the sweep's own figure is measured, not shared


def test_a_single_run_gets_the_whole_measurement(store_dir, digits_folder, fake_codecarbon):
    tracker = Tracker(str(store_dir))
    result = experiments.run(_spec(str(digits_folder), model_selection=True), Recorder(), tracker)
    assert result.parent_run_id is None and (fake_codecarbon.starts, fake_codecarbon.stops) == (1, 1)
    run = tracker.get_run(result.run_ids[0]).data
    assert run.metrics["energy_kwh"] > 0 and run.metrics["co2_kg"] > 0


def test_each_point_is_one_run_written_in_one_batch_with_the_keys_it_always_had(store_dir, digits_folder,
                                                                                 fake_codecarbon):
    tracker = Tracker(str(store_dir))
    counting = CountingClient(tracker.client)
    tracker._client = counting
    result = experiments.run(_spec(str(digits_folder)), Recorder(), tracker)
    for run_id in result.run_ids:
        # created with its tags; params, metrics and verdict in one batch; ended; its energy share at the sweep's end
        assert counting.of(run_id) == {"log_batch": 2, "set_terminated": 1}, counting.of(run_id)
        run = tracker.get_run(run_id)
        d = run.data
        assert (set(d.params), set(d.metrics), set(d.tags)) == (CHILD_PARAMS, CHILD_METRICS, CHILD_TAGS)
        # the verdict judged from what the run held in memory is the one the store's copy earns
        again = quality.judge_run("fe", "FINISHED", d.params, d.metrics, [], None)
        assert d.tags[quality.QUALITY_TAG] == again.tags()[quality.QUALITY_TAG] and run.info.status == "FINISHED"
    assert sum(name == "create_run" for name, _ in counting.calls) == 5  # the parent and 4 points
    assert set(tracker.get_run(result.parent_run_id).data.metrics) == PARENT_METRICS
