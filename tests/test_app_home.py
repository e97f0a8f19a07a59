"""AppTest of the home page: registries, store, jobs, latest results, and what a restart interrupted."""

from __future__ import annotations

import json
import subprocess
import time

from streamlit.testing.v1 import AppTest

from tests.fake_method import fake_fe  # noqa: F401  (fixture)
from tlcore.jobs import JobState, journal_path_for
from tlcore.specs import ExperimentSpec
from tlcore.tracking import TAG_PID, TAG_START, Tracker


def home(store_dir, monkeypatch) -> AppTest:
    monkeypatch.setenv("TLCORE_MLFLOW_PATH", str(store_dir))
    at = AppTest.from_file("../app.py", default_timeout=180).run()
    assert not at.exception, at.exception
    return at


def test_home_lists_datasets_backbones_and_the_results_store(store_dir, monkeypatch):
    at = home(store_dir, monkeypatch)
    frames = [df.value for df in at.dataframe]
    datasets = next(f for f in frames if "dataset" in f.columns)
    assert {"digits", "lfw_faces", "cifar10"} <= set(datasets["dataset"])
    backbones = next(f for f in frames if "name" in f.columns)
    assert {"efficientnet_lite0", "resnet18", "quanta_cnn"} <= set(backbones["name"])
    codes = " ".join(c.value for c in at.code)
    assert str(store_dir) in codes and "mlflow ui --backend-store-uri" in codes
    assert any("No job yet" in c.value for c in at.caption)
    assert any("No runs yet" in c.value for c in at.caption)


def test_home_shows_jobs_and_the_latest_results(store_dir, monkeypatch, fake_fe):  # noqa: F811
    at = home(store_dir, monkeypatch)
    from pages.shared import widgets

    runner = widgets.runner()
    job = runner.submit(ExperimentSpec("fe", "digits:0-4"), token="t").job
    assert runner.wait(job.id, timeout=60).state is JobState.FINISHED
    at.run()
    assert not at.exception
    frames = [df.value for df in at.dataframe]
    jobs = next(f for f in frames if "job" in f.columns)
    assert list(jobs["job"]) == ["#1"] and "finished" in jobs["state"].iloc[0]
    results = next(f for f in frames if "result" in f.columns)
    # one row per job: the fake method's one run, its score in % with one decimal, and what it earned
    assert results["result"].tolist() == ["87.5 % (test)"] and results["dataset"].tolist() == ["digits:0-4"]
    assert "verdict" in results.columns


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_home_says_what_happened_to_the_job_a_killed_server_was_running(store_dir, monkeypatch, fake_fe):  # noqa: F811
    # What a server killed mid-job leaves behind: a RUNNING run owned by a dead pid, a journal entry.
    tracker = Tracker(str(store_dir))
    pid = _dead_pid()
    run = tracker.start_run("fe", {"dataset": "digits"}, tags={TAG_PID: str(pid), TAG_START: ""})
    run.log_metrics({"train_loss": 0.7}, step=0)
    spec = ExperimentSpec("fe", "digits:5-9")
    entry = {"id": "abc123", "number": 4, "label": "Feature extraction · digits:5-9", "device": "cpu",
             "state": "running", "submitted_at": time.time() - 60, "started_at": time.time() - 50, "stage":
             "Extracting features", "runs": [[run.run_id, "Feature extraction", "spc=5 split=0"]],
             "owner": {"pid": pid, "host": __import__("socket").gethostname(), "start": None, "runner": "x"},
             "spec": spec.to_dict()}
    journal_path_for(tracker.uri).write_text(json.dumps({"version": 1, "jobs": [entry]}, default=str))

    at = home(store_dir, monkeypatch)
    warnings = [w.value for w in at.warning]
    assert len(warnings) == 1
    assert warnings[0].startswith("**Job #4** (Feature extraction · digits:5-9): It was interrupted by a server "
                                  "restart during 'Extracting features'; its MLflow run")
    assert "was marked FAILED" in warnings[0] and run.run_id[:8] in warnings[0]
    assert tracker.get_run(run.run_id).info.status == "FAILED"

    at.button(key="home_resubmit_abc123").click().run()
    assert not at.exception and at.warning.len == 0
    from pages.shared import widgets

    runner = widgets.runner()
    again = next(j for j in runner.jobs() if j.id != "abc123")
    assert again.number == 5 and again.spec.dataset == "digits:5-9"
    assert runner.wait(again.id, timeout=60).state is JobState.FINISHED
