"""Plotly figures for the analysis pages, as pure functions of ``tlcore.results`` frames.

Pages only arrange these; tests call them directly. Conventions: accuracies are fractions in
the frames and percent on the axes; every point of a run carries the run id first in
``customdata`` (the pages turn a click or box selection back into runs); estimated energy is
drawn hollow and its method named in the hover; nothing sets ``dragmode="select"`` (it turns off
click selection in Streamlit).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from tlcore.quality import LABELS
from tlcore.results import (
    ACCURACY_METRICS,
    COST_AXES,
    COST_SCALE,
    ENERGY_AXES,
    RANDOM_SOURCE,
    TRAINED_SOURCE,
    natural_key,
)

PALETTE = qualitative.Plotly + qualitative.D3
SOURCE_COLORS = {TRAINED_SOURCE: "#1f77b4", RANDOM_SOURCE: "#9e9e9e"}
WEBGL_ABOVE = 1500  # points; SVG scatter gets sluggish past a few thousand
SYMBOL_SOLID, SYMBOL_OPEN = 0, 100  # plotly's codes for "circle" and "circle-open"
WEAK_OPACITY = 0.25  # runs that earned less (capped, near chance) are drawn faded
_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=50, b=50), hovermode="closest",
               legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0, title=None))


def colors_for(names: Sequence[str]) -> dict[str, str]:
    """A stable color per name (sorted naturally, so FE/FT variants keep their colors across figures)."""
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(sorted(set(map(str, names)), key=natural_key))}


def figure_config(filename: str, image_format: str = "png") -> dict:
    """Plotly config: the modebar's camera button saves the figure as PNG or SVG, in the browser."""
    return {"displaylogo": False,
            "toImageButtonOptions": {"format": image_format, "filename": filename, "scale": 2},
            "modeBarButtonsToRemove": ["lasso2d"]}


