"""How long a job will take here, fitted on what this machine's finished jobs took.

One pace per earlier job, scaled by FLOPs, was 8.7x off (a 32 px job projected from a 224 px one):
at small inputs the time goes to reading and resizing images, Python per batch, loading the
model and opening runs, none of which scales with FLOPs. So the time of a whole job is modelled
as a non-negative sum of terms, fitted on this host's finished jobs on the same device type::

    seconds = Σ_method [compute seconds x a_method + job overhead_method] + images x s/image + runs x s/run

where compute seconds = the job's FLOPs x the seconds per FLOP this machine takes for that
backbone, resolution and kind of pass (a forward for FE, a training step otherwise), timed once
on random images (:func:`tlcore.speed.calibrate_speed`) and remembered per host beside the
store. FLOPs alone do not carry a backbone's pace: on a CPU, quanta_cnn's dense convolutions run
~30x more FLOPs per second than EfficientNet-Lite's depthwise ones, and at 32 px a training step
costs about what it costs at 64 px. Images are image passes (epochs and crops included), runs the
MLflow runs the job opens. The fit is a
non-negative least squares on relative errors (rows divided by their time), so a 10 s job
counts as much as a 10 min one and no term can go negative to explain noise. A method needs
at least one finished job here; the others lend the shared terms (images, runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlcore.methods.base import EXPERIMENTS, methods
from tlcore.tracking import TAG_HOST, Tracker, store_folder

#: Beside the store: this machine's timed seconds per FLOP per backbone, resolution and pass.
PACE_FILE = "machine_pace.json"
_PACES: dict[str, float] = {}
_REMEMBERED: set[tuple[str, Path]] = set()  # (pace key, file) pairs known to be written beside a store
_PACE_LOCK = threading.Lock()

#: The metric experiments.run logs on a job's top run: its wall time, data loading and model set-up included.
JOB_TIME_METRIC = "job_time_s"


@dataclass(frozen=True)
class JobRecord:
    """One finished job as the pace model sees it (a sweep's parent, or a job's single run)."""

    method: str
    seconds: float
    flops: float
    images: float
    runs: int
    backbone: str = ""
    resolution: str = ""
    run_id: str = ""


def job_records(tracker: Tracker, device_type: str, host: str | None = None, limit: int = 200) -> list[JobRecord]:
    """This host's finished whole jobs on ``device_type``, newest first (sweep points left out: their
    parent holds what the job took, start-up included)."""
    host = host or socket.gethostname()
    ids = {}
    for method, name in EXPERIMENTS.items():
        eid = tracker.experiment_id(name, create=False)
        if eid is not None:
            ids[eid] = method
    if not ids:
        return []
    runs = tracker.client.search_runs(list(ids), f"attributes.status = 'FINISHED' and tags.`{TAG_HOST}` = '{host}'",
                                      max_results=max(1000, limit), order_by=["attributes.start_time DESC"])
    out: list[JobRecord] = []
    for run in runs:
        if len(out) >= limit:
            break
        m, p, t = run.data.metrics, run.data.params, run.data.tags
        if "mlflow.parentRunId" in t or not p.get("device", "").startswith(device_type):
            continue
        seconds = m.get(JOB_TIME_METRIC) or m.get("time_total_s")
        flops = m.get("flops_total")
        if not seconds or seconds <= 0 or flops is None:
            continue
        method = p.get("method") or t.get("method") or ids[run.info.experiment_id]
        n_points = p.get("n_points") or p.get("nb_of_runs") or "1"
        runs_opened = int(n_points) + (1 if t.get("sweep_parent") == "true" else 0) if str(n_points).isdigit() else 1
        out.append(JobRecord(method, float(seconds), float(flops), float(m.get("images_processed") or 0.0),
                             runs_opened, p.get("backbone", ""), p.get("resolution", ""), run.info.run_id))
    return out


@dataclass(frozen=True)
class PaceModel:
    """The fitted terms (seconds per unit), the jobs they came from, and how well they fit them."""

    method_flops: dict[str, float]  # s per FLOP, per method
    method_overhead: dict[str, float]  # s per job, per method
    per_image: float  # s per image pass
    per_run: float
    jobs: int
    jobs_by_method: dict[str, int]
    worst_ratio: float  # the largest max(projected/actual, actual/projected) over the jobs it was fitted on

    def project(self, method: str, flops: float, images: float, runs: int,
                seconds_per_flop: float = 1.0) -> float | None:
        """Seconds for a job of ``method``; None when no job of that method was fitted. ``seconds_per_flop``:
        the machine's pace for the job's backbone and resolution (:func:`machine_pace`), as in the fit."""
        if method not in self.method_flops:
            return None
        return (flops * seconds_per_flop * self.method_flops[method] + self.method_overhead[method]
                + images * self.per_image + runs * self.per_run)

    def basis(self, method: str, device_type: str) -> str:
        """The projection's provenance, one clause for the Run page and ``--dry-run``."""
        n = self.jobs_by_method.get(method, 0)
        return (f"fitted on {self.jobs} finished job{'s' if self.jobs != 1 else ''} on {device_type} on this machine "
                f"({n} of {methods.get(method).noun}): {self.method_flops[method]:.2g} x the timed compute, "
                f"{self.per_image * 1e3:.3g} ms per image, {self.per_run:.2g} s per run, "
                f"{self.method_overhead[method]:.2g} s per job")


