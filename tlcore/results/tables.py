"""Runs as people read them: the sidebars' filters, the runs table, and a few runs side by side.

Pure functions of the frames :mod:`.store` reads (and of its :class:`~.store.RunDetails`): which
runs a page keeps, how their values are written (accuracies in %, costs in the charts' units,
the best value of a row starred), and the counts a page header shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd

from tlcore import quality
from tlcore.methods.base import LABELS
from tlcore.results.columns import (
    ACCURACY_METRICS,
    COST_AXES,
    COST_SCALE,
    ENERGY_AXES,
    QUANTA_PREFIX,
    natural_key,
)
from tlcore.results.store import RunDetails

METHOD_LABELS = LABELS  # method -> label, read live from the method records


# ---------------------------------------------------------------------------------------------
# Filtering


@dataclass
class RunFilter:
    """What the pages' sidebars choose. ``None`` keeps everything; a classifier choice applies to
    feature-extraction runs only and a configuration choice to fine-tuning runs only."""

    datasets: Sequence[str] | None = None
    backbones: Sequence[str] | None = None
    methods: Sequence[str] | None = None
    classifiers: Sequence[str] | None = None
    configurations: Sequence[str] | None = None
    statuses: Sequence[str] | None = None
    start: date | None = None
    end: date | None = None
    include_sweep_parents: bool = False


def filter_runs(df: pd.DataFrame, f: RunFilter) -> pd.DataFrame:
    keep = pd.Series(True, index=df.index)
    for col, allowed in (("dataset", f.datasets), ("backbone", f.backbones), ("method", f.methods),
                         ("status", f.statuses)):
        if allowed is not None and col in df:
            keep &= df[col].astype(str).isin([str(a) for a in allowed])
    if f.classifiers is not None and "classifier" in df:
        keep &= ~df["method"].eq("fe") | df["classifier"].astype(str).isin(list(f.classifiers))
    if f.configurations is not None and "configuration" in df:
        keep &= ~df["method"].eq("ft") | df["configuration"].astype(str).isin([str(c) for c in f.configurations])
    day = df["start_time"].dt.date
    if f.start is not None:
        keep &= day >= f.start
    if f.end is not None:
        keep &= day <= f.end
    if not f.include_sweep_parents:
        keep &= ~df["is_sweep_parent"].astype(bool)
    return df[keep]


def options(df: pd.DataFrame, column: str) -> list[str]:
    """The distinct non-missing values of a column, naturally sorted (for filter widgets)."""
    if column not in df:
        return []
    return sorted({str(v) for v in df[column].dropna().unique()}, key=natural_key)


# ---------------------------------------------------------------------------------------------
# Runs side by side


def params_diff(details: Sequence[RunDetails], only_different: bool = True) -> pd.DataFrame:
    """Params side by side (rows: param, columns: runs); by default only those that differ."""
    if not details:
        return pd.DataFrame()
    labels = _distinct_labels([d.label for d in details])
    table = pd.DataFrame({label: pd.Series(d.params, dtype=object) for label, d in zip(labels, details, strict=True)})
    table = table.sort_index()
    if only_different and len(details) > 1:
        filled = table.fillna("—")
        table = table[filled.nunique(axis=1) > 1]
    table.index.name = "param"
    return table.fillna("—")


def metrics_side_by_side(details: Sequence[RunDetails]) -> pd.DataFrame:
    """Final metrics (rows) of a few runs (columns), accuracies left as fractions."""
    if not details:
        return pd.DataFrame()
    labels = _distinct_labels([d.label for d in details])
    table = pd.DataFrame({label: pd.Series(d.metrics, dtype=float) for label, d in zip(labels, details, strict=True)})
    table = table.loc[sorted(table.index, key=lambda k: (QUANTA_PREFIX in k, natural_key(k)))]
    table.index.name = "metric"
    return table


BEST_MARK = "★ "


def metrics_for_people(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`metrics_side_by_side` written as people read it (% with one decimal, FLOPs and energy with
    units, times as durations), the best value of each row marked with a star when it compares runs."""
    from tlcore import units

    out = pd.DataFrame(index=table.index, columns=table.columns, dtype=object)
    for name, row in table.iterrows():
        direction = units.better(str(name))
        best = None
        values = row.dropna()
        if direction and len(values) > 1 and values.nunique() > 1:
            best = values.idxmax() if direction > 0 else values.idxmin()
        for col, value in row.items():
            text = units.metric(str(name), value)
            out.at[name, col] = (BEST_MARK + text) if col == best and pd.notna(value) else text
    return out


def _distinct_labels(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out


# ---------------------------------------------------------------------------------------------
# Tables


def describe_counts(df: pd.DataFrame) -> dict[str, Any]:
    """Counts by status and method for the page headers (what is shown, what is left out)."""
    if df.empty:
        return {"total": 0, "by_status": {}, "by_method": {}}
    return {"total": len(df), "by_status": df["status"].value_counts().to_dict(),
            "by_method": df["method"].value_counts().to_dict()}


def display_table(df: pd.DataFrame, accuracy: Sequence[str] = ("test_accuracy",), costs: Sequence[str] = (),
                  extra: Sequence[str] = ()) -> pd.DataFrame:
    """Runs as a readable table (accuracies in %, costs under their axis labels), for the pages'
    tables and CSV exports; the run id stays the last column."""
    out = pd.DataFrame(index=df.index)
    out["run"] = df["run_name"]
    for col, label in (("variant", "variant"), ("dataset", "dataset"), ("backbone", "backbone"), ("spc", "spc"),
                       ("split_index", "split")):
        if col in df:
            out[label] = df[col]
    for col in extra:
        if col in df:
            out[col] = df[col]
    for col in accuracy:
        if col in df:
            out[ACCURACY_METRICS.get(col, col).replace(" (balanced)", "") + " (%)"] = (df[col] * 100.0).round(1)
    for col in costs:
        if col in df:  # three significant digits, in the unit the charts use (Wh, g)
            out[COST_AXES.get(col, col)] = (df[col] * COST_SCALE.get(col, 1.0)).map(
                lambda v: float(f"{v:.3g}") if pd.notna(v) else v)
    if any(c in ENERGY_AXES for c in costs) and "energy_method" in df:
        out["energy method"] = df["energy_method"]
    if "quality" in df:
        out["verdict"] = df["quality"].map(lambda q: quality.LABELS.get(q, q) if isinstance(q, str) else "")
        out["why"] = df["quality_reason"].fillna("") if "quality_reason" in df else ""
    out["status"] = df["status"]
    out["started"] = df["start_time"]
    out["run_id"] = df["run_id"]
    return out.reset_index(drop=True)