def empty_figure(message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(**_LAYOUT, xaxis_visible=False, yaxis_visible=False, height=300)
    return fig


def _pct(values) -> np.ndarray:
    return np.asarray(values, dtype=float) * 100.0


def _text(series: pd.Series) -> np.ndarray:
    return series.astype(object).where(series.notna(), "—").astype(str).to_numpy()


def _str(series: pd.Series) -> pd.Series:
    return series.astype(object).where(series.notna(), "—").astype(str)


def _wrap(text: str, width: int = 70) -> str:
    """Hover text wraps only at <br>: break long sentences so the hover box stays readable."""
    import textwrap

    return "<br>".join(textwrap.wrap(str(text), width)) if text and text != "—" else ""


def _spc_text(series: pd.Series) -> np.ndarray:
    return np.array(["—" if not np.isfinite(v) else f"{v:g}" for v in series.astype(float)], dtype=object)


# ---------------------------------------------------------------------------------------------
# Trade-offs


def tradeoff_scatter(points: pd.DataFrame, cost: str, accuracy: str = "test_accuracy",
                     front: pd.DataFrame | None = None, log_x: bool = True, color: str = "variant") -> go.Figure:
    """Accuracy against a cost axis, one trace per ``color`` value, the Pareto front per dataset.

    ``customdata`` of each point is its run id; the hover names the run, dataset, backbone, samples
    per class, split and, on an energy or CO2 axis, the energy method. There, estimated energy is
    a hollow marker. Built for thousands of points: hover text is formatted column-wise and
    symbols are numeric (plotly validates string arrays point by point).
    """
    if points.empty:
        return empty_figure("No finished run has both this cost and this accuracy.")
    energy_axis = cost in ENERGY_AXES
    scale = COST_SCALE.get(cost, 1.0)  # kWh drawn in Wh, kg in g (tlcore.units)
    scatter = go.Scattergl if len(points) > WEBGL_ABOVE else go.Scatter
    colors = colors_for(points[color].dropna())
    cost_label = COST_AXES.get(cost, cost)
    hover = ("<b>" + _str(points["run_name"]) + "</b> (" + _str(points["variant"]) + ")<br>"
             + _str(points["dataset"]) + " · " + _str(points["backbone"]) + "<br>spc "
             + pd.Series(_spc_text(points["spc"]), index=points.index) + ", split " + _str(points["split"]))
    if energy_axis and "energy_method" in points:
        hover = hover + "<br>energy: " + _str(points["energy_method"])
    estimated = (points["energy_estimated"].fillna(False).astype(bool) if energy_axis and "energy_estimated" in points
                 else pd.Series(False, index=points.index))
    weak = points["weak"].fillna(False).astype(bool) if "weak" in points else pd.Series(False, index=points.index)
    if weak.any():
        # only the weak points' reasons, each distinct sentence wrapped once (thousands of runs share a few)
        idx = weak[weak].index
        quality_ = _str(points["quality"].loc[idx]) if "quality" in points else pd.Series("", index=idx)
        reason = _str(points["quality_reason"].loc[idx]) if "quality_reason" in points else pd.Series("", index=idx)
        wrapped = {r: _wrap(r) for r in reason.unique()}
        hover = hover.astype(object)
        hover.loc[idx] = (hover.loc[idx] + "<br><b>weak evidence: " + quality_.map(lambda q: LABELS.get(q, q))
                          + "</b><br>" + reason.map(wrapped))
    fig = go.Figure()
    groups = sorted(points.groupby(color, sort=False, dropna=False), key=lambda kv: natural_key(str(kv[0])))
    for name, group in groups:
        name = "—" if pd.isna(name) else str(name)
        hollow = estimated.loc[group.index].to_numpy()
        faded = weak.loc[group.index].to_numpy()
        # Solid, hollow and faded points of one group are separate traces with one legend entry: a
        # per-point symbol array would be validated point by point (slow with thousands of points).
        shown_legend = False
        for mask, symbol, opacity in ((~hollow & ~faded, SYMBOL_SOLID, 0.85), (hollow & ~faded, SYMBOL_OPEN, 0.85),
                                      (~hollow & faded, SYMBOL_SOLID, WEAK_OPACITY),
                                      (hollow & faded, SYMBOL_OPEN, WEAK_OPACITY)):
            part = group[mask]
            if part.empty:
                continue
            fig.add_trace(scatter(
                x=part[cost].to_numpy(float) * scale, y=_pct(part[accuracy]), mode="markers", name=name,
                legendgroup=name,
                showlegend=not shown_legend,
                customdata=part["run_id"].to_numpy(object), hovertext=hover.loc[part.index].to_numpy(object),
                marker=dict(color=colors.get(name, "#555"), size=9, symbol=symbol, opacity=opacity,
                            line=dict(width=1.5, color=colors.get(name, "#555"))),
                hovertemplate=(f"%{{hovertext}}<br>accuracy %{{y:.1f}}%<br>{cost_label}: %{{x:.4g}}"
                               "<extra>%{customdata}</extra>"),
            ))
            shown_legend = True
    if estimated.any():
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="hollow: estimated energy",
                                 marker=dict(symbol=SYMBOL_OPEN, color="#555", size=9), hoverinfo="skip"))
    if weak.any():
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="faded: weak evidence (capped, near chance)",
                                 marker=dict(color="#555", size=9, opacity=WEAK_OPACITY), hoverinfo="skip"))
    if front is not None and not front.empty:
        dashes = ("dash", "dot", "dashdot", "longdash", "longdashdot")
        keys = [k for k in ("dataset", "spc") if k in front]
        multi = front[keys].drop_duplicates().shape[0] > 1
        for i, (key, part) in enumerate(front.groupby(keys, sort=True)):
            part = part.sort_values(cost)
            key = key if isinstance(key, tuple) else (key,)
            label = " · ".join(f"{v:g} per class" if k == "spc" else str(v) for k, v in zip(keys, key, strict=True))
            fig.add_trace(go.Scatter(
                x=part[cost].to_numpy(float) * scale, y=_pct(part[accuracy]), mode="lines", line_shape="hv",
                name=f"Pareto front · {label}" if multi else "Pareto front",
                line=dict(color="#222", dash=dashes[i % len(dashes)], width=1.5), hoverinfo="skip"))
    fig.update_layout(**_LAYOUT, height=520, clickmode="event+select",
                      xaxis_title=cost_label + (" (log)" if log_x else ""),
                      yaxis_title=ACCURACY_METRICS.get(accuracy, accuracy) + " (%)")
    # plain numbers on the cost axis: no SI letters ("40µ") after a unit that already has a prefix
    fig.update_xaxes(type="log" if log_x else "linear", exponentformat="power" if cost == "flops_total" else "none")
    return fig