def _design(records: Sequence[JobRecord], methods: list[str], pace: PaceFn | None) -> np.ndarray:
    """Columns: per method (compute seconds, job), then image passes and runs (shared: with a handful of jobs
    per method, a per-method image term fitted noise)."""
    x = np.zeros((len(records), 2 * len(methods) + 2))
    for i, r in enumerate(records):
        j = methods.index(r.method)
        x[i, 2 * j] = r.flops * (pace(r) if pace else 1.0)
        x[i, 2 * j + 1] = 1.0
        x[i, -2] = r.images
        x[i, -1] = r.runs
    return x


PaceFn = Callable[[JobRecord], float]


def fit_pace(records: Sequence[JobRecord], pace: PaceFn | None = None) -> PaceModel | None:
    """The non-negative least-squares fit of job time on its terms (module docstring); None without jobs.
    ``pace``: seconds per FLOP of a job's backbone, resolution and method on this machine (None: raw FLOPs)."""
    from scipy.optimize import nnls

    records = [r for r in records if r.seconds > 0]
    if not records:
        return None
    methods = sorted({r.method for r in records})
    x = _design(records, methods, pace)
    y = np.array([r.seconds for r in records])
    w = 1.0 / y  # relative errors: every job counts the same whatever its length
    xw, yw = x * w[:, None], y * w
    scale = np.linalg.norm(xw, axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls(xw / scale, yw, maxiter=50 * x.shape[1])
    coef = coef / scale
    pred = x @ coef
    ratios = np.maximum(pred / y, y / np.maximum(pred, 1e-12))
    counts = {m: sum(r.method == m for r in records) for m in methods}
    return PaceModel({m: float(coef[2 * j]) for j, m in enumerate(methods)},
                     {m: float(coef[2 * j + 1]) for j, m in enumerate(methods)}, float(coef[-2]), float(coef[-1]),
                     len(records), counts, float(ratios.max()))


def _pace_file(tracker: Tracker) -> Path | None:
    folder = store_folder(tracker.uri)
    return folder / PACE_FILE if folder is not None else None


def machine_pace(backbone: str, resolution: int | None, method: str, device_type: str,
                 remember: Path | None = None) -> float:
    """Seconds per FLOP of ``backbone`` at ``resolution`` on this machine: a forward pass for FE, a training
    step otherwise, timed on random images once (a second or two) and remembered in ``remember`` (JSON,
    per host) so later projections, in any process, reuse it."""
    from tlcore.models import backbone_config

    size = int(resolution) if resolution else backbone_config(backbone).preprocessing.input_size
    forward = methods.knows(method) and methods.get(method).pace == "forward"
    kind = "fe" if forward else "train"  # "fe": the key's spelling in machine_pace.json files already written
    key = f"{socket.gethostname()}|{device_type}|{backbone}|{size}|{kind}"
    with _PACE_LOCK:
        if key in _PACES and (remember is None or (key, remember) in _REMEMBERED):
            return _PACES[key]  # no file read on the projection's hot path once this store has the pace
        stored: dict[str, float] = {}
        if remember is not None and remember.exists():
            with contextlib.suppress(OSError, ValueError):
                stored = json.loads(remember.read_text())
        if key not in stored:  # timed once per process, remembered beside each store that asks
            if key in _PACES:
                stored[key] = _PACES[key]
            else:
                from tlcore.speed import calibrate_speed

                speed = calibrate_speed(backbone, device_type, input_size=size, repeats=5)
                stored[key] = 1.0 / (speed.flops_per_s_fe if kind == "fe" else speed.flops_per_s_ft)
            if remember is not None:
                with contextlib.suppress(OSError):
                    tmp = remember.with_name(f".{remember.name}.{os.getpid()}.tmp")
                    tmp.write_text(json.dumps(stored, indent=1, sort_keys=True))
                    os.replace(tmp, remember)
        if remember is not None:
            _REMEMBERED.add((key, remember))
        _PACES[key] = stored[key]
        return stored[key]


def fitted_pace(tracker: Tracker, device_type: str, host: str | None = None) -> tuple[PaceModel | None, PaceFn]:
    """The pace model of this host and device type, from its finished jobs in ``tracker`` (None without jobs),
    and the per-job machine pace it was fitted with (to project a new job the same way)."""
    remember = _pace_file(tracker)

    def pace(r: JobRecord) -> float:
        res = int(r.resolution) if str(r.resolution).isdigit() else None
        return machine_pace(r.backbone, res, r.method, device_type, remember)

    records = [r for r in job_records(tracker, device_type, host) if r.backbone]
    return fit_pace(records, pace), pace
