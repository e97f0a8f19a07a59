"""Tracking: store resolution, run lifecycle (FINISHED / FAILED / KILLED keep their metrics), orphans."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tlcore.errors import Cancelled, DatasetError
from tlcore.methods.base import EXPERIMENTS
from tlcore.tracking import TAG_PID, TAG_START, Tracker, resolve_tracking_uri


def test_tracking_uri_is_absolute_whatever_the_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert resolve_tracking_uri("results") == f"sqlite:///{tmp_path.resolve()}/results/mlflow.db"
    assert (tmp_path / "results").is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///rel/store.db")
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/rel/store.db"
    assert resolve_tracking_uri("http://mlflow.example:5000") == "http://mlflow.example:5000"


def _status(tracker, run_id):
    run = tracker.get_run(run_id)
    return run.info.status, run.data


def test_finished_run_has_schema_experiment_params_and_metrics(tracker):
    with tracker.start_run("fe", {"dataset": "digits", "samples_per_class": 5, "use_crops": False}) as run:
        run.log_metrics({"test_accuracy": 0.9, "time_total_s": 1.5})
    status, data = _status(tracker, run.run_id)
    assert status == "FINISHED"
    assert data.params["samples_per_class"] == "5" and data.params["use_crops"] == "false"
    assert data.metrics["test_accuracy"] == 0.9
    exp = tracker.client.get_experiment(run.experiment_id)
    assert exp.name == EXPERIMENTS["fe"] == "Feature extraction"
    assert Path(exp.artifact_location.removeprefix("file://")).parent.name == "mlartifacts"


def test_failed_run_keeps_partial_metrics_and_the_error(tracker):
    with pytest.raises(DatasetError):
        with tracker.start_run("ft", {"dataset": "digits"}) as run:
            run.log_metrics({"train_loss": 1.0}, step=1)
            run.log_metrics({"train_loss": 0.5}, step=2)
            raise DatasetError("Image file x.png does not exist; check the dataset folder.")
    status, data = _status(tracker, run.run_id)
    assert status == "FAILED"
    assert data.tags["error"] == "Image file x.png does not exist; check the dataset folder."
    history = tracker.client.get_metric_history(run.run_id, "train_loss")
    assert [m.value for m in history] == [1.0, 0.5]
    artifact = run.artifact_dir() / "error.txt"
    assert "DatasetError" in artifact.read_text()


def test_cancelled_run_ends_killed_with_its_metrics(tracker):
    with pytest.raises(Cancelled):
        with tracker.start_run("quanta") as run:
            run.log_metrics({"quanta_source/0": 0.9}, step=0)
            raise Cancelled()
    status, data = _status(tracker, run.run_id)
    assert status == "KILLED" and data.metrics["quanta_source/0"] == 0.9


def test_resume_reopens_the_same_run(tracker):
    with pytest.raises(Cancelled), tracker.start_run("ft") as run:
        run.log_metrics({"val_accuracy": 0.5}, step=1)
        raise Cancelled()
    with tracker.resume_run(run.run_id) as again:
        again.log_metrics({"val_accuracy": 0.6}, step=2)
    status, _ = _status(tracker, run.run_id)
    assert status == "FINISHED" and again.run_id == run.run_id
    assert len(tracker.client.get_metric_history(run.run_id, "val_accuracy")) == 2


def test_runs_of_a_dead_owner_are_marked_failed_and_live_ones_untouched(tracker):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = dead.stdout.strip()
    orphan = tracker.start_run("fe", {"dataset": "digits"})
    orphan.log_metrics({"test_accuracy": 0.4})
    orphan.set_tags({TAG_PID: dead_pid, TAG_START: ""})
    alive = tracker.start_run("fe", {"dataset": "digits"})
    failed = tracker.fail_orphaned_runs()
    assert failed == [orphan.run_id]
    status, data = _status(tracker, orphan.run_id)
    assert status == "FAILED" and "ended without finishing" in data.tags["error"]
    assert data.metrics["test_accuracy"] == 0.4
    assert _status(tracker, alive.run_id)[0] == "RUNNING"
    alive.finish()


def test_two_trackers_on_one_folder_share_the_store(store_dir):
    a = Tracker(str(store_dir))
    with a.start_run("fe") as run:
        pass
    b = Tracker(str(store_dir))
    assert b.get_run(run.run_id).info.status == "FINISHED"


def test_experiments_are_marked_as_classic_training_for_mlflows_ui(tracker):
    # MLflow 3's UI opens runs of an unmarked experiment in its GenAI evaluation view
    eid = tracker.experiment_id("Fine-tuning")
    assert tracker.client.get_experiment(eid).tags["mlflow.experimentKind"] == "custom_model_development"
    # an experiment a store made before the tag gets it the next time a run is written there
    tracker.client.delete_experiment_tag(eid, "mlflow.experimentKind")
    fresh = Tracker(tracker.uri)
    fresh.experiment_id("Fine-tuning")
    assert fresh.client.get_experiment(eid).tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_mlflow_ui_command_runs_as_printed_without_an_active_venv(monkeypatch, tmp_path):
    from tlcore.tracking import mlflow_ui_command

    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # a shell where the venv is not activated
    cmd = mlflow_ui_command(f"sqlite:///{tmp_path}/mlflow.db")
    program = cmd.split(" ui ")[0]
    assert program == str(Path(sys.executable).parent / "mlflow") and os.access(program, os.X_OK)
    # the program answers (its --help, without starting a server)
    assert subprocess.run([program, "ui", "--help"], capture_output=True, timeout=120).returncode == 0
    assert mlflow_ui_command("http://ml.lab:5000") == "http://ml.lab:5000"  # a server is its own UI: no `mlflow ui`