def learning_curve_figure(curves: pd.DataFrame, crossings: pd.DataFrame | None = None, title: str = "",
                          colors: dict[str, str] | None = None) -> go.Figure:
    """Accuracy vs samples per class (log axis) for one dataset and backbone: a line per variant,
    error bars the 95 % interval of the mean over splits (absent with one split), points that rest
    on weak runs (capped, near chance) hollow and faded with the reason on hover, crossings marked
    with an X (their interval as a horizontal bar when they carry one)."""
    if curves.empty:
        return empty_figure("No finished run with a samples-per-class value and an accuracy.")
    colors = colors or colors_for(curves["variant"])
    fig = go.Figure()
    for variant in sorted(curves["variant"].unique(), key=natural_key):
        c = curves[curves["variant"] == variant].sort_values("spc")
        mean = _pct(c["mean"])
        lo = _pct(c["ci_low"]) if "ci_low" in c else np.full(len(c), np.nan)
        hi = _pct(c["ci_high"]) if "ci_high" in c else np.full(len(c), np.nan)
        weak = c["weak"].fillna(False).astype(bool).to_numpy() if "weak" in c else np.zeros(len(c), bool)
        reason = c["weak_reason"].fillna("").astype(str).to_numpy() if "weak_reason" in c else np.full(len(c), "")
        note = np.where(weak, "<br><b>weak evidence: " + reason + "</b>", "")
        color = colors.get(str(variant))
        fig.add_trace(go.Scatter(
            x=c["spc"].to_numpy(float), y=mean, mode="lines+markers", name=str(variant), legendgroup=str(variant),
            line=dict(color=color, dash="dot" if weak.all() else "solid"),
            marker=dict(size=9, symbol=np.where(weak, SYMBOL_OPEN, SYMBOL_SOLID),
                        opacity=np.where(weak, 0.5, 1.0), line=dict(width=2, color=color)),
            error_y=dict(type="data", symmetric=False, array=np.nan_to_num(hi - mean),
                         arrayminus=np.nan_to_num(mean - lo), visible=bool(np.isfinite(lo).any()), width=3),
            customdata=np.column_stack([_pct(c["std"]), c["n_splits"], _pct(c["min"]), _pct(c["max"]), lo, hi,
                                        note]),
            hovertemplate=(f"<b>{variant}</b><br>%{{x}} per class: %{{y:.1f}}%, 95% interval %{{customdata[4]:.1f}}"
                           "–%{customdata[5]:.1f}% (std %{customdata[0]:.1f})<br>%{customdata[1]} split(s), range "
                           "%{customdata[2]:.1f}–%{customdata[3]:.1f}%%{customdata[6]}<extra></extra>")))
    if crossings is not None and not crossings.empty:
        cross = crossings[crossings["spc"].notna()]
        if not cross.empty:
            has_range = {"spc_low", "spc_high"} <= set(cross.columns)
            y = _pct(cross["accuracy"]) if "accuracy" in cross else np.full(len(cross), np.nan)
            text = cross["direction"] if "direction" in cross else cross.get("note", pd.Series("", index=cross.index))
            fig.add_trace(go.Scatter(
                x=cross["spc"].to_numpy(float), y=y, mode="markers", name="crossover",
                marker=dict(symbol="x", size=14, color="#000", line=dict(width=1)),
                error_x=dict(type="data", symmetric=False, array=(cross["spc_high"] - cross["spc"]).to_numpy(float),
                             arrayminus=(cross["spc"] - cross["spc_low"]).to_numpy(float), visible=True)
                if has_range else None,
                customdata=np.column_stack([text.astype(str)]),
                hovertemplate="%{customdata[0]}<br>at ≈%{x:.1f} per class<extra></extra>"))
    ticks = sorted(curves["spc"].unique())
    fig.update_layout(**_LAYOUT, height=420, title=title, xaxis_title="Samples per class (log)",
                      yaxis_title="Test accuracy (balanced, %)")
    if title:  # room for the title above the legend row (they overlapped at the default top margin)
        fig.update_layout(margin=dict(t=90), title=dict(y=0.97, yanchor="top"))
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
    return fig


