"""The executor seam: the job runner drives whatever executor it is given, end to end."""

from __future__ import annotations

import json

import pytest

from tests.fake_method import fake_fe  # noqa: F401  (fixture)
from tlcore.executors import Work, run_work
from tlcore.jobs import USER_CANCEL_REASON, JobRunner, JobState, journal_path_for
from tlcore.specs import ExperimentSpec


class Recording:
    """Records what the runner hands it; runs each work synchronously, or holds it until told (``hold``)."""

    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.started: list[Work] = []
        self.held: list[tuple[Work, object]] = []
        self.cancelled: list[tuple[str, str]] = []
        self.shut_down = False

    def start(self, work: Work, done) -> None:
        self.started.append(work)
        if self.hold:
            self.held.append((work, done))
        else:
            done(work, run_work(work))

    def release(self) -> None:
        work, done = self.held.pop(0)
        done(work, run_work(work))

    def cancel(self, work: Work, reason: str) -> None:
        self.cancelled.append((work.job_id, reason))

    def shutdown(self, timeout: float) -> None:
        self.shut_down = True


def _journal_entry(runner: JobRunner, job_id: str) -> dict:
    return next(j for j in json.loads(journal_path_for(runner.tracker.uri).read_text())["jobs"] if j["id"] == job_id)


@pytest.fixture
def recording(store_dir, fake_fe):  # noqa: F811
    executors: list[tuple[Recording, JobRunner]] = []

    def make(hold: bool = False) -> tuple[Recording, JobRunner]:
        executor = Recording(hold)
        runner = JobRunner(str(store_dir), executor=executor)
        runner.recover()
        executors.append((executor, runner))
        return executor, runner

    yield make
    for _, runner in executors:
        runner.close(timeout=10)


def test_the_runner_hands_the_job_to_its_executor_and_records_the_outcome(recording):
    executor, runner = recording()
    job = runner.submit(ExperimentSpec("fe", "digits"), token="a").job
    assert [w.job_id for w in executor.started] == [job.id]
    work = executor.started[0]
    assert work.spec.job == job.id and work.tracker is runner.tracker and work.device == job.device
    done = runner.get(job.id)
    assert done.state is JobState.FINISHED and done.fraction == 1.0 and done.stage == "Finished"
    assert done.result_metrics["test_accuracy"] == 0.875 and "87.5%" in done.summary
    assert runner.tracker.get_run(done.run_ids[0]).info.status == "FINISHED"
    entry = _journal_entry(runner, job.id)
    assert entry["state"] == "finished" and entry["fraction"] == 1.0 and entry["runs"][0][0] == done.run_ids[0]
    runner.close()
    assert executor.shut_down


def test_the_runner_queues_per_device_and_asks_its_executor_to_cancel(recording):
    executor, runner = recording(hold=True)
    first = runner.submit(ExperimentSpec("fe", "digits"), token="a").job
    second = runner.submit(ExperimentSpec("fe", "digits:0-4"), token="b").job
    assert [w.job_id for w in executor.started] == [first.id]  # one job at a time per device
    assert runner.get(first.id).state is JobState.RUNNING and runner.queue_position(second.id) == 1
    assert runner.cancel(first.id)
    assert executor.cancelled == [(first.id, USER_CANCEL_REASON)]
    assert executor.started[0].reporter.cancel_requested
    executor.release()  # the work stops at its first cancel check
    cancelled = runner.get(first.id)
    assert cancelled.state is JobState.CANCELLED and _journal_entry(runner, first.id)["state"] == "cancelled"
    assert [w.job_id for w in executor.started] == [first.id, second.id]  # the next job started once it ended
    executor.release()
    assert runner.get(second.id).state is JobState.FINISHED


def test_a_failing_executor_fails_the_job_not_the_runner(recording):
    executor, runner = recording()

    def broken(work: Work, done) -> None:
        raise RuntimeError("no cluster")

    executor.start = broken
    job = runner.submit(ExperimentSpec("fe", "digits"), token="a").job
    failed = runner.get(job.id)
    assert failed.state is JobState.FAILED and failed.error.startswith("Unexpected RuntimeError: no cluster")
    assert not runner.has_active()


def test_a_sweep_run_point_by_point_scores_as_the_whole_sweep(tracker):
    """What a cluster executor does: list the points, open a parent, run each point apart under it."""
    from tlcore import experiments
    from tlcore.specs import ExperimentSpec, FeatureExtractionParams

    spec = ExperimentSpec("fe", "digits", resolution=32, samples_per_class=(2, 5), splits=2, measure_energy=False,
                          params=FeatureExtractionParams(classifier="linearsvc"))  # features cached: one extraction
    whole = experiments.run(spec, tracker=tracker)
    points = experiments.sweep_points(spec)
    assert points == [(2, 0), (2, 1), (5, 0), (5, 1)]
    with tracker.start_run("fe", {"samples_per_class": "sweep"}, tags={"sweep_parent": "true"}) as parent:
        apart = [experiments.run_point(spec, p, tracker=tracker, parent_run_id=parent.run_id, sweep_id="s1")
                 for p in points]
    client = tracker.client

    def accuracy(run_id):
        return client.get_run(run_id).data.metrics["test_accuracy"]

    assert [accuracy(r) for r in whole.run_ids] == [accuracy(r.run_ids[0]) for r in apart]
    for r in apart:
        run = client.get_run(r.run_ids[0])
        assert run.data.tags["mlflow.parentRunId"] == parent.run_id and run.data.tags["sweep_id"] == "s1"
        assert r.parent_run_id is None  # no parent of its own: the executor's holds them
