"""TL Lab home page: what the lab is, its jobs, the latest results, where they are stored, the hardware."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.shared import widgets

widgets.page_setup("Home", "🧪", heading="🧪 TL Lab")
st.markdown(
    "Decide **how** to transfer a pretrained vision model to your data: *feature extraction* "
    "(a full-network embedding and a linear classifier), *fine-tuning* (a new head, with 0-3 frozen "
    "quarters of the network) or a *QUANTA* probe of which layers transfer. Every run is an MLflow run "
    "with its accuracy and its cost: time, FLOPs, energy and CO2."
)

runner = widgets.runner()
tracker = widgets.tracker()


@st.cache_data(ttl=10, show_spinner=False)
def executor_line(name: str) -> str:
    """Where jobs run and what is free there (a cluster's free CPUs move as jobs run: asked every 10 s)."""
    return runner.executor.describe()


# -- what happened while the server was down --------------------------------------------------
for job in runner.interrupted():
    with st.container(border=True):
        st.warning(f"**Job #{job.number}** ({job.label}): {job.note}", icon="⚠️")
        resumable = runner.resume_point(job) is not None
        c1, c2, c3, _ = st.columns([1.3, 1, 1, 2.7])
        if resumable and c1.button("Continue where it stopped", key=f"home_resume_{job.id}", type="primary",
                                   help="Fine-tuning keeps a checkpoint every epoch: the same MLflow runs continue "
                                        "from their last epoch, and the points that had not started run."):
            new = runner.resume(job.id).job
            runner.acknowledge(job.id)
            st.session_state["run_focus_job"] = new.id
            st.rerun()
        again = c2 if resumable else c1
        if again.button("Start again" if resumable else "Run it again", key=f"home_resubmit_{job.id}",
                        help="A new job from the start, with new MLflow runs."):
            new = runner.resubmit(job.id).job
            runner.acknowledge(job.id)
            st.session_state["run_focus_job"] = new.id
            st.rerun()
        if (c3 if resumable else c2).button("Dismiss", key=f"home_dismiss_{job.id}"):
            runner.acknowledge(job.id)
            st.rerun()
if runner.orphaned_run_ids and not runner.interrupted():
    n = len(runner.orphaned_run_ids)
    st.info(f"{n} MLflow run{'s' if n > 1 else ''} left RUNNING by a server that is gone "
            f"{'were' if n > 1 else 'was'} marked FAILED at start-up (metrics logged before are kept).")

# -- where jobs run ---------------------------------------------------------------------------
if runner.executor_error:
    st.error(f"{runner.executor_error} Jobs run in this process until the server is restarted with that fixed.")
else:
    st.caption(executor_line(runner.executor.name))

# -- quick links ------------------------------------------------------------------------------
links = [name for name in widgets.PAGES if name != "home" and widgets.page_exists(name)]
if links:
    for col, name in zip(st.columns(len(links)), links, strict=True):
        with col:
            widgets.page_link(name)

# -- jobs -------------------------------------------------------------------------------------
st.subheader("Jobs")
active = runner.has_active()


@st.fragment(run_every=2.0 if active else None)
def jobs_panel() -> None:
    jobs = runner.jobs()
    if runner.has_active() != active:
        st.rerun()
    if not jobs:
        st.caption("No job yet: start one from the Run page. Jobs run in the background, one at a time per "
                   "device, and keep running when you close the tab.")
        return
    shown = [j for j in jobs if j.active] + [j for j in jobs if not j.active][:5]
    st.dataframe(
        pd.DataFrame(widgets.jobs_table(shown)), hide_index=True, width="stretch",
        column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0,
                                                                   format="percent")},
    )


jobs_panel()

# -- latest results ---------------------------------------------------------------------------
st.subheader("Latest results")


@st.cache_data(ttl=30, show_spinner=False)
def latest_results(uri: str, version: int) -> pd.DataFrame:
    from tlcore.history import recent_results

    return recent_results(widgets.tracker(), limit=8)


recent = latest_results(tracker.uri, widgets.results_version())
if recent.empty:
    st.caption("No runs yet. Feature extraction on `digits` takes about a minute on a laptop CPU: open the Run "
               "page, keep the defaults and press Run.")
else:
    table = recent.assign(started=recent["started"].dt.tz_convert(None).dt.strftime("%Y-%m-%d %H:%M"))
    st.dataframe(table.drop(columns=["run_id", "method"]), hide_index=True, width="stretch",
                 column_config={"what": st.column_config.TextColumn(width="medium"),
                                "result": st.column_config.TextColumn(width="large"),
                                "why": st.column_config.TextColumn("why (verdict)", width="medium")})
    st.caption("One row per job: a few-shot curve reads as its mean balanced accuracy per samples-per-class value. "
               "Verdict: what the runs earned as evidence (capped: stopped at the epoch limit while still "
               "improving; near chance: guessing scores as much). Energy is an estimate on machines without "
               "RAPL/NVML counters.")
    widgets.page_link("runs", "All runs")

# -- where results live, what runs them -------------------------------------------------------
col1, col2 = st.columns(2)
with col1:
    st.subheader("Where results are stored")
    from tlcore.tracking import mlflow_ui_command, store_description

    st.code(store_description(tracker.uri), language=None, wrap_lines=True)
    st.caption("Open them in the MLflow UI with:")
    st.code(mlflow_ui_command(tracker.uri), language="bash", wrap_lines=True)
with col2:
    st.subheader("Hardware")
    st.write(widgets.hardware_line())

with st.expander("Datasets", expanded=False):
    st.caption("Embedded datasets work offline; a folder in the layout `root/<split>/<label>/image.ext` is your own "
               "data; a class filter carves a task out of any dataset, e.g. `digits:0-4`.")
    st.dataframe(pd.DataFrame(widgets.dataset_rows()), hide_index=True, width="stretch")

with st.expander("Backbones", expanded=False):
    rows = widgets.backbone_rows()
    st.dataframe(
        pd.DataFrame(rows)[["name", "params_m", "gflops", "input_size", "taps", "weights", "description"]].rename(
            columns={"params_m": "parameters (M)", "gflops": "GFLOPs / image", "input_size": "input"}),
        hide_index=True, width="stretch",
    )
    st.caption("GFLOPs of one forward pass at the input size, counted on the meta device "
               "(FLOPs = 2 x multiply-adds).")
