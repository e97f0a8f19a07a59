"""The Ray executor on a real local Ray (2 CPUs, started once per test session): sweeps as tasks, idempotent
retries of a killed worker, cancel, progress reaching the job, and the flags and settings that choose it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tlcore.errors import SpecError
from tlcore.executors import LocalExecutor, Work, executor_from_env, make_executor
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec, FeatureExtractionParams, FineTuningParams
from tlcore.tracking import TAG_PID, Tracker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the session (start and stop cost ~5 s each), sized like a small CI machine."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 object_store_memory=128 * 1024**2)
    yield ray
    ray.shutdown()


class Recorder(Reporter):
    """What the driver forwards from the tasks: runs, metric points (per series), messages, the last fraction."""

    def __init__(self, on_metrics=None) -> None:
        self.runs: list[tuple[str, str | None]] = []
        self.metrics: list[tuple[str, dict, int | None]] = []
        self.messages: list[str] = []
        self.fractions: list[float] = []
        self.on_metrics = on_metrics
        self.cancel = threading.Event()

    def run_started(self, run_id, experiment, name=None):
        self.runs.append((run_id, name))

    def log_metrics(self, metrics, step=None, series=""):
        self.metrics.append((series, dict(metrics), step))
        if self.on_metrics:
            self.on_metrics(self, series, metrics, step)

    def message(self, text, level="info"):
        self.messages.append(text)

    def update(self, *, stage=None, fraction=None):
        if fraction is not None:
            self.fractions.append(fraction)

    @property
    def cancel_requested(self) -> bool:
        return self.cancel.is_set()


def ft_spec(store, epochs: int = 2, splits: int = 2) -> ExperimentSpec:
    return ExperimentSpec("ft", "digits:0-2", samples_per_class=(2,), splits=splits, resolution=32,
                          mlflow_path=str(store), measure_energy=False, num_workers=0,
                          params=FineTuningParams(epochs=epochs))


def sweep_runs(tracker: Tracker, sweep_id: str, method: str = "ft"):
    from tlcore.tracking import experiment_of

    eid = tracker.experiment_id(experiment_of(method))
    return tracker.client.search_runs([eid], f"tags.sweep_id = '{sweep_id}'", max_results=100)


@pytest.fixture(scope="module")
def curves_on_server(ray_cluster, mlflow_server, tmp_path_factory):
    """An FT curve and an FE curve run through the Ray executor into the real tracking server (PostgreSQL behind
    it), with what each job's reporter heard from the workers."""
    folder = tmp_path_factory.mktemp("ray-curves")
    mp = pytest.MonkeyPatch()
    mp.setenv("TLCORE_CACHE_DIR", str(folder / "feature-cache"))
    mp.setenv("TLCORE_CHECKPOINT_DIR", str(folder / "checkpoints"))
    try:
        tracker = Tracker(mlflow_server.url)
        ft_reporter, fe_reporter = Recorder(), Recorder()
        ft = make_executor("ray").run(Work("ft", ft_spec(mlflow_server.url), ft_reporter, tracker, "cpu"))
        fe_spec = ExperimentSpec("fe", "digits:0-2", samples_per_class=(1, 2), splits=2, resolution=32,
                                 mlflow_path=mlflow_server.url, measure_energy=False, num_workers=0,
                                 params=FeatureExtractionParams())
        fe = make_executor("ray").run(Work("fe", fe_spec, fe_reporter, tracker, "cpu"))
    finally:
        mp.undo()
    assert ft.error is None, ft.traceback
    assert fe.error is None, fe.traceback
    return tracker, ft.result, ft_reporter, fe.result


def test_a_fine_tuning_sweep_runs_one_task_per_point_under_one_parent(curves_on_server):
    tracker, result, reporter, _ = curves_on_server
    assert len(result.run_ids) == 2 and result.parent_run_id
    parent = tracker.get_run(result.parent_run_id)
    runs = sweep_runs(tracker, parent.data.tags["sweep_id"])
    assert len(runs) == 3  # the parent and one run per point, nothing twice
    children = [r for r in runs if r.info.run_id != parent.info.run_id]
    assert {r.data.tags["sweep_point"] for r in children} == {"2/0/test", "2/1/test"}
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    # two tasks in two worker processes at once (2 CPUs, 1 each)
    assert len({r.data.tags[TAG_PID] for r in children}) == 2
    # the parent reads as one from a single process: the shared params and the sums of the points' costs
    assert parent.data.params["configuration"] == children[0].data.params["configuration"]
    assert parent.data.params["samples_per_class"] == "sweep"
    assert parent.data.metrics["flops_total"] == pytest.approx(sum(r.data.metrics["flops_total"] for r in children))
    assert parent.data.tags.get("quality")  # judged from its children, as any sweep parent
    # progress reached the job: both runs, each point's epochs as its own series, a full bar at the end
    assert {name for _, name in reporter.runs} >= {"sweep parent", "spc=2 split=0", "spc=2 split=1"}
    assert {s for s, m, step in reporter.metrics if "val_loss" in m} == {"spc=2 split=0", "spc=2 split=1"}
    assert reporter.fractions[-1] == pytest.approx(1.0)


