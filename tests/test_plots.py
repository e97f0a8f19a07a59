"""tlcore.plots: the figures carry the traces, markers and run ids the pages rely on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from tests import analysis_store as data
from tests.analysis_store import analysis_store  # noqa: F401  (a fixture)
from tlcore import plots, results
from tlcore.tracking import resolve_tracking_uri


@pytest.fixture(scope="module")
def store(analysis_store):  # noqa: F811
    folder, ids = analysis_store
    uri = resolve_tracking_uri(str(folder))
    return uri, ids, results.load_view(uri, "tradeoffs"), results.load_view(uri, "quanta")


def _by_name(fig: go.Figure) -> dict[str, go.BaseTraceType]:
    return {t.name: t for t in fig.data}


def test_tradeoff_scatter_energy_axis_hollow_for_estimates_and_run_ids(store):
    _, _, df, _ = store
    pts = results.tradeoff_points(df[df["dataset"] == "digits"], "energy_kwh")
    fig = plots.tradeoff_scatter(pts, "energy_kwh", front=results.pareto_front(pts, "energy_kwh"))
    traces = _by_name(fig)
    # one front per samples-per-class value: accuracies at 1, 5 and 10 per class are not comparable
    assert {"FE linearsvc", "FT config 0", "FT config 3", "hollow: estimated energy"} <= set(traces)
    assert {"Pareto front · digits · 1 per class", "Pareto front · digits · 5 per class",
            "Pareto front · digits · 10 per class"} <= set(traces)
    fe_traces = [t for t in fig.data if t.name == "FE linearsvc"]
    symbols = {run_id: t.marker.symbol for t in fe_traces for run_id in t.customdata}
    counters_id = pts.loc[pts["run_name"] == "counters run", "run_id"].iloc[0]
    assert symbols.pop(counters_id) == plots.SYMBOL_SOLID  # read from counters: solid
    assert set(symbols.values()) == {plots.SYMBOL_OPEN}  # estimates: hollow
    assert sum(t.showlegend is not False for t in fe_traces) == 1  # one legend entry per variant
    ids = [*symbols, counters_id]
    fe = next(t for t in fe_traces if t.marker.symbol == plots.SYMBOL_OPEN)
    assert "%{hovertext}" in fe.hovertemplate
    assert all(f"energy: {data.ESTIMATE}" in h for h in fe.hovertext)
    assert any("energy: counters: nvml" in h for t in fe_traces for h in t.hovertext)
    assert set(ids) <= set(pts["run_id"])
    assert fig.layout.xaxis.type == "log" and fig.layout.dragmode is None
    front = traces["Pareto front · digits · 10 per class"]
    assert front.line.shape == "hv" and list(front.y) == pytest.approx([80, 80, 90])


def test_tradeoff_scatter_time_axis_is_solid_and_switches_to_webgl_when_large(store):
    _, _, df, _ = store
    pts = results.tradeoff_points(df, "time_total_s")
    fig = plots.tradeoff_scatter(pts, "time_total_s", log_x=False)
    runs = [t for t in fig.data if t.customdata is not None]  # not the legend's key to faded points
    assert all(t.marker.symbol == plots.SYMBOL_SOLID for t in runs)  # estimates matter on energy axes only
    assert not any("energy:" in h for t in runs for h in t.hovertext)
    assert fig.layout.xaxis.type == "linear"
    big = pd.concat([pts] * (plots.WEBGL_ABOVE // len(pts) + 1), ignore_index=True)
    assert isinstance(plots.tradeoff_scatter(big, "time_total_s").data[0], go.Scattergl)


def test_learning_curve_figure_lines_error_bars_and_crossing(store):
    _, _, df, _ = store
    curves = results.learning_curves(df)
    part = curves[curves["dataset"] == "digits"]
    cross = results.crossovers(part)
    fig = plots.learning_curve_figure(part, cross, "digits")
    traces = _by_name(fig)
    assert set(traces) == {"FE linearsvc", "FT config 0", "FT config 3", "crossover"}
    fe = traces["FE linearsvc"]
    assert list(fe.x) == [1, 5, 10] and list(fe.y) == pytest.approx([52, 71, 80])
    # error bars: the 95% interval of the mean over splits, t(.975, n-1) * sd / sqrt(n) (t: 4.302653 with 3
    # splits, 12.706205 with 2); a single split has none
    assert list(fe.error_y.array) == pytest.approx([4.302653 * 2.0 / np.sqrt(3),
                                                    12.706205 * np.std([70, 72], ddof=1) / np.sqrt(2), 0.0], rel=1e-5)
    assert traces["crossover"].x[0] == pytest.approx(5 * 2 ** (1 / 11))
    assert fig.layout.xaxis.type == "log"


def test_cost_ratio_figure_bars_per_ft_variant(store):
    _, _, df, _ = store
    fig = plots.cost_ratio_figure(results.cost_ratio(df, "time_total_s"))
    traces = _by_name(fig)
    assert set(traces) == {"FT config 0", "FT config 3"}
    assert list(traces["FT config 0"].x) == ["1", "5", "10"]
    assert traces["FT config 0"].y[1] == pytest.approx(40.0)
    assert fig.layout.yaxis.type == "log"


def test_quanta_figures(store):
    uri, ids, _, q = store
    summary = results.quanta_summary(results.quanta_values(q))
    digits = summary[summary["dataset"] == "digits:5-9"]
    bars = _by_name(plots.lambda_bars(digits))
    assert set(bars) == {results.TRAINED_SOURCE, results.RANDOM_SOURCE}
    assert list(bars[results.TRAINED_SOURCE].x) == ["0", "1", "2"]
    assert list(bars[results.RANDOM_SOURCE].y) == pytest.approx([0.70, 0.85, 0.90])
    # two trained-source runs have a spread to draw; the single control run has none
    assert bars[results.TRAINED_SOURCE].error_y.visible and not bars[results.RANDOM_SOURCE].error_y.visible

    hist = results.metric_histories(uri, ids["trained"] + ids["random"], prefixes=(results.QUANTA_PREFIX,))
    steps = plots.lambda_steps_figure(results.lambda_steps(hist, q), ["0", "1", "2"])
    assert len(steps.data) == 6  # 3 layers x (trained, control)
    assert {t.line.dash for t in steps.data if "control" in t.name} == {"dash"}

    heat = plots.lambda_heatmap(results.quanta_matrix(summary))
    assert np.asarray(heat.data[0].z).shape == (3, 2)

    acc = plots.quanta_accuracy_figure(results.quanta_accuracy(q[q["dataset"] == "digits:5-9"]))
    assert {t.name for t in acc.data} == {"source network", f"target ({results.TRAINED_SOURCE})",
                                           f"target ({results.RANDOM_SOURCE})"}

    depth = results.freezing_depth_accuracy(q, "quanta_cnn", "digits:5-9")
    fig = plots.freezing_depth_figure(digits, depth)
    line = next(t for t in fig.data if t.name == "fine-tuning accuracy")
    assert list(line.x) == [0.0, 0.25, 0.5, 0.75] and line.yaxis == "y2"
    assert sum(isinstance(t, go.Bar) for t in fig.data) == 2


def test_metric_curves_figure(store):
    uri, _, df, _ = store
    ids = df.loc[(df["sweep_id"] == "sweep-ft0") & ~df["is_sweep_parent"], "run_id"].head(2).tolist()
    hist = results.metric_histories(uri, ids, keys=["train_loss"])
    fig = plots.metric_curves_figure(hist, "train_loss", {ids[0]: "first"})
    assert len(fig.data) == 2 and "first" in {t.name for t in fig.data}


def test_empty_inputs_give_a_message_not_an_error():
    empty = results.load_view("sqlite:////nonexistent/dir/mlflow.db", "tradeoffs")
    figures = [plots.tradeoff_scatter(results.tradeoff_points(empty, "co2_kg"), "co2_kg"),
               plots.learning_curve_figure(results.learning_curves(empty)),
               plots.cost_ratio_figure(results.cost_ratio(empty)),
               plots.lambda_bars(results.quanta_summary(results.quanta_values(empty))),
               plots.lambda_heatmap(pd.DataFrame()),
               plots.metric_curves_figure(pd.DataFrame(columns=["run_id", "key", "step", "value"]), "x")]
    for fig in figures:
        assert not fig.data and fig.layout.annotations[0].text


def test_selected_run_ids_from_a_streamlit_selection():
    selection = {"points": [{"customdata": ["run-a", "x"], "x": 1}, {"customdata": ["run-b"]},
                            {"customdata": ["run-a", "y"]}, {"x": 2}], "box": [], "lasso": [], "point_indices": []}
    assert plots.selected_run_ids(selection) == ["run-a", "run-b"]
    assert plots.selected_run_ids(None) == [] and plots.selected_run_ids({"points": []}) == []


def test_figure_config_sets_the_download_format():
    cfg = plots.figure_config("curves", "svg")
    assert cfg["toImageButtonOptions"] == {"format": "svg", "filename": "curves", "scale": 2}
