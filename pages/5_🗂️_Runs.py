"""Runs: every MLflow run in the store; compare a few, read why one failed, archive (soft delete)."""

from __future__ import annotations

import hashlib

import streamlit as st

from pages.shared import results_cache, widgets
from tlcore import plots, quality, results
from tlcore.tracking import mlflow_ui_command

MAX_COMPARE = 10

widgets.page_setup("Runs", "🗂️", heading="🗂️ Runs")
uri = results_cache.store_uri()
if done := st.session_state.pop("runs.done", None):
    st.success(done)

with st.sidebar:
    archived = st.toggle("Show archived runs", value=False, key="runs.archived",
                         help="Archived runs are soft-deleted in MLflow: hidden everywhere, restorable here.")
try:
    runs = results_cache.runs("runs", archived=archived)
except Exception as exc:
    widgets.show_error(exc)
    st.stop()
if runs.empty:
    if archived:
        st.info("No archived runs.")
    else:
        results_cache.no_runs_notice("runs")
    st.stop()

chosen = results_cache.filter_sidebar(runs, key="runs",
                                      fields=("dataset", "backbone", "method", "status", "classifier",
                                              "configuration", "date"))
with st.sidebar:
    chosen.include_sweep_parents = st.toggle("Show sweep parents", value=False, key="runs.parents",
                                             help="The run grouping a few-shot sweep; its children hold the results.")
    search = st.text_input("Search run name or id", key="runs.search").strip().lower()
shown = results.filter_runs(runs, chosen)
if search:
    shown = shown[shown["run_name"].astype(str).str.lower().str.contains(search, regex=False)
                  | shown["run_id"].str.contains(search, regex=False)]
status = shown["status"].value_counts()
st.caption(f"{len(shown)} of {len(runs)} {'archived ' if archived else ''}runs shown: "
           + ", ".join(f"{n} {s.lower()}" for s, n in status.items())
           + ". Click a column header to sort; tick rows to compare them below.")

# -- the table -------------------------------------------------------------------------------------
key_params = ["classifier", "configuration", "optimizer", "learning_rate", "layer_to_transfer", "source_weights"]
table = results.display_table(shown, ["test_accuracy", "val_accuracy"], list(results.COST_AXES), extra=key_params)
table["error"] = shown["error"].to_numpy()
first = ["run", "variant", "dataset", "backbone", "spc", "split", "Test accuracy (%)", "Validation accuracy (%)",
         "verdict", "status", "started"]
table = table[[c for c in first if c in table] + [c for c in table if c not in first and c != "run_id"] + ["run_id"]]
# A table of other rows gets a fresh key: row selections are positions, stale once the rows change.
rows_hash = hashlib.md5("".join(table["run_id"]).encode()).hexdigest()[:10]
table_key = f"runs.table.{rows_hash}"
event = st.dataframe(
    table, hide_index=True, width="stretch", height=min(36 * (len(table) + 1) + 3, 560), key=table_key,
    on_select="rerun", selection_mode="multi-row",
    column_config={
        "Test accuracy (%)": st.column_config.NumberColumn(format="%.1f"),
        "Validation accuracy (%)": st.column_config.NumberColumn(format="%.1f"),
        "Wall time (s)": st.column_config.NumberColumn(format="%.1f"),
        "FLOPs": st.column_config.NumberColumn(format="%.3g"),
        "Energy (Wh)": st.column_config.NumberColumn(format="%.3g"),
        "CO2 (g CO2e)": st.column_config.NumberColumn(format="%.3g"),
        "Device-hours": st.column_config.NumberColumn(format="%.3g"),
        "started": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
    })
results_cache.download_csv(table, "tl-lab-runs", "Download this table (CSV)")

# The table's ticked rows feed the comparison; the multiselect below can still add or drop runs.
ticked = [table["run_id"].iloc[i] for i in (event.selection.rows if event else []) if i < len(table)]
if len(ticked) > MAX_COMPARE:
    st.caption(f"{len(ticked)} rows ticked: the first {MAX_COMPARE} are compared.")
last_key, last_ticked = st.session_state.get("runs.last_ticked", (None, []))
if (table_key, ticked) != (last_key, last_ticked):
    st.session_state["runs.last_ticked"] = (table_key, ticked)
    if table_key == last_key:  # the user ticked or unticked rows (not a new table)
        st.session_state["runs.compare"] = ticked[:MAX_COMPARE]
labels = dict(zip(shown["run_id"], shown["run_name"].astype(str) + " · " + shown["variant"].astype(str) + " · "
                  + shown["dataset"].astype(str) + " (" + shown["run_id"].str[:8] + ")", strict=True))
asked = st.query_params.get("runs", "")  # runs another page sent here (e.g. a selection on Trade-offs)
if asked and st.session_state.get("runs.asked") != asked:
    st.session_state["runs.asked"] = asked
    st.session_state["runs.compare"] = [r for r in asked.split(",") if r in labels][:MAX_COMPARE]
if "runs.compare" in st.session_state:  # drop ids the filters no longer show
    st.session_state["runs.compare"] = [r for r in st.session_state["runs.compare"] if r in labels]
compare = st.multiselect("Runs to compare", list(labels), format_func=labels.get, key="runs.compare",
                         max_selections=MAX_COMPARE, placeholder="tick rows in the table, or pick runs here")