def test_a_feature_extraction_curve_is_one_task_that_extracts_once(curves_on_server):
    tracker, *_, result = curves_on_server
    runs = sweep_runs(tracker, tracker.get_run(result.parent_run_id).data.tags["sweep_id"], "fe")
    assert len(runs) == 5 and all(r.info.status == "FINISHED" for r in runs)
    children = [r for r in runs if r.data.tags.get("sweep_parent") != "true"]
    assert len({r.data.tags[TAG_PID] for r in children}) == 1  # one task fitted every point of one extraction


def test_the_tradeoffs_page_reads_the_clusters_runs_back_from_the_server(curves_on_server, mlflow_server,
                                                                        monkeypatch, fresh_streamlit_caches):
    import json

    from streamlit.testing.v1 import AppTest

    _, ft, _, fe = curves_on_server
    monkeypatch.setenv("TLCORE_MLFLOW_PATH", mlflow_server.url)
    at = AppTest.from_file("../pages/2_📈_Trade-offs.py", default_timeout=180).run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="tradeoffs.spc").set_value(2).run()  # both curves have points at 2 per class
    assert not at.exception, [e.value for e in at.exception]
    scatter = json.loads(at.get("plotly_chart")[0].proto.spec)
    drawn = {run_id for trace in scatter["data"] for run_id in trace.get("customdata") or ()}
    assert set(ft.run_ids) <= drawn
    assert drawn & set(fe.run_ids)


def test_quanta_runs_are_tasks_of_their_own_under_one_parent(ray_cluster, store_dir, tmp_path):
    from tlcore.specs import QuantaParams

    tracker = Tracker(str(store_dir))
    spec = ExperimentSpec("quanta", "digits:0-3", backbone="quanta_cnn", resolution=32, mlflow_path=str(store_dir),
                          num_workers=0, measure_energy=False, batch_size=8,
                          params=QuantaParams(source_weights="random", layer_to_transfer=-1, nb_of_target_epochs=1,
                                              nb_of_target_samples=4, nb_of_runs=2, outdir=str(tmp_path / "q")))
    outcome = make_executor("ray").run(Work("j", spec, Recorder(), tracker, "cpu"))
    assert outcome.error is None, outcome.traceback
    parent = tracker.get_run(outcome.result.parent_run_id)
    runs = sweep_runs(tracker, parent.data.tags["sweep_id"], "quanta")
    children = [r for r in runs if r.info.run_id != parent.info.run_id]
    assert sorted(r.data.params["run_index"] for r in children) == ["0", "1"]
    assert len({r.data.tags[TAG_PID] for r in children}) == 2  # each run in its own task
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(any(k.startswith("quanta_source/") for k in r.data.metrics) for r in children)
    assert parent.data.params["n_quanta_layers"] == children[0].data.params["n_quanta_layers"]


def test_a_worker_killed_mid_training_is_retried_and_its_run_continues_from_its_checkpoint(
        ray_cluster, server_store, checkpoint_every_epoch):
    """Into the server: the retry finds the run's checkpoint through the server's artifacts."""
    tracker = Tracker(server_store)
    killed: list[int] = []

    def kill_after_first_epoch(reporter, series, metrics, step):
        if killed or series != "spc=2 split=0" or step != 1 or "val_loss" not in metrics:
            return
        run_id = next(r for r, name in reporter.runs if name == "spc=2 split=0")
        pid = int(tracker.get_run(run_id).data.tags[TAG_PID])
        killed.append(pid)
        os.kill(pid, signal.SIGKILL)

    reporter = Recorder(kill_after_first_epoch)
    outcome = make_executor("ray", max_retries=2).run(Work("j", ft_spec(server_store, epochs=4), reporter, tracker,
                                                           "cpu"))
    assert killed, "the test never saw the first epoch of the point it kills"
    assert outcome.error is None, outcome.traceback
    runs = sweep_runs(tracker, tracker.get_run(outcome.result.parent_run_id).data.tags["sweep_id"])
    point = [r for r in runs if r.data.tags.get("sweep_point") == "2/0/test"]
    assert len(point) == 1  # the retry continued the dead attempt's run: no second run for the point
    run = point[0]
    assert run.info.status == "FINISHED" and run.data.tags.get("resumed") == "true"
    assert int(run.data.tags[TAG_PID]) != killed[0]  # owned by the worker that finished it
    epochs = sorted({m.step for m in tracker.client.get_metric_history(run.info.run_id, "val_loss")})
    assert epochs == [1, 2, 3, 4]
    assert any("Resuming spc=2 split=0 after epoch" in m for m in reporter.messages)  # from its checkpoint
    assert all(r.info.status == "FINISHED" for r in runs) and len(runs) == 3


