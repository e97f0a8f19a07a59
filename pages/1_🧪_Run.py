"""Run page: pick data, network and method, see the cost before starting, queue it, watch it live."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import streamlit as st

from pages.shared import widgets
from tlcore import quality, units
from tlcore.errors import DatasetError, SpecError, TLError
from tlcore.jobs import JobState
from tlcore.methods import base
from tlcore.methods.base import FormField
from tlcore.planning import CONFIRM_ABOVE_S, RunForm, build_spec, format_flops, spec_fingerprint
from tlcore.wording import for_form

widgets.page_setup("Run", "🧪", heading="🧪 Run an experiment")
card_slot = st.container()  # the result card of the job in focus, once it ends (filled further down)

runner = widgets.runner()
tracker = widgets.tracker()
POLL_S = 1.0  # progress: stage, bar, time left (cheap to draw)
CHARTS_POLL_S = 5.0  # charts and the runs table: an MLflow query and plotly figures


# ---------------------------------------------------------------------------------------------
# Cached look-ups (the page reruns on every widget change)


@st.cache_data(show_spinner=False, ttl=300)
def weights_status(backbone: str) -> dict[str, bool]:
    from tlcore.models import weights_status as status

    return status(backbone)


@st.cache_data(show_spinner=False, ttl=30)
def finished_sources(uri: str, version: int) -> pd.DataFrame:
    from tlcore.history import source_runs

    return source_runs(widgets.tracker())


@st.cache_data(show_spinner="Estimating the cost...", ttl=120)
def estimate(spec_json: str, uri: str, version: int) -> tuple[object | None, str | None, bool]:
    """(estimate, message, blocking): a dataset or spec problem blocks the run; anything else only warns."""
    from tlcore.planning import estimate_cost
    from tlcore.specs import ExperimentSpec

    spec = ExperimentSpec.from_dict(json.loads(spec_json))
    try:
        return estimate_cost(spec, widgets.tracker(), calibrate=True), None, False
    except (DatasetError, SpecError) as exc:
        return None, str(exc), True
    except TLError as exc:
        return None, f"Could not estimate the cost: {exc}", False
    except Exception as exc:  # never let the estimate hide the Run button
        return None, f"Could not estimate the cost ({type(exc).__name__}: {exc}).", False


@st.cache_data(show_spinner=False, ttl=600, max_entries=64)
def job_runs(uri: str, run_ids: tuple[str, ...], stamp: str) -> pd.DataFrame:
    """The job's runs; ``stamp`` changes when they can have changed (a run opened, a point reported, an end)."""
    from tlcore.history import job_runs as runs_of

    return runs_of(widgets.tracker(), list(run_ids))


def draw_field(f: FormField, key: str):
    """One method parameter as a widget, defaults from the params class."""
    help_text = f.help or None
    if f.kind == "choice":
        index = f.options.index(f.default) if f.default in f.options else 0
        return st.selectbox(f.label, f.options, index=index, format_func=f.label_of, key=key, help=help_text)
    if f.kind == "multichoice":
        default = [o for o in (f.default or ()) if o in f.options]
        return tuple(st.multiselect(f.label, f.options, default=default, format_func=f.label_of, key=key,
                                    help=help_text, placeholder=f.placeholder or "Choose options"))
    if f.kind == "bool":
        return st.checkbox(f.label, value=bool(f.default), key=key, help=help_text)
    if f.kind == "int":
        return st.number_input(f.label, value=f.default, step=1, key=key, help=help_text,
                               min_value=int(f.minimum) if f.minimum is not None else None)
    if f.kind == "float":
        default = None if f.default is None else float(f.default)
        step = abs(default) / 10 if default else 0.01
        return st.number_input(f.label, value=default, step=step, format="%g", key=key, help=help_text,
                               min_value=float(f.minimum) if f.minimum is not None else None)
    return st.text_input(f.label, value="" if f.default is None else str(f.default), key=key, help=help_text)