# -- MLflow UI -------------------------------------------------------------------------------------
ui_url = results_cache.mlflow_ui_url()
with st.expander("Open in the MLflow UI", expanded=False):
    st.code(mlflow_ui_command(uri), language="bash", wrap_lines=True)
    if ui_url:
        st.caption(f"An MLflow UI answers at {ui_url}: the links below open runs there (if it serves this store).")
    else:
        st.caption(f"No MLflow UI answers at {results_cache.MLFLOW_UI_URL}: start it with the command above (set "
                   "TLCORE_MLFLOW_UI_URL if it listens elsewhere) and links to each run appear here.")

if not compare:
    st.stop()

# -- comparison ------------------------------------------------------------------------------------
details = results_cache.details(compare)
st.subheader(f"{len(details)} selected run(s)")
if ui_url:
    st.markdown(" · ".join(f"[{d.label}]({results.mlflow_run_url(ui_url, d.experiment_id, d.run_id)})"
                           for d in details))

verdict_rows = [{"run": d.label, "verdict": quality.LABELS.get(d.tags.get(quality.QUALITY_TAG, ""), "—"),
                 "why": d.tags.get(quality.QUALITY_REASON_TAG, "")} for d in details]
judged = shown.set_index("run_id")[["quality", "quality_reason"]] if "quality" in shown else None
for row, d in zip(verdict_rows, details, strict=True):  # runs logged before verdicts: judged when read
    if row["verdict"] == "—" and judged is not None and d.run_id in judged.index:
        q, why = judged.loc[d.run_id]
        if isinstance(q, str):
            row.update(verdict=quality.LABELS.get(q, q), why=why)
st.dataframe(verdict_rows, hide_index=True, width="stretch",
             column_config={"why": st.column_config.TextColumn(width="large")})
for d in details:
    if d.status in ("FAILED", "KILLED"):
        message = d.tags.get("error") or "no error message was kept"
        (st.error if d.status == "FAILED" else st.warning)(f"**{d.label}** {d.status.lower()}: {message}")
        trace = d.error_traceback()
        if trace:
            with st.expander(f"Traceback of {d.label}"):
                st.code(trace, language=None)

tab_params, tab_metrics, tab_curves = st.tabs(["Params", "Final metrics", "Metric curves"])
with tab_params:
    only_diff = st.toggle("Only params that differ", value=len(details) > 1, key="runs.only_diff")
    diff = results.params_diff(details, only_different=only_diff)
    if diff.empty:
        st.caption("The selected runs have the same params.")
    else:
        st.dataframe(diff, width="stretch")
with tab_metrics:
    metrics = results.metrics_side_by_side(details)
    if metrics.empty:
        st.caption("No metric logged.")
    else:
        st.dataframe(results.metrics_for_people(metrics), width="stretch")
        if len(details) > 1:
            st.caption("★ the better value of each metric (higher accuracy; lower loss, time, FLOPs, energy, CO2). "
                       "Accuracies are balanced, in %.")
        results_cache.download_csv(metrics.reset_index(), "tl-lab-compare", "Download the raw values (CSV)")
with tab_curves:
    hist = results_cache.histories([d.run_id for d in details],
                                   keys=sorted({k for d in details for k in d.metrics
                                                if not k.startswith(results.QUANTA_PREFIX)}),
                                   prefixes=(results.QUANTA_PREFIX,))
    steps_per_key = hist.groupby("key")["step"].nunique() if not hist.empty else None
    curve_keys = sorted(steps_per_key[steps_per_key > 1].index, key=results.natural_key) \
        if steps_per_key is not None else []
    if not curve_keys:
        st.caption("None of the selected runs logged a metric over several steps (fine-tuning logs per epoch, "
                   "QUANTA per optimizer step).")
    else:
        default = next((k for k in ("val_accuracy", "train_loss") if k in curve_keys), curve_keys[0])
        key = st.selectbox("Metric", curve_keys, index=curve_keys.index(default), key="runs.curve_key")
        st.plotly_chart(plots.metric_curves_figure(hist, key, {d.run_id: d.label for d in details}),
                        key="runs.curves", config=plots.figure_config(f"tl-lab-{key.replace('/', '-')}"))

# -- archive / restore -----------------------------------------------------------------------------
st.divider()
ids = [d.run_id for d in details]
action = "restore" if archived else "archive"
if st.session_state.get("runs.confirm") != (action, ids):
    if st.button(f"{action.title()} {len(ids)} selected run(s)...", key="runs.action",
                 help="Archive = MLflow soft delete: the run is hidden everywhere and can be restored from "
                      "'Show archived runs'. Nothing is deleted for good from the app."):
        st.session_state["runs.confirm"] = (action, ids)
        st.rerun()
else:
    st.warning(f"{action.title()} {len(ids)} run(s): " + ", ".join(d.label for d in details) + "?"
               + (" They disappear from every page until restored." if action == "archive" else ""))
    yes, no = st.columns(2)
    if yes.button(f"Yes, {action}", type="primary", key="runs.yes"):
        try:
            n = (results.restore_runs if archived else results.archive_runs)(uri, ids)
        except Exception as exc:
            widgets.show_error(exc)
        else:
            results_cache.clear()
            st.session_state.pop("runs.confirm", None)
            st.session_state.pop("runs.compare", None)
            st.session_state["runs.done"] = f"{n} run(s) {action}d."
            st.rerun()
    if no.button("Cancel", key="runs.no"):
        st.session_state.pop("runs.confirm", None)
        st.rerun()
