"""Cached readers of the results store, shared by the analysis pages (Streamlit side of ``tlcore.results``).

Each loader is keyed by the tracking URI and ``widgets.results_version()``, which changes when a
job ends, so a finished run shows up at once; the runs of a local store also by its change marker,
which catches runs written by other processes (the CLI); a server's by its newest and latest-ended runs (a TTL
when it cannot say). Returned frames are
copies (``st.cache_data`` pickles), so pages may modify them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from pages.shared import widgets
from tlcore import results

TTL_S = 60
MARKED_TTL_S = 3600  # stores keyed by their change marker: the TTL only frees memory
ROOT = Path(__file__).resolve().parents[2]
MLFLOW_UI_URL = os.environ.get("TLCORE_MLFLOW_UI_URL", "http://127.0.0.1:5000")


def store_uri() -> str:
    return widgets.tracker().uri


@st.cache_data(ttl=TTL_S, max_entries=16, show_spinner="Reading runs...")
def _view(uri: str, view: str, version: int, archived: bool) -> pd.DataFrame:
    return results.load_view(uri, view, archived)


@st.cache_data(ttl=MARKED_TTL_S, max_entries=8, show_spinner="Reading runs...")
def _marked_view(uri: str, view: str, version: int, archived: bool, marker: tuple) -> pd.DataFrame:
    return results.load_view(uri, view, archived)


def runs(view: str, archived: bool = False) -> pd.DataFrame:
    """The runs a page draws (``view`` names a column set of :data:`tlcore.results.VIEWS`).

    A store is keyed by its change marker (:func:`tlcore.results.store_marker`): a write by any process
    shows at the next rerun, and an unchanged store is never read again (a read costs seconds with 50,000
    runs in sqlite, minutes through a server; a TTL would re-read it every minute). A store without a marker
    keeps the TTL."""
    uri = store_uri()
    marker = results.store_marker(uri)
    if marker is None:
        return _view(uri, view, widgets.results_version(), archived)
    return _marked_view(uri, view, widgets.results_version(), archived, marker)


@st.cache_data(ttl=TTL_S, max_entries=64, show_spinner="Reading metric histories...")
def _histories(uri: str, run_ids: tuple[str, ...], keys: tuple[str, ...], prefixes: tuple[str, ...],
               version: int) -> pd.DataFrame:
    return results.metric_histories(uri, run_ids, keys, prefixes)


def histories(run_ids, keys=(), prefixes=()) -> pd.DataFrame:
    """Metric histories of a few runs (sorted ids, so the same set hits the same cache entry)."""
    return _histories(store_uri(), tuple(sorted(run_ids)), tuple(keys), tuple(prefixes), widgets.results_version())


@st.cache_data(ttl=TTL_S, max_entries=32, show_spinner=False)
def _details(uri: str, run_ids: tuple[str, ...], version: int) -> list[results.RunDetails]:
    return results.run_details(uri, run_ids)


def details(run_ids) -> list[results.RunDetails]:
    return _details(store_uri(), tuple(run_ids), widgets.results_version())


@st.cache_data(ttl=10, show_spinner=False)
def mlflow_ui_url() -> str | None:
    """The MLflow UI's address when one answers there (probed at most every 10 s), else None."""
    return MLFLOW_UI_URL if results.mlflow_ui_running(MLFLOW_UI_URL) else None


def clear() -> None:
    """Forget every cached read (after this page changed the store, e.g. archived runs)."""
    _view.clear()
    _marked_view.clear()
    _histories.clear()
    _details.clear()


def link_to_page(name: str, label: str, icon: str | None = None, query_params: dict | None = None) -> None:
    """``st.page_link`` to one of ``widgets.PAGES`` when that page exists, plain text otherwise."""
    path = widgets.PAGES.get(name)
    if path and (ROOT / path).exists():
        try:
            st.page_link(path, label=label, icon=icon, query_params=query_params)
            return
        except Exception:  # a page set Streamlit does not know (e.g. a page run on its own in a test)
            pass
    st.markdown(f"**{label}**" + (" (page not available in this build)" if not path or
                                  not (ROOT / path).exists() else ""))