def draw_source_field(f: FormField, key: str, backbone: str) -> str:
    """A source network to transfer from: the backbone's pretrained weights, a finished source training, a
    random source (the control) or a file."""
    sources = finished_sources(tracker.uri, widgets.results_version())
    opts = (["default"] if weights_status(backbone) else []) + list(sources["run_id"]) + ["random", "file"]
    described = {r.run_id: f"source training {r.run_id[:8]} · {r.dataset} · {r.backbone}"
                 + (f" · {r.accuracy:.0%}" if pd.notna(r.accuracy) else "") for r in sources.itertuples()}
    described.update({"default": f"pretrained {backbone} (ImageNet)", "random": "random (the control)",
                      "file": "a weights file..."})
    pick = st.selectbox(f.label, opts, key=key, format_func=described.get, help=f.help)
    if sources.empty and not weights_status(backbone):
        st.caption("No finished source training yet: train one with 'Train a source network' first, or use "
                   "a random source as the control.")
    if pick == "file":
        pick = st.text_input("Source weights file", key=f"{key}_file")
        if not pick:
            problems.append("Give the path of the source weights file, or pick other source weights.")
    return pick or "default"


# ---------------------------------------------------------------------------------------------
# The form

method = st.radio("Method", base.names(), format_func=lambda name: base.get(name).title, horizontal=True,
                  key="run_method")
record = base.get(method)
st.caption(record.blurb)
form_col, side_col = st.columns([3, 2], gap="large")
problems: list[str] = []  # shown under "Before you run"
blocked_inline = False  # a problem already shown in red beside its field

