"""The results store: many processes create one at once and write to it at once, a half-migrated one is
repaired or explained, the command line marks runs of dead owners FAILED, and ``--dry-run`` plans without
opening runs."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tlcore.cli import main
from tlcore.errors import TLError
from tlcore.tracking import TAG_ERROR, TAG_ERROR_TYPE, TAG_HOST, TAG_PID, TAG_START, Tracker

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    go = Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.005)
    from tlcore.tracking import Tracker
    with Tracker(sys.argv[1]).start_run("fe", {"dataset": "x"}) as run:
        run.log_metrics({"time_total_s": 1.0})
""")


def _all_runs(store) -> list:
    tracker = Tracker(str(store))
    exps = [e.experiment_id for e in tracker.client.search_experiments()]
    return tracker.client.search_runs(exps) if exps else []


@pytest.mark.parametrize("attempt", range(3))
def test_three_processes_create_one_new_store_at_once_and_all_finish(tmp_path, attempt):
    store, go = tmp_path / "store", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(store), str(go)], cwd=ROOT, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    time.sleep(1.5)  # all three imported and waiting: released together
    go.touch()
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(e.strip().splitlines()[-1] for e in errors if e)
    runs = _all_runs(store)
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}


WRITER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from tlcore.tracking import Tracker
    tracker = Tracker(sys.argv[1])
    go = Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.005)
    for r in range(12):  # fine-tuning runs' per-epoch logging, without the training: the most writes per second
        with tracker.start_run("ft", {"dataset": "x", "who": os.getpid(), "run": r}) as run:
            for epoch in range(1, 21):
                run.log_metrics({"train_loss": 1.0 / epoch, "val_loss": 1.0 / epoch}, step=epoch)
""")


@pytest.mark.slow
def test_three_processes_writing_runs_to_one_store_at_once_all_finish(tmp_path):
    """Without a busy timeout on its connections (MLflow's sessions set 20 s) 2 of 3 such processes die on
    "database is locked" (docs/benchmarks.md)."""
    store, go = tmp_path / "store", tmp_path / "go"
    Tracker(str(store)).client  # noqa: B018 - the store exists: this is about writes, creation is tested above
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(store), str(go)], cwd=ROOT, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    time.sleep(3.0)  # MLflow imported and the store opened: the three write at the same time
    go.touch()
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(e.strip().splitlines()[-1] for e in errors if e)
    runs = _all_runs(store)
    assert len(runs) == 3 * 12 and {r.info.status for r in runs} == {"FINISHED"}


def test_a_store_left_half_migrated_is_repaired(store_dir):
    db = store_dir / "mlflow.db"
    with sqlite3.connect(db) as con:  # what a process killed inside a migration leaves behind
        con.execute("CREATE TABLE _alembic_tmp_tags (key VARCHAR(250), value VARCHAR(5000))")
    tracker = Tracker(str(store_dir))
    with tracker.start_run("fe", {"dataset": "x"}):
        pass
    with sqlite3.connect(db) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "_alembic_tmp_tags" not in tables and "runs" in tables


def test_a_store_that_cannot_be_opened_says_what_to_do_in_one_sentence(tmp_path):
    (tmp_path / "mlflow.db").write_bytes(b"not a database" * 100)
    with pytest.raises(TLError) as err:
        Tracker(str(tmp_path)).client  # noqa: B018
    message = str(err.value)
    assert "\n" not in message and f"move {tmp_path / 'mlflow.db'} aside" in message
    assert "--mlflow-path" in message and "db upgrade" in message


def test_a_store_locked_by_another_writer_is_called_busy_not_damaged(tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    def locked(self, *args, **kwargs):
        raise MlflowException("(sqlite3.OperationalError) database is locked")

    monkeypatch.setattr(MlflowClient, "search_experiments", locked)
    with pytest.raises(TLError) as err:
        Tracker(str(tmp_path)).client  # noqa: B018
    message = str(err.value)
    assert "stayed locked by another process's write" in message and "run this again" in message
    assert "aside" not in message and "\n" not in message


# ---------------------------------------------------------------------------------------------
# The command line marks orphans FAILED


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_every_cli_start_marks_the_runs_of_dead_owners_failed_with_the_reason(store_dir, capsys):
    tracker = Tracker(str(store_dir))
    dead = _dead_pid()
    orphan = tracker.start_run("ft", {"dataset": "digits"}, tags={TAG_PID: str(dead), TAG_START: "",
                                                                  TAG_HOST: socket.gethostname()})
    alive = tracker.start_run("ft", {"dataset": "digits"})  # this process: alive, left alone
    # a command that then fails on its own arguments: the sweep runs before anything else
    assert main(["ft", "--mlflow-path", str(store_dir)]) == 2
    err = capsys.readouterr().err
    assert "Marked 1 run left RUNNING by a process that has ended as FAILED" in err and orphan.run_id in err
    run = tracker.get_run(orphan.run_id)
    assert run.info.status == "FAILED" and run.data.tags[TAG_ERROR_TYPE] == "orphaned"
    assert f"pid {dead}" in run.data.tags[TAG_ERROR]
    assert tracker.get_run(alive.run_id).info.status == "RUNNING"


# ---------------------------------------------------------------------------------------------
# --dry-run


def test_dry_run_prints_the_plan_and_its_projected_cost_and_opens_no_run(store_dir, capsys):
    tracker = Tracker(str(store_dir))
    with tracker.start_run("fe", {"backbone": "efficientnet_lite0", "device": "cpu", "method": "fe"}) as run:
        run.log_metrics({"job_time_s": 20.0, "time_total_s": 15.0, "flops_total": 1e11, "images_processed": 400})
    before = len(_all_runs(store_dir))
    args = ["fe", "-d", "digits:0-2", "--samples-per-class", "2,5", "--splits", "1", "--resolution", "32",
            "--device", "cpu", "--mlflow-path", str(store_dir), "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Plan: feature extraction of efficientnet_lite0 at 32 px on digits:0-2" in out
    assert "3 MLflow runs" in out and "Projected time: about" in out
    assert "fitted on 1 finished job on cpu on this machine (1 of feature extraction)" in out
    assert "no MLflow run was opened" in out
    assert len(_all_runs(store_dir)) == before


@pytest.mark.parametrize("command", [
    ["ft", "-d", "digits:0-2", "--samples-per-class", "2", "--splits", "1", "--resolution", "32", "-e", "2"],
    ["quanta", "-t", "digits:5-9", "-sw", "random", "--nb_of_target_samples", "5"],
    ["train-source", "-s", "digits:0-4", "--epochs", "1"],
])
def test_dry_run_of_every_method_creates_no_store(tmp_path, capsys, command):
    store = tmp_path / "results"
    assert main([*command, "--device", "cpu", "--mlflow-path", str(store), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Plan: ") and "Projected time: " in out
    assert not (store / "mlflow.db").exists()