def paired_difference_figure(paired: pd.DataFrame, title: str = "") -> go.Figure:
    """FT minus FE accuracy per samples per class (paired by training draw), with 95 % intervals and a
    zero line: above zero fine-tuning scored higher on the same images; an interval across zero is not
    resolved by these runs."""
    if paired.empty:
        return empty_figure("Needs FE and FT runs trained on the same draws (same samples per class and split).")
    fig = go.Figure()
    colors = colors_for(paired["variant"] + " − " + paired["reference"])
    for (ref, variant), part in paired.groupby(["reference", "variant"], sort=True):
        part = part.sort_values("spc")
        name = f"{variant} − {ref}"
        d = _pct(part["diff"])
        lo, hi = _pct(part["ci_low"]), _pct(part["ci_high"])
        fig.add_trace(go.Scatter(
            x=part["spc"].to_numpy(float), y=d, mode="lines+markers", name=name,
            line=dict(color=colors[name]),
            error_y=dict(type="data", symmetric=False, array=np.nan_to_num(hi - d), arrayminus=np.nan_to_num(d - lo),
                         visible=bool(np.isfinite(lo).any()), width=3),
            customdata=np.column_stack([lo, hi, part["n_pairs"], part["n_weak"], part["verdict"].astype(str)]),
            hovertemplate=(f"<b>{name}</b><br>%{{x}} per class: %{{y:+.1f}} points, 95% interval "
                           "%{customdata[0]:+.1f} to %{customdata[1]:+.1f}<br>%{customdata[2]} pair(s); "
                           "%{customdata[3]} left out as weak; %{customdata[4]}<extra></extra>")))
    fig.add_hline(y=0.0, line_dash="dot", line_color="#555")
    ticks = sorted(paired["spc"].unique())
    fig.update_layout(**_LAYOUT, height=380, title=title, xaxis_title="Samples per class (log)",
                      yaxis_title="FT − FE accuracy (points, same draws)")
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
    return fig


def cost_ratio_figure(ratio: pd.DataFrame, cost: str = "time_total_s") -> go.Figure:
    """FT/FE cost ratio per samples per class: grouped bars, log scale, a line at 1 (same cost)."""
    if ratio.empty:
        return empty_figure("Needs finished feature-extraction and fine-tuning runs of the same dataset, "
                            "backbone and samples per class.")
    fig = go.Figure()
    multi_pair = ratio[["dataset", "backbone"]].drop_duplicates().shape[0] > 1
    multi_ref = ratio["reference"].nunique() > 1
    names = []
    for (dataset, backbone, ref, variant), part in ratio.groupby(["dataset", "backbone", "reference", "variant"],
                                                                 sort=True):
        name = str(variant) + (f" / {ref}" if multi_ref else "") + (f" · {dataset} · {backbone}" if multi_pair else "")
        names.append(name)
        part = part.sort_values("spc")
        fig.add_trace(go.Bar(
            x=[f"{v:g}" for v in part["spc"]], y=part["ratio"].to_numpy(float), name=name,
            customdata=np.column_stack([part["ft_cost"], part["fe_cost"], part["n_ft"], part["n_fe"]]),
            hovertemplate=(f"<b>{name}</b><br>%{{x}} per class: %{{y:.3g}}× {ref}"
                           "<br>FT %{customdata[0]:.4g}, FE %{customdata[1]:.4g}"
                           " (means of %{customdata[2]} and %{customdata[3]} runs)<extra></extra>")))
    colors = colors_for(names)
    for trace in fig.data:
        trace.marker.color = colors[trace.name]
    fig.add_hline(y=1.0, line_dash="dot", line_color="#555")
    # on a log axis an annotation's y is log10 of the value: 0 puts the label on the line at 1
    fig.add_annotation(x=1.0, xref="paper", xanchor="right", y=0.0, yref="y", yanchor="bottom", text="same cost",
                       showarrow=False, font=dict(color="#555"))
    fig.update_layout(**_LAYOUT, height=420, barmode="group", xaxis_title="Samples per class",
                      yaxis_title=f"{COST_AXES.get(cost, cost)}: FT / FE (log)")
    fig.update_xaxes(type="category", categoryorder="array",
                     categoryarray=[f"{v:g}" for v in sorted(ratio["spc"].unique())])
    fig.update_yaxes(type="log")
    return fig