with form_col:
    st.subheader(record.data_title)
    data_dir = st.session_state.get("run_data_dir", "").strip() or None
    dataset, download, check = widgets.dataset_picker("run_dataset", data_dir)
    if check is None or not check.ok:
        blocked_inline = True

    st.subheader("Network" if record.picks_backbone else "Input")
    if record.picks_backbone:
        row = widgets.backbone_picker(f"run_backbone_{method}", record.default_backbone)
    else:  # the method takes its backbones among its parameters: the input size follows its default backbone's
        row = next(r for r in widgets.backbone_rows() if r["name"] == record.default_backbone)
    backbone = row["name"]
    from tlcore.models import backbone_config

    config = backbone_config(backbone)
    weights, download_weights = "default", False
    if record.pretrained_weights:
        status = weights_status(backbone)
        options = [*status, "random", "file"]
        labels = {w: f"{w} ({'on this machine' if ok else 'not on this machine'})" for w, ok in status.items()}
        labels.update({"random": "random initialisation (no transfer)", "file": "a weights file..."})
        choice = st.selectbox("Weights", options, key=f"run_weights_{backbone}", format_func=labels.get)
        if choice == "file":
            path = st.text_input("Weights file (a state_dict saved with torch.save)",
                                 key=f"run_weights_file_{backbone}")
            if path and not Path(path).expanduser().is_file():
                problems.append(f"Weights file {path} does not exist; give the path of a .pt or .pth file.")
            elif not path:
                problems.append("Give the path of the weights file, or pick other weights.")
            weights = path or "default"
        elif choice != "random":
            weights = "default" if choice == config.default_weights else choice
            if not status.get(choice, True):
                if widgets.network_available():
                    download_weights = st.checkbox("Download the weights when the run starts", key="run_dl_weights")
                if not download_weights:
                    problems.append(f"The {choice} weights of {backbone} are not on this machine; allow the download, "
                                    "put the file in the torch hub cache, or pick efficientnet_lite0/1/2 (shipped).")
        else:
            weights = "random"
    fixed = config.fixed_input_size
    from tlcore.data.resolution import input_size_for

    native = check.native_size if check is not None and check.ok else None
    size_default = row["input_size"] if fixed else input_size_for(native, row["input_size"])
    resolution = st.number_input("Input size (px)", min_value=16, max_value=1024, step=8, value=size_default,
                                 key=f"run_resolution_{backbone}_{dataset}", disabled=fixed,
                                 help="Images are resized to this square size. Smaller is much faster (FLOPs grow "
                                      "with the square); the backbone was pretrained at its default size. Tiny "
                                      "images (64 px or less) default to 64 px: blown up to 224 px they cost 12x "
                                      "more and scored lower on digits.")
    if not fixed and size_default != row["input_size"]:
        st.caption(f"Input size {size_default} px: these images are about {native} px, so {row['input_size']} px "
                   "would cost much more for nothing.")

    st.subheader("Method parameters")
    fields = record.form_fields(backbone)
    values: dict = {}
    for f in (f for f in fields if not f.advanced):
        key = f"run_p_{method}_{f.name}_{backbone}"
        values[f.name] = draw_source_field(f, key, backbone) if f.kind == "source" else draw_field(f, key)
    placed = record.store_defaults(tracker.uri) if record.store_defaults else {}  # e.g. exports beside the results
    with st.expander("Advanced parameters"):
        for f in (f for f in fields if f.advanced):
            if f.name in placed:
                f = dataclasses.replace(f, default=placed[f.name])
            values[f.name] = draw_field(f, f"run_p_{method}_{f.name}_{backbone}")
    if record.app_defaults_note:
        st.caption(record.app_defaults_note)
    control_changes = record.control(values) if record.control else None
    with_control = control_changes is not None and st.checkbox(
        record.control_label, value=True, key=f"run_control_{method}", help=record.control_help or None)

    model_selection, spc_text, splits, split_path, use_crops = False, "", None, "", False
    if record.takes_samples:
        st.subheader("Protocol")
        mode = "curve"
        if record.sweep:
            mode = st.radio("Mode", ["curve", "selection"], horizontal=True, key="run_mode",
                            format_func={"curve": "Few-shot curve (scored on test)",
                                         "selection": "Model selection (largest split, scored on val)"}.get)
        model_selection = mode == "selection"
        if model_selection:
            st.caption("One training on the largest training split, scored on the validation set: use it to choose "
                       "hyperparameters before a curve.")
        else:
            c1, c2 = st.columns(2)
            grid = record.default_grid(widgets.has_gpu())
            spc_text = c1.text_input("Samples per class", value=grid, key=f"run_spc_{method}",
                                     help=record.grid_help or "Comma-separated grid. Empty: the split CSVs' values, "
                                          "or the seed's grid up to what the data allows.")
            splits = c2.number_input("Draws per value", min_value=1, max_value=50, value=3, step=1,
                                     key=f"run_splits_{method}",
                                     help="Random training splits per samples-per-class value (the seed used 5). "
                                          "Three draws give each point a 95% interval; FE and FT on the same values "
                                          "train on the same draws, so they compare pair by pair.")
            if grid != record.grid and record.sweep:
                st.caption(f"No GPU here: {record.noun} defaults to {grid} samples per class so it finishes in "
                           "minutes; add values for a fuller curve (the cost below updates).")
    with st.expander("Data and run options"):
        if record.takes_samples:
            split_path = st.text_input("Split CSV folder", key="run_split_path",
                                       help="The seed's CSVs (val.csv, test.csv, train_samples_XX_split_K.csv). "
                                            "Empty: <dataset folder>/splits when present, else generated.")
        if record.sweep:
            use_crops = st.checkbox("10 crops per image (4 corners + centre, mirrored)", key="run_crops")
        skip_bad = st.checkbox("Skip unreadable images", key="run_skip_bad",
                               help="Leave out images that cannot be decoded (they are counted in the run) instead "
                                    "of stopping at the first one.")
        st.text_input("Torchvision data folder", key="run_data_dir",
                      help="Where torchvision datasets are looked for (default: $TLCORE_DATA_DIR or "
                           "~/.cache/tlcore/datasets).")
        c1, c2, c3 = st.columns(3)
        seed = c1.number_input("Seed", min_value=0, value=0, step=1, key="run_seed")
        device = c2.selectbox("Device", ["auto", "cpu", "cuda", "mps"], key="run_device",
                              help="auto: CUDA, then Apple MPS, then the CPU.")
        batch_size = c3.number_input("Batch size", min_value=1, max_value=4096, value=None, step=1,
                                     key="run_batch_size", placeholder="default", help="Empty: the method's default.")

