"""TL Lab home page: what the lab is, what it can run offline, and where results go."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.shared import widgets

widgets.page_setup("Home", "🧪")

st.title("🧪 TL Lab")
st.markdown(
    "Decide **how** to transfer a pretrained vision model to your data: *feature extraction* "
    "(a full-network embedding and a linear classifier), *fine-tuning* (a new head, with 0-3 frozen "
    "quarters of the network) or a *QUANTA* probe of which layers transfer. Every run is an MLflow run "
    "with its accuracy and its cost: time, FLOPs, energy and CO2."
)

tracker = widgets.tracker()
col1, col2 = st.columns(2)
with col1:
    st.subheader("Where results are stored")
    from tlcore.tracking import mlflow_ui_command, store_description

    st.code(store_description(tracker.uri), language=None)
    st.caption("Open them in the MLflow UI with:")
    st.code(mlflow_ui_command(tracker.uri), language="bash")
with col2:
    st.subheader("Hardware")
    st.write(widgets.hardware_line())

st.subheader("Datasets")
st.caption("Embedded datasets work offline; a folder in the layout `root/<split>/<label>/image.ext` is your own data; "
           "a class filter carves a task out of any dataset, e.g. `digits:0-4`.")
st.dataframe(pd.DataFrame(widgets.dataset_rows()), hide_index=True, width="stretch")

st.subheader("Backbones")
rows = widgets.backbone_rows()
st.dataframe(
    pd.DataFrame(rows)[["name", "params_m", "gflops", "input_size", "taps", "weights", "description"]].rename(
        columns={"params_m": "parameters (M)", "gflops": "GFLOPs / image", "input_size": "input"}),
    hide_index=True, width="stretch",
)
st.caption("GFLOPs of one forward pass at the input size, counted on the meta device (FLOPs = 2 x multiply-adds).")