# ---------------------------------------------------------------------------------------------
# QUANTA


def _fitted_range(lo: np.ndarray, hi: np.ndarray, pad: float = 0.15, floor: float = 0.004) -> list[float]:
    """An axis range that fits the values (with their error bars) instead of a fixed 0-1."""
    vals = np.concatenate([np.asarray(lo, float), np.asarray(hi, float)])
    vals = vals[np.isfinite(vals)]
    if len(vals) == 0:
        return [0.0, 1.0]
    a, b = float(vals.min()), float(vals.max())
    span = max(b - a, floor)
    return [a - pad * span, b + pad * span]


def lambda_bars(summary: pd.DataFrame, title: str = "") -> go.Figure:
    """Final lambda_S per layer (mean ± std over runs), the random-source control beside, as points on
    an axis that fits them (lambda_S often moves by thousandths: a 0-1 axis hides every difference)."""
    if summary.empty:
        return empty_figure("No QUANTA run has logged lambda_S yet.")
    order = summary.sort_values("layer_pos")["layer"].drop_duplicates().astype(str).tolist()
    fig = go.Figure()
    for kind in (TRAINED_SOURCE, RANDOM_SOURCE):
        part = summary[summary["source_kind"] == kind].sort_values("layer_pos")
        if part.empty:
            continue
        fig.add_trace(go.Scatter(
            x=part["layer"].astype(str), y=part["mean"].to_numpy(float), name=kind, mode="markers",
            marker=dict(color=SOURCE_COLORS[kind], size=11, symbol="circle" if kind == TRAINED_SOURCE else "diamond"),
            # one run has no spread: no error bar rather than a zero-height cap
            error_y=dict(type="data", array=part["std"].fillna(0.0).to_numpy(float),
                         visible=bool(part["std"].notna().any())),
            customdata=np.column_stack([part["std"], part["n"], part["min"], part["max"]]),
            hovertemplate=(f"<b>layer %{{x}}</b> ({kind})<br>λ_S %{{y:.4f}} ± %{{customdata[0]:.4f}}"
                           "<br>%{customdata[1]} run(s), range %{customdata[2]:.4f}–%{customdata[3]:.4f}"
                           "<extra></extra>")))
    std = summary["std"].fillna(0.0).to_numpy(float)
    fig.update_layout(**_LAYOUT, height=400, title=title, xaxis_title="Layer (network order)",
                      yaxis_title="Final λ_S (share of the source's features)")
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=order)
    fig.update_yaxes(range=_fitted_range(summary["mean"] - std, summary["mean"] + std), tickformat=".3f")
    return fig


VERDICT_COLORS = {1: "#2ca02c", -1: "#d62728", 0: "#9e9e9e"}


