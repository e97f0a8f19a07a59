"""Evidence for the guideline walkthrough, read from a store of known runs (tests/analysis_store.py)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tests.analysis_store import analysis_store  # noqa: F401  (a fixture)
from tlcore import results
from tlcore.evidence import calibrate_speed, configuration_of, gather_evidence, machine_speed
from tlcore.guidelines import Situation, recommend
from tlcore.tracking import Tracker


@pytest.fixture(scope="module")
def frames(analysis_store):  # noqa: F811
    uri = Tracker(str(analysis_store[0])).uri
    return results.load_view(uri, "tradeoffs"), results.load_view(uri, "quanta")


def test_the_closest_curves_give_accuracy_crossover_and_depth(frames):
    runs, quanta = frames
    ev = gather_evidence(runs, quanta, Situation(samples_per_class=5, num_classes=10, dataset="digits"))
    assert (ev.dataset, ev.backbone, ev.closest_spc, ev.measured_up_to) == ("digits", "efficientnet_lite0", 5, 10)
    # FE at 5 per class: splits .70 and .72 (the third FAILED); the best FT there is config 0 (.68 .70 .72)
    assert ev.fe_accuracy == pytest.approx((0.71, pd.Series([0.70, 0.72]).std()))
    assert ev.ft_accuracy[0] == pytest.approx(0.70) and ev.ft_configuration == 0
    # FT config 0 overtakes FE between 5 (.70 vs .71) and 10 (.90 vs .80), in log x; config 3 never does
    assert ev.crossover_configuration == 0
    assert ev.crossover_spc == pytest.approx(5 * 2 ** (0.01 / 0.11))
    # lambda_S, trained vs random control: layer 0 .94 > .70, layer 1 .89 > .85, layer 2 .61 < .90
    assert (ev.quanta_depth, ev.quanta_layers, ev.quanta_dataset) == (2, 3, "digits:5-9")
    assert set(ev.curves["variant"]) == {"FE linearsvc", "FT config 0", "FT config 3"}


def test_the_evidence_drives_the_recommendation(frames):
    runs, quanta = frames
    s = Situation(samples_per_class=20, num_classes=10, domain="medical", dataset="digits")
    rec = recommend(s, evidence=gather_evidence(runs, quanta, s))
    assert rec.method == "ft" and rec.fired[0] == "measured-in-your-runs"
    assert "overtook feature extraction at about 5 samples per class; you have 20" in rec.reasons[0].text
    assert rec.configuration == 2 and "measured-quanta-depth" in rec.fired  # 2 of 3 layers transfer: freeze 2/4
    few = Situation(samples_per_class=2, num_classes=10, dataset="digits")
    assert recommend(few, evidence=gather_evidence(runs, quanta, few)).method == "fe"


def test_no_runs_no_evidence_and_model_selection_runs_do_not_count(frames):
    runs, quanta = frames
    s = Situation(samples_per_class=5, num_classes=10)
    assert gather_evidence(runs.iloc[0:0], quanta.iloc[0:0], s) is None
    selected = runs.assign(model_selection="True")  # scored on val: not comparable with test curves
    ev = gather_evidence(selected, quanta, s)
    assert ev.closest_spc is None and ev.quanta_depth == 2


def test_without_a_control_quanta_says_what_is_missing(frames):
    runs, quanta = frames
    trained_only = quanta[quanta["source_kind"] == results.TRAINED_SOURCE]
    ev = gather_evidence(runs.iloc[0:0], trained_only, Situation(samples_per_class=5, num_classes=10))
    assert ev.quanta_depth is None and "no random-source control" in ev.notes[0]


def test_variant_labels_name_their_configuration():
    assert configuration_of("FT config 2") == 2 and configuration_of("FT lp-ft") == "lp-ft"
    assert configuration_of("FE linearsvc") is None


def test_this_machine_has_no_pace_until_a_job_ran(store_dir):
    tracker = Tracker(str(store_dir))
    assert machine_speed(tracker, pd.DataFrame(), "efficientnet_lite0", "cpu") is None


def test_calibration_measures_a_forward_pass_and_a_training_step():
    speed = calibrate_speed("quanta_cnn", device="cpu", batch=4, repeats=2)
    assert speed.flops_per_s_fe > 0 and speed.flops_per_s_ft > 0 and math.isfinite(speed.flops_per_s_ft)
    assert speed.watts is None and speed.how.startswith("measured just now on cpu")
