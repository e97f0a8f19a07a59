"""Lean QUANTA runs: the source is referenced, not copied; the target checkpoint is kept in the run only
with --keep-weights (it always stays in the export folder, where a resume reads it)."""

from __future__ import annotations

import hashlib

import pytest
import torch
from conftest import write_digits_folder

from tlcore.cli import main
from tlcore.tracking import Tracker


@pytest.fixture(scope="module")
def digits4(tmp_path_factory):
    return write_digits_folder(tmp_path_factory.mktemp("qa") / "digits4", classes=(0, 1, 2, 3),
                               per_split={"train": 10, "val": 3, "test": 4})


def _files(tracker: Tracker, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for f in tracker.client.list_artifacts(run_id, path):
        out |= _files(tracker, run_id, f.path) if f.is_dir else {f.path}
    return out


def test_a_quanta_run_references_its_source_and_keeps_the_target_only_when_asked(digits4, tmp_path, store_dir):
    src, expe = tmp_path / "src.pt", tmp_path / "expe"
    fast = ["--mlflow-path", str(store_dir), "--no-energy", "--num-workers", "0", "--batch-size", "8", "--quiet"]
    assert main(["train-source", "--architecture", "quanta_cnn", "--dataset", f"{digits4}:0-1", "--epochs", "1",
                 "--out", str(src), "-o", str(expe), *fast]) == 0
    tracker = Tracker(str(store_dir))
    [source_run] = tracker.client.search_runs([tracker.experiment_id("Source training")])
    quanta = ["quanta", "--architecture", "quanta_cnn", "-t", f"{digits4}:2-3", "--nb_of_target_samples", "3",
              "-o", str(expe), *fast]

    assert main([*quanta, "-sw", source_run.info.run_id]) == 0
    [lean] = tracker.client.search_runs([tracker.experiment_id("QUANTA")])
    files = _files(tracker, lean.info.run_id)
    assert files and all(f.startswith("exports/") and f.endswith(".jsonl") for f in files), files
    assert lean.data.params["source_reference"] == f"run:{source_run.info.run_id}"
    assert lean.data.params["keep_weights"] == "false"
    folder = expe / "digits4_0-1_to_digits4_2-3"
    assert torch.load(folder / "target_r_0_l_all.pt", weights_only=True)["epoch"] == 1  # resumable from here

    assert main([*quanta, "-sw", str(src), "--keep-weights"]) == 0
    kept = next(r for r in tracker.client.search_runs([tracker.experiment_id("QUANTA")])
                if r.info.run_id != lean.info.run_id)
    models = {f for f in _files(tracker, kept.info.run_id) if f.startswith("models/")}
    assert models == {"models/target_r_0_l_all.pt"}  # the target only: the source is never copied
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    assert kept.data.params["source_reference"] == (f"file:{src.resolve()} sha256:{digest} "
                                                    f"run:{source_run.info.run_id}")  # the file says its run
