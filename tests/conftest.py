"""Shared fixtures: small real data (digits), throwaway MLflow stores, a seed-layout folder dataset."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.setdefault("TLCORE_COUNTRY_ISO_CODE", "FRA")


def pytest_collection_modifyitems(items):
    """Browser tests are slow tests too: ``-m "not slow"`` skips them as well."""
    for item in items:
        if item.get_closest_marker("browser") is not None:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """No test writes to the home folder or the working directory's store."""
    monkeypatch.setenv("TLCORE_DATA_DIR", str(tmp_path_factory.getbasetemp() / "tv-data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def checkpoint_every_epoch(monkeypatch):
    """Fine-tuning checkpoints after every epoch (by default at most once a minute, so tiny trainings write none):
    for tests that kill a training after an epoch and resume it from there."""
    monkeypatch.setenv("TLCORE_CHECKPOINT_EVERY_S", "0")


@pytest.fixture(scope="session")
def _store_template(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store, created once (migrations take ~1.5 s) and copied per test.

    ``$TLCORE_TEST_STORE_TEMPLATE`` keeps it across pytest sessions: scripts/mutation.sh runs one session per
    mutant, and creating the store was most of a mutant's time where a test reaches a store.
    """
    from tlcore.tracking import Tracker

    kept = os.environ.get("TLCORE_TEST_STORE_TEMPLATE")
    if kept and Path(kept).is_file():
        return Path(kept)
    folder = tmp_path_factory.mktemp("store-template")
    Tracker(str(folder)).client.search_experiments()
    if kept:
        shutil.copy(folder / "mlflow.db", kept)
    return folder / "mlflow.db"


@pytest.fixture
def store_dir(tmp_path, _store_template) -> Path:
    """A folder holding a fresh MLflow store (pass it as --mlflow-path)."""
    folder = tmp_path / "results"
    folder.mkdir()
    shutil.copy(_store_template, folder / "mlflow.db")
    return folder


@pytest.fixture
def tracker(store_dir):
    from tlcore.tracking import Tracker

    return Tracker(str(store_dir))


def write_digits_folder(root: Path, classes=(0, 1, 2), per_split=None, size: int = 32) -> Path:
    """Digits as PNG files in the seed layout root/<split>/<label>/image.png."""
    from PIL import Image
    from sklearn.datasets import load_digits

    per_split = per_split or {"train": 20, "val": 5, "test": 8}
    d = load_digits()
    rng = np.random.default_rng(0)
    for c in classes:
        members = rng.permutation(np.flatnonzero(d.target == c))
        start = 0
        for split, n in per_split.items():
            folder = root / split / f"digit{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in members[start:start + n]:
                img = (d.images[i] * 255 / 16).astype(np.uint8)
                Image.fromarray(img, mode="L").resize((size, size)).save(folder / f"d{c}_{i:04d}.png")
            start += n
    return root


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> Path:
    """A small folder dataset (3 classes x 20 train / 5 val / 8 test), read-only: copy it to modify."""
    return write_digits_folder(tmp_path_factory.mktemp("ds") / "digits3")


@pytest.fixture
def digits_folder_copy(tmp_path, digits_folder) -> Path:
    dst = tmp_path / "digits3"
    shutil.copytree(digits_folder, dst)
    return dst


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium through Playwright, one per test module (browser tests)."""
    from playwright.sync_api import sync_playwright

    from tests.streamlit_server import launch_chromium

    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


@pytest.fixture
def fresh_streamlit_caches():
    """Streamlit's caches live in the test process: each AppTest reads its own store."""
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL on 127.0.0.1 for the whole session (tests/servers.py); fails, never skips, without one."""
    from tests.servers import Postgres

    pg = Postgres.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def mlflow_server(postgres, tmp_path_factory):
    """A real ``mlflow server`` over ``postgres``, artifacts proxied through it, shared by the session (it takes
    ~20 s to start, most of it MLflow's migrations). Experiments are shared, so a test reads back only the run
    ids it started."""
    from tests.servers import MlflowServer

    server = MlflowServer.start(postgres.create_database("mlflow"), tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.stop()


@pytest.fixture
def server_store(mlflow_server, tmp_path, monkeypatch) -> str:
    """The tracking server's URL (pass it as --mlflow-path); what a method keeps outside a server (feature
    cache, checkpoints) goes to this test's own folder, never the home folder."""
    monkeypatch.setenv("TLCORE_CACHE_DIR", str(tmp_path / "feature-cache"))
    monkeypatch.setenv("TLCORE_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    return mlflow_server.url
