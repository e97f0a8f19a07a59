"""Quanta: which layers transfer, read from lambda_S and always against the random-source control."""

from __future__ import annotations

import streamlit as st

from pages.shared import results_cache, widgets
from tlcore import plots, results

MAX_HISTORY_RUNS = 24  # metric histories are read per run: keep the step chart to the latest few

widgets.page_setup("Quanta", "🔬", heading="🔬 QUANTA: which layers transfer")
st.caption("A QUANTA layer mixes the frozen source's features with the target's own at one layer: "
           "λ_S is the share of the source's. λ_S staying high means the target keeps using the source's "
           "features there; falling means it prefers its own. The value also moves with the scale of the "
           "activations, so read it against the random-source control, never alone.")

try:
    runs = results_cache.runs("quanta")
except Exception as exc:
    widgets.show_error(exc)
    st.stop()
quanta_runs = runs[runs["method"] == "quanta"] if not runs.empty else runs
if quanta_runs.empty:
    results_cache.no_runs_notice("QUANTA runs", "quanta")
    st.stop()

with st.sidebar:
    st.header("Filters")
    backbones = results.options(quanta_runs, "backbone")
    backbone = st.selectbox("Backbone", backbones, key="quanta.backbone")
    of_backbone = quanta_runs[quanta_runs["backbone"].astype(str) == backbone]
    targets = results.options(of_backbone, "dataset")
    target = st.selectbox("Target dataset", targets, key="quanta.target")
    sources = results.options(of_backbone, "source_task")
    source_tasks = st.multiselect("Source task", sources, key="quanta.source_task", placeholder="all") or None
    unfinished = st.toggle("Include unfinished runs", value=False, key="quanta.unfinished",
                           help="Failed or cancelled runs stopped early: their last λ_S is not a final value.")
    image_format = st.radio("Figure download format", ["png", "svg"], horizontal=True, key="quanta.image")

selected = of_backbone
if source_tasks:
    selected = selected[selected["source_task"].astype(str).isin(source_tasks)]
if not unfinished:
    selected = selected[selected["status"] == "FINISHED"]
status = of_backbone["status"].value_counts()
st.caption(f"{len(of_backbone)} QUANTA run(s) of {backbone}: "
           + ", ".join(f"{n} {s.lower()}" for s, n in status.items()) + ".")
failed = of_backbone[of_backbone["status"] == "FAILED"]
if len(failed):
    with st.expander(f"{len(failed)} failed run(s): their errors"):
        st.dataframe(failed[["run_name", "dataset", "source_weights", "error", "run_id"]], hide_index=True,
                     width="stretch")

values = results.quanta_values(selected)
hint = results.layer_hint(selected)
summary_all = results.quanta_summary(values, hint)
summary = summary_all[summary_all["dataset"].astype(str) == target]
if summary.empty:
    st.info(f"No {'' if unfinished else 'finished '}QUANTA run on {target} with {backbone} has logged λ_S yet"
            + ("" if unfinished else "; turn on *Include unfinished runs* to see partial ones") + ".")
    st.stop()

caveat = results.quanta_caveat(summary)
if caveat:
    st.warning(caveat)

# -- the verdict per layer: lambda_S against the control ------------------------------------------
st.subheader(f"Which layers transfer · {target} · {backbone}")
verdicts_all = results.quanta_layer_verdicts(selected)
verdicts = verdicts_all[verdicts_all["dataset"].astype(str) == target]
matched = verdicts[verdicts["matched"]]
if matched.empty:
    st.info("No trained-source run here has a random-source control with the same settings (epochs, learning "
            "rates, samples per class, layers), so no layer can be judged yet. Run QUANTA again with source "
            "weights = random and the same settings.")
else:
    settings = matched["settings"].drop_duplicates().tolist()
    if len(settings) > 1:
        pick = st.selectbox("Settings", settings, key="quanta.settings",
                            help="Runs are compared with their control only when both used the same settings.")
        matched = matched[matched["settings"] == pick]
    else:
        st.caption(f"Settings: {settings[0]}.")
    st.plotly_chart(plots.lambda_delta_figure(matched), key="quanta.delta",
                    config=plots.figure_config(f"tl-lab-lambda-delta-{target}-{backbone}", image_format))
    st.caption("λ_S of the trained source minus the random-source control's, per layer. Error bars: the 95% "
               "interval of the difference (Welch, over runs) or, with one run on a side, the margin by which runs "
               "of one setting differ. Green: the target keeps the source's features; red: it prefers its own; "
               "grey: no signal.")
    table = matched[["layer", "meaning", "delta", "low", "high", "trained", "control", "n_trained", "n_control",
                     "reason"]]
    st.dataframe(table.rename(columns={"meaning": "verdict", "delta": "Δλ_S", "low": "95% low", "high": "95% high",
                                       "trained": "λ_S trained", "control": "λ_S control",
                                       "n_trained": "runs", "n_control": "control runs"}),
                 hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%+.4f") for c in ("Δλ_S", "95% low",
                                                                                          "95% high")}
                 | {c: st.column_config.NumberColumn(format="%.4f") for c in ("λ_S trained", "λ_S control")})
    depth = results.quanta_depth(matched)
    if depth is None:
        st.caption("No layer separated from the control: these runs say nothing about which layers transfer.")
    else:
        st.caption(f"The target kept the source's features in the first {depth[0]} of {depth[1]} layers.")

