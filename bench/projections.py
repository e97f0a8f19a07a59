"""Projected vs actual job time: the pace model of :mod:`tlcore.pace`, leave-one-out.

Runs small real jobs (FE and FT on digits and lfw_faces, 32 and 64 px, efficientnet_lite0,
efficientnet_lite1 and quanta_cnn, a few samples-per-class values; 4-11 s each on a quiet 2-core CPU)
into a fresh store, each timed whole (``experiments.run``, data and model loading included), after
a warm-up job that is left out (the process's first job also creates the store and imports lazily).
Then each job is projected from the *other* jobs' history only (its own run left out of the fit), with the same planned
image passes, FLOPs and runs the Run page and ``--dry-run`` use, and compared with what it took.
The old projection (median seconds per FLOP of the other finished jobs of the same method and
backbone, scaled by FLOPs) is shown beside it. Figures in docs/benchmarks.md.

    .venv/bin/python bench/projections.py [--store DIR] [--reuse]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tlcore import experiments
from tlcore.pace import JOB_TIME_METRIC, JobRecord, fit_pace, fitted_pace, job_records
from tlcore.planning import estimate_cost
from tlcore.specs import ExperimentSpec, FeatureExtractionParams, FineTuningParams
from tlcore.tracking import Tracker


def _common(store: str) -> dict:
    """What every job of this bench shares: the store, the CPU, no energy tracking, one draw."""
    return dict(mlflow_path=store, device="cpu", num_workers=0, measure_energy=False, splits=1, seed=0)


def jobs(store: str) -> list[tuple[str, ExperimentSpec]]:
    """Small jobs that differ in method, dataset, resolution, backbone and samples per class."""
    common = _common(store)
    fe = FeatureExtractionParams(cache=False)

    def ft(epochs: int) -> FineTuningParams:
        return FineTuningParams(epochs=epochs)

    return [
        ("FE digits lite0 32px spc 5,20,50", ExperimentSpec("fe", "digits", backbone="efficientnet_lite0",
                                                            resolution=32, samples_per_class=(5, 20, 50), params=fe,
                                                            **common)),
        ("FE digits lite0 64px spc 10,50", ExperimentSpec("fe", "digits", backbone="efficientnet_lite0",
                                                          resolution=64, samples_per_class=(10, 50), params=fe,
                                                          **common)),
        ("FE digits lite1 64px spc 10,50", ExperimentSpec("fe", "digits", backbone="efficientnet_lite1",
                                                          resolution=64, samples_per_class=(10, 50), params=fe,
                                                          **common)),
        ("FE digits quanta_cnn 32px spc 20", ExperimentSpec("fe", "digits", backbone="quanta_cnn",
                                                            weights="random", resolution=32,
                                                            samples_per_class=(20,), params=fe, **common)),
        ("FT digits lite0 32px spc 20 3ep", ExperimentSpec("ft", "digits", backbone="efficientnet_lite0",
                                                           resolution=32, samples_per_class=(20,), params=ft(3),
                                                           batch_size=16, **common)),
        ("FT digits lite0 64px spc 20 2ep", ExperimentSpec("ft", "digits", backbone="efficientnet_lite0",
                                                           resolution=64, samples_per_class=(20,),
                                                           params=ft(2), batch_size=16, **common)),
        ("FT lfw quanta_cnn 32px spc 20 3ep", ExperimentSpec("ft", "lfw_faces", backbone="quanta_cnn",
                                                             weights="random", resolution=32, samples_per_class=(20,),
                                                             params=ft(3), batch_size=16, **common)),
        ("FT digits lite1 32px spc 5,20 2ep", ExperimentSpec("ft", "digits", backbone="efficientnet_lite1",
                                                             resolution=32, samples_per_class=(5, 20),
                                                             params=ft(2), batch_size=16, **common)),
    ]


def warm_up(store: str) -> ExperimentSpec:
    """A small job run first and left out of the history and of the table: the process's first job also
    creates the store and imports what the methods import lazily, which no later job pays again."""
    return ExperimentSpec("fe", "digits:0-1", backbone="efficientnet_lite0", resolution=32, samples_per_class=(2,),
                          params=FeatureExtractionParams(cache=False), **_common(store))


def old_projection(tracker: Tracker, records, leave_out: str, method: str, backbone: str, flops: float) -> float | None:
    """The projection before the pace model: median s/FLOP (time_total_s) of the other jobs of this method and
    backbone, times the job's FLOPs."""
    rates = []
    for r in records:
        if r.run_id == leave_out or r.method != method or r.backbone != backbone:
            continue
        m = tracker.get_run(r.run_id).data.metrics
        if m.get("time_total_s") and m.get("flops_total"):
            rates.append(m["time_total_s"] / m["flops_total"])
    return statistics.median(rates) * flops if rates else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", help="results folder (default: a temporary one)")
    ap.add_argument("--reuse", action="store_true", help="do not run the jobs again: project the store's jobs")
    args = ap.parse_args()
    store = args.store or tempfile.mkdtemp(prefix="tlcore-projections-")
    os.environ.setdefault("TLCORE_COUNTRY_ISO_CODE", "FRA")
    print(f"store: {store}\nload before: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    tracker = Tracker(store)
    planned = jobs(store)
    tops: dict[str, str] = {}
    warm_id = None
    if not args.reuse:
        t0 = time.perf_counter()
        warm = experiments.run(warm_up(store))
        warm_id = warm.parent_run_id or warm.run_ids[0]
        print(f"warm-up job (left out): {time.perf_counter() - t0:.1f} s", flush=True)
        for name, spec in planned:
            t0 = time.perf_counter()
            result = experiments.run(spec)
            wall = time.perf_counter() - t0
            tops[name] = result.parent_run_id or result.run_ids[0]
            print(f"ran {name}: {wall:.1f} s", flush=True)
    else:
        found = list(reversed(job_records(tracker, "cpu")))
        warm_id, found = found[0].run_id, found[1:]
        for (name, _), rec in zip(planned, found, strict=True):
            tops[name] = rec.run_id
    print(f"load after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}\n")

    _, pace = fitted_pace(tracker, "cpu")  # the machine's timed pace per backbone and resolution (remembered)
    records = [r for r in job_records(tracker, "cpu") if r.run_id != warm_id]
    rows = []
    for name, spec in planned:
        top = tops[name]
        est = estimate_cost(replace(spec))  # the plan alone: image passes, FLOPs, runs
        model = fit_pace([r for r in records if r.run_id != top], pace)
        rate = pace(JobRecord(spec.method, 0.0, est.flops, est.images, est.runs, spec.backbone, str(spec.resolution)))
        projected = model.project(spec.method, est.flops, est.images, est.runs, rate) if model else None
        actual = tracker.get_run(top).data.metrics[JOB_TIME_METRIC]
        old = old_projection(tracker, records, top, spec.method, spec.backbone, est.flops)
        rows.append((name, est.images, est.flops, projected, actual, old, model.jobs if model else 0))
    print(f"{'job':40s} {'images':>7s} {'GFLOPs':>8s} {'projected':>10s} {'actual':>8s} {'ratio':>6s} "
          f"{'old proj.':>10s} {'old ratio':>9s} {'fit on':>6s}")
    worst = 1.0
    for name, images, flops, projected, actual, old, n in rows:
        ratio = projected / actual if projected else float("nan")
        worst = max(worst, ratio, 1 / ratio) if projected else worst
        old_text = f"{old:9.1f}s {old / actual:9.2f}" if old else f"{'n/a':>10s} {'':>9s}"
        print(f"{name:40s} {images:7d} {flops / 1e9:8.2f} {projected:9.1f}s {actual:7.1f}s {ratio:6.2f} "
              f"{old_text} {n:6d}")
    print(f"\nworst factor (max of projected/actual, actual/projected): {worst:.2f}")


if __name__ == "__main__":
    main()
