"""Trade-offs: what accuracy each method buys for what cost, and where fine-tuning starts to pay."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.shared import results_cache, widgets
from tlcore import plots, results

widgets.page_setup("Trade-offs", "📈", heading="📈 Trade-offs")
st.caption("Accuracy against cost for feature extraction (FE) and fine-tuning (FT) runs, few-shot learning "
           "curves and where they cross, and what fine-tuning costs relative to feature extraction.")

try:
    runs = results_cache.runs("tradeoffs")
except Exception as exc:  # an unreadable store: say so, keep the app alive
    widgets.show_error(exc)
    st.stop()
if runs.empty:
    results_cache.no_runs_notice("feature-extraction or fine-tuning runs")
    st.stop()

chosen = results_cache.filter_sidebar(runs, key="tradeoffs")
with st.sidebar:
    accuracy = st.radio("Score", list(results.ACCURACY_METRICS), format_func=results.ACCURACY_METRICS.get,
                        key="tradeoffs.score",
                        help="Few-shot runs are scored on the test set; model-selection runs on validation.")
    image_format = st.radio("Figure download format", ["png", "svg"], horizontal=True, key="tradeoffs.image",
                            help="The camera icon in each chart's toolbar saves the figure in this format.")
shown = results.filter_runs(runs, chosen)
status = shown["status"].value_counts()
st.caption(f"{len(shown)} runs match the filters: {status.get('FINISHED', 0)} finished"
           + "".join(f", {n} {s.lower()}" for s, n in status.items() if s != "FINISHED")
           + " (only finished runs are drawn; sweep parents are left out).")
if shown.empty:
    st.warning("No run matches these filters; clear some in the sidebar.")
    st.stop()
if status.get("FAILED", 0):
    with st.expander(f"{status['FAILED']} failed run(s): their errors"):
        failed = shown[shown["status"] == "FAILED"]
        st.dataframe(failed[["run_name", "variant", "dataset", "backbone", "error", "run_id"]], hide_index=True,
                     width="stretch")
        results_cache.link_to_page("runs", "Inspect them on the Runs page", "🗂️")

methods = set(shown.loc[shown["status"] == "FINISHED", "method"])
tab_scatter, tab_curves, tab_ratio = st.tabs(["Accuracy vs cost", "Few-shot curves", "Cost ratio FT/FE"])

# -- accuracy vs cost ------------------------------------------------------------------------------
with tab_scatter:
    c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
    cost = c1.selectbox("Cost axis", list(results.COST_AXES), format_func=results.COST_AXES.get,
                        key="tradeoffs.cost")
    color_by = c2.selectbox("Colour by", ["variant", "method", "backbone", "dataset", "classifier", "configuration"],
                            key="tradeoffs.color")
    points = results.tradeoff_points(shown, cost, accuracy)
    spc_values = sorted(points["spc"].dropna().unique()) if not points.empty else []
    counts = points["spc"].value_counts() if not points.empty else None
    busiest = max(spc_values, key=lambda v: (counts[v], v)) if spc_values else None  # most runs, then most labels
    spc_pick = c3.selectbox("Samples per class", spc_values, index=spc_values.index(busiest) if spc_values else None,
                            format_func=lambda v: f"{v:g} per class", key="tradeoffs.spc",
                            help="Accuracies are comparable only at one samples-per-class value (more labels score "
                                 "higher for every method), so the chart shows one at a time.")
    log_x = c4.toggle("Log scale", value=True, key="tradeoffs.log")
    finished = shown[(shown["status"] == "FINISHED") & ~shown["is_sweep_parent"]]
    missing = len(finished) - len(points)
    if spc_pick is not None:
        points = points[points["spc"] == spc_pick]
    if log_x and not points.empty:
        nonpositive = points[cost] <= 0
        if nonpositive.any():
            st.caption(f"{int(nonpositive.sum())} run(s) with a zero value of {results.COST_AXES[cost]} cannot "
                       "sit on a log axis and are not drawn.")
            points = points[~nonpositive]
    if missing:
        st.caption(f"{missing} finished run(s) have no value for {results.COST_AXES[cost]} or "
                   f"{results.ACCURACY_METRICS[accuracy]} and are not drawn (e.g. energy unavailable on that "
                   "machine, or a model-selection run scored on validation only).")
    front = results.pareto_front(points, cost, accuracy)
    fig = plots.tradeoff_scatter(points, cost, accuracy, front, log_x=log_x, color=color_by)
    event = st.plotly_chart(fig, key="tradeoffs.scatter", on_select="rerun", selection_mode=("points", "box"),
                            config=plots.figure_config(f"tl-lab-accuracy-vs-{cost}", image_format))
    n_weak = int(points["weak"].sum()) if "weak" in points else 0
    if n_weak:
        st.caption(f"Faded: {n_weak} weak run(s) (capped at their epoch limit while still improving, or scoring "
                   "near chance): shown, never on the Pareto front; the hover says why.")
    if cost in results.ENERGY_AXES and "energy_estimated" in points and points["energy_estimated"].any():
        st.caption("Hollow markers: energy **estimated** by CodeCarbon (CPU TDP x load, RAM estimate), not read "
                   "from hardware counters; the hover names the method. Do not compare estimates across machines.")
    picked = plots.selected_run_ids(event.selection if event else None)
    if picked:
        sel = points[points["run_id"].isin(picked)]
        st.markdown(f"**{len(sel)} selected run(s)**")
        st.dataframe(results.display_table(sel, [accuracy], [cost]), hide_index=True, width="stretch")
        results_cache.link_to_page("runs", "Compare them on the Runs page", "🗂️",
                                   query_params={"runs": ",".join(sel["run_id"].head(10))})
    else:
        st.caption("Click a point, or pick the box-select tool in the chart's toolbar and drag, to list runs.")

    st.subheader("Pareto front")
    st.caption("Runs no other run beats on both cost and accuracy, per dataset at this samples-per-class value "
               "(accuracies of different datasets or label counts are not comparable). Weak runs are left out; ties "
               "on both stay on the front.")
    front_table = results.display_table(front, [accuracy], [cost], extra=["method"])
    st.dataframe(front_table, hide_index=True, width="stretch")
    d1, d2 = st.columns(2)
    with d1:
        results_cache.download_csv(lambda: results.display_table(points, [accuracy], list(results.COST_AXES)),
                                   f"tl-lab-points-{cost}", "Download the drawn points (CSV)")
    with d2:
        results_cache.download_csv(front_table, f"tl-lab-pareto-{cost}", "Download the Pareto front (CSV)")

# -- few-shot curves -------------------------------------------------------------------------------
with tab_curves:
    curves = results.learning_curves(shown, accuracy)
    if curves.empty:
        st.info("No finished run with a samples-per-class value and this score yet. Few-shot runs (without "
                "--model-selection) are scored on the test set: choose *Test accuracy* in the sidebar.")
    else:
        paired = results.paired_differences(shown, accuracy)
        cross = results.crossover_intervals(paired)
        if methods == {"fe"} or methods == {"ft"}:
            other = "fine-tuning" if methods == {"fe"} else "feature-extraction"
            st.info(f"Only {results.METHOD_LABELS[next(iter(methods))].lower()} runs here: run {other} on the same "
                    "dataset and backbone to see where the curves cross.")
        colors = plots.colors_for(curves["variant"])
        pairs = curves[["dataset", "backbone"]].drop_duplicates().sort_values(["dataset", "backbone"])
        labels = [f"{d} · {b}" for d, b in pairs.itertuples(index=False)]
        if len(labels) > 4:
            pick = st.selectbox("Dataset and backbone", labels, key="tradeoffs.pair")
            pairs = pairs.iloc[[labels.index(pick)]]
        for dataset, backbone in pairs.itertuples(index=False):
            part = curves[(curves["dataset"] == dataset) & (curves["backbone"] == backbone)]
            marks = results.crossover_marks(cross[(cross["dataset"] == dataset) & (cross["backbone"] == backbone)],
                                            part)
            st.plotly_chart(plots.learning_curve_figure(part, marks, f"{dataset} · {backbone}", colors),
                            key=f"tradeoffs.curve.{dataset}.{backbone}",
                            config=plots.figure_config(f"tl-lab-curves-{dataset}-{backbone}", image_format))
        st.caption("Mean over splits (runs of one split are averaged first); error bars: the 95% interval of the mean "
                   "(Student t over splits), absent with a single split. Hollow, faded points rest on weak runs "
                   "(capped or near chance): the hover says how many and why.")
        st.subheader("Fine-tuning minus feature extraction, on the same draws")
        if paired.empty:
            st.caption("Needs FE and FT runs of one dataset and backbone trained on the same draws (same samples per "
                       "class and split; runs of one seed share their draws).")
        else:
            for dataset, backbone in pairs.itertuples(index=False):
                part = paired[(paired["dataset"] == dataset) & (paired["backbone"] == backbone)]
                if not part.empty:
                    st.plotly_chart(plots.paired_difference_figure(part, f"FT − FE · {dataset} · {backbone}"),
                                    key=f"tradeoffs.paired.{dataset}.{backbone}",
                                    config=plots.figure_config(f"tl-lab-paired-{dataset}-{backbone}", image_format))
            st.caption("Each point: the mean FT − FE difference in balanced accuracy over draws both methods trained "
                       "on, with its 95% interval. Above 0 fine-tuning scored higher. Pairs with a weak run are left "
                       "out (counted in the hover).")
            table = paired.assign(**{c: paired[c] * 100 for c in ("diff", "ci_low", "ci_high", "fe_mean", "ft_mean")})
            table["verdict"] = table["verdict"].map({"ft_higher": "FT higher", "fe_higher": "FE higher",
                                                     "not_resolved": "not resolved"})
            st.dataframe(table.rename(columns={
                "reference": "FE", "variant": "FT", "spc": "samples per class", "diff": "FT − FE (points)",
                "ci_low": "95% low", "ci_high": "95% high", "n_pairs": "pairs", "n_weak": "weak pairs left out",
                "fe_mean": "FE (%)", "ft_mean": "FT (%)"}), hide_index=True, width="stretch",
                column_config={c: st.column_config.NumberColumn(format="%.1f") for c in (
                    "FT − FE (points)", "95% low", "95% high", "FE (%)", "FT (%)")})
        st.subheader("Crossovers")
        if cross.empty:
            st.caption("No pair of FE and FT curves on the same draws yet.")
        else:
            st.caption("Resolved only where FE scored clearly higher at fewer labels and FT clearly higher at more "
                       "(95% intervals); the range is between those samples-per-class values.")
            st.dataframe(cross.rename(columns={"reference": "FE", "variant": "FT", "spc": "samples per class",
                                               "spc_low": "from", "spc_high": "to"}),
                         hide_index=True, width="stretch")
        d1, d2 = st.columns(2)
        with d1:
            results_cache.download_csv(curves, "tl-lab-learning-curves", "Download the curves (CSV)")
        with d2:
            results_cache.download_csv(paired, "tl-lab-paired-differences", "Download the differences (CSV)")

# -- cost ratio ------------------------------------------------------------------------------------
with tab_ratio:
    ratio_cost = st.selectbox("Cost", list(results.COST_AXES), format_func=results.COST_AXES.get,
                              key="tradeoffs.ratio_cost")
    ratio = results.cost_ratio(shown, ratio_cost)
    ratio_pairs = [f"{d} · {b}" for d, b in ratio[["dataset", "backbone"]].drop_duplicates().itertuples(index=False)]
    if len(ratio_pairs) > 1:
        pick = st.selectbox("Dataset and backbone", ratio_pairs, key="tradeoffs.ratio_pair")
        ratio = ratio[(ratio["dataset"] + " · " + ratio["backbone"]) == pick]
    if ratio.empty:
        st.info("The ratio needs finished FE and FT runs of the same dataset, backbone and samples per class"
                + (f" that logged {results.COST_AXES[ratio_cost]}." if methods >= {"fe", "ft"} else "."))
    else:
        st.plotly_chart(plots.cost_ratio_figure(ratio, ratio_cost), key="tradeoffs.ratio",
                        config=plots.figure_config(f"tl-lab-cost-ratio-{ratio_cost}", image_format))
        st.caption("Mean cost of the FT runs over the mean cost of the FE runs at each samples-per-class value; "
                   "above 1, fine-tuning costs more.")
        scale, unit = results.COST_SCALE.get(ratio_cost, 1.0), results.COST_AXES[ratio_cost]
        readable = pd.DataFrame({
            "dataset": ratio["dataset"], "backbone": ratio["backbone"], "FE": ratio["reference"],
            "FT": ratio["variant"], "samples per class": ratio["spc"].astype(int),
            f"FE: {unit}": (ratio["fe_cost"] * scale).map(lambda v: float(f"{v:.3g}")),
            f"FT: {unit}": (ratio["ft_cost"] * scale).map(lambda v: float(f"{v:.3g}")),
            "FT / FE": ratio["ratio"].round(2), "FE runs": ratio["n_fe"], "FT runs": ratio["n_ft"]})
        st.dataframe(readable, hide_index=True, width="stretch")
        results_cache.download_csv(readable, f"tl-lab-cost-ratio-{ratio_cost}", "Download the ratios (CSV)")
