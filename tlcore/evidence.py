"""What the user's own runs say, for the guideline walkthrough: closest curves, crossover, depth, pace.

:func:`gather_evidence` reads the Trade-offs and QUANTA frames of :mod:`tlcore.results` and
picks the feature-extraction and fine-tuning curves closest to the user's situation (their
dataset first, then their backbone, then the curves whose samples-per-class range covers theirs);
:func:`machine_speed` turns this machine's finished jobs into a pace, and :func:`calibrate_speed`
measures one in seconds when there are none. Nothing here imports streamlit.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import replace

import pandas as pd

from tlcore.guidelines import Evidence, Situation, Speed
from tlcore.results import (
    RANDOM_SOURCE,
    TRAINED_SOURCE,
    crossovers,
    layer_hint,
    learning_curves,
    quanta_summary,
    quanta_values,
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


def _closest_pair(points: pd.DataFrame, s: Situation) -> tuple[str, str] | None:
    """The (dataset, backbone) with both FE and FT curves that best matches the situation."""
    pairs = []
    for (dataset, backbone), g in points.groupby(["dataset", "backbone"]):
        if not {"fe", "ft"} <= set(g["method"]):
            continue
        log_gap = min(abs(math.log(v) - math.log(s.samples_per_class)) for v in g["spc"] if v > 0)
        pairs.append(((dataset != s.dataset, backbone != s.backbone, round(log_gap, 3), -len(g)),
                      (dataset, backbone)))
    return min(pairs)[1] if pairs else None


def _at(curve: pd.DataFrame, spc: float) -> tuple[float, float]:
    row = curve[curve["spc"] == spc].iloc[0]
    std = float(row["std"]) if pd.notna(row["std"]) else 0.0
    return float(row["mean"]), std


def _quanta_depth(quanta_runs: pd.DataFrame, s: Situation) -> tuple[dict, list[str]]:
    """Leading layers whose mean final lambda_S beat the random-source control, on the closest target."""
    values = quanta_values(quanta_runs) if not quanta_runs.empty else pd.DataFrame()
    if values.empty:
        return {}, []
    values = values[values["status"].eq("FINISHED")]
    summary = quanta_summary(values, layer_hint(quanta_runs))
    groups = []
    for (backbone, dataset), g in summary.groupby(["backbone", "dataset"]):
        kinds = set(g["source_kind"])
        groups.append(((RANDOM_SOURCE not in kinds or TRAINED_SOURCE not in kinds, dataset != s.dataset,
                        backbone != s.backbone, -len(g)), backbone, dataset, g))
    if not groups:
        return {}, []
    _, backbone, dataset, g = min(groups, key=lambda t: t[0])
    trained = g[g["source_kind"] == TRAINED_SOURCE].set_index("layer")
    control = g[g["source_kind"] == RANDOM_SOURCE].set_index("layer")
    if trained.empty or control.empty:
        return {}, [f"QUANTA runs of {backbone} on {dataset} have no "
                    f"{'random-source control' if control.empty else 'trained source'} beside them, so they do "
                    "not say how deep the transferable layers go; run QUANTA with source weights = random too."]
    layers = trained.sort_values("layer_pos").index.intersection(control.index, sort=False)
    depth = 0
    for layer in layers:
        if trained.at[layer, "mean"] > control.at[layer, "mean"]:
            depth += 1
        else:
            break
    n_runs = int(trained["n"].max())
    note = (f"QUANTA on {dataset} ({backbone}, {n_runs} trained-source run(s) and their random-source control): "
            f"lambda_S beat the control in the first {depth} of {len(layers)} layers.")
    return {"quanta_depth": depth, "quanta_layers": len(layers), "quanta_backbone": backbone,
            "quanta_dataset": dataset}, [note]


def gather_evidence(runs: pd.DataFrame, quanta_runs: pd.DataFrame, situation: Situation) -> Evidence | None:
    """The evidence closest to ``situation`` in the store's frames, or None when there is none.

    ``runs``: the Trade-offs view (FE and FT runs); ``quanta_runs``: the QUANTA view.
    """
    s = situation
    points = _usable_points(runs)
    fields: dict = {}
    notes: list[str] = []
    curves_out = None
    pair = _closest_pair(points, s) if not points.empty else None
    if pair is not None:
        dataset, backbone = pair
        subset = points[(points["dataset"] == dataset) & (points["backbone"] == backbone)]
        curves = learning_curves(subset, ACCURACY)
        fe_variants = [v for v in curves["variant"].unique() if str(v).startswith("FE")]
        ft_variants = [v for v in curves["variant"].unique() if str(v).startswith("FT")]
        # one FE curve: the classifier with the best mean accuracy over the points it has
        fe_variant = max(fe_variants, key=lambda v: curves[curves["variant"] == v]["mean"].mean())
        fe_curve = curves[curves["variant"] == fe_variant]
        ft_curves = {v: curves[curves["variant"] == v] for v in ft_variants}
        shared = sorted(set(fe_curve["spc"]) & set().union(*(set(c["spc"]) for c in ft_curves.values())))
        fields.update(dataset=dataset, backbone=backbone)
        if shared:
            closest = min(shared, key=lambda v: (abs(math.log(v) - math.log(s.samples_per_class)), v))
            best_ft = max((v for v in ft_variants if closest in set(ft_curves[v]["spc"])),
                          key=lambda v: _at(ft_curves[v], closest)[0])
            fields.update(fe_accuracy=_at(fe_curve, closest), ft_accuracy=_at(ft_curves[best_ft], closest),
                          ft_configuration=configuration_of(best_ft), closest_spc=int(closest),
                          measured_up_to=int(min(fe_curve["spc"].max(),
                                                 max(c["spc"].max() for c in ft_curves.values()))))
        # where a fine-tuning curve ends above FE: its last upward crossing is where it overtook
        cross = crossovers(curves[curves["variant"].isin([fe_variant, *ft_variants])])
        overtakes = []
        for variant, c in ft_curves.items():
            grid = sorted(set(c["spc"]) & set(fe_curve["spc"]))
            if not grid or _at(c, grid[-1])[0] <= _at(fe_curve, grid[-1])[0]:
                continue
            ups = cross[(cross["variant"] == variant) & cross["direction"].str.startswith(variant)]
            if not ups.empty:
                overtakes.append((float(ups["spc"].iloc[-1]), str(variant)))
        if overtakes:
            spc, variant = min(overtakes)
            fields.update(crossover_spc=spc, crossover_configuration=configuration_of(variant))
        n_fe, n_ft = int((subset["method"] == "fe").sum()), int((subset["method"] == "ft").sum())
        notes.append(f"Closest runs: {dataset} with {backbone}: {n_fe} feature-extraction and {n_ft} fine-tuning "
                     f"point(s), {int(subset['spc'].min())}-{int(subset['spc'].max())} samples per class"
                     + ("" if dataset == s.dataset else f" (not your dataset{f' {s.dataset}' if s.dataset else ''})")
                     + ".")
        curves_out = curves.assign(configuration=curves["variant"].map(configuration_of))
    quanta_fields, quanta_notes = _quanta_depth(quanta_runs, s)
    fields.update(quanta_fields)
    notes += quanta_notes
    if not fields and not notes:
        return None
    ev = Evidence(dataset=fields.pop("dataset", None), backbone=fields.pop("backbone", None), **fields)
    return replace(ev, notes=tuple(notes), curves=curves_out)


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


def calibrate_speed(backbone: str, device: str = "auto", batch: int = 8, repeats: int = 3) -> Speed:
    """Measure this machine's pace now: a forward pass (FE) and a training step (FT) on random
    images at the backbone's input size, ``repeats`` times each, median. Takes seconds on a CPU."""
    import torch

    from tlcore.devices import resolve_device
    from tlcore.measure.flops import count_flops
    from tlcore.models import backbone_config, create_backbone

    dev = resolve_device(device)
    torch.manual_seed(0)
    size = backbone_config(backbone).preprocessing.input_size
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