if check is not None and check.ok and check.unreadable and not skip_bad:
    problems.append(check.unreadable_message)
form = RunForm(method=method, dataset=dataset, backbone=backbone, weights=weights, model_selection=model_selection,
               samples_per_class=spc_text, splits=splits, split_path=split_path, use_crops=use_crops,
               resolution=None if fixed else int(resolution), seed=int(seed), device=device,
               batch_size=int(batch_size) if batch_size else None, data_dir=data_dir or "", download=download,
               download_weights=download_weights, skip_bad_images=skip_bad, params=values)
spec = None
try:
    spec = build_spec(form, tracker.uri)
except TLError as exc:
    if not blocked_inline:
        problems.insert(0, str(exc))


# ---------------------------------------------------------------------------------------------
# Before you run, and the Run button

with side_col:
    st.subheader("Before you run")
    cost = None
    if spec is not None and not problems and not blocked_inline:
        cost, note, blocking = estimate(json.dumps(spec.to_dict(), default=str), tracker.uri, widgets.results_version())
        if note and blocking:
            problems.append(note)
        elif note:
            st.warning(for_form(note))
    for p in dict.fromkeys(problems):
        st.error(for_form(p))
    if blocked_inline:
        st.caption("Fix what is marked in red on the left to run.")
    if cost is not None:
        with st.container(border=True):
            st.markdown(f"**Compute:** {format_flops(cost.flops)}  \n**Projected time:** {cost.describe_time()}  \n"
                        f"**Images processed:** {cost.images:,}  \n**MLflow runs:** {cost.runs}")
            st.caption(f"{format_flops(cost.flops_per_image)} per image at {spec.input_size} px. "
                       + " ".join(cost.notes) + f" Time: {cost.basis}.")
    confirmed = True
    if cost is not None and cost.seconds is not None and cost.seconds > CONFIRM_ABOVE_S:
        st.warning(f"This job is projected to take {cost.describe_time()} on this machine. Fewer samples-per-class "
                   "values or draws, a smaller input size, or feature extraction would be quicker.")
        confirmed = st.checkbox(f"Run it anyway ({cost.describe_time()})", key="run_confirm_long")
    if st.button("▶ Run", type="primary", disabled=spec is None or bool(problems) or blocked_inline or not confirmed,
                 key="run_submit",
                 width="stretch", help="Queue the job: it runs in the background, one at a time per device."):
        try:
            submitted = runner.submit(spec, token=spec_fingerprint(spec))
            control = None
            if with_control:
                control_spec = spec.with_params(**control_changes)
                control = runner.submit(control_spec, token=spec_fingerprint(control_spec))
        except TLError as exc:
            widgets.show_error(exc)
        else:
            st.session_state["run_focus_job"] = submitted.job.id
            n = submitted.job.number
            if submitted.new:
                text = f"Queued as job #{n}" + (f", its {record.control_noun} as job #{control.job.number}."
                                                 if control is not None else ".")
            elif submitted.job.active:
                text = f"This experiment is already queued or running as job #{n}."
            else:
                text = f"This experiment has just run as job #{n}; press Run again to repeat it."
            st.session_state["run_flash"] = (text, submitted.new)
            st.rerun()  # the whole page again: the sidebar badge and the progress panel start polling
    flash = st.session_state.pop("run_flash", None)
    if flash:
        (st.success if flash[1] else st.info)(flash[0])


# ---------------------------------------------------------------------------------------------
# Live progress