def mlflow_path_arg() -> str:
    """The ``--mlflow-path`` value that makes the CLI write where this app reads."""
    path = results.sqlite_path(store_uri())
    if path is None:
        return store_uri()
    return str(path.parent if path.name == "mlflow.db" else path)


def no_runs_notice(what: str, example: str = "fe") -> None:
    """What to do when the store holds nothing to draw: how to make a run, and a link to Run."""
    store = f"--mlflow-path {mlflow_path_arg()}"
    examples = {
        "fe": [f"python -m tlcore fe --dataset digits --samples-per-class 1,5,10 {store}",
               f"python -m tlcore ft --dataset digits --samples-per-class 1,5,10 --epochs 5 {store}"],
        "quanta": [f"python -m tlcore train-source --dataset digits:0-4 {store}",
                   f"python -m tlcore quanta -t digits:5-9 -s digits:0-4 -sw <source run id> {store}",
                   f"python -m tlcore quanta -t digits:5-9 -s digits:0-4 -sw random {store}   # the control"],
        "rank": [f"python -m tlcore rank --dataset digits --random-control {store}"],
    }
    st.info(f"No {what} in this store yet. Start one from the Run page, or from a terminal with the same store "
            "(the first line runs real examples of every method on the embedded digits, about 10 min on a CPU):")
    st.code("\n".join([f"python -m tlcore examples {store}", *examples.get(example, examples["fe"])]),
            language="bash", wrap_lines=True)
    link_to_page("run", "Open the Run page", "🧪")


def filter_sidebar(df: pd.DataFrame, key: str,
                   fields: tuple[str, ...] = ("dataset", "backbone", "method", "classifier", "configuration", "date"),
                   ) -> results.RunFilter:
    """Sidebar filters over the runs a page loaded; an empty choice keeps everything."""
    labels = {"dataset": "Dataset", "backbone": "Backbone", "method": "Method", "classifier": "Classifier (FE runs)",
              "configuration": "Configuration (FT runs)", "status": "Status"}
    chosen: dict = {}
    with st.sidebar:
        st.header("Filters")
        for field in fields:
            if field == "date":
                continue
            opts = results.options(df, field)
            if not opts:
                continue
            fmt = (lambda m: results.METHOD_LABELS.get(m, m)) if field == "method" else str
            chosen[field] = st.multiselect(labels[field], opts, key=f"{key}.{field}", placeholder="all",
                                           format_func=fmt) or None
        start = end = None
        days = df["start_time"].dropna().dt.date
        if "date" in fields and len(days):
            lo, hi = days.min(), days.max()
            picked = st.date_input("Started between", value=(lo, hi), min_value=lo, max_value=hi,
                                   key=f"{key}.date")
            if isinstance(picked, (tuple, list)):
                start = picked[0] if len(picked) > 0 else None
                end = picked[1] if len(picked) > 1 else None
            else:
                start = end = picked
    return results.RunFilter(datasets=chosen.get("dataset"), backbones=chosen.get("backbone"),
                             methods=chosen.get("method"), classifiers=chosen.get("classifier"),
                             configurations=chosen.get("configuration"), statuses=chosen.get("status"),
                             start=start, end=end)


def download_csv(frame, name: str, label: str = "Download as CSV", key: str | None = None) -> None:
    """A CSV download of ``frame`` (a DataFrame, or a function returning one), written only when
    clicked: a rerun does not serialise it."""
    def payload() -> bytes:
        table = frame() if callable(frame) else frame
        return table.to_csv(index=False).encode()

    st.download_button(label, payload, file_name=f"{name}.csv", mime="text/csv", key=key or f"csv.{name}",
                       icon=":material/download:", on_click="ignore")
