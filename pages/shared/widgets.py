"""Streamlit-side helpers shared by every page (outside tlcore, which never imports streamlit).

Files in subfolders of ``pages/`` are not pages, so this module can live here.
"""

from __future__ import annotations

import os

import streamlit as st

APP_TITLE = "TL Lab"


def page_setup(title: str, icon: str = "🧪") -> None:
    """Common page configuration; call first on every page."""
    st.set_page_config(page_title=f"{title} · {APP_TITLE}", page_icon=icon, layout="wide")


@st.cache_resource(show_spinner=False)
def tracker():
    """The process-wide tracking store (absolute URI, resolved once)."""
    from tlcore.tracking import Tracker

    return Tracker(os.environ.get("TLCORE_MLFLOW_PATH") or None)


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
                "download when asked"
        else:
            available = "embedded (offline)"
        rows.append({"dataset": info.name, "kind": info.kind, "classes": info.num_classes,
                     "images": info.num_images, "available": available, "description": info.description})
    return rows


@st.cache_data(show_spinner=False, ttl=3600)
def hardware_line() -> str:
    from tlcore.devices import hardware_info

    return hardware_info().describe()


def show_error(exc: BaseException) -> None:
    """One sentence for user errors; the traceback only inside an expander for bugs."""
    from tlcore.errors import TLError

    if isinstance(exc, TLError):
        st.error(str(exc))
    else:
        st.error(f"Unexpected {type(exc).__name__}: {exc}")
        with st.expander("Details (traceback)"):
            st.exception(exc)


def results_version() -> int:
    """A number that changes whenever a job ends; cached result loaders take it as an argument.

    The job runner (issue 6) bumps it; until then results refresh on their TTL alone.
    """
    return 0


PAGES = {
    "home": "app.py",
    "run": "pages/1_🧪_Run.py",
    "tradeoffs": "pages/2_📈_Trade-offs.py",
    "quanta": "pages/3_🔬_Quanta.py",
    "guidelines": "pages/4_🧭_Guidelines.py",
    "runs": "pages/5_🗂️_Runs.py",
}
