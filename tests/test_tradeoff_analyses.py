"""The Trade-offs page's analyses on hand-made frames (no store): which runs are points, the Pareto
front per group and in the page's order, curve statistics, crossings in log and linear x, and the
FT/FE cost ratio. Expected values are worked out in the comments."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tlcore import results


def frame(**columns) -> pd.DataFrame:
    n = max(len(v) for v in columns.values() if isinstance(v, list))
    base = {"status": ["FINISHED"] * n, "is_sweep_parent": [False] * n, "dataset": ["d"] * n, "backbone": ["b"] * n}
    return pd.DataFrame({**base, **columns})


def test_trade_off_points_are_finished_runs_with_both_values_and_no_parents():
    df = frame(time_total_s=[1.0, 2.0, np.nan, 4.0, 5.0], test_accuracy=[0.5, np.nan, 0.7, 0.8, 0.9],
               status=["FINISHED", "FINISHED", "FINISHED", "FINISHED", "FAILED"],
               is_sweep_parent=[False, False, False, True, False])
    assert results.tradeoff_points(df, "time_total_s")["time_total_s"].tolist() == [1.0]
    assert results.tradeoff_points(df.iloc[0:0], "time_total_s").empty


def test_the_front_is_sorted_by_group_then_cost_and_an_empty_frame_has_the_column():
    df = frame(dataset=["b", "a", "a", "b", None], cost=[3.0, 2.0, 1.0, 1.0, 0.5], acc=[0.9, 0.8, 0.6, 0.4, 0.1])
    front = results.pareto_front(df, "cost", "acc")
    assert list(zip(front["dataset"].fillna("-"), front["cost"], strict=True)) == [
        ("a", 1.0, ), ("a", 2.0), ("b", 1.0), ("b", 3.0), ("-", 0.5)]  # a run without a dataset is its own group
    empty = results.pareto_front(df.iloc[0:0], "cost", "acc")
    assert empty.empty and "on_front" in empty.columns
    by_two = results.pareto_front(frame(dataset=["a", "a"], backbone=["x", "y"], cost=[1.0, 2.0], acc=[0.9, 0.95]),
                                  "cost", "acc", by=("dataset", "backbone"))
    assert len(by_two) == 2  # per backbone, y's dearer run is not dominated by x's


def test_equal_cost_ties_are_ordered_most_accurate_first():
    df = frame(cost=[1.0, 1.0, 1.0], acc=[0.5, 0.7, 0.7])
    front = results.pareto_front(df, "cost", "acc")
    assert front["acc"].tolist() == [0.7, 0.7]


def test_curve_statistics_per_samples_per_class():
    df = frame(variant=["FE x"] * 5 + ["FT config 0"] * 2, spc=[1.0, 1.0, 4.0, 4.0, 4.0, 1.0, np.nan],
               split_index=[0.0, 1.0, 0.0, np.nan, np.nan, 0.0, 0.0],
               test_accuracy=[0.2, 0.4, 0.5, 0.7, 0.9, 0.3, 0.9])
    curves = results.learning_curves(df)
    assert list(curves.columns) == ["dataset", "backbone", "variant", "spc", "mean", "std", "ci_low", "ci_high", "min",
                                    "max", "n_splits", "n_runs", "n_weak", "weak", "weak_reason"]
    fe = curves[curves["variant"] == "FE x"].set_index("spc")
    # spc 1: splits .2 and .4: mean .3, sample std sqrt(.02), min .2, max .4
    assert fe.loc[1.0, ["mean", "min", "max", "n_splits", "n_runs"]].tolist() == pytest.approx([0.3, 0.2, 0.4, 2, 2])
    assert fe.loc[1.0, "std"] == pytest.approx(math.sqrt(0.02))
    # its 95% interval: t(.975, 1) = 12.706205 x sqrt(.02) / sqrt(2) = 1.2706 either side (two draws say little)
    assert fe.loc[1.0, "ci_high"] - 0.3 == pytest.approx(12.706205 * 0.1, rel=1e-6)
    # spc 4: split 0 (.5) and two runs without a split index, averaged as one split (.8)
    assert fe.loc[4.0, ["mean", "n_splits", "n_runs"]].tolist() == pytest.approx([0.65, 2, 3])
    ft = curves[curves["variant"] == "FT config 0"]
    assert ft["spc"].tolist() == [1.0] and math.isnan(ft["std"].item())  # the run without spc is no point
    assert curves["variant"].tolist() == ["FE x", "FE x", "FT config 0"]  # by curve, then spc
    assert results.learning_curves(df.iloc[0:0]).columns.tolist() == list(curves.columns)
    # a run without a split index is not the same split as split 1; a run without a backbone still makes a curve
    odd = frame(variant=["FE x"] * 3, spc=[2.0] * 3, split_index=[1.0, np.nan, 1.0], test_accuracy=[0.2, 0.8, 0.4],
                backbone=[None, None, None])
    row = results.learning_curves(odd).iloc[0]
    assert (row["n_splits"], row["n_runs"], row["mean"]) == (2, 3, pytest.approx(0.55))  # (.3 + .8) / 2
    assert results.learning_curves(df.assign(status="FAILED")).empty


def test_crossings_in_linear_x_and_their_height():
    # other - reference: -.2 at 1, +.2 at 3: halfway, x = 2, where the reference is .5 -> .7 halfway: .6
    ((x, y, d),) = results.find_crossings([1, 3], [0.5, 0.7], [0.3, 0.9], log_x=False)
    assert (x, y, d) == (pytest.approx(2.0), pytest.approx(0.6), 1)
    # in log x the same samples cross at sqrt(3) (halfway between log 1 and log 3)
    ((x, y, _),) = results.find_crossings([1, 3], [0.5, 0.7], [0.3, 0.9])
    assert x == pytest.approx(math.sqrt(3)) and y == pytest.approx(0.6)
    # up, then down: two crossings, in order
    got = results.find_crossings([1, 2, 3], [0.5, 0.5, 0.5], [0.4, 0.6, 0.4], log_x=False)
    assert [(round(x, 6), d) for x, _, d in got] == [(1.5, 1), (2.5, -1)]
    # samples with a missing value or a non-positive x (log axis) are left out; fewer than two: nothing
    assert results.find_crossings([0, 1, 3], [0.1, 0.5, 0.7], [0.9, 0.3, 0.9])[0][0] == pytest.approx(math.sqrt(3))
    assert results.find_crossings([1, 2, 3], [0.5, np.nan, 0.7], [0.3, 0.0, 0.9], log_x=False)[0][0] == \
        pytest.approx(2.0)
    assert results.find_crossings([1], [0.5], [0.6]) == [] and results.find_crossings([], [], []) == []
    # equal from the start, then apart: no side was left, so no crossing
    assert results.find_crossings([1, 2, 3], [0.5, 0.5, 0.5], [0.5, 0.5, 0.7], log_x=False) == []
    # below, then equal at the two last samples: touching at the end is no crossing
    assert results.find_crossings([1, 2, 3], [0.5, 0.5, 0.5], [0.1, 0.5, 0.5], log_x=False) == []
    # the middle of an equal stretch, in log x: equal at 2 and 8, so the middle is at 4
    ((x, y, d),) = results.find_crossings([1, 2, 8, 16], [0.5, 0.5, 0.5, 0.5], [0.1, 0.5, 0.5, 0.9])
    assert (x, y, d) == (pytest.approx(4.0), pytest.approx(0.5), 1)


def test_crossovers_pair_every_fe_curve_with_every_ft_curve_in_natural_order():
    curves = pd.DataFrame({"dataset": "d", "backbone": "b",
                           "variant": ["FE svc"] * 2 + ["FE knn"] * 2 + ["FT config 10"] * 2 + ["FT config 2"] * 2
                           + ["QUANTA"] * 2,
                           "spc": [1.0, 4.0] * 5, "mean": [0.5, 0.5, 0.4, 0.4, 0.3, 0.7, 0.6, 0.2, 0.0, 1.0]})
    cross = results.crossovers(curves, log_x=False)
    assert list(zip(cross["reference"], cross["variant"], strict=True)) == [
        ("FE knn", "FT config 2"), ("FE knn", "FT config 10"), ("FE svc", "FT config 2"), ("FE svc", "FT config 10")]
    first = cross.iloc[0]  # config 2 falls through knn's .4: -.2 ... +.2 -> halfway between 1 and 4
    assert first["spc"] == pytest.approx(2.5) and first["accuracy"] == pytest.approx(0.4)
    assert first["direction"] == "FE knn overtakes FT config 2"
    assert cross.iloc[1]["direction"] == "FT config 10 overtakes FE knn"
    assert list(cross.columns) == ["dataset", "backbone", "reference", "variant", "spc", "accuracy", "direction"]
    assert results.crossovers(curves.iloc[0:0]).empty
    assert set(cross["dataset"]) == {"d"} and set(cross["backbone"]) == {"b"}
    # the page's default: straight lines in log x, so FE .5 -> .5 and FT .3 -> .7 over 1..4 cross at 2, not 2.5
    log = results.crossovers(curves[curves["variant"].isin(["FE svc", "FT config 10"])])
    assert log["spc"].tolist() == [pytest.approx(2.0)]
    # another backbone's FT curve is not compared with this backbone's FE curve
    other = curves.assign(backbone=np.where(curves["variant"].str.startswith("FT"), "c", "b"))
    assert results.crossovers(other).empty
    # curves of three points cross beyond their second one; an FT curve outside FE's range is skipped, not the end
    longer = pd.DataFrame({"dataset": "d", "backbone": "b", "variant": ["FE a"] * 3 + ["FT config 0"] * 2
                           + ["FT config 1"] * 3, "spc": [1.0, 2.0, 4.0, 8.0, 16.0, 1.0, 2.0, 4.0],
                           "mean": [0.5, 0.5, 0.5, 0.1, 0.9, 0.4, 0.4, 0.6]})
    got = results.crossovers(longer, log_x=False)
    assert got["variant"].tolist() == ["FT config 1"] and got["spc"].tolist() == [pytest.approx(3.0)]


def test_the_cost_ratio_is_ft_over_fe_where_both_ran():
    df = frame(method=["fe", "fe", "ft", "ft", "ft", "fe", "ft", "quanta", "fe", "ft"],
               variant=["FE x", "FE x", "FT config 0", "FT config 0", "FT config 0", "FE x", "FT config 0", "QUANTA",
                        "FE x", "FT config 0"],
               spc=[1.0, 1.0, 1.0, 1.0, 2.0, 4.0, 4.0, 1.0, 8.0, 8.0],
               time_total_s=[1.0, 3.0, 10.0, 30.0, 5.0, 0.0, 8.0, 100.0, 0.5, 2.0])
    ratio = results.cost_ratio(df)
    # spc 1: FT mean 20 over FE mean 2 = 10; spc 2 has no FE run; spc 4: FE cost 0 -> no ratio; spc 8: 2 / 0.5
    assert ratio[["spc", "fe_cost", "ft_cost", "ratio", "n_fe", "n_ft"]].values.tolist() == [
        [1.0, 2.0, 20.0, 10.0, 2, 2], [8.0, 0.5, 2.0, 4.0, 1, 1]]
    assert ratio[["reference", "variant"]].values.tolist() == [["FE x", "FT config 0"]] * 2
    assert results.cost_ratio(df.iloc[0:0]).columns.tolist() == list(ratio.columns)
    assert results.cost_ratio(df.assign(status="FAILED")).empty


def _many_points(seed: int = 0) -> pd.DataFrame:
    """Two datasets x FE/FT variants x 4 spc x 4 splits, some runs weak (capped or near chance), a few
    splits missing: enough groups that a vectorised analysis must match the per-group arithmetic."""
    rng = np.random.default_rng(seed)
    rows = []
    for dataset in ("d1", "d2"):
        for method, variant in (("fe", "FE a"), ("fe", "FE b"), ("ft", "FT config 0"), ("ft", "FT config 2")):
            for spc in (1, 2, 5, 10):
                for split in range(4):
                    if rng.random() < 0.15:
                        continue
                    verdict = rng.choice(["converged", "converged", "capped", "near_chance"])
                    rows.append({"dataset": dataset, "backbone": "b", "method": method, "variant": variant,
                                 "status": "FINISHED", "is_sweep_parent": False, "spc": float(spc),
                                 "split_index": float(split), "test_accuracy": float(rng.uniform(0.3, 0.9)),
                                 "quality": verdict, "weak": verdict != "converged"})
    return pd.DataFrame(rows)


def test_paired_differences_match_the_per_group_t_interval():
    from tlcore import quality

    df = _many_points()
    got = results.paired_differences(df).set_index(["dataset", "reference", "variant", "spc"])
    assert len(got) > 30
    for (dataset, ref, var, spc), row in got.iterrows():
        fe = df[(df["dataset"] == dataset) & (df["variant"] == ref) & (df["spc"] == spc)].set_index("split_index")
        ft = df[(df["dataset"] == dataset) & (df["variant"] == var) & (df["spc"] == spc)].set_index("split_index")
        both = fe.index.intersection(ft.index)
        weak = fe.loc[both, "weak"] | ft.loc[both, "weak"]
        ok = both[~weak.to_numpy()]
        mean, lo, hi = quality.t_interval((ft.loc[ok, "test_accuracy"] - fe.loc[ok, "test_accuracy"]).tolist())
        assert (row["n_pairs"], row["n_weak"]) == (len(ok), int(weak.sum()))
        np.testing.assert_allclose([row["diff"], row["ci_low"], row["ci_high"]], [mean, lo, hi], rtol=1e-9)
        resolved = len(ok) >= 2 and np.isfinite(lo) and (lo > 0 or hi < 0)
        assert row["verdict"] == (("ft_higher" if mean > 0 else "fe_higher") if resolved else "not_resolved")


def test_curve_intervals_and_weak_reasons_match_the_per_group_values():
    from tlcore import quality

    df = _many_points(1)
    curves = results.learning_curves(df).set_index(["dataset", "variant", "spc"])
    for (dataset, variant, spc), row in curves.iterrows():
        part = df[(df["dataset"] == dataset) & (df["variant"] == variant) & (df["spc"] == spc)]
        _, lo, hi = quality.t_interval(part["test_accuracy"].tolist())
        np.testing.assert_allclose([row["ci_low"], row["ci_high"]], [lo, hi], rtol=1e-9)
        counts = part.loc[part["weak"], "quality"].value_counts()  # most first, ties in order of appearance
        assert row["weak_reason"] == ", ".join(f"{n} {quality.LABELS[k]}" for k, n in counts.items())
