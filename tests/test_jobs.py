"""The job runner: queue order, cancel, double submit, failures, the reporter, restart clean-up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fake_method import GATE, fake_fe  # noqa: F401  (fixture)
from tlcore.errors import SpecError
from tlcore.jobs import Job, JobRunner, JobState, journal_path_for
from tlcore.specs import ExperimentSpec

ROOT = Path(__file__).resolve().parents[1]


def fake_spec(behaviour: str = "quick", dataset: str = "digits") -> ExperimentSpec:
    return ExperimentSpec("fe", dataset, tags={"fake": behaviour})


@pytest.fixture
def runner(store_dir, fake_fe):  # noqa: F811
    r = JobRunner(str(store_dir))
    r.recover()
    yield r
    GATE.set()
    r.close(timeout=10)


def _wait_stage(runner: JobRunner, job_id: str, prefix: str, timeout: float = 60) -> None:
    runner.wait_until(lambda jobs: any(j.id == job_id and j.stage.startswith(prefix) for j in jobs), timeout)


def test_jobs_run_in_submission_order_and_the_queue_is_visible(runner):
    first = runner.submit(fake_spec("gate"), token="a").job
    second = runner.submit(fake_spec(dataset="digits:0-4"), token="b").job
    third = runner.submit(fake_spec(dataset="digits:5-9"), token="c").job
    _wait_stage(runner, first.id, "Step 1")
    listed = runner.jobs()
    assert [j.id for j in listed] == [first.id, second.id, third.id]
    assert [j.state for j in listed] == [JobState.RUNNING, JobState.QUEUED, JobState.QUEUED]
    assert (runner.queue_position(second.id), runner.queue_position(third.id)) == (1, 2)
    assert runner.has_active()
    GATE.set()
    done = [runner.wait(j.id, timeout=60) for j in (first, second, third)]
    assert all(j.state is JobState.FINISHED for j in done)
    assert done[0].ended_at <= done[1].started_at and done[1].ended_at <= done[2].started_at
    assert not runner.has_active()


def test_cancel_a_queued_job_removes_it_and_it_never_opens_a_run(runner):
    first = runner.submit(fake_spec("gate"), token="a").job
    queued = runner.submit(fake_spec(dataset="digits:0-4"), token="b").job
    assert runner.cancel(queued.id)
    cancelled = runner.get(queued.id)
    assert cancelled.state is JobState.CANCELLED and cancelled.runs == []
    assert runner.queue_position(queued.id) is None
    GATE.set()
    assert runner.wait(first.id, timeout=60).state is JobState.FINISHED
    assert runner.get(queued.id).state is JobState.CANCELLED  # it did not run after all
    assert not runner.cancel(queued.id)  # ended jobs cannot be cancelled twice


def test_cancel_a_running_job_ends_its_run_killed_with_the_metrics_it_had(runner):
    job = runner.submit(fake_spec("gate"), token="a").job
    _wait_stage(runner, job.id, "Step 1")
    assert runner.cancel(job.id)
    assert runner.get(job.id).stage.startswith("Cancelling")
    ended = runner.wait(job.id, timeout=60)
    assert ended.state is JobState.CANCELLED and ended.error is None
    run = runner.tracker.get_run(ended.run_ids[0])
    assert run.info.status == "KILLED" and run.data.tags["error"].startswith("Cancelled by the user")
    assert [m.value for m in runner.tracker.client.get_metric_history(run.info.run_id, "train_loss")] == [1.0]
    # the runner keeps working after a cancel
    assert runner.wait(runner.submit(fake_spec(), token="b").job.id, timeout=60).state is JobState.FINISHED


def test_double_submit_with_one_token_starts_one_job(runner):
    a = runner.submit(fake_spec("gate"), token="click-1")
    b = runner.submit(fake_spec("gate"), token="click-1")
    assert a.new and not b.new and a.job.id == b.job.id
    assert len(runner.jobs()) == 1
    other = runner.submit(fake_spec("gate"), token="click-2")
    assert other.new and other.job.id != a.job.id
    GATE.set()
    runner.wait(other.job.id, timeout=60)
    assert len(runner.jobs()) == 2


def test_a_user_error_fails_the_job_with_its_one_sentence(runner):
    job = runner.wait(runner.submit(fake_spec("user_error"), token="a").job.id, timeout=60)
    assert job.state is JobState.FAILED
    assert job.error == "Class 'cat' is not in dataset 'digits'; use class indices 0-9."
    assert job.traceback is None
    run = runner.tracker.get_run(job.run_ids[0])
    assert run.info.status == "FAILED" and run.data.tags["error"] == job.error


def test_a_bug_fails_the_job_with_a_short_message_and_the_traceback(runner):
    job = runner.wait(runner.submit(fake_spec("bug"), token="a").job.id, timeout=60)
    assert job.state is JobState.FAILED
    assert job.error.startswith("Unexpected ZeroDivisionError: division by zero")
    assert "Traceback" in job.traceback and "fake_method" in job.traceback
    assert runner.tracker.get_run(job.run_ids[0]).info.status == "FAILED"
    assert runner.wait(runner.submit(fake_spec(), token="b").job.id, timeout=60).state is JobState.FINISHED


def test_an_invalid_spec_is_refused_before_queuing(runner):
    bad = ExperimentSpec("fe", "digits", batch_size=0)
    with pytest.raises(SpecError, match="'batch_size' parameter of ExperimentSpec"):
        runner.submit(bad, token="a")
    assert runner.jobs() == []


def test_the_reporter_records_progress_metrics_runs_and_the_result(runner):
    version = runner.results_version
    job = runner.wait(runner.submit(fake_spec(), token="a").job.id, timeout=60)
    assert job.state is JobState.FINISHED and job.fraction == 1.0 and job.stage == "Finished"
    assert [(p.name, p.step) for p in job.metrics if p.name == "train_loss"] == [("train_loss", 0), ("train_loss", 1),
                                                                                ("train_loss", 2)]
    assert len(job.runs) == 1 and job.runs[0].experiment == "Feature extraction"
    assert job.result_metrics["test_accuracy"] == 0.875 and "87.5%" in job.summary
    assert runner.results_version == version + 1
    run = runner.tracker.get_run(job.run_ids[0])
    assert run.data.tags["job"] == job.id  # runs carry the job id
    assert run.info.status == "FINISHED"


def test_a_scaled_view_of_the_job_reporter_raises_with_the_jobs_reason(runner):
    from tlcore.errors import Cancelled
    from tlcore.jobs import SHUTDOWN_REASON, JobReporter

    job = Job(id="x", number=1, spec=fake_spec(), label="x", device="cpu")
    reporter = JobReporter(runner, job)
    sweep_point = reporter.scaled(0.5, 1.0)  # what a method hands to one point of a sweep
    sweep_point.check_cancelled()  # nothing asked yet
    reporter.request_cancel(SHUTDOWN_REASON)
    with pytest.raises(Cancelled) as caught:
        sweep_point.check_cancelled()
    assert caught.value.reason == SHUTDOWN_REASON


def test_eta_follows_the_pace_since_progress_first_moved():
    job = Job(id="x", number=1, spec=fake_spec(), label="x", device="cpu", state=JobState.RUNNING)
    job.started_at = 100.0
    job._anchor = (130.0, 0.1)  # 30 s of loading, then progress
    job.fraction = 0.3
    assert job.eta_s(now=150.0) == pytest.approx(70.0)  # 0.2 in 20 s -> 0.7 left in 70 s
    job.fraction = 0.0
    assert job.eta_s(now=150.0) is None


def test_close_stops_the_running_job_and_leaves_no_run_running(runner):
    job = runner.submit(fake_spec("gate"), token="a").job
    queued = runner.submit(fake_spec(), token="b").job
    _wait_stage(runner, job.id, "Step 1")
    runner.close(timeout=10)
    stopped = runner.get(job.id)
    assert stopped.state is JobState.INTERRUPTED and "server was stopped" in stopped.note
    run = runner.tracker.get_run(stopped.run_ids[0])
    assert run.info.status == "KILLED" and run.data.tags["error"].startswith("The server was stopped while this run")
    assert runner.get(queued.id).state is JobState.INTERRUPTED


KILLED_SERVER = """
import sys, time
sys.path.insert(0, {root!r})
from tests.fake_method import fake_method
import dataclasses
from tlcore.jobs import JobRunner
from tlcore.methods import base
from tlcore.specs import ExperimentSpec

