"""How long a job will take here, fitted on what this machine's finished jobs took.

One pace per earlier job, scaled by FLOPs, was 8.7x off (a 32 px job projected from a 224 px one):
at small inputs the time goes to reading and resizing images, Python per batch, loading the
model and opening runs, none of which scales with FLOPs. So the time of a whole job is modelled
as a non-negative sum of terms, fitted on this host's finished jobs on the same device type::

    seconds = Σ_method [FLOPs x s/FLOP_method + 1 x job overhead_method] + images x s/image + runs x s/run

(images: image passes, epochs and crops included; FLOPs = images x FLOPs per image, so resolution
and backbone enter through the FLOP count; runs: MLflow runs the job opens). The fit is a
non-negative least squares on relative errors (rows divided by their time), so a 10 s job
counts as much as a 10 min one and no term can go negative to explain noise. A method needs
at least one finished job here; the others lend the shared terms (images, runs).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tlcore.tracking import EXPERIMENTS, TAG_HOST, Tracker

#: The metric experiments.run logs on a job's top run: its wall time, data loading and model set-up included.
JOB_TIME_METRIC = "job_time_s"
METHOD_NAMES = {"fe": "feature extraction", "ft": "fine-tuning", "quanta": "QUANTA", "source": "source training"}


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
    per_image: float
    per_run: float
    jobs: int
    jobs_by_method: dict[str, int]
    worst_ratio: float  # the largest max(projected/actual, actual/projected) over the jobs it was fitted on

    def project(self, method: str, flops: float, images: float, runs: int) -> float | None:
        """Seconds for a job of ``method``; None when no job of that method was fitted."""
        if method not in self.method_flops:
            return None
        return (flops * self.method_flops[method] + self.method_overhead[method] + images * self.per_image
                + runs * self.per_run)

    def basis(self, method: str, device_type: str) -> str:
        """The projection's provenance, one clause for the Run page and ``--dry-run``."""
        n = self.jobs_by_method.get(method, 0)
        return (f"fitted on {self.jobs} finished job{'s' if self.jobs != 1 else ''} on {device_type} on this machine "
                f"({n} of {METHOD_NAMES[method]}): {self.method_flops[method] * 1e9:.3g} s per GFLOP, "
                f"{self.per_image * 1e3:.3g} ms per image, {self.per_run:.2g} s per run, "
                f"{self.method_overhead[method]:.2g} s per job")


def _design(records: Sequence[JobRecord], methods: list[str]) -> np.ndarray:
    cols = 2 * len(methods) + 2
    x = np.zeros((len(records), cols))
    for i, r in enumerate(records):
        j = methods.index(r.method)
        x[i, 2 * j] = r.flops
        x[i, 2 * j + 1] = 1.0
        x[i, -2] = r.images
        x[i, -1] = r.runs
    return x


def fit_pace(records: Sequence[JobRecord]) -> PaceModel | None:
    """The non-negative least-squares fit of job time on its terms (module docstring); None without jobs."""
    from scipy.optimize import nnls

    records = [r for r in records if r.seconds > 0]
    if not records:
        return None
    methods = sorted({r.method for r in records})
    x = _design(records, methods)
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


def fitted_pace(tracker: Tracker, device_type: str, host: str | None = None) -> PaceModel | None:
    """The pace model of this host and device type, from its finished jobs in ``tracker``; None without jobs."""
    return fit_pace(job_records(tracker, device_type, host))
