"""Cost against accuracy, feature extraction against fine-tuning: the Trade-offs page's analyses.

Pure functions of the frames :mod:`.store` reads: the Pareto front (minimum cost, maximum
accuracy), few-shot learning curves (mean and spread over splits), paired FT - FE differences and
where fine-tuning and feature-extraction curves cross, and the FT/FE cost ratio.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from tlcore import quality
from tlcore.results.columns import natural_key


def pareto_mask(cost: Sequence[float], accuracy: Sequence[float]) -> np.ndarray:
    """Points on the Pareto front: no other point is as cheap and as accurate and better in one.

    Exact duplicates of a front point are on the front too (neither dominates the other); a
    point with the same cost but lower accuracy, or the same accuracy at a higher cost, is
    dominated. Points with a missing value are never on the front.
    """
    cost = np.asarray(cost, dtype=float)
    acc = np.asarray(accuracy, dtype=float)
    mask = np.zeros(len(cost), dtype=bool)
    valid = np.flatnonzero(np.isfinite(cost) & np.isfinite(acc))
    order = valid[np.lexsort((-acc[valid], cost[valid]))]  # cost ascending, accuracy descending
    best_acc, best_cost = -np.inf, None
    for i in order:
        if acc[i] > best_acc:
            mask[i] = True
            best_acc, best_cost = acc[i], cost[i]
        elif acc[i] == best_acc and cost[i] == best_cost:
            mask[i] = True
    return mask


def pareto_front(df: pd.DataFrame, cost: str, accuracy: str = "test_accuracy",
                 by: Sequence[str] = ("dataset", "spc")) -> pd.DataFrame:
    """The front's runs per group, by cost. Accuracies compare only within one dataset and one
    samples-per-class value (more labels score higher for any method), so those are the groups;
    weak runs (capped, near chance) never sit on a front."""
    if "weak" in df:
        df = df[~df["weak"].astype(bool)]
    by = [b for b in by if b in df]
    if df.empty:
        return df.assign(on_front=pd.Series(dtype=bool)).iloc[0:0]
    parts = []
    for _, group in df.groupby(list(by), dropna=False, sort=True):
        parts.append(group[pareto_mask(group[cost], group[accuracy])])
    front = pd.concat(parts) if parts else df.iloc[0:0]
    return front.sort_values([*by, cost, accuracy], ascending=[*(True for _ in by), True, False])


def tradeoff_points(df: pd.DataFrame, cost: str, accuracy: str = "test_accuracy") -> pd.DataFrame:
    """Finished, non-parent runs that have both the cost and the accuracy."""
    if df.empty:
        return df
    keep = df["status"].eq("FINISHED") & ~df["is_sweep_parent"].astype(bool)
    keep &= df[cost].notna() & df[accuracy].notna()
    return df[keep]


def learning_curves(df: pd.DataFrame, accuracy: str = "test_accuracy",
                    keys: Sequence[str] = ("dataset", "backbone", "variant")) -> pd.DataFrame:
    """Accuracy vs samples per class: mean, spread and a 95 % interval over splits, per curve.

    Runs of the same (spc, split) are averaged first, so a re-run does not weigh a split twice;
    the spread is then over splits (std and the interval are NaN with one split). A split whose
    run failed or is missing is simply absent: ``n_splits`` says how many were averaged.
    ``n_weak`` counts the runs with a weak verdict (capped, near chance: :mod:`tlcore.quality`);
    ``weak`` marks a point that rests on any of them, ``weak_reason`` says why.
    """
    cols = [*keys, "spc", "mean", "std", "ci_low", "ci_high", "min", "max", "n_splits", "n_runs", "n_weak", "weak",
            "weak_reason"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    pts = df[df["status"].eq("FINISHED") & ~df["is_sweep_parent"].astype(bool)
             & df["spc"].notna() & df[accuracy].notna()].copy()
    if pts.empty:
        return pd.DataFrame(columns=cols)
    pts["split_key"] = pts["split_index"].fillna(-1)
    pts["is_weak"] = pts["weak"].astype(bool) if "weak" in pts else False
    pts["verdict"] = pts.get("quality", np.nan)
    per_split = pts.groupby([*keys, "spc", "split_key"], dropna=False).agg(
        acc=(accuracy, "mean"), runs=(accuracy, "size"), weak=("is_weak", "sum")).reset_index()
    curves = per_split.groupby([*keys, "spc"], dropna=False).agg(
        mean=("acc", "mean"), std=("acc", "std"), min=("acc", "min"), max=("acc", "max"),
        n_splits=("acc", "size"), n_runs=("runs", "sum"), n_weak=("weak", "sum")).reset_index()
    finite = per_split["acc"].where(np.isfinite(per_split["acc"]))  # what quality.t_interval counts
    spread = finite.groupby([per_split[k] for k in [*keys, "spc"]], dropna=False).agg(["mean", "std", "count"])
    spread["ci_low"], spread["ci_high"] = quality.t_intervals(spread["mean"], spread["std"], spread["count"])
    curves = curves.merge(spread[["ci_low", "ci_high"]].reset_index(), on=[*keys, "spc"], how="left")
    curves["n_weak"] = curves["n_weak"].astype(int)
    curves["weak"] = curves["n_weak"] > 0
    curves = curves.merge(_weak_reasons(pts[pts["is_weak"]], [*keys, "spc"]), on=[*keys, "spc"], how="left")
    curves["weak_reason"] = curves["weak_reason"].where(curves["weak"], "")
    return curves.sort_values([*keys, "spc"]).reset_index(drop=True)[cols]


def _weak_reasons(weak: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group, "2 capped, 1 near chance": counts of each verdict, most first (ties in order of first
    appearance, as ``value_counts``), counted in one groupby rather than a Python call per group."""
    if weak.empty:
        return pd.DataFrame({**{k: weak[k] for k in by}, "weak_reason": pd.Series(dtype=object)})
    counts = weak.assign(_pos=np.arange(len(weak))).groupby([*by, "verdict"], dropna=False, sort=False).agg(
        n=("_pos", "size"), first=("_pos", "min")).reset_index()
    counts = counts[counts["verdict"].notna()]
    counts = counts.sort_values(["n", "first"], ascending=[False, True], kind="stable")
    counts["text"] = counts["n"].astype(str) + " " + counts["verdict"].map(lambda k: quality.LABELS.get(k, k))
    return counts.groupby(by, dropna=False, sort=False)["text"].agg(", ".join).rename("weak_reason").reset_index()


