"""The single entry point the CLI and the app share: ``run(spec, reporter)``.

Methods are records in :mod:`tlcore.methods.base` (``fe``, ``ft``, ``quanta``, ``source``, plugins);
``run`` validates the spec, opens the tracking store and hands over to the record's run function.
Whatever works from one front end works from the other: both build the same :class:`ExperimentSpec`.
"""

from __future__ import annotations

from dataclasses import replace

from tlcore.methods.base import RunResult, get, names
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec
from tlcore.tracking import Tracker

__all__ = ["RunResult", "available_methods", "record_job_time", "resolve_defaults", "run", "run_point",
           "sweep_points"]


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
