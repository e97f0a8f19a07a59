"""AppTest of the home page: registries, store location, hardware, no exception."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def test_home_lists_datasets_backbones_and_the_results_store(store_dir, monkeypatch):
    monkeypatch.setenv("TLCORE_MLFLOW_PATH", str(store_dir))
    at = AppTest.from_file("../app.py", default_timeout=120).run()
    assert not at.exception
    frames = [df.value for df in at.dataframe]
    datasets = next(f for f in frames if "dataset" in f.columns)
    assert {"digits", "lfw_faces", "cifar10"} <= set(datasets["dataset"])
    backbones = next(f for f in frames if "name" in f.columns)
    assert {"efficientnet_lite0", "resnet18", "quanta_cnn"} <= set(backbones["name"])
    codes = " ".join(c.value for c in at.code)
    assert str(store_dir) in codes and "mlflow ui --backend-store-uri" in codes