def lambda_delta_figure(verdicts: pd.DataFrame, title: str = "") -> go.Figure:
    """lambda_S of the trained source minus the random-source control's, per layer, with its interval
    and the layer's verdict as the colour (green: the target keeps the source's features; red: it
    prefers its own; grey: no signal), on an axis that fits the data, zero drawn."""
    part = verdicts[verdicts["matched"]] if not verdicts.empty else verdicts
    if part.empty:
        return empty_figure("Needs QUANTA runs with a trained source and a random-source control of the same "
                            "settings.")
    part = part.sort_values("layer_pos")
    fig = go.Figure()
    for (task,), g in part.groupby(["source_task"], sort=True):
        d = g["delta"].to_numpy(float)
        lo, hi = g["low"].to_numpy(float), g["high"].to_numpy(float)
        colors = [VERDICT_COLORS[int(v)] for v in g["direction"]]
        fig.add_trace(go.Scatter(
            x=g["layer"].astype(str), y=d, mode="markers", name=f"source {task}",
            marker=dict(color=colors, size=12, line=dict(width=1, color="#333")),
            error_y=dict(type="data", symmetric=False, array=np.nan_to_num(hi - d), arrayminus=np.nan_to_num(d - lo),
                         visible=bool(np.isfinite(lo).any()), width=4),
            customdata=np.column_stack([g["meaning"], g["reason"].map(_wrap), g["n_trained"], g["n_control"]]),
            hovertemplate=("<b>layer %{x}</b>: %{customdata[0]}<br>Δλ_S %{y:+.4f}<br>%{customdata[1]}"
                           "<extra></extra>")))
    fig.add_hline(y=0.0, line_dash="dot", line_color="#555", annotation_text="control",
                  annotation_position="top left")
    fig.update_layout(**_LAYOUT, height=400, title=title, showlegend=part["source_task"].nunique() > 1,
                      xaxis_title="Layer (network order)",
                      yaxis_title="λ_S trained source − control")
    order = part["layer"].astype(str).drop_duplicates().tolist()
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=order)
    fig.update_yaxes(range=_fitted_range(np.append(part["low"].fillna(part["delta"]), 0.0),
                                         np.append(part["high"].fillna(part["delta"]), 0.0)), tickformat="+.3f")
    return fig


def lambda_steps_figure(steps: pd.DataFrame, layer_order: Sequence[str] | None = None) -> go.Figure:
    """lambda_S over training steps: a line per layer (mean over runs), dashed for the control."""
    if steps.empty:
        return empty_figure("No lambda_S history for these runs.")
    layers = list(layer_order or sorted(steps["layer"].unique(), key=natural_key))
    colors = {layer: PALETTE[i % len(PALETTE)] for i, layer in enumerate(layers)}
    fig = go.Figure()
    for kind in (TRAINED_SOURCE, RANDOM_SOURCE):
        for layer in layers:
            part = steps[(steps["source_kind"] == kind) & (steps["layer"] == layer)].sort_values("step")
            if part.empty:
                continue
            fig.add_trace(go.Scatter(
                x=part["step"].to_numpy(float), y=part["mean"].to_numpy(float), mode="lines",
                name=f"layer {layer}" + (" (control)" if kind == RANDOM_SOURCE else ""), legendgroup=layer,
                line=dict(color=colors[layer], dash="dash" if kind == RANDOM_SOURCE else "solid"),
                customdata=part["n"].to_numpy(), hovertemplate=(
                    f"layer {layer} ({kind})<br>step %{{x}}: λ_S %{{y:.4f}} (%{{customdata}} run(s))<extra></extra>")))
    fig.update_layout(**_LAYOUT, height=420, xaxis_title="Training step (optimizer updates)", yaxis_title="λ_S")
    return fig


def quanta_accuracy_figure(acc: pd.DataFrame) -> go.Figure:
    """Target test accuracy per transferred layer (trained source vs control) and the source's own."""
    acc = acc[acc["target_accuracy"].notna() | acc["source_accuracy"].notna()]
    if acc.empty:
        return empty_figure("No finished QUANTA run has logged a test accuracy yet.")
    order = sorted(acc["layer_to_transfer"].astype(str).unique(), key=natural_key)
    fig = go.Figure()
    series = [("source network", "source_accuracy", None, "#2ca02c"),
              (f"target ({TRAINED_SOURCE})", "target_accuracy", TRAINED_SOURCE, SOURCE_COLORS[TRAINED_SOURCE]),
              (f"target ({RANDOM_SOURCE})", "target_accuracy", RANDOM_SOURCE, SOURCE_COLORS[RANDOM_SOURCE])]
    for name, col, kind, color in series:
        part = acc if kind is None else acc[acc["source_kind"] == kind]
        if kind is None:
            part = part[part["source_kind"] == TRAINED_SOURCE]
        stats = part.groupby("layer_to_transfer")[col].agg(["mean", "std", "count"]).reset_index()
        stats = stats[stats["count"] > 0]
        if stats.empty:
            continue
        fig.add_trace(go.Bar(
            x=stats["layer_to_transfer"].astype(str), y=_pct(stats["mean"]), name=name, marker_color=color,
            error_y=dict(type="data", array=_pct(stats["std"].fillna(0.0)), visible=True),
            customdata=stats["count"].to_numpy(),
            hovertemplate=f"{name}<br>layer %{{x}}: %{{y:.1f}}% (%{{customdata}} run(s))<extra></extra>"))
    fig.update_layout(**_LAYOUT, height=400, barmode="group", xaxis_title="Transferred layer",
                      yaxis_title="Test accuracy (balanced, %)")
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=order)
    return fig


