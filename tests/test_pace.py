"""The pace model: a non-negative least-squares fit of whole-job time that carries across resolution,
backbone and samples per class, and the job records it reads from MLflow."""

from __future__ import annotations

import socket

import pytest

from tlcore.pace import JOB_TIME_METRIC, JobRecord, fit_pace, job_records
from tlcore.tracking import TAG_HOST


def _job(method, flops, images, runs, per_flop, per_job, per_image=2e-3, per_run=0.5):
    return JobRecord(method, flops * per_flop + per_job + images * per_image + runs * per_run, flops, images, runs)


def test_the_fit_recovers_known_paces_and_projects_an_unseen_resolution_within_a_few_percent():
    fe = dict(per_flop=1e-10, per_job=4.0)
    ft = dict(per_flop=3e-10, per_job=8.0)
    jobs = [_job("fe", 1e10, 500, 3, **fe), _job("fe", 4e10, 500, 3, **fe), _job("fe", 2e11, 2000, 5, **fe),
            _job("ft", 5e10, 800, 1, **ft), _job("ft", 3e11, 3000, 3, **ft), _job("ft", 1e12, 1000, 1, **ft)]
    model = fit_pace(jobs)
    assert model.jobs == 6 and model.jobs_by_method == {"fe": 3, "ft": 3} and model.worst_ratio < 1.01
    unseen = _job("ft", 6e11, 2500, 2, **ft)  # another resolution and backbone: other FLOPs, images, runs
    assert model.project("ft", unseen.flops, unseen.images, unseen.runs) == pytest.approx(unseen.seconds, rel=0.05)
    assert model.project("quanta", 1e10, 100, 1) is None  # no QUANTA job here yet
    assert min(model.method_flops.values()) >= 0 and model.per_image >= 0 and model.per_run >= 0


def test_scaling_one_jobs_pace_by_flops_is_what_went_wrong_and_the_overheads_fix_it():
    # a 224 px job and a 32 px one: at 32 px the fixed costs dominate
    big = _job("fe", 1e12, 1000, 1, per_flop=1e-10, per_job=10.0)
    small = _job("fe", 2e10, 1000, 1, per_flop=1e-10, per_job=10.0)
    flops_only = big.seconds / big.flops * small.flops
    assert small.seconds / flops_only > 5  # the old projection: several times too short
    model = fit_pace([big, _job("fe", 3e11, 300, 1, per_flop=1e-10, per_job=10.0)])
    assert model.project("fe", small.flops, small.images, small.runs) == pytest.approx(small.seconds, rel=0.5)


def test_job_records_are_whole_jobs_of_this_host_and_device_with_their_wall_time(tracker):
    host = socket.gethostname()
    with tracker.start_run("ft", {"method": "ft", "backbone": "b", "device": "cpu", "n_points": 2},
                           tags={"sweep_parent": "true"}) as parent:
        parent.log_metrics({JOB_TIME_METRIC: 30.0, "time_total_s": 25.0, "flops_total": 1e10,
                            "images_processed": 100})
    with tracker.start_run("ft", {"method": "ft", "device": "cpu"}, parent_run_id=parent.run_id) as child:
        child.log_metrics({"time_total_s": 10.0, "flops_total": 5e9})
    with tracker.start_run("fe", {"method": "fe", "device": "cpu"}) as single:
        single.log_metrics({"time_total_s": 5.0, "flops_total": 1e9})  # before job_time_s: its own time
    with tracker.start_run("fe", {"method": "fe", "device": "cuda:0"}) as gpu:
        gpu.log_metrics({"time_total_s": 5.0, "flops_total": 1e9})
    with tracker.start_run("fe", {"method": "fe", "device": "cpu"}, tags={TAG_HOST: "elsewhere"}) as other:
        other.log_metrics({"time_total_s": 5.0, "flops_total": 1e9})
    records = {r.run_id: r for r in job_records(tracker, "cpu", host)}
    assert set(records) == {parent.run_id, single.run_id}
    assert (records[parent.run_id].seconds, records[parent.run_id].runs) == (30.0, 3)
    assert (records[single.run_id].seconds, records[single.run_id].runs) == (5.0, 1)
