"""The guideline evidence from hand-made frames shaped like the Trade-offs and QUANTA views (no store):
which curves are closest, the accuracies and crossover read off them, which runs count, how deep
QUANTA says the transferable layers go, and this machine's power. Every expected value is worked
out in the comments."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tlcore.guidelines import Situation
from tlcore.guidelines.evidence import _usable_points, gather_evidence, spc_grid_for_pilot
from tlcore.guidelines.projection import _watts
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


def test_the_users_dataset_and_backbone_are_strong_then_the_dataset_then_the_rest_weak():
    s = Situation(samples_per_class=8, num_classes=10, dataset="digits", backbone="efficientnet_lite0")
    mine = curve_pair(fe=(0.5, 0.6), ft=(0.2, 0.4))
    other_backbone = curve_pair(backbone="resnet18", fe=(0.1, 0.2), ft=(0.1, 0.2))
    other_dataset = curve_pair(dataset="pets", fe=(0.9, 0.9), ft=(0.9, 0.9), spc=(8, 16))
    ev = gather_evidence(pd.concat([other_dataset, other_backbone, mine]), NO_QUANTA, s)
    c = ev.comparison
    assert (c.dataset, c.backbone, c.strength, c.spc) == ("digits", "efficientnet_lite0", "strong", 8)
    assert (c.fe[0], c.ft[0]) == (0.6, 0.4)  # only that pair's runs: not the other backbone's, nor pets'
    ev = gather_evidence(pd.concat([other_dataset, other_backbone]), NO_QUANTA, s)
    assert (ev.comparison.backbone, ev.comparison.strength) == ("resnet18", "medium")  # the user's dataset first
    # neither dataset nor backbone: weak, shown with why it does not decide
    ev = gather_evidence(other_dataset, NO_QUANTA, s)
    assert ev.comparison.strength == "weak"
    assert any(not i.used and i.why_not == "measured on another dataset" for i in ev.items)
    # a dataset with only feature extraction runs has no comparison (and does not hide the pairs after it)
    only_fe = mine[mine["method"] == "fe"].assign(dataset="aaa")
    far = curve_pair(dataset="cars", spc=(100, 200))
    assert gather_evidence(pd.concat([only_fe, far]), NO_QUANTA, s).comparison.dataset == "cars"
    assert gather_evidence(only_fe, NO_QUANTA, s) is None


def test_among_equals_the_closest_samples_per_class_then_more_points_wins():
    s = Situation(samples_per_class=4, num_classes=10)  # no dataset named: every pair is weak
    small = curve_pair(dataset="a")
    big = pd.concat([curve_pair(dataset="b"), runs(("fe", "linearsvc", 2, 1, 0.5), dataset="b")])
    assert gather_evidence(pd.concat([small, big]), NO_QUANTA, s).comparison.dataset == "b"
    assert gather_evidence(pd.concat([big, small]), NO_QUANTA, s).comparison.dataset == "b"
    # closeness is the distance in log samples per class: 100 per class is nearest the 100-200 curve
    s100 = Situation(samples_per_class=100, num_classes=10)
    low, far = curve_pair(dataset="low", spc=(2, 4)), curve_pair(dataset="cars", spc=(100, 200))
    assert gather_evidence(pd.concat([low, far]), NO_QUANTA, s100).comparison.dataset == "cars"


def test_the_comparison_at_the_closest_shared_value_with_its_intervals():
    # FE at 2 (three draws .5 .7 .6), 8, 32; FT config 0 at 2 (.5 .6 .4) and 8; FT config 3 at 2 (.15 .75 .2), 8, 64
    df = runs(("fe", "linearsvc", 2, 0, 0.5), ("fe", "linearsvc", 2, 1, 0.7), ("fe", "linearsvc", 2, 2, 0.6),
              ("fe", "linearsvc", 8, 0, 0.8), ("fe", "linearsvc", 32, 0, 0.85),
              ("ft", "0", 2, 0, 0.5), ("ft", "0", 2, 1, 0.6), ("ft", "0", 2, 2, 0.4), ("ft", "0", 8, 0, 0.6),
              ("ft", "3", 2, 0, 0.15), ("ft", "3", 2, 1, 0.75), ("ft", "3", 2, 2, 0.2), ("ft", "3", 8, 0, 0.5),
              ("ft", "3", 64, 0, 0.9))
    c = gather_evidence(df, NO_QUANTA, Situation(samples_per_class=3, num_classes=10, dataset="digits")).comparison
    assert c.spc == 2 and c.near  # 3 is nearer 2 than 8 in log (1.5x against 2.7x)
    # FE mean .6, sd .1, n 3: half-width t(.975, 2) * .1 / sqrt(3) = .248414
    assert c.fe == pytest.approx((0.6, 0.6 - 0.248414, 0.6 + 0.248414), abs=1e-5)
    # config 0 (mean .5) beats config 3 (mean .3667): the best mean, not the widest spread
    assert c.ft_configuration == 0 and c.ft[0] == pytest.approx(0.5)
    # paired by draw: .5-.5, .6-.7, .4-.6 = 0, -.1, -.2: mean -.1, sd .1 -> the same half-width: includes 0
    assert c.diff == pytest.approx(-0.1) and c.diff_high == pytest.approx(-0.1 + 0.248414, abs=1e-5)
    assert c.verdict == "not_resolved" and c.n_pairs == 3
    assert c.measured_range == (2, 64)
    far = gather_evidence(df, NO_QUANTA, Situation(samples_per_class=1000, num_classes=10, dataset="digits"))
    assert far.comparison.spc == 8 and not far.comparison.near


def test_the_best_feature_extraction_classifier_is_the_reference():
    df = pd.concat([curve_pair(fe=(0.1, 0.2), ft=(0.55, 0.9)),
                    runs(("fe", "knn", 2, 0, 0.5), ("fe", "knn", 8, 0, 0.6))])
    ev = gather_evidence(df, NO_QUANTA, Situation(samples_per_class=2, num_classes=10, dataset="digits"))
    assert ev.comparison.fe_variant == "FE knn" and ev.comparison.fe[0] == 0.5  # knn .5 beats linearsvc .1 at 2
    assert set(ev.curves["variant"]) == {"FE linearsvc", "FE knn", "FT config 0"}
    assert ev.curves.set_index("variant").loc["FT config 0", "configuration"].tolist() == [0, 0]


def _curve(method, kind, accs: dict) -> list[tuple]:
    return [(method, kind, spc, k, a) for spc, draws in accs.items() for k, a in enumerate(draws)]


def test_the_crossover_is_resolved_only_between_clearly_separated_points():
    # FE .5 .6 .7 at 1, 4, 16 (three draws, spread .01); FT config 0 clearly below at 1, clearly above at 16
    fe = {1: (0.49, 0.50, 0.51), 4: (0.59, 0.60, 0.61), 16: (0.69, 0.70, 0.71)}
    ft = {1: (0.29, 0.30, 0.31), 4: (0.55, 0.65, 0.60), 16: (0.89, 0.90, 0.91)}
    df = runs(*_curve("fe", "linearsvc", fe), *_curve("ft", "0", ft), dataset="digits")
    ev = gather_evidence(df, NO_QUANTA, Situation(samples_per_class=16, num_classes=10, dataset="digits"))
    spc, low, high, config = ev.crossover
    assert (low, high, config) == (1.0, 16.0, 0) and 1 < spc < 16
    assert any(i.kind == "crossover" and "between 1 and 16" in i.text for i in ev.items)
    # never clearly above FE: no crossover, however the means cross
    noisy = {1: (0.2, 0.4, 0.3), 4: (0.4, 0.9, 0.6), 16: (0.5, 0.95, 0.9)}
    ev2 = gather_evidence(runs(*_curve("fe", "linearsvc", fe), *_curve("ft", "0", noisy), dataset="digits"),
                          NO_QUANTA, Situation(samples_per_class=16, num_classes=10, dataset="digits"))
    assert ev2.crossover is None


def quanta(*rows, layers=("0", "1", "2"), hint="0,1,2") -> pd.DataFrame:
    """rows: (source kind, lambda_S per layer, dataset, status)."""
    out = []
    for i, (kind, lams, dataset, status) in enumerate(rows):
        r = {"run_id": f"q{i}", "method": "quanta", "is_sweep_parent": False, "backbone": "quanta_cnn",
             "dataset": dataset, "source_task": "digits:0-4", "status": status, "quanta_layers": hint,
             "layer_to_transfer": "-1", "source_kind": RANDOM_SOURCE if kind == "random" else TRAINED_SOURCE}
        r.update({QUANTA_PREFIX + layer: v for layer, v in zip(layers, lams, strict=True)})
        out.append(r)
    return pd.DataFrame(out)


def test_quanta_depth_counts_the_leading_layers_that_keep_the_source_against_the_control():
    s = Situation(samples_per_class=5, num_classes=5, dataset="digits:5-9", backbone="quanta_cnn")
    q = quanta(("trained", (0.95, 0.875, 0.60), "digits:5-9", "FINISHED"),
               ("trained", (0.93, 0.625, 0.62), "digits:5-9", "FINISHED"),
               ("random", (0.70, 0.75, 0.90), "digits:5-9", "FINISHED"),
               ("trained", (0.10, 0.10, 0.10), "digits:5-9", "FAILED"))  # a failed run does not count
    ev = gather_evidence(pd.DataFrame(), q, s)
    # one control run: the measured margin (0.22) decides. layer 0: .94 - .70 = +.24, a signal; layer 1: .75 -
    # .75 = 0, none: the depth stops at 1 of 3
    assert (ev.quanta_depth, ev.quanta_dataset, ev.quanta_backbone) == ((1, 3), "digits:5-9", "quanta_cnn")
    assert ev.items[0].text == ("QUANTA on digits:5-9 (quanta_cnn): the target kept the source's features in the "
                                "first 1 of 3 layers against the random-source control.")
    assert ev.comparison is None and ev.curves is None
    # layers in network order from the runs' own list, not the order of the columns
    shuffled = quanta(("trained", (0.95, 0.95, 0.1), "digits:5-9", "FINISHED"),
                      ("random", (0.5, 0.5, 0.5), "digits:5-9", "FINISHED"), layers=("b", "a", "c"), hint="a,c,b")
    assert gather_evidence(pd.DataFrame(), shuffled, s).quanta_depth == (1, 3)  # a (+.45), then c (-.4) stops it
    # lambda_S that stayed where it started (0.9002) is no signal, whatever the control did
    still = quanta(("trained", (0.9002, 0.95, 0.95), "digits:5-9", "FINISHED"),
                   ("random", (0.5, 0.5, 0.5), "digits:5-9", "FINISHED"))
    assert gather_evidence(pd.DataFrame(), still, s).quanta_depth == (0, 3)


def test_quanta_speaks_only_about_its_own_backbone_and_dataset_and_needs_its_control():
    q = quanta(("trained", (0.95, 0.95, 0.95), "lfw_faces", "FINISHED"),  # no control
               ("trained", (0.95, 0.95, 0.1), "digits:5-9", "FINISHED"),
               ("random", (0.5, 0.5, 0.5), "digits:5-9", "FINISHED"))
    cnn = dict(samples_per_class=5, num_classes=5, backbone="quanta_cnn")
    faces = gather_evidence(pd.DataFrame(), q, Situation(dataset="lfw_faces", **cnn))
    assert faces.quanta_depth is None
    whys = {i.text.rstrip("."): i.why_not for i in faces.items}
    assert whys["QUANTA on lfw_faces (quanta_cnn)"] == "no random-source control with the same settings beside it"
    assert whys["QUANTA on digits:5-9 (quanta_cnn)"] == "another dataset than yours"
    digits = gather_evidence(pd.DataFrame(), q, Situation(dataset="digits", **cnn))  # digits:5-9 is digits' family
    assert digits.quanta_depth == (2, 3)
    lite = gather_evidence(pd.DataFrame(), q, Situation(dataset="digits", samples_per_class=5, num_classes=5))
    assert lite.quanta_depth is None and all("not your backbone" in i.why_not for i in lite.items)
    assert gather_evidence(pd.DataFrame(), pd.DataFrame(), Situation(dataset="digits", **cnn)) is None


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


def test_the_evidence_items_say_what_decides_what_conflicts_and_what_is_weak():
    """The list the Guidelines page shows, item by item: kind, strength, whether used and why not."""
    s = Situation(samples_per_class=8, num_classes=10, dataset="digits", backbone="efficientnet_lite0")
    mine = runs(*[("fe", "linearsvc", 8, k, a) for k, a in enumerate((0.80, 0.81, 0.82))],
                *[("ft", "0", 8, k, a) for k, a in enumerate((0.60, 0.61, 0.62))],
                ("ft", "0", 8, 3, 0.10, {"weak": True, "quality": "capped"}))
    mine["weak"] = mine["weak"].fillna(False).astype(bool) if "weak" in mine else False
    other = runs(*[("fe", "linearsvc", 8, k, a) for k, a in enumerate((0.50, 0.51, 0.52))],
                 *[("ft", "0", 8, k, a) for k, a in enumerate((0.70, 0.71, 0.72))], backbone="resnet18")
    other["weak"] = False
    ev = gather_evidence(pd.concat([mine, other], ignore_index=True), NO_QUANTA, s)
    assert (ev.dataset, ev.backbone) == ("digits", "efficientnet_lite0")
    kinds = [(i.kind, i.strength, i.used, i.why_not) for i in ev.items]
    assert kinds == [
        ("comparison", "strong", True, ""),
        ("conflict", "medium", False, "the stronger evidence decides"),
        ("weak runs", "weak", False, "left out of every comparison"),
    ]
    assert ev.items[0].text == ev.comparison.describe()
    assert ev.items[1].text == ("Your runs disagree: on digits with efficientnet_lite0 says fe higher, on digits with "
                                "resnet18 says ft higher.")
    assert ev.items[2].text == ("1 run(s) on digits with efficientnet_lite0 are weak evidence "
                                "(1 capped (still improving)).")
    assert ev.curves is not None and set(ev.curves["configuration"].dropna()) == {0}
    # measured far from the user's labels: shown, not used, and why
    far = gather_evidence(mine, NO_QUANTA, Situation(samples_per_class=100, num_classes=10, dataset="digits"))
    first = far.items[0]
    assert (first.kind, first.used, first.why_not) == ("comparison", False, "measured at 8 samples per class, not near "
                                                                             "your 100")


def test_runs_on_other_data_are_listed_as_weak_with_why_and_a_pair_without_a_comparison_says_so():
    s = Situation(samples_per_class=8, num_classes=10, dataset="digits", backbone="efficientnet_lite0")
    pets = curve_pair(dataset="pets", spc=(8, 16))
    ev = gather_evidence(pets, NO_QUANTA, s)
    item = ev.items[0]
    assert (item.kind, item.strength, item.used, item.why_not) == ("comparison", "weak", False,
                                                                   "measured on another dataset")
    assert item.text == ev.comparison.describe()
    anywhere = gather_evidence(pets, NO_QUANTA, Situation(samples_per_class=8, num_classes=10))
    assert anywhere.items[0].why_not == "no dataset picked: runs on other data do not decide"
    # FE and FT on a dataset, but at no shared samples-per-class value: listed, with why no comparison
    apart = runs(("fe", "linearsvc", 2, 0, 0.5), ("ft", "0", 8, 0, 0.9), dataset="cars")
    ev = gather_evidence(apart, NO_QUANTA, s)
    first = ev.items[0]
    assert (first.kind, first.strength, first.used, first.text) == (
        "comparison", "weak", False, "FE and FT runs on cars with efficientnet_lite0.")
    assert first.why_not and ev.comparison is None