def lambda_heatmap(matrix: pd.DataFrame) -> go.Figure:
    """Mean final lambda_S, layers (rows, network order) x target datasets (columns)."""
    if matrix.empty:
        return empty_figure("Needs QUANTA runs with a trained source on at least one target.")
    z = matrix.to_numpy(float)
    fig = go.Figure(go.Heatmap(
        z=z, x=[str(c) for c in matrix.columns], y=[str(i) for i in matrix.index], colorscale="Viridis",
        zmin=0, zmax=1, colorbar=dict(title="λ_S"), text=np.where(np.isfinite(z), np.round(z, 3), np.nan),
        texttemplate="%{text}", hovertemplate="target %{x}<br>layer %{y}: λ_S %{z:.3f}<extra></extra>"))
    fig.update_layout(**{**_LAYOUT, "hovermode": "closest"}, height=max(300, 40 * len(matrix) + 120),
                      xaxis_title="Target dataset", yaxis_title="Layer")
    fig.update_yaxes(autorange="reversed", type="category")
    return fig


def freezing_depth_figure(summary: pd.DataFrame, depth: pd.DataFrame) -> go.Figure:
    """lambda_S per layer at its relative depth (bars, left axis) beside fine-tuning accuracy per
    freezing configuration at the fraction of the network it freezes (line, right axis)."""
    if summary.empty and depth.empty:
        return empty_figure("Needs QUANTA runs and fine-tuning runs of the same backbone and dataset.")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    n_layers = max(int(summary["layer_pos"].max()) + 1, 1) if not summary.empty else 1
    width = 0.4 / n_layers  # trained source left of the layer's depth, control right of it
    for kind, offset in ((TRAINED_SOURCE, -width), (RANDOM_SOURCE, 0.0)):
        part = summary[summary["source_kind"] == kind].sort_values("layer_pos")
        if part.empty:
            continue
        fig.add_trace(go.Bar(
            x=part["depth"].to_numpy(float), y=part["mean"].to_numpy(float), width=width, offset=offset,
            name=f"λ_S ({kind})", marker_color=SOURCE_COLORS[kind], opacity=0.8,
            customdata=part["layer"].astype(str).to_numpy(),
            hovertemplate=f"layer %{{customdata}} ({kind})<br>depth %{{x:.2f}}: λ_S %{{y:.3f}}<extra></extra>"),
            secondary_y=False)
    if not depth.empty:
        fig.add_trace(go.Scatter(
            x=depth["frozen_fraction"].to_numpy(float), y=_pct(depth["mean"]), mode="lines+markers+text",
            name="fine-tuning accuracy", line=dict(color="#d62728"), marker=dict(size=10),
            text=[f"config {c}" for c in depth["configuration"]], textposition="top center",
            error_y=dict(type="data", array=_pct(depth["std"].fillna(0.0)), visible=True),
            customdata=np.column_stack([depth["configuration"].astype(str), depth["n"]]),
            hovertemplate=("FT config %{customdata[0]} (≈%{x:.0%} frozen)<br>accuracy %{y:.1f}%"
                           " (%{customdata[1]} run(s))<extra></extra>")), secondary_y=True)
    fig.update_layout(**_LAYOUT, height=420, barmode="overlay",
                      xaxis_title="Depth in the network (0 = input, 1 = last layer) · frozen fraction")
    fig.update_xaxes(range=[-0.05, 1.0 + width + 0.03], tickvals=[0, 0.25, 0.5, 0.75, 1.0])
    fig.update_yaxes(title_text="Final λ_S", range=[0, 1.05], secondary_y=False)
    fig.update_yaxes(title_text="Fine-tuning test accuracy (%)", secondary_y=True, showgrid=False, tickformat=".0f")
    return fig


# ---------------------------------------------------------------------------------------------
# Runs


