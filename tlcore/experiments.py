"""The single entry point the CLI and the app share: ``run(spec, reporter)``.

Methods are records in :mod:`tlcore.methods.base` (``fe``, ``ft``, ``quanta``, ``source``, plugins);
``run`` validates the spec, opens the tracking store and hands over to the record's run function.
Whatever works from one front end works from the other: both build the same :class:`ExperimentSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from tlcore.methods.base import RunResult, get, names
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec
from tlcore.tracking import Tracker

__all__ = ["RunResult", "SplitSweep", "available_methods", "finish_split_sweep", "record_job_time",
           "resolve_defaults", "run", "run_point", "split_sweep", "sweep_points"]


def available_methods() -> list[str]:
    return names()


def resolve_defaults(spec: ExperimentSpec) -> ExperimentSpec:
    """The spec as it will run: an unset input size follows the images (tiny images run at 64 px,
    not the backbone's 224; :mod:`tlcore.data.resolution`). The cost estimate uses the same."""
    if spec.resolution is None and not getattr(spec.params, "resume", None):
        size = default_resolution(spec)
        if size is not None:
            spec = replace(spec, resolution=size)
    return spec


def default_resolution(spec) -> int | None:
    """The resolution a spec that left it unset should run at, or None to keep the backbone's."""
    from tlcore.data import load_dataset
    from tlcore.data.resolution import input_size_for, native_image_size
    from tlcore.models import backbone_config

    if spec.resolution is not None:
        return spec.resolution
    cfg = backbone_config(spec.backbone)
    if cfg.fixed_input_size:
        return None
    size = cfg.preprocessing.input_size
    try:
        ds = load_dataset(spec.dataset, spec.data_dir, download=False)
    except Exception:  # not here yet (a download to come) or a bad name: the method reports it
        return None
    chosen = input_size_for(native_image_size(ds), size)
    return chosen if chosen != size else None


def run(spec: ExperimentSpec, reporter: Reporter | None = None, tracker: Tracker | None = None) -> RunResult:
    """Validate ``spec`` and run it; MLflow runs end FINISHED, FAILED or KILLED whatever happens."""
    import time

    spec = resolve_defaults(spec.validate())
    started = time.perf_counter()  # after the imports: a process pays them once, not each job
    method = get(spec.method)
    tracker = tracker or Tracker(spec.mlflow_path)
    result = method.runner()(spec, reporter or Reporter(), tracker)
    record_job_time(tracker, result, time.perf_counter() - started)
    return result


def record_job_time(tracker: Tracker, result: RunResult, seconds: float) -> None:
    """Log the whole job's wall time (data and model loading, FLOP counting, every run) on its top run, the
    figure :mod:`tlcore.pace` fits projections on; a run's own ``time_total_s`` leaves that start-up out."""
    from tlcore.pace import JOB_TIME_METRIC

    top = result.parent_run_id or (result.run_ids[0] if len(result.run_ids) == 1 else None)
    if top is None:
        return
    try:
        tracker.client.log_metric(top, JOB_TIME_METRIC, float(seconds))
    except Exception:  # a figure for later projections, never a reason to fail a finished job
        pass


def sweep_points(spec: ExperimentSpec) -> list[tuple[int, int]]:
    """The (samples per class, draw) points of a sweep, as an executor that runs them apart lists them."""
    from tlcore.errors import SpecError

    spec = resolve_defaults(spec.validate())
    method = get(spec.method)
    if not method.sweep:
        raise SpecError(f"Method {method.name!r} does not sweep samples per class: run the whole job with run().")
    return [(p.spc, p.split) for p in method.points(spec)]


def run_point(spec: ExperimentSpec, point: tuple[int, int], reporter: Reporter | None = None,
              tracker: Tracker | None = None, parent_run_id: str | None = None,
              sweep_id: str | None = None) -> RunResult:
    """One point of a sweep: the call a remote executor makes for each of :func:`sweep_points`.

    The point trains on exactly the images it would in the whole sweep (draws are seeded per point). Its run
    joins ``sweep_id`` and hangs under ``parent_run_id`` when given (whoever split the sweep opens that parent).
    """
    from tlcore.methods.common import PARENT_TAG

    tags = dict(spec.tags)
    if sweep_id:
        tags["sweep_id"] = sweep_id
    if parent_run_id:
        tags[PARENT_TAG] = parent_run_id
    spc, draw = point
    return run(replace(spec, points=((int(spc), int(draw)),), tags=tags), reporter, tracker)


#: Params that differ between a sweep's points: the rest of a point run's params describe the whole sweep.
_POINT_PARAMS = ("samples_per_class", "split", "n_train_images", "eval_set", "train_hash", "batch_size",
                 "batch_size_requested")


@dataclass
class SplitSweep:
    """A sweep an executor runs point by point elsewhere: the resolved spec, its open parent run
    (a :class:`~tlcore.methods.common.Sweep`), the points and when it started."""

    spec: ExperimentSpec
    sweep: Any
    points: list[tuple[int, int]]
    started: float

    @property
    def parent_run_id(self) -> str:
        return self.sweep.parent.run_id

    @property
    def sweep_id(self) -> str:
        return self.sweep.sweep_id


def split_sweep(spec: ExperimentSpec, tracker: Tracker, reporter: Reporter | None = None) -> SplitSweep | None:
    """Open the parent run of a job whose points can run as separate tasks (``Method.task_points``: fine-tuning's
    points, QUANTA's runs), or None when the job runs whole (another method, or a single point). The executor then
    runs :func:`run_point` for each point, anywhere, and ends the parent with :func:`finish_split_sweep`, which
    also gives it the params the points share."""
    import time

    from tlcore.methods.common import Sweep

    spec = resolve_defaults(spec.validate())
    if getattr(spec.params, "resume", None):
        return None  # a resume continues the runs it names, in one task
    started = time.perf_counter()
    points = get(spec.method).independent_points(spec)
    if len(points) < 2:
        return None
    params = {"method": spec.method, "dataset": spec.dataset, "backbone": spec.backbone, "weights": spec.weights,
              "seed": spec.seed, "job": spec.job or ""}
    sweep = Sweep(spec, tracker, reporter or Reporter(), len(points), params).__enter__()
    return SplitSweep(spec, sweep, points, started)


def finish_split_sweep(split: SplitSweep, tracker: Tracker, run_ids: list[str],
                       error: BaseException | None = None) -> RunResult:
    """End a split sweep's parent as its points ended (FINISHED, or KILLED/FAILED with ``error``): it takes
    the params its points share and the sums of their costs, as a parent run in one process does."""
    import time

    import numpy as np

    from tlcore.methods.common import sweep_cost

    parent = split.sweep.parent
    runs = [tracker.get_run(r) for r in run_ids]
    wall = time.perf_counter() - split.started
    try:
        if runs:
            have = tracker.get_run(parent.run_id).data.params
            shared = {k: v for k, v in runs[0].data.params.items() if k not in have and k not in _POINT_PARAMS}
            parent.log_params(shared)
        metrics = sweep_cost([dict(r.data.metrics) for r in runs], wall)
        parent.log_metrics(metrics)
    finally:
        split.sweep.__exit__(type(error) if error else None, error, None)
    key = "test_accuracy"  # a split sweep has several points, so it is no model selection (one point, on val)
    accs = [r.data.metrics[key] for r in runs if key in r.data.metrics]
    headline = {f"{key}_mean": float(np.mean(accs))} if accs else {}
    headline.update({k: float(v) for k, v in metrics.items() if k in ("time_total_s", "flops_total")})
    result = RunResult(split.spec.method, list(run_ids), parent.run_id, headline,
                       f"{len(runs)} runs under parent run {parent.run_id} (sweep_id {split.sweep_id})")
    if error is None:
        record_job_time(tracker, result, wall)
    return result
