"""What the user's own runs say, for the guideline walkthrough: comparison, crossover, depth, pace.

:func:`gather_evidence` reads the Trade-offs and QUANTA frames of :mod:`tlcore.results` and
grades each piece (strong: the user's dataset and backbone; medium: their dataset, another
backbone; weak: capped or near-chance runs, other datasets: shown, never deciding), comparing FE
and FT on the same draws with 95 % intervals (:mod:`tlcore.quality`);
:func:`machine_speed` turns this machine's finished jobs into a pace, and :func:`calibrate_speed`
measures one in seconds when there are none. Nothing here imports streamlit.
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np
import pandas as pd

from tlcore import quality
from tlcore.guidelines import (
    DECIDING,
    MEDIUM,
    NEAR_FACTOR,
    STRONG,
    WEAK,
    Comparison,
    Evidence,
    EvidenceItem,
    Situation,
    Speed,
    same_task_family,
)
from tlcore.results import (
    crossover_intervals,
    learning_curves,
    paired_differences,
    quanta_depth,
    quanta_layer_verdicts,
)

ACCURACY = "test_accuracy"


def _usable_points(runs: pd.DataFrame) -> pd.DataFrame:
    """Finished FE/FT points scored on test (model-selection runs score on val: not comparable)."""
    if runs.empty or "spc" not in runs or ACCURACY not in runs:
        return runs.iloc[0:0]
    keep = (runs["status"].eq("FINISHED") & ~runs["is_sweep_parent"].astype(bool) & runs["spc"].notna()
            & runs[ACCURACY].notna() & runs["method"].isin(["fe", "ft"]))
    if "model_selection" in runs:
        keep &= ~runs["model_selection"].astype(str).str.lower().eq("true")
    return runs[keep]


def configuration_of(variant: str) -> int | str | None:
    """``"FT config 2"`` -> 2, ``"FT lp-ft"`` -> ``"lp-ft"``; None for anything else."""
    text = str(variant)
    if text.startswith("FT config "):
        tail = text[len("FT config "):]
        return int(tail) if tail.isdigit() else tail
    if text.startswith("FT "):
        return text[3:]
    return None


def _strength(dataset: str, backbone: str, s: Situation) -> str:
    if s.dataset and dataset == s.dataset:
        return STRONG if backbone == s.backbone else MEDIUM
    return WEAK


def _gap(spc: float, s: Situation) -> float:
    return abs(math.log(spc) - math.log(s.samples_per_class))


def _compare(points: pd.DataFrame, dataset: str, backbone: str, s: Situation) -> tuple[Comparison | None, str]:
    """The FE-vs-FT comparison of one dataset and backbone at the samples per class closest to the user's,
    from non-weak runs only; or None and why not."""
    subset = points[(points["dataset"] == dataset) & (points["backbone"] == backbone)]
    strong = subset[~subset["weak"].astype(bool)] if "weak" in subset else subset
    weak_flags = subset["weak"].astype(bool) if "weak" in subset else pd.Series(False, index=subset.index)
    weak_ft = subset[(subset["method"] == "ft") & weak_flags]
    if not {"fe", "ft"} <= set(strong["method"]):
        if not weak_ft.empty:
            counts = weak_ft["quality"].map(lambda q: quality.LABELS.get(q, q)).value_counts()
            why = weak_ft["quality_reason"].dropna()
            return None, ("its fine-tuning runs are weak evidence (" + ", ".join(f"{n} {k}" for k, n in counts.items())
                          + (f": {why.iloc[0]}" if len(why) else "") + ")")
        return None, "it lacks converged runs of both methods"
    paired = paired_differences(strong, ACCURACY)
    curves = learning_curves(strong, ACCURACY)
    fe_curves = curves[curves["variant"].astype(str).str.startswith("FE")]
    ft_curves = curves[curves["variant"].astype(str).str.startswith("FT")]
    shared = sorted(set(fe_curves["spc"]) & set(ft_curves["spc"]))
    if not shared:
        return None, "its FE and FT runs share no samples-per-class value"
    spc = min(shared, key=lambda v: (_gap(v, s), -v))
    fe_at, ft_at = fe_curves[fe_curves["spc"] == spc], ft_curves[ft_curves["spc"] == spc]
    fe_row = fe_at.loc[fe_at["mean"].idxmax()]
    ft_row = ft_at.loc[ft_at["mean"].idxmax()]
    pair = paired[(paired["spc"] == spc) & (paired["reference"] == fe_row["variant"])
                  & (paired["variant"] == ft_row["variant"])]
    if not pair.empty and pair.iloc[0]["n_pairs"] > 0:
        p = pair.iloc[0]
        diff, lo, hi, n, verdict = p["diff"], p["ci_low"], p["ci_high"], int(p["n_pairs"]), p["verdict"]
    else:  # draws not shared: an unpaired (Welch) comparison of the splits' means
        per_split = strong[strong["spc"] == spc]
        a = per_split[per_split["variant"] == ft_row["variant"]][ACCURACY].to_numpy(float)
        b = per_split[per_split["variant"] == fe_row["variant"]][ACCURACY].to_numpy(float)
        diff, lo, hi = quality.welch_interval(a, b)
        n = int(min(len(a), len(b)))
        verdict = ("ft_higher" if lo > 0 else "fe_higher" if hi < 0 else "not_resolved") if np.isfinite(lo) \
            else "not_resolved"
    measured = (int(min(fe_curves["spc"].min(), ft_curves["spc"].min())),
                int(max(fe_curves["spc"].max(), ft_curves["spc"].max())))
    near = 1 / NEAR_FACTOR <= spc / s.samples_per_class <= NEAR_FACTOR
    return Comparison(
        dataset=dataset, backbone=backbone, strength=_strength(dataset, backbone, s), spc=int(spc), near=near,
        measured_range=measured, fe_variant=str(fe_row["variant"]),
        ft_configuration=configuration_of(ft_row["variant"]),
        fe=(float(fe_row["mean"]), float(fe_row["ci_low"]), float(fe_row["ci_high"])),
        ft=(float(ft_row["mean"]), float(ft_row["ci_low"]), float(ft_row["ci_high"])),
        diff=float(diff), diff_low=float(lo), diff_high=float(hi), n_pairs=n, verdict=str(verdict)), ""


def _crossover(points: pd.DataFrame, comp: Comparison) -> tuple | None:
    subset = points[(points["dataset"] == comp.dataset) & (points["backbone"] == comp.backbone)]
    if "weak" in subset:
        subset = subset[~subset["weak"].astype(bool)]
    cross = crossover_intervals(paired_differences(subset, ACCURACY))
    cross = cross[cross["resolved"].astype(bool) & (cross["reference"] == comp.fe_variant)]
    if cross.empty:
        return None
    first = cross.sort_values("spc_high").iloc[0]
    return (float(first["spc"]), float(first["spc_low"]), float(first["spc_high"]),
            configuration_of(first["variant"]))


def _quanta(quanta_runs: pd.DataFrame, s: Situation) -> tuple[dict, list[EvidenceItem]]:
    """A freezing depth from QUANTA runs of the chosen backbone on this dataset with a layer that separated
    from its control; every other QUANTA run is listed with why it does not set one."""
    if quanta_runs.empty or "method" not in quanta_runs:
        return {}, []
    verdicts = quanta_layer_verdicts(quanta_runs)
    if verdicts.empty:
        return {}, []
    items, fields = [], {}
    for (backbone, dataset), g in verdicts.groupby(["backbone", "dataset"], sort=True):
        where = f"QUANTA on {dataset} ({backbone})"
        if backbone != s.backbone:
            items.append(EvidenceItem("quanta", WEAK, where + ".", used=False,
                                      why_not=f"not your backbone ({s.backbone}): its layers say nothing about "
                                              f"{s.backbone}'s"))
            continue
        if not same_task_family(dataset, s.dataset):
            items.append(EvidenceItem("quanta", WEAK, where + ".", used=False,
                                      why_not="another dataset than yours" if s.dataset else "no dataset picked"))
            continue
        matched = g[g["matched"]]
        if matched.empty:
            items.append(EvidenceItem("quanta", WEAK, where + ".", used=False,
                                      why_not="no random-source control with the same settings beside it"))
            continue
        settings = matched.groupby("settings_key")["n_trained"].sum().idxmax()
        chosen = matched[matched["settings_key"] == settings]
        depth = quanta_depth(chosen)
        if depth is None:
            items.append(EvidenceItem("quanta", WEAK, where + ": no layer separated from the random-source control.",
                                      used=False, why_not="no layer showed a signal against its control"))
            continue
        text = (f"{where}: the target kept the source's features in the first {depth[0]} of {depth[1]} layers "
                "against the random-source control.")
        if not fields:
            fields = {"quanta_depth": depth, "quanta_backbone": backbone, "quanta_dataset": dataset}
            items.append(EvidenceItem("quanta", STRONG, text))
        else:
            items.append(EvidenceItem("quanta", STRONG, text, used=False, why_not="another QUANTA task was used"))
    return fields, items


def gather_evidence(runs: pd.DataFrame, quanta_runs: pd.DataFrame, situation: Situation) -> Evidence | None:
    """What the store's runs say about ``situation``, each piece with its strength, or None when nothing.

    ``runs``: the Trade-offs view (FE and FT runs, with verdicts); ``quanta_runs``: the QUANTA view.
    The comparison comes from the strongest (dataset, backbone) with both methods: the user's dataset
    and backbone (strong), their dataset with another backbone (medium), anything else (weak, shown
    only). Weak runs (capped, near chance) never enter a comparison.
    """
    s = situation
    points = _usable_points(runs)
    items: list[EvidenceItem] = []
    candidates = []
    for (dataset, backbone), g in points.groupby(["dataset", "backbone"]) if not points.empty else []:
        if not {"fe", "ft"} <= set(g["method"]):
            continue
        strength = _strength(dataset, backbone, s)
        comp, why = _compare(points, dataset, backbone, s)
        rank = {STRONG: 0, MEDIUM: 1, WEAK: 2}[strength]
        if comp is None:
            items.append(EvidenceItem("comparison", WEAK, f"FE and FT runs on {dataset} with {backbone}.", used=False,
                                      why_not=why))
            continue
        if strength == WEAK:
            items.append(EvidenceItem("comparison", WEAK, comp.describe(), used=False,
                                      why_not="measured on another dataset" if s.dataset else
                                      "no dataset picked: runs on other data do not decide"))
        candidates.append((rank, _gap(comp.spc, s), -len(g), comp))
    comp = min(candidates, key=lambda c: c[:3])[3] if candidates else None
    crossover = None
    curves_out = None
    if comp is not None:
        subset = points[(points["dataset"] == comp.dataset) & (points["backbone"] == comp.backbone)]
        curves_out = learning_curves(subset, ACCURACY)
        curves_out = curves_out.assign(configuration=curves_out["variant"].map(configuration_of))
        if comp.strength in DECIDING:
            items.insert(0, EvidenceItem("comparison", comp.strength, comp.describe(), used=comp.near,
                                         why_not="" if comp.near else f"measured at {comp.spc} samples per class, not "
                                                                      f"near your {s.samples_per_class}"))
            crossover = _crossover(points, comp)
            if crossover is not None:
                items.append(EvidenceItem("crossover", comp.strength,
                                          f"Fine-tuning (configuration {crossover[3]}) overtook feature extraction "
                                          f"{comp.where} between {crossover[1]:g} and {crossover[2]:g} samples per "
                                          "class (95% intervals)."))
            others = [c[3] for c in candidates if c[3] is not comp and c[3].strength in DECIDING and c[3].near
                      and c[3].verdict != "not_resolved" and comp.verdict != "not_resolved"
                      and c[3].verdict != comp.verdict]
            if others:
                items.append(EvidenceItem("conflict", others[0].strength,
                                          f"Your runs disagree: {comp.where} says {comp.verdict.replace('_', ' ')}, "
                                          f"{others[0].where} says {others[0].verdict.replace('_', ' ')}.",
                                          used=False, why_not="the stronger evidence decides"))
        weak_runs = subset[subset["weak"].astype(bool)] if "weak" in subset else subset.iloc[0:0]
        if len(weak_runs):
            counts = weak_runs["quality"].map(lambda q: quality.LABELS.get(q, q)).value_counts()
            items.append(EvidenceItem("weak runs", WEAK, f"{len(weak_runs)} run(s) {comp.where} are weak evidence ("
                                      + ", ".join(f"{n} {k}" for k, n in counts.items()) + ").", used=False,
                                      why_not="left out of every comparison"))
    quanta_fields, quanta_items = _quanta(quanta_runs, s)
    items += quanta_items
    if comp is None and not items and not quanta_fields:
        return None
    return Evidence(dataset=comp.dataset if comp else None, backbone=comp.backbone if comp else None,
                    comparison=comp if comp is not None else None, crossover=crossover, items=tuple(items),
                    curves=curves_out, **quanta_fields)


# ---------------------------------------------------------------------------------------------
# This machine's pace


def _watts(runs: pd.DataFrame, backbone: str, device_type: str) -> float | None:
    """Median power of finished runs of ``backbone`` on ``device_type``: energy over wall time."""
    need = {"energy_kwh", "time_total_s", "device", "backbone"}
    if runs.empty or not need <= set(runs.columns):
        return None
    ok = (runs["status"].eq("FINISHED") & runs["backbone"].astype(str).eq(backbone)
          & runs["device"].astype(str).str.startswith(device_type) & (runs["time_total_s"] > 0)
          & (runs["energy_kwh"] > 0))
    watts = (runs.loc[ok, "energy_kwh"] * 3.6e6 / runs.loc[ok, "time_total_s"]).dropna()
    return float(watts.median()) if len(watts) else None


def machine_speed(tracker, runs: pd.DataFrame, backbone: str, device_type: str) -> Speed | None:
    """This machine's pace from its finished FE and FT jobs of ``backbone`` (None when it has none)."""
    from tlcore.history import measured_speed

    fe = measured_speed(tracker, "fe", backbone, device_type)
    ft = measured_speed(tracker, "ft", backbone, device_type)
    if fe is None and ft is None:
        return None
    rate_fe = 1 / (fe or ft).seconds_per_flop
    rate_ft = 1 / (ft or fe).seconds_per_flop
    parts = [m.basis for m in (fe, ft) if m is not None]
    if fe is None or ft is None:
        parts.append(f"no {'feature-extraction' if fe is None else 'fine-tuning'} job yet, so its pace is assumed "
                     "equal")
    watts = _watts(runs, backbone, device_type)
    return Speed(rate_fe, rate_ft, watts, "; ".join(parts)
                 + (f"; power {watts:.0f} W, the median of those runs' energy over time" if watts else ""))


