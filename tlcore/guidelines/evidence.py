"""What the user's own runs say, each piece ranked by how far it can be trusted.

Strengths, strongest first: strong (the user's dataset and backbone, converged runs), medium
(their dataset, another backbone), weak (capped or near-chance runs, other datasets: shown,
never deciding); published findings are priors. :func:`gather_evidence` reads the Trade-offs and
QUANTA frames of :mod:`tlcore.results` and compares FE and FT on the same draws with 95 %
intervals (:mod:`tlcore.quality`). Nothing here imports streamlit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tlcore import quality
from tlcore.guidelines.situation import Situation
from tlcore.results import (
    crossover_intervals,
    learning_curves,
    paired_differences,
    quanta_depth,
    quanta_layer_verdicts,
)

#: How much a piece of evidence can weigh (the page shows it beside each reason):
STRONG = "strong"  # measured on the user's dataset and backbone, with converged runs
MEDIUM = "medium"  # measured on the user's dataset with another backbone
WEAK = "weak"  # capped or near-chance runs, or another dataset: shown, never deciding
PRIOR = "prior"  # a published finding
PROJECTION = "projection"  # the cost projection (about cost, not accuracy)
DECIDING = (STRONG, MEDIUM)
STRENGTH_LABELS = {
    STRONG: "strong: measured on your dataset and backbone, converged runs",
    MEDIUM: "medium: measured on your dataset with another backbone",
    WEAK: "weak: shown, never deciding",
    PRIOR: "prior: a published finding",
    PROJECTION: "cost projection",
}
#: Measurements within this factor of the user's samples per class count as made "at" it.
NEAR_FACTOR = 2.0


@dataclass(frozen=True)
class EvidenceItem:
    """One thing the user's runs say, how strong it is, and whether the recommendation used it."""

    kind: str  # comparison | crossover | quanta
    strength: str
    text: str
    used: bool = True
    why_not: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "strength": self.strength, "text": self.text}
        if not self.used:
            out["why_not_used"] = self.why_not
        return out


@dataclass(frozen=True)
class Comparison:
    """Feature extraction against the best fine-tuning configuration at one samples-per-class value,
    paired by training draw (``diff`` = FT - FE, with its 95 % interval)."""

    dataset: str
    backbone: str
    strength: str
    spc: int
    near: bool  # within NEAR_FACTOR of the user's samples per class
    measured_range: tuple[int, int]
    fe_variant: str
    ft_configuration: int | str | None
    fe: tuple[float, float, float]  # mean, 95% low, 95% high (NaN bounds with one draw)
    ft: tuple[float, float, float]
    diff: float
    diff_low: float
    diff_high: float
    n_pairs: int
    verdict: str  # fe_higher | ft_higher | not_resolved

    @property
    def where(self) -> str:
        return f"on {self.dataset} with {self.backbone}"

    @property
    def says_ft_lower(self) -> bool:
        return self.verdict == "fe_higher" or (self.verdict == "not_resolved" and self.ft[0] <= self.fe[0])

    def describe(self) -> str:
        interval = (f"{self.diff * 100:+.1f} points, 95% interval {self.diff_low * 100:+.1f} to "
                    f"{self.diff_high * 100:+.1f} over {self.n_pairs} draws" if np.isfinite(self.diff_low) else
                    f"{self.diff * 100:+.1f} points from {self.n_pairs} draw{'s' if self.n_pairs != 1 else ''}, too "
                    "few for an interval")
        ft = f"fine-tuning (configuration {self.ft_configuration})"
        scores = f"feature extraction {self.fe[0]:.1%}, {ft} {self.ft[0]:.1%}"
        if self.verdict == "fe_higher":
            head = f"feature extraction scored higher than {ft}"
        elif self.verdict == "ft_higher":
            head = f"{ft} scored higher than feature extraction"
        else:
            head = f"feature extraction and {ft} were not separated (the interval includes 0)"
        return (f"In your runs {self.where} at {self.spc} samples per class, {head}: {scores} (FT - FE "
                f"{interval}).")


@dataclass(frozen=True)
class Evidence:
    """What the user's own runs say about a situation like theirs, each piece with its strength.

    ``comparison``: the strongest FE-vs-FT comparison (None without one); ``crossover``: the
    resolved crossover of that dataset and backbone, if any, as (spc, low, high, configuration);
    ``quanta_depth``: (k, n) when QUANTA runs of the chosen backbone on this dataset show a signal
    against their control; ``items``: everything found, used or not, with why not.
    """

    dataset: str | None = None
    backbone: str | None = None
    comparison: Comparison | None = None
    crossover: tuple[float, float, float, int | str | None] | None = None
    quanta_depth: tuple[int, int] | None = None
    quanta_backbone: str | None = None
    quanta_dataset: str | None = None
    items: tuple[EvidenceItem, ...] = ()
    curves: Any = field(default=None, compare=False, repr=False)  # the closest learning curves (a DataFrame)

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(i.text for i in self.items)

    @property
    def weak_items(self) -> list[EvidenceItem]:
        return [i for i in self.items if i.strength == WEAK]


def same_task_family(a: str | None, b: str | None) -> bool:
    """Whether two dataset names come from one dataset (``digits:5-9`` and ``digits``): QUANTA runs on
    it speak about the user's data, runs on another dataset do not."""
    if not a or not b:
        return False
    return str(a).split(":")[0].rstrip("/\\") == str(b).split(":")[0].rstrip("/\\")


# ---------------------------------------------------------------------------------------------
# Gathering it from the store's frames

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


def spc_grid_for_pilot(samples_per_class: int, largest: int = 10) -> tuple[int, ...]:
    """Small samples-per-class values to try first: 1, 2, 5, 10 up to what the user has."""
    grid = [v for v in (1, 2, 5, 10, 20) if v <= min(samples_per_class, largest)]
    return tuple(grid) or (int(samples_per_class),)