base.methods._entries["fe"] = dataclasses.replace(base.get("fe"), run=fake_method)
runner = JobRunner({store!r})
runner.recover()
running = runner.submit(ExperimentSpec("fe", "digits", tags={{"fake": "gate"}}), token="one").job
waiting = runner.submit(ExperimentSpec("fe", "digits:0-4"), token="two").job
print(running.id, waiting.id, flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_server_killed_mid_job_leaves_no_run_running_and_the_journal_says_what_happened(store_dir, fake_fe):  # noqa: F811
    reader = JobRunner(str(store_dir))
    reader.close()
    journal = journal_path_for(reader.tracker.uri)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SERVER.format(root=str(ROOT), store=str(store_dir))],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        running_id, waiting_id = proc.stdout.readline().split()
        deadline = time.monotonic() + 120
        while True:  # until the journal shows the job running with its MLflow run
            entries = {j["id"]: j for j in json.loads(journal.read_text())["jobs"]} if journal.exists() else {}
            entry = entries.get(running_id)
            if entry and entry["state"] == "running" and entry["runs"] and entry["stage"].startswith("Step"):
                run_id = entry["runs"][0][0]
                if reader.tracker.client.get_metric_history(run_id, "train_loss"):
                    break
            assert time.monotonic() < deadline, "the job never started in the subprocess"
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    restarted = JobRunner(str(store_dir))
    assert restarted.tracker.get_run(run_id).info.status == "RUNNING"  # what the dead server left
    interrupted = {j.id: j for j in restarted.recover()}
    run = restarted.tracker.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["error_type"] == "orphaned"
    assert "ended without finishing it" in run.data.tags["error"]
    assert [m.value for m in restarted.tracker.client.get_metric_history(run_id, "train_loss")] == [1.0]
    assert restarted.orphaned_run_ids == [run_id]
    assert set(interrupted) == {running_id, waiting_id}
    note = interrupted[running_id].note
    assert "interrupted by a server restart" in note and "marked FAILED" in note and run_id[:8] in note
    assert "never started" in interrupted[waiting_id].note
    assert {j.id for j in restarted.interrupted()} == {running_id, waiting_id}
    restarted.acknowledge(waiting_id)
    assert [j.id for j in restarted.interrupted()] == [running_id]
    # the record survives another restart, and the job can be run again
    restarted.close()
    again = JobRunner(str(store_dir))
    again.recover()
    assert [j.id for j in again.interrupted()] == [running_id]
    GATE.set()  # the resubmitted spec is the gated one
    redo = again.resubmit(running_id).job
    assert again.wait(redo.id, timeout=60).state is JobState.FINISHED
    assert redo.number > max(j.number for j in interrupted.values())
    again.close()
