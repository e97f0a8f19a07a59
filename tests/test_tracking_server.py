"""Every method against a shared MLflow tracking server over PostgreSQL (issue 14), read back through the server.

One real PostgreSQL and one real ``mlflow server`` serve the whole session (fixtures ``postgres``,
``mlflow_server``, ``server_store`` in conftest.py); artifacts go through the server's proxied artifact store,
so nothing a test asserts about artifacts is read from a local folder. Experiments are shared by the session's
tests: each test reads back only the run ids it started.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
from conftest import write_digits_folder
from streamlit.testing.v1 import AppTest

from tests.test_fine_tuning import RecordingReporter, history, tiny_spec
from tlcore import experiments
from tlcore.cli import main
from tlcore.errors import Cancelled
from tlcore.methods.fine_tuning import checkpoint as ft_checkpoint
from tlcore.specs import ExperimentSpec, FeatureExtractionParams
from tlcore.tracking import Tracker

TRADEOFFS = "../pages/2_📈_Trade-offs.py"


def artifact_paths(tracker: Tracker, run_id: str, folder: str | None = None) -> set[str]:
    """Every file among a run's artifacts, as the server lists them."""
    found = set()
    for f in tracker.client.list_artifacts(run_id, folder):
        found |= artifact_paths(tracker, run_id, f.path) if f.is_dir else {f.path}
    return found