def draw_status(job) -> None:
    """What the job is doing now; redrawn every second while it runs, so nothing slow belongs here.

    The job's worker thread shares the GIL with this script thread: every millisecond of Python
    spent drawing slows the job's torch calls down.
    """
    icon = widgets.state_icon(job.state)
    st.markdown(f"**{icon} Job #{job.number}** · {job.label}")
    if job.state == JobState.QUEUED:
        pos = runner.queue_position(job.id)
        st.info(f"Waiting in the queue (position {pos}); it starts when the job before it on {job.device} ends.")
        if st.button("Remove from the queue", key=f"run_cancel_{job.id}"):
            runner.cancel(job.id)
            st.rerun()
        return
    if job.state == JobState.RUNNING:
        st.progress(job.fraction, text=job.status_line())
        if job.cancel_requested:
            st.caption("Cancelling: the job stops at its next checkpoint; its MLflow runs will end KILLED.")
        elif st.button("⏹ Cancel", key=f"run_cancel_{job.id}", help="Stop at the next checkpoint; MLflow runs end "
                                                                     "KILLED with the metrics logged so far."):
            runner.cancel(job.id)
            st.rerun(scope="fragment")
    elif job.state == JobState.FINISHED:
        st.success(f"Finished · {job.status_line()}. The result is at the top of the page.")
        if job.summary.strip():
            with st.expander("The command line's summary"):
                st.code(job.summary, language=None)
    elif job.state == JobState.FAILED:
        st.error(for_form(job.error) if job.error else "The job failed.")
        if job.traceback:
            with st.expander("Details (traceback)"):
                st.code(job.traceback, language=None)
        if job.runs:
            st.caption("The runs it opened ended FAILED with this error; metrics logged before are kept.")
    elif job.state == JobState.CANCELLED:
        st.info("Cancelled. " + ("Its MLflow runs ended KILLED with the metrics logged before." if job.runs else
                                 "It had not started, so nothing was recorded."))
    elif job.state == JobState.INTERRUPTED:
        st.warning(job.note)
    for m in [m for m in job.messages if m.level != "debug"][-4:]:
        (st.warning if m.level == "warning" else st.caption)(for_form(m.text))


def draw_card(job) -> None:
    """The headline of a job that ended: what it found, what it cost, what it earned, where to look next."""
    from tlcore.job_results import result_card

    runs = job_runs(tracker.uri, tuple(job.run_ids), f"{job.state}:{len(job.runs)}") if job.runs else pd.DataFrame()
    verdicts = None
    page = base.get(job.spec.method).analysis_page if base.methods.knows(job.spec.method) else "tradeoffs"
    if page == "quanta" and job.runs:
        from pages.shared import results_cache
        from tlcore import results

        verdicts = results.quanta_layer_verdicts(results_cache.runs("quanta"), with_runs=job.run_ids)
    table = None
    if page == "ranking" and job.runs:
        from pages.shared import results_cache
        from tlcore.results import ranking as ranking_results

        parents = runs[runs["sweep_parent"].astype(bool)] if not runs.empty else runs
        if len(parents):
            table = ranking_results.ranking_table(results_cache.runs("ranking"), parents["run_id"].iloc[0])
    card = result_card(runs, job.spec.method, f"Job #{job.number} · {job.label}", verdicts, table)
    with st.container(border=True):
        icon = widgets.state_icon(job.state)
        st.markdown(f"#### {icon} Result of job #{job.number}: {job.label}")
        if job.state == JobState.FAILED:
            st.error(for_form(job.error) if job.error else "The job failed.")
        elif job.state == JobState.CANCELLED:
            st.info("Cancelled: its runs ended KILLED with what they had logged.")
        if runner.resume_point(job) is not None and st.button(
                "Continue where it stopped", key=f"run_resume_{job.id}", type="primary",
                help="The same MLflow runs continue from their last checkpointed epoch."):
            new = runner.resume(job.id).job
            st.session_state["run_focus_job"] = new.id
            st.rerun()
        if card is None:
            st.caption("It left no MLflow run.")
            return
        if card.verdict:
            (st.warning if card.weak else st.success)(card.verdict)
        if card.rows:
            st.dataframe(pd.DataFrame(card.rows), hide_index=True, width="stretch")
        for note in card.notes:
            st.caption(for_form(note))
        st.markdown(" · ".join(f"**{k}** {v}" for k, v in card.cost.items()))
        c1, c2, c3 = st.columns(3)
        with c1:
            widgets.page_link(page, "See it beside the other runs")
        with c2:
            widgets.page_link("runs", "Browse the runs")
        with c3:
            widgets.page_link("guidelines", "What it means for your choice")