def metric_curves_figure(histories: pd.DataFrame, key: str, labels: dict[str, str] | None = None) -> go.Figure:
    """One metric over steps (epochs, or global steps for lambda_S), a line per run."""
    part = histories[histories["key"] == key] if not histories.empty else histories
    if part.empty:
        return empty_figure(f"None of the selected runs logged {key!r} over steps.")
    labels = labels or {}
    fig = go.Figure()
    for run_id, run in part.groupby("run_id", sort=False):
        run = run.sort_values("step")
        fig.add_trace(go.Scatter(x=run["step"].to_numpy(float), y=run["value"].to_numpy(float),
                                 mode="lines+markers" if len(run) < 60 else "lines",
                                 name=labels.get(run_id, run_id[:8]),
                                 hovertemplate=f"{labels.get(run_id, run_id[:8])}<br>step %{{x}}: %{{y:.4g}}"
                                               "<extra></extra>"))
    fig.update_layout(**_LAYOUT, height=380, xaxis_title="Step (epoch for per-epoch metrics)", yaxis_title=key)
    fig.update_xaxes(tickformat="d")  # steps and epochs are whole numbers
    if part["step"].max() <= 12:
        fig.update_xaxes(dtick=1)
    return fig


def selected_run_ids(selection) -> list[str]:
    """Run ids of the points a Streamlit plotly selection holds (clicked or boxed), in order, once.

    ``selection`` is ``st.plotly_chart(..., on_select="rerun").selection`` (or a dict of that shape);
    points without a run id in ``customdata`` (front lines, legend stubs) are ignored.
    """
    if not selection:
        return []
    points = selection.get("points", []) if hasattr(selection, "get") else []
    ids = []
    for p in points or []:
        custom = p.get("customdata") if hasattr(p, "get") else None
        if isinstance(custom, (list, tuple)) and custom:
            custom = custom[0]
        if isinstance(custom, str) and custom:
            ids.append(custom)
    return list(dict.fromkeys(ids))


# ---------------------------------------------------------------------------------------------
# Ranking

CONTROL_COLOR = "#9e9e9e"


def ranking_bars(table: pd.DataFrame, score: str, label: str) -> go.Figure:
    """One bar per network, best on top; whiskers are the spread over draws; random-weights controls grey."""
    part = table[table[score].notna()].sort_values(score) if score in table else table.iloc[0:0]
    if part.empty:
        return empty_figure(f"No network has a {label} score in this ranking.")
    std = part[f"{score}_std"].to_numpy(float) if f"{score}_std" in part else None
    colors = [CONTROL_COLOR if c else PALETTE[0] for c in part["control"]]
    fig = go.Figure(go.Bar(
        x=part[score].to_numpy(float), y=part["network"].astype(str), orientation="h", marker_color=colors,
        error_x=dict(type="data", array=std, visible=bool(std is not None and np.nanmax(std) > 0)),
        customdata=part[["run_id"]].to_numpy(),
        hovertemplate="%{y}<br>" + label + " %{x:.4g}<extra></extra>"))
    fig.update_layout(**_LAYOUT, height=max(220, 60 + 36 * len(part)), xaxis_title=f"{label} (higher: transfers "
                      "better)", yaxis_title="", title="Grey: the same architecture with random weights (control)")
    return fig


def tap_score_lines(histories: pd.DataFrame, names: dict[str, str], label: str) -> go.Figure:
    """A score per tap (x: tap index, shallow to deep), one line per network."""
    if histories.empty:
        return empty_figure("No per-tap score logged.")
    fig = go.Figure()
    for run_id, run in histories.groupby("run_id", sort=False):
        run = run.sort_values("step")
        name = names.get(run_id, run_id[:8])
        fig.add_trace(go.Scatter(x=run["step"].to_numpy(float), y=run["value"].to_numpy(float), mode="lines+markers",
                                 name=name, line=dict(dash="dot") if "random" in name else None,
                                 hovertemplate=f"{name}<br>tap %{{x}}: %{{y:.4g}}<extra></extra>"))
    fig.update_layout(**_LAYOUT, height=380, xaxis_title="Tap (0 = shallowest)", yaxis_title=f"{label} of the tap")
    fig.update_xaxes(tickformat="d")
    return fig
