"""What this machine has already run, read from MLflow for the app's small questions.

The latest runs for the home page, the runs of one job for its live result table, finished
source trainings for QUANTA's picker, and the measured speed of similar finished runs, which
turns a FLOP count into a projected time. Each question is one ``search_runs`` call asking
only for the rows it needs (design.md: ~1 ms per run returned on sqlite).
"""

from __future__ import annotations

import socket
import statistics
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tlcore.methods.base import EXPERIMENTS, methods
from tlcore.quality import QUALITY_REASON_TAG, QUALITY_TAG
from tlcore.tracking import TAG_HOST, Tracker

RUN_COLUMNS = ("run_id", "experiment", "method", "status", "start_time", "run_name", "dataset", "backbone",
               "samples_per_class", "split", "configuration", "classifier", "device", "accuracy",
               "accuracy_metric", "time_total_s", "flops_total", "energy_kwh", "co2_kg", "energy_method",
               "sweep_parent", "error", "quality", "quality_reason")


def _experiment_ids(tracker: Tracker, methods: list[str] | None = None) -> dict[str, str]:
    names = [EXPERIMENTS[m] for m in methods] if methods else list(EXPERIMENTS.values())
    out = {}
    for name in names:
        eid = tracker.experiment_id(name, create=False)
        if eid is not None:
            out[eid] = name
    return out


def _row(run, experiments: dict[str, str]) -> dict[str, Any]:
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    if "test_accuracy" in m:
        acc, acc_metric = m["test_accuracy"], "test_accuracy"
    elif "val_accuracy" in m:
        acc, acc_metric = m["val_accuracy"], "val_accuracy"
    else:
        acc, acc_metric = None, None
    return {
        "run_id": run.info.run_id, "experiment": experiments.get(run.info.experiment_id, ""),
        "method": p.get("method") or t.get("method", ""), "status": run.info.status,
        "start_time": pd.to_datetime(run.info.start_time, unit="ms", utc=True), "run_name": run.info.run_name,
        "dataset": p.get("dataset", ""), "backbone": p.get("backbone", ""),
        "samples_per_class": p.get("samples_per_class", ""), "split": p.get("split", ""),
        "configuration": p.get("configuration", ""), "classifier": p.get("classifier", ""),
        "device": p.get("device", ""), "accuracy": acc, "accuracy_metric": acc_metric,
        "time_total_s": m.get("time_total_s"), "flops_total": m.get("flops_total"),
        "energy_kwh": m.get("energy_kwh"), "co2_kg": m.get("co2_kg"), "energy_method": p.get("energy_method", ""),
        "sweep_parent": t.get("sweep_parent") == "true", "error": t.get("error", ""),
        "quality": t.get(QUALITY_TAG), "quality_reason": t.get(QUALITY_REASON_TAG),
    }


def _judge_missing(tracker: Tracker, runs: list, rows: list[dict[str, Any]]) -> None:
    """Runs logged before verdicts were tagged are judged as they are read (tlcore.quality's rules)."""
    from tlcore.quality import judge_run

    for run, row in zip(runs, rows, strict=True):
        if row["quality"] or row["status"] not in ("FINISHED", "FAILED"):
            continue
        method = row["method"]
        losses = []
        if method in ("ft", "source", "quanta") and row["status"] == "FINISHED":
            hist = sorted(tracker.client.get_metric_history(run.info.run_id, "val_loss"),
                          key=lambda m: (m.step, m.timestamp))
            by_step = {m.step: m.value for m in hist}
            losses = [by_step[k] for k in sorted(by_step)]
        verdict = judge_run(method, row["status"], run.data.params, run.data.metrics, losses,
                            run.data.tags.get("error_type"))
        if verdict is not None:
            row["quality"], row["quality_reason"] = verdict.quality, verdict.reason


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS))


def recent_runs(tracker: Tracker, limit: int = 8) -> pd.DataFrame:
    """The latest runs with a result, newest first (sweep parents left out: their children carry it)."""
    experiments = _experiment_ids(tracker)
    if not experiments:
        return _frame([])
    runs = tracker.client.search_runs(list(experiments), "", max_results=limit * 4,
                                      order_by=["attributes.start_time DESC"])
    runs = [r for r in runs if r.data.tags.get("sweep_parent") != "true"][:limit]
    rows = [_row(r, experiments) for r in runs]
    _judge_missing(tracker, runs, rows)
    return _frame(rows)


