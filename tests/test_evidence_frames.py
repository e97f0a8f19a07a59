"""The guideline evidence from hand-made frames shaped like the Trade-offs and QUANTA views (no store):
which curves are closest, the accuracies and crossover read off them, which runs count, how deep
QUANTA says the transferable layers go, and this machine's power. Every expected value is worked
out in the comments."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tlcore.evidence import _usable_points, _watts, gather_evidence, spc_grid_for_pilot
from tlcore.guidelines import Situation
from tlcore.results import QUANTA_PREFIX, RANDOM_SOURCE, TRAINED_SOURCE, variant_labels


def runs(*rows, **common) -> pd.DataFrame:
    """rows: (method, classifier or configuration, spc, split, accuracy) plus optional overrides."""
    out = []
    for row in rows:
        method, kind, spc, split, acc, *extra = row
        r = {"method": method, "classifier": kind if method == "fe" else None,
             "configuration": kind if method == "ft" else None, "spc": float(spc), "split_index": float(split),
             "test_accuracy": acc, "status": "FINISHED", "is_sweep_parent": False, "dataset": "digits",
             "backbone": "efficientnet_lite0", "model_selection": "False", **common}
        for e in extra:
            r.update(e)
        out.append(r)
    df = pd.DataFrame(out)
    df["variant"] = variant_labels(df)
    return df


NO_QUANTA = pd.DataFrame()


def curve_pair(dataset="digits", backbone="efficientnet_lite0", fe=(0.5, 0.7), ft=(0.3, 0.9), spc=(2, 8)):
    return runs(*[("fe", "linearsvc", s, 0, a) for s, a in zip(spc, fe, strict=True)],
                *[("ft", "0", s, 0, a) for s, a in zip(spc, ft, strict=True)], dataset=dataset, backbone=backbone)


def test_only_finished_test_scored_points_of_fe_and_ft_count():
    df = runs(("fe", "linearsvc", 2, 0, 0.5), ("fe", "linearsvc", 2, 1, 0.6, {"status": "FAILED"}),
              ("fe", "linearsvc", 2, 2, 0.6, {"is_sweep_parent": True}), ("fe", "linearsvc", 2, 3, np.nan),
              ("fe", "linearsvc", np.nan, 4, 0.6), ("quanta", None, 2, 5, 0.6),
              ("ft", "0", 2, 0, 0.6, {"model_selection": "True"}), ("ft", "0", 2, 1, 0.6, {"model_selection": "true"}),
              ("ft", "0", 2, 2, 0.4))
    kept = _usable_points(df)
    assert kept["test_accuracy"].tolist() == [0.5, 0.4]
    assert _usable_points(df.drop(columns="model_selection"))["test_accuracy"].tolist() == [0.5, 0.6, 0.6, 0.4]
    assert _usable_points(df.drop(columns="spc")).empty and _usable_points(df.iloc[0:0]).empty


def test_the_users_dataset_comes_first_then_the_backbone_then_the_closest_range():
    s = Situation(samples_per_class=8, num_classes=10, dataset="digits", backbone="efficientnet_lite0")
    mine = curve_pair(fe=(0.5, 0.6), ft=(0.2, 0.4))
    other_backbone = curve_pair(backbone="resnet18", fe=(0.1, 0.2), ft=(0.1, 0.2))
    other_dataset = curve_pair(dataset="pets", fe=(0.9, 0.9), ft=(0.9, 0.9), spc=(8, 16))
    ev = gather_evidence(pd.concat([other_dataset, other_backbone, mine]), NO_QUANTA, s)
    assert (ev.dataset, ev.backbone, ev.fe_accuracy, ev.ft_accuracy) == ("digits", "efficientnet_lite0", (0.6, 0.0),
                                                                         (0.4, 0.0))
    # only that pair's runs: not the other backbone's runs on digits, nor the other dataset's
    assert ev.notes[0].startswith("Closest runs: digits with efficientnet_lite0: 2 feature-extraction and 2 "
                                  "fine-tuning")
    ev = gather_evidence(pd.concat([other_dataset, other_backbone]), NO_QUANTA, s)
    assert (ev.dataset, ev.backbone) == ("digits", "resnet18")  # the user's dataset beats the user's backbone
    assert "not your dataset" not in ev.notes[0]
    # neither dataset nor backbone: the pair whose samples per class come closest to 8 in log
    far = curve_pair(dataset="cars", spc=(100, 200))
    ev = gather_evidence(pd.concat([far, other_dataset]), NO_QUANTA, s)
    assert ev.dataset == "pets" and ev.notes[0].endswith("(not your dataset digits).")
    # a dataset with only feature extraction runs has no pair (and does not hide the pairs after it)
    only_fe = mine[mine["method"] == "fe"].assign(dataset="aaa")
    assert gather_evidence(pd.concat([only_fe, far]), NO_QUANTA, s).dataset == "cars"
    assert gather_evidence(only_fe, NO_QUANTA, s) is None
    # closeness is the distance in log samples per class, whichever side: 100 per class is nearest 100-200
    s100 = Situation(samples_per_class=100, num_classes=10)
    assert gather_evidence(pd.concat([curve_pair(dataset="low", spc=(2, 4)), far]), NO_QUANTA, s100).dataset == "cars"
    ones = curve_pair(dataset="ones", spc=(1, 1))
    assert gather_evidence(pd.concat([ones, far]), NO_QUANTA, Situation(samples_per_class=1, num_classes=10)
                           ).dataset == "ones"  # 1 per class: log 1 = 0 is a distance like any other


def test_a_tie_between_two_pairs_goes_to_the_one_with_more_points():
    s = Situation(samples_per_class=4, num_classes=10)
    small = curve_pair(dataset="a")
    big = pd.concat([curve_pair(dataset="b"), runs(("fe", "linearsvc", 2, 1, 0.5), dataset="b")])
    assert gather_evidence(pd.concat([small, big]), NO_QUANTA, s).dataset == "b"
    assert gather_evidence(pd.concat([big, small]), NO_QUANTA, s).dataset == "b"


def test_accuracies_at_the_closest_shared_samples_per_class_with_their_spread():
    # FE at 2 (two splits: .5 and .7), 8, 32; FT config 0 at 2 and 8; FT config 3 at 2, 8 and 64
    df = runs(("fe", "linearsvc", 2, 0, 0.5), ("fe", "linearsvc", 2, 1, 0.7), ("fe", "linearsvc", 8, 0, 0.8),
              ("fe", "linearsvc", 32, 0, 0.85),
              ("ft", "0", 2, 0, 0.5), ("ft", "0", 2, 1, 0.6), ("ft", "0", 8, 0, 0.6),
              ("ft", "3", 2, 0, 0.15), ("ft", "3", 2, 1, 0.75), ("ft", "3", 8, 0, 0.5), ("ft", "3", 64, 0, 0.9))
    ev = gather_evidence(df, NO_QUANTA, Situation(samples_per_class=3, num_classes=10, dataset="digits"))
    assert ev.closest_spc == 2  # 3 is nearer 2 than 8 in log (1.5x against 2.7x)
    assert ev.fe_accuracy == pytest.approx((0.6, math.sqrt(0.02)))  # mean .6, sample std of .5 and .7
    # config 0: mean .55 (std .07) beats config 3: mean .45 (std .42): the best mean, not the widest spread
    assert ev.ft_accuracy == pytest.approx((0.55, math.sqrt(0.005))) and ev.ft_configuration == 0
    assert ev.measured_up_to == 32  # FE stops at 32 (an FT curve reaches 64)
    assert gather_evidence(df, NO_QUANTA, Situation(samples_per_class=5, num_classes=10)).closest_spc == 8  # 1.6x
    assert gather_evidence(df, NO_QUANTA, Situation(samples_per_class=1000, num_classes=10)).closest_spc == 8
    assert ev.notes[0] == ("Closest runs: digits with efficientnet_lite0: 4 feature-extraction and 7 fine-tuning "
                           "point(s), 2-64 samples per class.")
    anonymous = gather_evidence(df, NO_QUANTA, Situation(samples_per_class=3, num_classes=10))  # no dataset named
    assert anonymous.notes[0].endswith("2-64 samples per class (not your dataset).")


def test_the_best_feature_extraction_classifier_is_the_reference():
    df = pd.concat([curve_pair(fe=(0.1, 0.2), ft=(0.55, 0.9)),
                    runs(("fe", "knn", 2, 0, 0.5), ("fe", "knn", 8, 0, 0.6))])
    ev = gather_evidence(df, NO_QUANTA, Situation(samples_per_class=2, num_classes=10))
    assert ev.fe_accuracy == (0.5, 0.0)  # knn (mean .55) beats linearsvc (mean .15)
    assert set(ev.curves["variant"]) == {"FE linearsvc", "FE knn", "FT config 0"}
    assert ev.curves.set_index("variant").loc["FT config 0", "configuration"].tolist() == [0, 0]


def test_the_crossover_is_where_a_curve_that_ends_above_feature_extraction_rose_through_it():
    # FE .5 .6 .7 at 1, 4, 16. FT config 0: .3 .8 .9 -> up through FE between 1 and 4: d = -.2, +.2: halfway in
    # log, at 2. FT config 2: .3 .65 .9 -> up between 4 and 16? d = -.2, +.05, +.2: between 1 and 4, at 1 + 0.8
    # of the log way: 4 ** 0.8. FT config 3 ends below FE: never counts.
    df = runs(("fe", "linearsvc", 1, 0, 0.5), ("fe", "linearsvc", 4, 0, 0.6), ("fe", "linearsvc", 16, 0, 0.7),
              ("ft", "0", 1, 0, 0.3), ("ft", "0", 4, 0, 0.8), ("ft", "0", 16, 0, 0.9),
              ("ft", "2", 1, 0, 0.3), ("ft", "2", 4, 0, 0.65), ("ft", "2", 16, 0, 0.9),
              ("ft", "3", 1, 0, 0.3), ("ft", "3", 4, 0, 0.8), ("ft", "3", 16, 0, 0.6))
    ev = gather_evidence(df, NO_QUANTA, Situation(samples_per_class=16, num_classes=10))
    assert ev.crossover_spc == pytest.approx(2.0) and ev.crossover_configuration == 0
    only_2 = df[df["configuration"].ne("0").fillna(True)]
    ev2 = gather_evidence(only_2, NO_QUANTA, Situation(samples_per_class=16, num_classes=10))
    assert ev2.crossover_spc == pytest.approx(4 ** 0.8) and ev2.crossover_configuration == 2
    below = df[df["configuration"].isin([None, "3"]) | df["method"].eq("fe")]
    assert gather_evidence(below, NO_QUANTA, Situation(samples_per_class=16, num_classes=10)).crossover_spc is None
    # a curve that ends below FE, listed before one that overtakes, does not stop the search
    first_below = df.assign(configuration=df["configuration"].replace({"3": "1", "0": "7", "2": "9"}))
    first_below["variant"] = variant_labels(first_below)
    ev4 = gather_evidence(first_below, NO_QUANTA, Situation(samples_per_class=16, num_classes=10))
    assert ev4.crossover_configuration == 7 and ev4.crossover_spc == pytest.approx(2.0)
    # ending level with FE is not overtaking it
    level = runs(("fe", "linearsvc", 1, 0, 0.5), ("fe", "linearsvc", 4, 0, 0.75), ("ft", "0", 1, 0, 0.25),
                 ("ft", "0", 2, 0, 0.75), ("ft", "0", 4, 0, 0.75))
    assert gather_evidence(level, NO_QUANTA, Situation(samples_per_class=4, num_classes=10)).crossover_spc is None
    # an FT curve that rose through FE, fell back and rose again: the last rise is where it overtook
    zigzag = runs(("fe", "linearsvc", 1, 0, 0.5), ("fe", "linearsvc", 4, 0, 0.5), ("fe", "linearsvc", 16, 0, 0.5),
                  ("fe", "linearsvc", 64, 0, 0.5), ("ft", "1", 1, 0, 0.4), ("ft", "1", 4, 0, 0.6),
                  ("ft", "1", 16, 0, 0.4), ("ft", "1", 64, 0, 0.6))
    ev3 = gather_evidence(zigzag, NO_QUANTA, Situation(samples_per_class=64, num_classes=10))
    assert ev3.crossover_spc == pytest.approx(32.0) and ev3.crossover_configuration == 1


def quanta(*rows, layers=("0", "1", "2"), hint="0,1,2") -> pd.DataFrame:
    """rows: (source kind, lambda_S per layer, dataset, status)."""
    out = []
    for i, (kind, lams, dataset, status) in enumerate(rows):
        r = {"run_id": f"q{i}", "method": "quanta", "is_sweep_parent": False, "backbone": "quanta_cnn",
             "dataset": dataset, "source_task": "digits:0-4", "status": status, "quanta_layers": hint,
             "source_kind": RANDOM_SOURCE if kind == "random" else TRAINED_SOURCE}
        r.update({QUANTA_PREFIX + layer: v for layer, v in zip(layers, lams, strict=True)})
        out.append(r)
    return pd.DataFrame(out)


def test_quanta_depth_counts_the_leading_layers_above_the_control():
    s = Situation(samples_per_class=5, num_classes=5, dataset="digits:5-9")
    q = quanta(("trained", (0.95, 0.875, 0.60), "digits:5-9", "FINISHED"),
               ("trained", (0.93, 0.625, 0.62), "digits:5-9", "FINISHED"),
               ("random", (0.70, 0.75, 0.90), "digits:5-9", "FINISHED"),
               ("trained", (0.10, 0.10, 0.10), "digits:5-9", "FAILED"))  # a failed run does not count
    ev = gather_evidence(pd.DataFrame(), q, s)
    # layer 0: .94 > .70; layer 1: mean .75 = .75 is not above: the depth stops at 1
    assert (ev.quanta_depth, ev.quanta_layers, ev.quanta_dataset, ev.quanta_backbone) == (1, 3, "digits:5-9",
                                                                                         "quanta_cnn")
    assert ev.notes == ("QUANTA on digits:5-9 (quanta_cnn, 2 trained-source run(s) and their random-source control): "
                        "lambda_S beat the control in the first 1 of 3 layers.",)
    assert ev.dataset is None and ev.fe_accuracy is None and ev.curves is None
    # layers in network order from the runs' own list, not the order of the columns
    shuffled = quanta(("trained", (0.9, 0.9, 0.1), "d", "FINISHED"), ("random", (0.5, 0.5, 0.5), "d", "FINISHED"),
                      layers=("b", "a", "c"), hint="a,c,b")
    assert gather_evidence(pd.DataFrame(), shuffled, s).quanta_depth == 1  # a (.9 > .5), then c (.1 < .5) stops it


def test_quanta_evidence_prefers_a_target_with_its_control_then_the_users_dataset():
    s = Situation(samples_per_class=5, num_classes=5, dataset="lfw_faces")
    q = quanta(("trained", (0.9, 0.9, 0.9), "lfw_faces", "FINISHED"),  # no control: says so only if nothing better
               ("trained", (0.9, 0.9, 0.1), "digits:5-9", "FINISHED"),
               ("random", (0.5, 0.5, 0.5), "digits:5-9", "FINISHED"))
    ev = gather_evidence(pd.DataFrame(), q, s)
    assert ev.quanta_dataset == "digits:5-9" and ev.quanta_depth == 2
    alone = gather_evidence(pd.DataFrame(), q.iloc[:1], s)
    assert alone.quanta_depth is None and alone.notes[0] == (
        "QUANTA runs of quanta_cnn on lfw_faces have no random-source control beside them, so they do not say how "
        "deep the transferable layers go; run QUANTA with source weights = random too.")
    control_only = gather_evidence(pd.DataFrame(), q.iloc[2:], s)
    assert control_only.quanta_depth is None and "have no trained source beside them" in control_only.notes[0]
    assert gather_evidence(pd.DataFrame(), pd.DataFrame(), s) is None
    # two targets with their control: the user's dataset first, even when it sorts last
    both = pd.concat([q.iloc[1:], quanta(("trained", (0.9, 0.1, 0.1), "zzz", "FINISHED"),
                                         ("random", (0.5, 0.5, 0.5), "zzz", "FINISHED"))])
    zs = Situation(samples_per_class=5, num_classes=5, dataset="zzz")
    assert gather_evidence(pd.DataFrame(), both, zs).quanta_dataset == "zzz"
    # neither is the user's: the target with more measured layers
    more = quanta(("trained", (0.9, 0.9, 0.9), "b-three", "FINISHED"), ("random", (0.5, 0.5, 0.5), "b-three",
                                                                            "FINISHED"))
    fewer = quanta(("trained", (0.9, 0.9), "a-two", "FINISHED"), ("random", (0.5, 0.5), "a-two", "FINISHED"),
                   layers=("0", "1"), hint="0,1")
    ev = gather_evidence(pd.DataFrame(), pd.concat([fewer, more]), s)
    assert (ev.quanta_dataset, ev.quanta_depth) == ("b-three", 3)


def test_this_machines_power_is_the_median_over_its_finished_runs_of_that_backbone():
    df = pd.DataFrame({"status": ["FINISHED"] * 4 + ["FAILED", "FINISHED", "FINISHED", "FINISHED"],
                       "backbone": ["b"] * 7 + ["other"], "device": ["cpu"] * 5 + ["cuda:0", "cpu", "cpu"],
                       "time_total_s": [3600.0, 1800.0, 0.5, 0.0, 3600.0, 3600.0, 3600.0, 3600.0],
                       "energy_kwh": [0.01, 0.015, 0.5 / 3.6e6 * 1000, 1.0, 9.0, 9.0, 0.0, 9.0]})
    # kept: 10 W, 30 W (0.015 kWh in half an hour), 1000 W (half a second): median 30 W; left out: zero time,
    # FAILED, cuda, zero energy, another backbone
    assert _watts(df, "b", "cpu") == pytest.approx(30.0, rel=1e-12)
    assert _watts(df, "b", "cuda") == pytest.approx(9000.0, rel=1e-12)
    assert _watts(df, "nothing", "cpu") is None and _watts(df.drop(columns="energy_kwh"), "b", "cpu") is None
    assert _watts(df.iloc[0:0], "b", "cpu") is None


def test_the_pilot_grid_stops_at_what_the_user_has():
    assert spc_grid_for_pilot(100) == (1, 2, 5, 10)
    assert spc_grid_for_pilot(100, largest=20) == (1, 2, 5, 10, 20)
    assert spc_grid_for_pilot(5) == (1, 2, 5) and spc_grid_for_pilot(4) == (1, 2) and spc_grid_for_pilot(1) == (1,)