def calibrate_speed(backbone: str, device: str = "auto", batch: int = 8, repeats: int = 3,
                    input_size: int | None = None) -> Speed:
    """Measure this machine's pace now: a forward pass (FE) and a training step (FT) on random
    images at ``input_size`` (default: the backbone's), ``repeats`` times each, median. Takes
    seconds on a CPU."""
    import torch

    from tlcore.devices import resolve_device
    from tlcore.measure.flops import count_flops
    from tlcore.models import backbone_config, create_backbone

    dev = resolve_device(device)
    torch.manual_seed(0)
    size = input_size or backbone_config(backbone).preprocessing.input_size
    model = create_backbone(backbone, weights="random", num_classes=2)
    counts = count_flops(model, size, train=True, batch=2)
    model.to(dev)
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, 2, (batch,), device=dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def timed(fn) -> float:
        fn()  # warm-up
        out = []
        for _ in range(repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            out.append(time.perf_counter() - t)
        return statistics.median(out)

    def forward() -> None:
        model.eval()
        with torch.no_grad():
            model(x)

    def step() -> None:
        model.train()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    t_fe, t_ft = timed(forward), timed(step)
    rate_fe = batch * counts.forward / t_fe
    rate_ft = batch * (counts.forward + counts.backward) / t_ft
    how = (f"measured just now on {dev.type}: {batch} images at {size} px, forward {t_fe * 1000:.0f} ms, training "
           f"step {t_ft * 1000:.0f} ms (median of {repeats}); whole jobs also spend time loading data and models")
    return Speed(float(rate_fe), float(rate_ft), None, how)


def spc_grid_for_pilot(samples_per_class: int, largest: int = 10) -> tuple[int, ...]:
    """Small samples-per-class values to try first: 1, 2, 5, 10 up to what the user has."""
    grid = [v for v in (1, 2, 5, 10, 20) if v <= min(samples_per_class, largest)]
    return tuple(grid) or (int(samples_per_class),)


__all__ = ["calibrate_speed", "configuration_of", "gather_evidence", "machine_speed", "spc_grid_for_pilot"]
