"""What a running job's method reports to (progress, metrics, runs, messages, cancel checks), written
into the :class:`~tlcore.jobs.state.Job` the UI polls, under the runner's lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Protocol

from tlcore.errors import Cancelled
from tlcore.jobs.state import MAX_MESSAGES, MAX_METRIC_POINTS, Job, JobMessage, MetricPoint, RunRef
from tlcore.reporting import Reporter

USER_CANCEL_REASON = "Cancelled by the user; metrics logged before that are kept."


class JobOwner(Protocol):
    """What a reporter needs of its runner: the lock its jobs live under, and a way to save the journal."""

    _lock: threading.RLock

    def _save_journal(self) -> None: ...


class JobReporter(Reporter):
    """The :class:`~tlcore.reporting.Reporter` a job's method talks to; writes into the job."""

    def __init__(self, runner: JobOwner, job: Job) -> None:
        self._runner = runner
        self._job = job
        self._cancel = threading.Event()
        self._cancel_reason = USER_CANCEL_REASON
        self._last_journal = 0.0

    def request_cancel(self, reason: str = USER_CANCEL_REASON) -> None:
        self._cancel_reason = reason
        self._cancel.set()

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            exc = Cancelled(self._cancel_reason)
            exc.reason = self._cancel_reason  # RunHandle ends its run KILLED with this reason
            raise exc

    def update(self, *, stage: str | None = None, fraction: float | None = None) -> None:
        journal = False
        with self._runner._lock:
            job = self._job
            now = time.time()
            if stage is not None and stage != job.stage:
                job.stage = stage
                journal = now - self._last_journal > 2.0
            if fraction is not None:
                job.fraction = min(max(float(fraction), 0.0), 1.0)
                if job._anchor is None and job.fraction > 0:
                    job._anchor = (now, job.fraction)
        if journal:
            self._last_journal = time.time()
            self._runner._save_journal()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, series: str = "") -> None:
        now = time.time()
        points = []
        for k, v in metrics.items():
            try:
                points.append(MetricPoint(str(k), float(v), None if step is None else int(step), series, now))
            except (TypeError, ValueError):
                continue
        with self._runner._lock:
            self._job.metrics.extend(points)
            if len(self._job.metrics) > MAX_METRIC_POINTS:
                half = len(self._job.metrics) // 2
                self._job.metrics[:half] = self._job.metrics[:half:2]

    def run_started(self, run_id: str, experiment: str, name: str | None = None) -> None:
        with self._runner._lock:
            self._job.runs.append(RunRef(run_id, experiment, name))
        self._runner._save_journal()

    def message(self, text: str, level: str = "info") -> None:
        with self._runner._lock:
            self._job.messages.append(JobMessage(time.time(), level, str(text)))
            del self._job.messages[:-MAX_MESSAGES]

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()