# -- lambda_S per layer ----------------------------------------------------------------------------
st.subheader(f"Final λ_S per layer · {target} · {backbone}")
st.plotly_chart(plots.lambda_bars(summary), key="quanta.bars",
                config=plots.figure_config(f"tl-lab-lambda-{target}-{backbone}", image_format))
st.caption("Mean over runs of the last logged λ_S (the axis fits the values); error bars one standard deviation "
           "(absent with a single run).")
table = summary.drop(columns=["backbone", "dataset", "layer_pos"]).rename(columns={"n": "runs"})
with st.expander("Values"):
    st.dataframe(table, hide_index=True, width="stretch")
    results_cache.download_csv(summary, f"tl-lab-lambda-{target}-{backbone}")

# -- lambda_S over steps ---------------------------------------------------------------------------
st.subheader("λ_S over training steps")
of_target = selected[selected["dataset"].astype(str) == target].sort_values("start_time", ascending=False)
history_runs = of_target.head(MAX_HISTORY_RUNS)
if len(of_target) > MAX_HISTORY_RUNS:
    st.caption(f"The latest {MAX_HISTORY_RUNS} of {len(of_target)} runs.")
hist = results_cache.histories(history_runs["run_id"].tolist(), prefixes=(results.QUANTA_PREFIX,))
steps = results.lambda_steps(hist, history_runs)
order = summary.sort_values("layer_pos")["layer"].drop_duplicates().tolist()
st.plotly_chart(plots.lambda_steps_figure(steps, order), key="quanta.steps",
                config=plots.figure_config(f"tl-lab-lambda-steps-{target}", image_format))
has_control = results.RANDOM_SOURCE in set(steps["source_kind"]) if not steps.empty else False
st.caption("Mean over runs at each optimizer step" + ("; dashed: the random-source control." if has_control else
                                                     "; no random-source control among these runs."))

# -- accuracies ------------------------------------------------------------------------------------
st.subheader("Source vs target test accuracy")
acc = results.quanta_accuracy(of_target)
st.plotly_chart(plots.quanta_accuracy_figure(acc), key="quanta.accuracy",
                config=plots.figure_config(f"tl-lab-quanta-accuracy-{target}", image_format))
st.caption("The source network on its own task beside the target trained with QUANTA, per transferred layer "
           "(all = every layer at once).")

# -- layers x targets ------------------------------------------------------------------------------
of_backbone_summary = summary_all[summary_all["backbone"].astype(str) == backbone]
if of_backbone_summary["dataset"].nunique() > 1:
    st.subheader(f"Layers × target task · {backbone}")
    kind = st.radio("Source", [results.TRAINED_SOURCE, results.RANDOM_SOURCE], horizontal=True, key="quanta.kind")
    matrix = results.quanta_matrix(of_backbone_summary, kind)
    st.plotly_chart(plots.lambda_heatmap(matrix), key="quanta.heatmap",
                    config=plots.figure_config(f"tl-lab-lambda-matrix-{backbone}", image_format))
    if not matrix.empty:
        results_cache.download_csv(matrix.reset_index(), f"tl-lab-lambda-matrix-{backbone}")

# -- freezing depth --------------------------------------------------------------------------------
st.subheader("Fine-tuning by freezing depth, beside λ_S")
depth = results.freezing_depth_accuracy(runs, backbone, target)
if depth.empty:
    st.caption(f"No finished fine-tuning run of {backbone} on {target}: run configurations 0-3 (0 = train "
               "everything, 1-3 = freeze about a quarter, half, three quarters) to see whether freezing the "
               "layers with high λ_S costs accuracy.")
    results_cache.link_to_page("run", "Open the Run page", "🧪")
else:
    st.plotly_chart(plots.freezing_depth_figure(summary, depth), key="quanta.depth",
                    config=plots.figure_config(f"tl-lab-freezing-depth-{target}", image_format))
    st.caption("Bars: final λ_S of each layer at its relative depth. Line: fine-tuning accuracy of each "
               "configuration at the fraction of the network it freezes (nominal quarters).")
    st.dataframe(depth.assign(mean=depth["mean"] * 100, std=depth["std"] * 100).rename(
        columns={"mean": "accuracy (%)", "std": "std (%)", "n": "runs"}), hide_index=True, width="stretch")