def test_cancel_from_the_app_ends_every_run_of_the_job_killed(ray_cluster, store_dir):
    from tlcore.jobs import JobRunner, JobState

    runner = JobRunner(Tracker(str(store_dir)), executor=make_executor("ray"))
    try:
        job = runner.submit(ft_spec(store_dir, epochs=40)).job
        deadline = time.time() + 180
        while time.time() < deadline and not any(p.name == "val_loss" for p in runner.get(job.id).metrics):
            time.sleep(0.5)  # the points' epochs reach the job's live view from the workers
        assert any(p.name == "val_loss" for p in runner.get(job.id).metrics)
        runner.cancel(job.id)
        ended = runner.wait(job.id, timeout=90)
    finally:
        runner.close(timeout=30)
    assert ended.state is JobState.CANCELLED
    tracker = Tracker(str(store_dir))
    statuses = {r: tracker.get_run(r).info.status for r in ended.run_ids}
    assert len(statuses) == 3 and set(statuses.values()) == {"KILLED"}, statuses


def test_the_executor_is_chosen_by_flag_or_setting_and_bad_ones_are_one_sentence():
    assert isinstance(executor_from_env({}), LocalExecutor)
    assert executor_from_env({"TLCORE_EXECUTOR": "ray", "TLCORE_RAY_ADDRESS": "10.0.0.1:6379"}).options.address \
        == "10.0.0.1:6379"
    with pytest.raises(SpecError, match="TLCORE_EXECUTOR is not 'ray'"):
        executor_from_env({"TLCORE_RAY_ADDRESS": "10.0.0.1:6379"})
    with pytest.raises(SpecError, match="Unknown executor 'dask'"):
        executor_from_env({"TLCORE_EXECUTOR": "dask"})
    with pytest.raises(SpecError, match="--gpus-per-run only applies to a cluster executor"):
        make_executor("local", gpus_per_run=0.25)
    with pytest.raises(SpecError, match="--cpus-per-run must be more than 0"):
        make_executor("ray", cpus_per_run=0)


def test_local_runs_never_import_ray():
    code = ("import sys; from tlcore.cli import build_parser; from tlcore.cli.args import executor_of; "
            "a = build_parser().parse_args(['ft', '-d', 'digits']); executor_of(a); import tlcore.executors.ray; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.strip() == "False"


def test_ctrl_c_in_the_cli_stops_the_clusters_tasks_and_their_runs_end_killed(ray_cluster, store_dir):
    """The CLI joins the session's cluster by address (the path of a remote cluster: tlcore is shipped to it)."""
    address = ray_cluster.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "tlcore", "ft", "-d", "digits:0-2", "--samples-per-class", "2", "--splits", "2",
           "--epochs", "40", "--patience", "100", "--resolution", "32", "--no-energy", "--quiet", "--num-workers", "0",
           "--executor", "ray", "--ray-address", address, "--mlflow-path", str(store_dir)]
    proc = subprocess.Popen(cmd, cwd=os.path.dirname(os.path.dirname(__file__)), stderr=subprocess.PIPE, text=True)
    tracker = Tracker(str(store_dir))
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            ft = [tracker.experiment_id("Fine-tuning")]
            running = tracker.client.search_runs(ft, "attributes.status = 'RUNNING'")
            runs = [r for r in running if "sweep_point" in r.data.tags]
            if len(runs) == 2 and all(tracker.client.get_metric_history(r.info.run_id, "val_loss") for r in runs):
                break  # both points train on the cluster
            time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "cancelled" in err
    runs = tracker.client.search_runs([tracker.experiment_id("Fine-tuning")], "")
    assert len(runs) == 3 and {r.info.status for r in runs} == {"KILLED"}, [(r.info.status, r.data.tags) for r in runs]


def _home(store_dir, monkeypatch, executor: str):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TLCORE_MLFLOW_PATH", str(store_dir))
    monkeypatch.setenv("TLCORE_EXECUTOR", executor)
    at = AppTest.from_file("../app.py", default_timeout=180).run()
    assert not at.exception, at.exception
    return at


def test_the_home_page_says_jobs_run_on_ray_and_what_the_cluster_has_free(
        ray_cluster, store_dir, monkeypatch, fresh_streamlit_caches):
    at = _home(store_dir, monkeypatch, "ray")
    line = next(c.value for c in at.caption if "Ray tasks" in c.value)
    assert "a Ray started on this machine" in line and "of 2 CPUs free" in line and "no GPU" in line


def test_a_bad_executor_setting_is_one_sentence_on_the_home_page_and_jobs_run_here(
        store_dir, monkeypatch, fresh_streamlit_caches):
    at = _home(store_dir, monkeypatch, "dask")
    errors = " ".join(e.value for e in at.error)
    assert "Unknown executor 'dask'" in errors and "Jobs run in this process" in errors