@pytest.fixture(scope="module")
def fe_on_server(mlflow_server, digits_folder, tmp_path_factory):
    """A tiny feature-extraction curve (2 and 4 images per class, one draw, 32 px) stored on the server."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TLCORE_CACHE_DIR", str(tmp_path_factory.mktemp("fe-cache")))
    try:
        spec = ExperimentSpec("fe", str(digits_folder), backbone="efficientnet_lite0", resolution=32,
                              samples_per_class=(2, 4), splits=1, num_workers=0, batch_size=64, measure_energy=False,
                              mlflow_path=mlflow_server.url, params=FeatureExtractionParams())
        yield experiments.run(spec)
    finally:
        mp.undo()


def test_feature_extraction_on_the_server_logs_the_schema_and_its_curve(fe_on_server, mlflow_server):
    tracker = Tracker(mlflow_server.url)
    parent = tracker.get_run(fe_on_server.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.info.artifact_uri.startswith("mlflow-artifacts:")
    assert tracker.client.get_experiment(parent.info.experiment_id).name == "Feature extraction"
    assert "curve.csv" in artifact_paths(tracker, parent.info.run_id)  # uploaded through the server
    children = [tracker.get_run(r) for r in fe_on_server.run_ids]
    assert sorted(c.data.params["samples_per_class"] for c in children) == ["2", "4"]
    for child in children:
        assert child.info.status == "FINISHED" and child.data.params["method"] == "fe"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id and child.data.tags["quality"]
        assert {"test_accuracy", "time_total_s", "flops_total", "images_processed"} <= set(child.data.metrics)
        assert child.data.metrics["test_accuracy"] > 0.5  # chance is 1/3


@pytest.mark.usefixtures("checkpoint_every_epoch")
def test_a_fine_tuning_killed_on_one_machine_resumes_on_another_from_the_servers_checkpoint(server_store, tmp_path):
    tracker = Tracker(server_store)
    spec = tiny_spec(server_store, epochs=3)
    first = RecordingReporter(cancel_after=2)
    with pytest.raises(Cancelled):
        experiments.run(spec, first)
    [run_id] = first.runs
    assert tracker.get_run(run_id).info.status == "KILLED"
    assert {"spec.json", "checkpoint/last.pt", "checkpoint/best.pt", "checkpoint/cost.json"} <= artifact_paths(
        tracker, run_id)
    shutil.rmtree(tmp_path / "checkpoints")  # another worker: this machine has no copy

    again = RecordingReporter()
    result = experiments.run(spec.with_params(resume=run_id), again)
    assert result.run_ids == [run_id] and again.runs == [run_id]  # the same run, no second one
    assert any("Resuming" in text and "after epoch 2" in text for _, text in again.messages)
    run = tracker.get_run(run_id)
    assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics
    assert run.data.tags["sessions"] == "2" and run.data.metrics["epochs_run"] == 3
    assert [s for s, _ in history(tracker, run_id, "val_loss")] == [1, 2, 3]  # epochs 1-2 were not trained again
    assert not any(p.startswith("checkpoint/") for p in artifact_paths(tracker, run_id))  # a finished run's is gone


def test_ensure_local_checkpoint_fetches_the_servers_copy_and_leaves_a_local_store_alone(server_store, store_dir,
                                                                                        tmp_path):
    remote = Tracker(server_store).start_run("ft")
    folder = tmp_path / "made-elsewhere"
    folder.mkdir()
    (folder / ft_checkpoint.COST_FILE).write_text('{"time_s": 7.0}')
    (folder / ft_checkpoint.CHECKPOINT_FILE).write_bytes(b"weights")
    ft_checkpoint.upload_checkpoint(remote, folder)
    local = ft_checkpoint.ensure_local_checkpoint(remote.tracker, remote.run_id)
    assert local == tmp_path / "checkpoints" / remote.run_id
    assert (local / ft_checkpoint.CHECKPOINT_FILE).read_bytes() == b"weights"
    assert json.loads((local / ft_checkpoint.COST_FILE).read_text()) == {"time_s": 7.0}
    remote.kill()

    on_disk = Tracker(str(store_dir)).start_run("ft")  # a local store keeps checkpoints among the artifacts
    in_place = ft_checkpoint.ensure_local_checkpoint(on_disk.tracker, on_disk.run_id)
    assert in_place == on_disk.artifact_dir() / "checkpoint"
    assert not list(Path(tmp_path / "checkpoints").glob(on_disk.run_id))
    on_disk.kill()


@pytest.fixture(scope="module")
def digits4(tmp_path_factory):
    return write_digits_folder(tmp_path_factory.mktemp("q") / "digits4", classes=(0, 1, 2, 3),
                               per_split={"train": 10, "val": 3, "test": 4})


def test_source_training_then_quanta_on_the_server_keep_weights_and_exports_there(server_store, digits4, tmp_path):
    tracker = Tracker(server_store)
    common = ["--mlflow-path", server_store, "--no-energy", "--num-workers", "0", "--quiet"]
    assert main(["train-source", "--architecture", "quanta_cnn", "--dataset", f"{digits4}:0-1", "--epochs", "1",
                 "--batch-size", "16", "-o", str(tmp_path / "expe"), *common]) == 0
    [source] = tracker.client.search_runs([tracker.experiment_id("Source training")], max_results=1,
                                          order_by=["attributes.start_time DESC"])
    assert source.info.status == "FINISHED" and "test_accuracy" in source.data.metrics
    assert "source.pt" in artifact_paths(tracker, source.info.run_id)
    # the source weights come back from the server by run id
    assert main(["quanta", "--architecture", "quanta_cnn", "-s", f"{digits4}:0-1", "-t", f"{digits4}:2-3",
                 "-sw", source.info.run_id, "-l", "-1", "--nb_of_target_samples", "3", "-o", str(tmp_path / "expe"),
                 "--batch-size", "4", *common]) == 0
    [quanta] = tracker.client.search_runs([tracker.experiment_id("QUANTA")],
                                          f"params.source_run_id = '{source.info.run_id}'")
    assert quanta.info.status == "FINISHED" and quanta.data.params["source_kind"] == "trained"
    assert {f"quanta_source/{i}" for i in range(7)} <= set(quanta.data.metrics)
    assert any(p.endswith(".jsonl") for p in artifact_paths(tracker, quanta.info.run_id))


def test_a_ranking_on_the_server_is_a_parent_and_one_run_per_network(server_store):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["rank", "--dataset", "digits", "--backbones", "efficientnet_lite0", "--samples-per-class", "5",
                     "--splits", "1", "--resolution", "32", "--mlflow-path", server_store, "--quiet", "--json"]) == 0
    report = json.loads(out.getvalue())
    tracker = Tracker(server_store)
    parent = tracker.get_run(report["parent_run_id"])
    assert parent.info.status == "FINISHED" and "ranking.csv" in artifact_paths(tracker, parent.info.run_id)
    children = tracker.client.search_runs([parent.info.experiment_id],
                                          f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert [c.data.params["backbone"] for c in children] == ["efficientnet_lite0"]
    assert children[0].info.status == "FINISHED" and "logme" in children[0].data.metrics


@pytest.mark.usefixtures("fresh_streamlit_caches")
def test_tradeoffs_page_reads_the_runs_from_the_server(fe_on_server, mlflow_server, monkeypatch):
    monkeypatch.setenv("TLCORE_MLFLOW_PATH", mlflow_server.url)
    at = AppTest.from_file(TRADEOFFS, default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    scatter = json.loads(at.get("plotly_chart")[0].proto.spec)  # one samples-per-class value at a time
    drawn = {run_id for trace in scatter["data"] for run_id in trace.get("customdata") or ()}
    assert drawn & set(fe_on_server.run_ids)  # a point carries its run id, read from the server


def test_a_servers_change_marker_moves_when_a_run_starts_or_ends_and_not_when_read(server_store):
    """The pages cache a server's runs under this marker: reruns never re-read an unchanged server (minutes at
    50,000 runs), and a run another process starts or ends shows at the next rerun."""
    from tlcore import results

    tracker = Tracker(server_store)
    before = results.store_marker(server_store)
    assert before is not None and results.store_marker(server_store) == before
    run = tracker.start_run("fe", {"dataset": "marker"})
    started = results.store_marker(server_store)
    assert started != before
    run.finish()
    assert results.store_marker(server_store) != started
    assert results.store_marker("http://127.0.0.1:9") is None  # nothing answers: the cache keeps its TTL


@pytest.mark.timeout(30)  # MLflow's client alone retries a dead server for minutes before it gives up
def test_a_server_that_does_not_answer_is_one_sentence_at_once():
    from tlcore import results
    from tlcore.errors import TLError

    with pytest.raises(TLError, match=r"Could not read runs from http://127\.0\.0\.1:9 .*Check that the tracking"):
        results.load_view("http://127.0.0.1:9", "tradeoffs")