def recent_results(tracker: Tracker, limit: int = 8) -> pd.DataFrame:
    """The latest results, one row per job: a sweep is its parent with its curve ("70.3 % at 2, 87.5 % at 5
    per class"), a single run its score; a run that failed shows its error, not a score."""
    from tlcore import quality, units

    cols = ["started", "what", "method", "dataset", "backbone", "result", "verdict", "why", "status", "time",
            "compute", "energy", "run_id"]
    experiments = _experiment_ids(tracker)
    if not experiments:
        return pd.DataFrame(columns=cols)
    runs = tracker.client.search_runs(list(experiments), "", max_results=limit * 30,
                                      order_by=["attributes.start_time DESC"])
    rows = [_row(r, experiments) for r in runs]
    _judge_missing(tracker, runs, rows)
    df = _frame(rows)
    df["parent"] = [r.data.tags.get("mlflow.parentRunId") or "" for r in runs]
    out = []
    for row in df.itertuples():
        if row.parent:  # a point of a sweep: its parent's row speaks for it
            continue
        kids = df[df["parent"] == row.run_id]
        if row.status == "FAILED" or (row.sweep_parent and (kids["status"] == "FAILED").all() and len(kids)):
            error = row.error or next((e for e in kids["error"] if e), "")
            result = f"failed: {error}" if error else "failed"
        elif row.sweep_parent:
            done = kids[(kids["status"] == "FINISHED") & kids["accuracy"].notna()]
            spc = pd.to_numeric(done["samples_per_class"], errors="coerce")
            curve = done.groupby(spc)["accuracy"].mean()
            result = ", ".join(f"{units.percent(a)} at {s:g}" for s, a in curve.items())
            result = (result + " per class") if result else f"{len(kids)} run(s), none finished"
        elif row.accuracy is not None and pd.notna(row.accuracy):
            scored = "validation" if row.accuracy_metric == "val_accuracy" else "test"
            result = f"{units.percent(row.accuracy)} ({scored})"
        else:
            result = row.status.lower()
        q = row.quality if isinstance(row.quality, str) else None
        if row.sweep_parent and q is None:
            summary = quality.summarize(list(kids["quality"]))
            q, why = (summary.quality, summary.reason) if summary else (None, "")
        else:
            why = row.quality_reason or ""
        def cost(col: str, own, kids=kids):  # a sweep's parent logs the job's cost; older ones did not: sum points
            if own is not None and pd.notna(own):
                return own
            return pd.to_numeric(kids[col], errors="coerce").sum(min_count=1) if len(kids) else None

        out.append({"started": row.start_time, "what": row.run_name, "method": row.method, "dataset": row.dataset,
                    "backbone": row.backbone, "result": result,
                    "verdict": quality.LABELS.get(q, q) if q else "", "why": why, "status": row.status,
                    "time": units.duration(cost("time_total_s", row.time_total_s)),
                    "compute": units.flops(cost("flops_total", row.flops_total)),
                    "energy": units.energy(cost("energy_kwh", row.energy_kwh)), "run_id": row.run_id})
        if len(out) >= limit:
            break
    return pd.DataFrame(out, columns=cols)


def job_runs(tracker: Tracker, run_ids: list[str]) -> pd.DataFrame:
    """The runs a job opened, in the order it opened them."""
    if not run_ids:
        return _frame([])
    experiments = _experiment_ids(tracker)
    if not experiments:
        return _frame([])
    rows: dict[str, dict] = {}
    for i in range(0, len(run_ids), 100):
        chunk = run_ids[i:i + 100]
        quoted = ", ".join(f"'{r}'" for r in chunk)
        for run in tracker.client.search_runs(list(experiments), f"attributes.run_id IN ({quoted})",
                                              max_results=len(chunk)):
            rows[run.info.run_id] = _row(run, experiments)
    return _frame([rows[r] for r in run_ids if r in rows])


def source_runs(tracker: Tracker, limit: int = 50) -> pd.DataFrame:
    """Finished source trainings, the weights QUANTA can start from."""
    experiments = _experiment_ids(tracker, ["source"])
    if not experiments:
        return _frame([])
    runs = tracker.client.search_runs(list(experiments), "attributes.status = 'FINISHED'", max_results=limit,
                                      order_by=["attributes.start_time DESC"])
    return _frame([_row(r, experiments) for r in runs])


@dataclass(frozen=True)
class MeasuredSpeed:
    """Seconds per FLOP of similar finished runs on this machine (a median, and how many runs)."""

    seconds_per_flop: float
    runs: int
    basis: str


def measured_speed(tracker: Tracker, method: str, backbone: str, device_type: str, host: str | None = None,
                   limit: int = 20) -> MeasuredSpeed | None:
    """The pace of the last finished runs of ``method`` with ``backbone`` on this host and device type.

    Seconds per FLOP rather than per image, so runs at another resolution or with another
    freezing depth still calibrate the estimate. Only whole jobs count (sweep parents and single
    runs): a sweep's points record what each would cost alone, without the job's start-up
    (loading the model, counting FLOPs), which made projections 2-3x too short. None when there
    is no such run yet.
    """
    experiments = _experiment_ids(tracker, [method])
    if not experiments:
        return None
    host = host or socket.gethostname()
    filt = (f"attributes.status = 'FINISHED' and params.backbone = '{backbone}' "
            f"and tags.`{TAG_HOST}` = '{host}'")
    # the points of a sweep come back too (MLflow cannot filter on a missing tag): read past them
    runs = tracker.client.search_runs(list(experiments), filt, max_results=max(500, limit),
                                      order_by=["attributes.start_time DESC"])
    rates = []
    for run in runs:
        if len(rates) >= limit:
            break
        m, p = run.data.metrics, run.data.params
        if not p.get("device", "").startswith(device_type):
            continue
        if "mlflow.parentRunId" in run.data.tags:
            continue  # a point of a sweep: its parent holds what the whole job took, start-up included
        time_s, flops = m.get("time_total_s"), m.get("flops_total")
        if time_s and flops and time_s > 0 and flops > 0:
            rates.append(time_s / flops)
    if not rates:
        return None
    name = methods.get(method).noun
    basis = (f"median pace of the last {len(rates)} finished {name} job{'s' if len(rates) > 1 else ''} of "
             f"{backbone} on {device_type} on this machine")
    return MeasuredSpeed(statistics.median(rates), len(rates), basis)