def paired_differences(df: pd.DataFrame, accuracy: str = "test_accuracy") -> pd.DataFrame:
    """Fine-tuning minus feature extraction at each samples-per-class value, paired by training draw.

    Runs trained on the same images (same ``train_hash``, or, for runs logged before it, the same
    split index) form a pair; ``diff`` is the mean FT - FE difference over pairs with its 95 %
    Student-t interval (NaN with one pair) and ``verdict``: ``ft_higher``/``fe_higher`` when the
    interval excludes 0, else ``not_resolved``. ``n_weak`` counts pairs with a weak run in them:
    such pairs are left out of ``diff`` (and listed) so a capped run never tips a comparison.
    """
    cols = ["dataset", "backbone", "reference", "variant", "spc", "diff", "ci_low", "ci_high", "n_pairs", "n_weak",
            "fe_mean", "ft_mean", "verdict"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    pts = df[df["status"].eq("FINISHED") & ~df["is_sweep_parent"].astype(bool) & df["spc"].notna()
             & df[accuracy].notna() & df["method"].isin(["fe", "ft"])].copy()
    if pts.empty:
        return pd.DataFrame(columns=cols)
    if "train_hash" in pts and pts["train_hash"].notna().any():
        pts["pair_key"] = pts["train_hash"].astype(object).where(pts["train_hash"].notna(),
                                                                 "split" + pts["split_index"].map(str))
    else:
        pts["pair_key"] = "split" + pts["split_index"].map(str)
    pts["is_weak"] = pts["weak"].astype(bool) if "weak" in pts else False
    per = pts.groupby(["dataset", "backbone", "method", "variant", "spc", "pair_key"], dropna=False).agg(
        acc=(accuracy, "mean"), weak=("is_weak", "any")).reset_index()
    fe = per[per["method"] == "fe"].rename(columns={"variant": "reference", "acc": "fe", "weak": "fe_weak"})
    ft = per[per["method"] == "ft"].rename(columns={"acc": "ft", "weak": "ft_weak"})
    pairs = ft.drop(columns="method").merge(fe.drop(columns="method"),
                                            on=["dataset", "backbone", "spc", "pair_key"])
    # one vectorised pass over all groups (a Python loop per group took seconds with 50,000 runs)
    keys = ["dataset", "backbone", "reference", "variant", "spc"]
    weak = pairs["fe_weak"].astype(bool) | pairs["ft_weak"].astype(bool)
    ok = ~weak
    diff = (pairs["ft"] - pairs["fe"]).where(ok)
    frame = pd.DataFrame({"d": diff.where(np.isfinite(diff)), "fe": pairs["fe"].where(ok),
                          "ft": pairs["ft"].where(ok), "ok": ok.astype(int), "weak": weak.astype(int)})
    by = frame.groupby([pairs[k] for k in keys], sort=True)
    out = by.agg(diff=("d", "mean"), sd=("d", "std"), n_finite=("d", "count"), n_pairs=("ok", "sum"),
                 n_weak=("weak", "sum"), fe_mean=("fe", "mean"), ft_mean=("ft", "mean")).reset_index()
    out["ci_low"], out["ci_high"] = quality.t_intervals(out["diff"], out["sd"], out["n_finite"])
    resolved = (out["n_pairs"] >= 2) & np.isfinite(out["ci_low"]) & ((out["ci_low"] > 0) | (out["ci_high"] < 0))
    out["verdict"] = np.where(resolved, np.where(out["diff"] > 0, "ft_higher", "fe_higher"), "not_resolved")
    out["n_pairs"] = out["n_pairs"].astype(int)
    out["n_weak"] = out["n_weak"].astype(int)
    return out[cols].reset_index(drop=True)


def crossover_intervals(paired: pd.DataFrame) -> pd.DataFrame:
    """Where fine-tuning overtakes feature extraction, with the range these runs pin it to.

    Per (dataset, backbone, FE variant, FT variant): the crossover is resolved only when FE is
    significantly better at a smaller samples-per-class value and FT significantly better at a
    larger one (paired 95 % intervals); its interval is then [last FE-better value, first
    FT-better value] and ``spc`` the log-interpolated zero of the mean difference inside it.
    Otherwise ``resolved`` is False and ``note`` says what the runs show instead.
    """
    cols = ["dataset", "backbone", "reference", "variant", "resolved", "spc", "spc_low", "spc_high", "note"]
    rows = []
    if paired.empty:
        return pd.DataFrame(columns=cols)
    # per group, NumPy slices of one sorted frame: a pandas filter per group took seconds with 50,000 runs
    names = ["dataset", "backbone", "reference", "variant"]
    ordered = paired.sort_values("spc", kind="stable")
    grouped = ordered.groupby(names, sort=True)
    codes = grouped.ngroup().to_numpy()
    order = np.argsort(codes, kind="stable")  # groups in sorted order, spc ascending inside each
    bounds = np.searchsorted(codes[order], np.arange(grouped.ngroups + 1))
    spc_all, diff_all = ordered["spc"].to_numpy(float), ordered["diff"].to_numpy(float)
    verdict_all = ordered["verdict"].to_numpy(object)
    for i, key in enumerate(grouped.size().index):
        pos = order[bounds[i]:bounds[i + 1]]
        spc, diff, verdict = spc_all[pos], diff_all[pos], verdict_all[pos]
        fe_better = spc[verdict == "fe_higher"].tolist()
        ft_better = spc[verdict == "ft_higher"].tolist()
        base = dict(zip(names, key, strict=True))
        lows = [v for v in fe_better if any(u > v for u in ft_better)]
        if lows:
            low = max(lows)
            high = min(u for u in ft_better if u > low)
            inside = (spc >= low) & (spc <= high) & ~np.isnan(diff)
            crossing = find_crossings(spc[inside], np.zeros(int(inside.sum())), diff[inside])
            ups = [x for x, _, d in crossing if d > 0]
            spc = ups[-1] if ups else float(np.sqrt(low * high))
            rows.append({**base, "resolved": True, "spc": spc, "spc_low": low, "spc_high": high,
                         "note": f"{key[3]} overtakes {key[2]} between {low:g} and {high:g} samples per class"})
            continue
        if ft_better and not fe_better:
            note = f"{key[3]} scored higher at {', '.join(f'{v:g}' for v in ft_better)} samples per class; no point " \
                   f"where {key[2]} was clearly higher"
        elif fe_better and not ft_better:
            note = f"{key[2]} scored higher at {', '.join(f'{v:g}' for v in fe_better)} samples per class; " \
                   f"{key[3]} never clearly higher"
        else:
            note = "not resolved by these runs: no samples-per-class value separates them (95% intervals)"
        rows.append({**base, "resolved": False, "spc": np.nan, "spc_low": np.nan, "spc_high": np.nan, "note": note})
    return pd.DataFrame(rows, columns=cols)


def find_crossings(x: Sequence[float], reference: Sequence[float], other: Sequence[float],
                   log_x: bool = True) -> list[tuple[float, float, int]]:
    """Where ``other`` crosses ``reference`` (both sampled at ``x``, ascending).

    Returns (x, y, direction): direction +1 where ``other`` rises above ``reference``, -1 where
    it falls below. Between samples the curves are straight lines in log x (as drawn on the
    page's log axis). Touching without changing sides is not a crossing; a stretch of equality
    between opposite sides crosses at its middle.
    """
    x = np.asarray(x, dtype=float)
    ref = np.asarray(reference, dtype=float)
    oth = np.asarray(other, dtype=float)
    ok = np.isfinite(x) & np.isfinite(ref) & np.isfinite(oth) & ((x > 0) if log_x else True)
    x, ref, oth = x[ok], ref[ok], oth[ok]
    if len(x) < 2:
        return []
    u = np.log(x) if log_x else x
    d = oth - ref
    sign = np.sign(d)
    out = []
    last = None  # index of the last sample strictly on one side
    for i in range(len(d)):
        if sign[i] == 0:
            continue
        if last is not None and sign[i] != sign[last]:
            if i == last + 1:  # straight crossing between two samples
                t = d[last] / (d[last] - d[i])
                ux = u[last] + t * (u[i] - u[last])
                y = ref[last] + t * (ref[i] - ref[last])
            else:  # equal over samples last+1 .. i-1: cross at their middle
                mid = (u[last + 1] + u[i - 1]) / 2
                ux = mid
                y = float(np.interp(mid, u, ref))
            out.append((float(np.exp(ux) if log_x else ux), float(y), int(sign[i])))
        last = i
    return out


def crossovers(curves: pd.DataFrame, log_x: bool = True) -> pd.DataFrame:
    """Where each fine-tuning curve crosses each feature-extraction curve of the same dataset and
    backbone, interpolated between the samples-per-class values either has (within the range both
    cover)."""
    cols = ["dataset", "backbone", "reference", "variant", "spc", "accuracy", "direction"]
    rows = []
    if curves.empty:
        return pd.DataFrame(columns=cols)
    ordered = curves.sort_values("spc")
    arrays = {key: (g["spc"].to_numpy(float), g["mean"].to_numpy(float))
              for key, g in ordered.groupby(["dataset", "backbone", "variant"], sort=True)}
    pairs: dict[tuple, dict[str, list]] = {}
    for dataset, backbone, variant in arrays:
        side = "fe" if str(variant).startswith("FE") else "ft" if str(variant).startswith("FT") else None
        if side:
            pairs.setdefault((dataset, backbone), {"fe": [], "ft": []})[side].append(variant)
    to_axis = np.log if log_x else (lambda v: v)
    for (dataset, backbone), sides in sorted(pairs.items()):
        for ref in sorted(sides["fe"], key=natural_key):
            rx, ry = arrays[(dataset, backbone, ref)]
            for var in sorted(sides["ft"], key=natural_key):
                ox, oy = arrays[(dataset, backbone, var)]
                grid = np.union1d(rx, ox)
                grid = grid[(grid >= max(rx[0], ox[0])) & (grid <= min(rx[-1], ox[-1]))]
                if len(grid) < 2:
                    continue
                on_ref = np.interp(to_axis(grid), to_axis(rx), ry)
                on_var = np.interp(to_axis(grid), to_axis(ox), oy)
                for x, y, direction in find_crossings(grid, on_ref, on_var, log_x):
                    rows.append({"dataset": dataset, "backbone": backbone, "reference": ref, "variant": var,
                                 "spc": x, "accuracy": y,
                                 "direction": f"{var} overtakes {ref}" if direction > 0 else
                                 f"{ref} overtakes {var}"})
    return pd.DataFrame(rows, columns=cols)


def crossover_marks(cross: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """The resolved crossovers of :func:`crossover_intervals` placed on their FE curve (``accuracy``
    interpolated on the log samples-per-class axis, as drawn), with ``direction`` for the hover."""
    marks = cross[cross["resolved"].astype(bool)] if not cross.empty else cross
    if marks.empty:
        return marks.assign(accuracy=pd.Series(dtype=float), direction=pd.Series(dtype=object))
    at = []
    for m in marks.itertuples():
        ref = curves[(curves["dataset"] == m.dataset) & (curves["backbone"] == m.backbone)
                     & (curves["variant"] == m.reference)].sort_values("spc")
        at.append(float(np.interp(np.log(m.spc), np.log(ref["spc"].to_numpy(float)), ref["mean"].to_numpy(float)))
                  if len(ref) else np.nan)
    return marks.assign(accuracy=at, direction=marks["note"])


def cost_ratio(df: pd.DataFrame, cost: str = "time_total_s") -> pd.DataFrame:
    """Mean cost of each fine-tuning variant over the mean cost of each feature-extraction variant,
    per dataset, backbone and samples per class (where both have finished runs)."""
    cols = ["dataset", "backbone", "reference", "variant", "spc", "fe_cost", "ft_cost", "ratio", "n_fe", "n_ft"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    pts = df[df["status"].eq("FINISHED") & ~df["is_sweep_parent"].astype(bool) & df["spc"].notna()
             & df[cost].notna() & df["method"].isin(["fe", "ft"])]
    means = pts.groupby(["dataset", "backbone", "method", "variant", "spc"]).agg(
        cost=(cost, "mean"), n=(cost, "size")).reset_index()
    fe = means[means["method"] == "fe"].rename(columns={"variant": "reference", "cost": "fe_cost", "n": "n_fe"})
    ft = means[means["method"] == "ft"].rename(columns={"cost": "ft_cost", "n": "n_ft"})
    joined = ft.merge(fe.drop(columns="method"), on=["dataset", "backbone", "spc"])
    joined = joined[joined["fe_cost"] > 0]
    joined["ratio"] = joined["ft_cost"] / joined["fe_cost"]
    return joined.sort_values(["dataset", "backbone", "reference", "variant", "spc"])[cols].reset_index(drop=True)
