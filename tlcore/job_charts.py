"""Figures of a job while it runs, built from what its reporter recorded (pure functions, no streamlit).

Fine-tuning reports loss and accuracy per epoch, QUANTA lambda_S per layer and step, feature
extraction its extraction progress and then one accuracy per few-shot point; the runs a job
has finished give the learning curve as its points come in.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from tlcore.jobs import MetricPoint

LAMBDA_PREFIX = "quanta_source/"
MAX_SERIES = 8  # newest series shown in per-epoch charts (a sweep can have dozens)


def metric_frame(points: list[MetricPoint]) -> pd.DataFrame:
    """The reporter's history as a tidy frame: name, value, step, series, time."""
    return pd.DataFrame([(p.name, p.value, p.step, p.series, p.time) for p in points],
                        columns=["name", "value", "step", "series", "time"])


def _lines(df: pd.DataFrame, color: str, title: str, x_title: str, y_title: str, percent: bool = False) -> go.Figure:
    fig = go.Figure()
    for key, part in df.groupby(color, sort=False):
        part = part.sort_values("step")
        y = part["value"] * 100 if percent else part["value"]
        fig.add_trace(go.Scatter(x=part["step"], y=y, mode="lines+markers" if len(part) < 60 else "lines",
                                 name=str(key)))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, height=320,
                      margin=dict(l=10, r=10, t=40, b=10), legend=dict(font=dict(size=10)))
    if x_title == "epoch":  # whole epochs only: no 1.5 tick between two of them
        fig.update_xaxes(tickformat="d", dtick=1 if df["step"].nunique() <= 12 else None)
    return fig


NOT_CHARTED = ("samples_per_class", "split")  # FE reports them beside each point's accuracy


def live_figures(points: list[MetricPoint], method: str = "") -> list[go.Figure]:
    """Per-epoch loss and accuracy, and lambda_S per layer, from a job's recorded metrics.

    Feature extraction has no epochs: its points make the learning curve (:func:`curve_figure`).
    """
    if method == "fe":
        return []
    df = metric_frame(points)
    df = df[df["step"].notna() & ~df["name"].isin(NOT_CHARTED)]
    if df.empty:
        return []
    figs = []
    lam = df[df["name"].str.startswith(LAMBDA_PREFIX)]
    if not lam.empty:
        lam = lam.assign(layer=lam["name"].str.removeprefix(LAMBDA_PREFIX))
        if lam["series"].nunique() > 1:
            lam = lam.assign(layer=lam["series"] + " · layer " + lam["layer"])
        else:
            lam = lam.assign(layer="layer " + lam["layer"])
        fig = _lines(lam, "layer", "λ_S per layer (how much each layer takes from the source)", "step", "λ_S")
        fig.update_yaxes(range=[0, 1])
        figs.append(fig)
    per_epoch = df[~df["name"].str.startswith(LAMBDA_PREFIX)]
    recent = list(dict.fromkeys(per_epoch["series"]))[-MAX_SERIES:]
    per_epoch = per_epoch[per_epoch["series"].isin(recent)]
    many = per_epoch["series"].nunique() > 1
    per_epoch = per_epoch.assign(line=(per_epoch["series"] + " · " if many else "") + per_epoch["name"])
    x = "step" if method == "quanta" else "epoch"  # QUANTA reports its epochs at their global step
    loss = per_epoch[per_epoch["name"].str.endswith("loss")]
    if not loss.empty:
        figs.append(_lines(loss, "line", f"Loss per {x}" if x == "epoch" else "Loss", x, "loss"))
    acc = per_epoch[per_epoch["name"].str.endswith("accuracy") & ~per_epoch["name"].str.contains("plain")]
    if not acc.empty and acc["step"].nunique() > 1:
        figs.append(_lines(acc, "line", f"Accuracy per {x}" if x == "epoch" else "Accuracy", x, "accuracy (%)",
                           percent=True))
    return figs


def curve_figure(runs: pd.DataFrame) -> go.Figure | None:
    """Accuracy against samples per class for the finished runs of a job: each draw, and the mean."""
    if runs.empty:
        return None
    df = runs[(runs["status"] == "FINISHED") & runs["accuracy"].notna() & ~runs["sweep_parent"]].copy()
    df["spc"] = pd.to_numeric(df["samples_per_class"], errors="coerce")
    df = df[df["spc"].notna()]
    if df.empty:
        return None
    metric = df["accuracy_metric"].iloc[0] or "accuracy"
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=df["spc"], y=df["accuracy"] * 100, mode="markers", name="each draw",
                             marker=dict(size=7, opacity=0.5), customdata=df["run_id"],
                             hovertemplate="%{x} per class: %{y:.1f}%<extra></extra>"))
    mean = df.groupby("spc", as_index=False)["accuracy"].mean()
    fig.add_trace(go.Scatter(x=mean["spc"], y=mean["accuracy"] * 100, mode="lines+markers", name="mean"))
    fig.update_layout(title=f"{metric.replace('_', ' ')} vs samples per class ({len(df)} finished)",
                      xaxis_title="samples per class", yaxis_title="balanced accuracy (%)", height=340,
                      margin=dict(l=10, r=10, t=40, b=10))
    ticks = sorted(df["spc"].unique())  # the values measured, as whole numbers (one point: no 4.5 tick)
    fig.update_xaxes(type="log" if len(ticks) > 2 else "linear", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
    if len(ticks) == 1:
        fig.update_xaxes(range=[ticks[0] - 1, ticks[0] + 1])
    return fig