def draw_results(job) -> None:
    """Live charts and the job's MLflow runs; redrawn every few seconds while it runs."""
    from tlcore.job_charts import curve_figure, live_figures

    stamp = f"{job.state}:{len(job.runs)}:{len(job.metrics)}"
    runs = job_runs(tracker.uri, tuple(job.run_ids), stamp) if job.runs else pd.DataFrame()
    figures = live_figures(job.metrics, job.spec.method)
    sweeps = base.methods.knows(job.spec.method) and base.get(job.spec.method).sweep
    curve = curve_figure(runs) if sweeps and not runs.empty else None
    if curve is not None:
        figures.insert(0, curve)
    for i, fig in enumerate(figures):
        st.plotly_chart(fig, width="stretch", key=f"run_fig_{job.id}_{i}")
    done = runs[~runs["sweep_parent"]] if not runs.empty else runs
    if not done.empty:
        finished = int((done["status"] == "FINISHED").sum())
        with st.expander(f"MLflow runs ({finished} of {len(done)} finished)", expanded=not job.active):
            table = pd.DataFrame({
                "run": done["run_name"], "status": done["status"],
                "accuracy (%)": (done["accuracy"] * 100).round(1).where(done["status"] == "FINISHED"),
                "verdict": done["quality"].map(lambda q: quality.LABELS.get(q, q) if isinstance(q, str) else ""),
                "error": done["error"].fillna(""), "time": done["time_total_s"].map(units.duration),
                "compute": done["flops_total"].map(units.flops), "energy": done["energy_kwh"].map(units.energy),
                "run_id": done["run_id"]})
            st.dataframe(table, hide_index=True, width="stretch",
                         column_config={"accuracy (%)": st.column_config.NumberColumn(format="%.1f")})


with side_col:
    st.subheader("Progress")
    jobs = runner.jobs()
    if not jobs:
        st.caption("No job yet. Press Run: the job goes to the queue and its progress shows here. It keeps running "
                   "if you switch pages or close the tab.")
    else:
        ids = [j.id for j in jobs[:15]]
        focus = st.session_state.get("run_focus_job")
        if focus not in ids:
            running = [j.id for j in jobs if j.state == JobState.RUNNING]
            st.session_state["run_focus_job"] = running[0] if running else ids[0]
        numbers = {j.id: f"#{j.number} · {j.label}" for j in jobs}
        focus_id = st.selectbox("Job", ids, key="run_focus_job", format_func=numbers.get)
        polling = runner.has_active()

        @st.fragment(run_every=POLL_S if polling else None)
        def live_status() -> None:
            job = runner.get(focus_id)
            if job is None:
                return
            if runner.has_active() != polling:
                st.rerun()  # a job ended (or one started elsewhere): full rerun, polling switches off or on
            draw_status(job)

        @st.fragment(run_every=CHARTS_POLL_S if polling else None)
        def live_results() -> None:
            job = runner.get(focus_id)
            if job is not None:
                draw_results(job)

        live_status()
        focused = runner.get(focus_id)
        if focused is not None and focused.state in (JobState.FINISHED, JobState.FAILED, JobState.CANCELLED):
            with card_slot:
                draw_card(focused)
        queued = [j for j in jobs if j.state == JobState.QUEUED and j.id != focus_id]
        if queued:
            st.caption("Also queued: " + ", ".join(f"#{j.number} {j.label}" for j in queued))
        live_results()
