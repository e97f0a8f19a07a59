"""Evidence for the guideline walkthrough, read from a store of known runs (tests/analysis_store.py)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tests.analysis_store import analysis_store  # noqa: F401  (a fixture)
from tlcore import results
from tlcore.guidelines import Situation, recommend
from tlcore.guidelines.evidence import configuration_of, gather_evidence
from tlcore.guidelines.projection import machine_speed
from tlcore.speed import calibrate_speed
from tlcore.tracking import Tracker


@pytest.fixture(scope="module")
def frames(analysis_store):  # noqa: F811
    uri = Tracker(str(analysis_store[0])).uri
    return results.load_view(uri, "tradeoffs"), results.load_view(uri, "quanta")


def _frame(rows, dataset="digits", backbone="efficientnet_lite0"):
    """FE/FT points as the Trade-offs view holds them: (method, variant, spc, split, accuracy[, verdict])."""
    recs = []
    for r in rows:
        method, variant, spc, split, acc = r[:5]
        verdict = r[5] if len(r) > 5 else "converged"
        recs.append({"dataset": dataset, "backbone": backbone, "method": method, "variant": variant,
                     "status": "FINISHED", "is_sweep_parent": False, "spc": float(spc), "split_index": float(split),
                     "test_accuracy": acc, "quality": verdict, "weak": verdict in ("capped", "near_chance"),
                     "quality_reason": "It stopped at its cap of 1 epoch." if verdict == "capped" else "",
                     "model_selection": "False"})
    return pd.DataFrame(recs)


FE5 = [("fe", "FE linearsvc", 5, k, a) for k, a in enumerate((0.84, 0.86, 0.85))]


def test_a_capped_fine_tuning_is_weak_evidence_and_never_decides():
    # the quick examples: FT capped at 1 epoch (15.8-22.5%) beside converged FE (86.7%)
    runs = _frame(FE5 + [("ft", "FT config 0", 5, k, a, "capped") for k, a in enumerate((0.158, 0.20, 0.225))])
    s = Situation(samples_per_class=5, num_classes=10, dataset="digits")
    ev = gather_evidence(runs, pd.DataFrame(), s)
    assert ev.comparison is None
    weak = [i for i in ev.items if not i.used]
    assert weak and weak[0].strength == "weak" and "3 capped" in weak[0].why_not
    rec = recommend(s, evidence=ev)
    assert "measured-in-your-runs" not in rec.fired and all(r.strength != "weak" for r in rec.reasons)
    assert rec.pilot and "weak evidence" in rec.caution


def test_converged_runs_on_your_dataset_and_backbone_are_strong():
    runs = _frame(FE5 + [("ft", "FT config 2", 5, k, a) for k, a in enumerate((0.70, 0.73, 0.71))])
    ev = gather_evidence(runs, pd.DataFrame(), Situation(samples_per_class=5, num_classes=10, dataset="digits"))
    c = ev.comparison
    assert (c.strength, c.spc, c.near, c.verdict, c.ft_configuration) == ("strong", 5, True, "fe_higher", 2)
    assert c.diff == pytest.approx(-0.1367, abs=1e-4) and c.n_pairs == 3  # (.70-.84 + .73-.86 + .71-.85) / 3
    assert ev.items[0].used and ev.items[0].strength == "strong"
    other = gather_evidence(runs, pd.DataFrame(), Situation(samples_per_class=5, num_classes=10, dataset="digits",
                                                            backbone="resnet18"))
    assert other.comparison.strength == "medium"
    elsewhere = gather_evidence(runs, pd.DataFrame(), Situation(samples_per_class=5, num_classes=10,
                                                                dataset="lfw_faces"))
    assert elsewhere.comparison.strength == "weak" and not elsewhere.items[0].used


def test_the_comparison_is_at_the_closest_samples_per_class_and_says_when_it_is_far():
    rows = FE5 + [("ft", "FT config 0", 5, k, a) for k, a in enumerate((0.70, 0.73, 0.71))]
    rows += [("fe", "FE linearsvc", 20, k, a) for k, a in enumerate((0.94, 0.95, 0.94))]
    rows += [("ft", "FT config 0", 20, k, a) for k, a in enumerate((0.92, 0.93, 0.93))]
    ev = gather_evidence(_frame(rows), pd.DataFrame(), Situation(samples_per_class=179, num_classes=10,
                                                                 dataset="digits"))
    c = ev.comparison
    assert c.spc == 20 and not c.near and c.measured_range == (5, 20)
    assert not ev.items[0].used and "not near your 179" in ev.items[0].why_not


def test_quanta_of_another_backbone_never_sets_the_depth(frames):
    _, quanta = frames  # the store's QUANTA runs are of quanta_cnn on digits:5-9, with a control
    lite = gather_evidence(pd.DataFrame(), quanta, Situation(samples_per_class=100, num_classes=10, dataset="digits"))
    assert lite.quanta_depth is None
    assert any(i.kind == "quanta" and "not your backbone" in i.why_not for i in lite.items)
    cnn = gather_evidence(pd.DataFrame(), quanta, Situation(samples_per_class=100, num_classes=10, dataset="digits",
                                                            backbone="quanta_cnn"))
    # lambda_S trained vs the control (one control run: the measured margin of 0.22 decides): layer 0 .94 vs .70
    # above, layer 1 .89 vs .85 within the margin, layer 2 .61 vs .90 below: only the first of 3 layers transfers
    assert cnn.quanta_depth == (1, 3) and cnn.quanta_dataset == "digits:5-9"


def test_quanta_without_a_signal_sets_no_depth(frames):
    _, quanta = frames
    flat = quanta.copy()
    for layer in ("0", "1", "2"):  # every run ends where the control ends: nothing separates
        flat[f"quanta_source/{layer}"] = 0.905
    ev = gather_evidence(pd.DataFrame(), flat, Situation(samples_per_class=100, num_classes=10, dataset="digits",
                                                         backbone="quanta_cnn"))
    assert ev.quanta_depth is None and any("no layer showed a signal" in i.why_not for i in ev.items)


def test_no_runs_no_evidence_and_model_selection_runs_do_not_count(frames):
    runs, quanta = frames
    s = Situation(samples_per_class=5, num_classes=10, dataset="digits")
    assert gather_evidence(runs.iloc[0:0], quanta.iloc[0:0], s) is None
    selected = runs.assign(model_selection="True")  # scored on val: not comparable with test curves
    ev = gather_evidence(selected, quanta, s)
    assert ev.comparison is None


def test_without_a_control_quanta_says_what_is_missing(frames):
    _, quanta = frames
    trained_only = quanta[quanta["source_kind"] == results.TRAINED_SOURCE]
    ev = gather_evidence(pd.DataFrame(), trained_only, Situation(samples_per_class=5, num_classes=10,
                                                                 dataset="digits", backbone="quanta_cnn"))
    assert ev.quanta_depth is None and "no random-source control" in ev.items[0].why_not


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
