"""Background jobs for the app: a FIFO queue and one worker thread per device, state the UI polls.

The Streamlit server holds one :class:`JobRunner` (``st.cache_resource``). A job is one
:class:`~tlcore.specs.ExperimentSpec` run through :func:`tlcore.experiments.run` on a daemon
worker thread; everything the UI shows about it (stage, fraction, ETA, the metric history for
live charts, messages, MLflow run ids, the error) lives here, never in a browser session, so a
job survives reruns, page switches, closed tabs and reloads. Why not a ``ThreadPoolExecutor``:
its non-daemon threads keep the server from shutting down until the job ends.

A small JSON journal next to the tracking store records each job's state and run ids. When
the server is killed mid-job (SIGKILL, a crash, a power cut), the next start marks the runs it
left RUNNING as FAILED (:meth:`Tracker.fail_orphaned_runs`) and the journal says which job was
interrupted, so the home page can tell the user what happened and offer to run it again.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from tlcore.errors import Cancelled, TLError
from tlcore.reporting import Reporter
from tlcore.specs import ExperimentSpec
from tlcore.tracking import RunHandle, Tracker, _process_start_time, artifact_root, owner_alive

log = logging.getLogger(__name__)

JOURNAL_NAME = "tlcore-jobs.json"
JOURNAL_VERSION = 1
MAX_METRIC_POINTS = 20_000  # per job; older points are thinned, so charts keep their shape
MAX_MESSAGES = 200
JOURNAL_KEEP = 100  # jobs remembered across restarts
MEMORY_KEEP = 50  # ended jobs kept in memory (with their metric history) by a long-lived server
DEDUP_WINDOW_S = 3.0  # a token seen this recently returns its job even when that job has ended (a double click)
USER_CANCEL_REASON = "Cancelled by the user; metrics logged before that are kept."
SHUTDOWN_REASON = "The server was stopped while this run was running; metrics logged before that are kept."


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # the server stopped or died while the job was queued or running


ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})
METHOD_NAMES = {"fe": "Feature extraction", "ft": "Fine-tuning", "quanta": "QUANTA", "source": "Source training"}


@dataclass(frozen=True)
class MetricPoint:
    """One value a method reported for the live charts."""

    name: str
    value: float
    step: int | None
    series: str
    time: float


@dataclass(frozen=True)
class RunRef:
    run_id: str
    experiment: str
    name: str | None = None


@dataclass(frozen=True)
class JobMessage:
    time: float
    level: str
    text: str


@dataclass
class Job:
    """A job's state. The runner hands out copies (:meth:`JobRunner.get`), safe to read anywhere."""

    id: str
    number: int
    spec: ExperimentSpec
    label: str
    device: str
    token: str | None = None
    state: JobState = JobState.QUEUED
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    stage: str = "Waiting in the queue"
    fraction: float = 0.0
    metrics: list[MetricPoint] = field(default_factory=list)
    messages: list[JobMessage] = field(default_factory=list)
    runs: list[RunRef] = field(default_factory=list)
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    summary: str = ""
    result_metrics: dict[str, float] = field(default_factory=dict)
    cancel_requested: bool = False
    note: str = ""  # what happened to a job of a previous server (interrupted jobs)
    acknowledged: bool = False
    owner: dict[str, Any] = field(default_factory=dict)
    # ETA anchor: the first moment the fraction moved past zero
    _anchor: tuple[float, float] | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.runs]

    @property
    def elapsed_s(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.ended_at or time.time()) - self.started_at

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds left, from the pace since progress first moved (model loading is not progress)."""
        if self.state is not JobState.RUNNING or self.fraction <= 0 or self.started_at is None:
            return None
        now = now or time.time()
        if self._anchor is not None and self.fraction > self._anchor[1] and now > self._anchor[0]:
            rate = (self.fraction - self._anchor[1]) / (now - self._anchor[0])
        else:
            rate = self.fraction / max(now - self.started_at, 1e-6)
        if rate <= 0:
            return None
        return max(0.0, (1.0 - self.fraction) / rate)

    def status_line(self, now: float | None = None) -> str:
        """One line for badges and tables: state, stage, percentage and time left or taken."""
        if self.state is JobState.QUEUED:
            return "queued"
        if self.state is JobState.RUNNING:
            eta = self.eta_s(now)
            left = f" · {format_duration(eta)} left" if eta is not None else ""
            return f"{self.stage} · {self.fraction:.0%}{left}"
        took = f" in {format_duration(self.elapsed_s)}" if self.elapsed_s is not None else ""
        return f"{self.state}{took}"

    def to_journal(self) -> dict[str, Any]:
        return {
            "id": self.id, "number": self.number, "label": self.label, "device": self.device,
            "state": str(self.state), "submitted_at": self.submitted_at, "started_at": self.started_at,
            "ended_at": self.ended_at, "stage": self.stage, "fraction": round(self.fraction, 4),
            "runs": [[r.run_id, r.experiment, r.name] for r in self.runs], "error": self.error,
            "error_type": self.error_type, "summary": self.summary, "note": self.note,
            "acknowledged": self.acknowledged, "owner": self.owner, "spec": self.spec.to_dict(),
        }

    @classmethod
    def from_journal(cls, d: Mapping[str, Any]) -> Job:
        try:
            spec = ExperimentSpec.from_dict(d["spec"])
        except Exception:  # a spec from another version of tlcore: keep the record, not the spec
            raw = d.get("spec") or {}
            spec = ExperimentSpec(str(raw.get("method", "fe")), str(raw.get("dataset", "?")))
        return cls(
            id=d["id"], number=int(d.get("number", 0)), spec=spec, label=d.get("label", ""),
            device=d.get("device", "cpu"), state=JobState(d.get("state", "failed")),
            submitted_at=float(d.get("submitted_at") or 0), started_at=d.get("started_at"),
            ended_at=d.get("ended_at"), stage=d.get("stage", ""), fraction=float(d.get("fraction") or 0),
            runs=[RunRef(*r) for r in d.get("runs", [])], error=d.get("error"), error_type=d.get("error_type"),
            summary=d.get("summary", ""), note=d.get("note", ""), acknowledged=bool(d.get("acknowledged")),
            owner=dict(d.get("owner") or {}),
        )


@dataclass(frozen=True)
class Submitted:
    """What :meth:`JobRunner.submit` did: ``new`` is False when the token named a job already queued."""

    job: Job
    new: bool


def format_duration(seconds: float | None) -> str:
    """'42 s', '3 min 05 s', '12 min', '1.5 h'."""
    if seconds is None:
        return "?"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min" if seconds >= 600 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{seconds / 3600:.1f} h"


def describe_spec(spec: ExperimentSpec) -> str:
    """A short label: method, dataset, backbone and the protocol."""
    method = METHOD_NAMES.get(spec.method, spec.method)
    parts = [method, spec.dataset, spec.backbone]
    if spec.method in ("fe", "ft"):
        if spec.model_selection:
            parts.append("model selection")
        elif spec.samples_per_class:
            draws = f" x {spec.splits} draws" if spec.splits else ""
            parts.append(f"{len(spec.samples_per_class)} points ({','.join(map(str, spec.samples_per_class))}{draws})")
        else:
            parts.append("seed grid")
    if spec.method == "ft":
        parts.append(f"config {spec.params.configuration}")
    if spec.method == "quanta":
        layer = spec.params.layer_to_transfer
        parts.append("every layer" if layer in (-1, "-1") else f"layer {layer}")
    return " · ".join(str(p) for p in parts)


def journal_path_for(tracking_uri: str) -> Path:
    """Beside a sqlite store; for a tracking server, in the user's cache folder (one file per URI)."""
    root = artifact_root(tracking_uri)
    if root:
        return Path(root).parent / JOURNAL_NAME
    import hashlib

    digest = hashlib.sha1(tracking_uri.encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "tlcore" / f"jobs-{digest}.json"


def _this_server() -> dict[str, Any]:
    """Who owns a journal entry: this process (pid, host, start time) and this runner in it."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "start": _process_start_time(pid), "runner": uuid.uuid4().hex[:8]}


_LIVE_RUNNERS: set[str] = set()  # runners of this process that have not been closed


def _owner_alive(owner: Mapping[str, Any]) -> bool:
    if not owner:
        return False
    if owner.get("host") != socket.gethostname():
        return True  # another machine's server: not ours to judge
    if owner.get("pid") == os.getpid():
        return owner.get("runner") in _LIVE_RUNNERS
    return owner_alive(int(owner.get("pid") or 0), owner.get("start"))


class JobJournal:
    """Job records in one JSON file, rewritten atomically. Entries of other live servers are kept."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def load(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("Ignoring unreadable job journal %s: %s", self.path, exc)
            return []
        jobs = data.get("jobs", []) if isinstance(data, dict) else []
        return [j for j in jobs if isinstance(j, dict) and "id" in j]

    def save(self, ours: list[dict[str, Any]], owner: Mapping[str, Any]) -> None:
        """Write our entries, keeping entries of other servers that are still alive."""
        with self._lock:
            our_ids = {j["id"] for j in ours}
            others = [j for j in self.load() if j["id"] not in our_ids and j.get("owner") != dict(owner)]
            entries = sorted(others + ours, key=lambda j: j.get("submitted_at") or 0)
            if len(entries) > JOURNAL_KEEP:
                entries = entries[-JOURNAL_KEEP:]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps({"version": JOURNAL_VERSION, "jobs": entries}, indent=1, default=str))
            os.replace(tmp, self.path)


class JobReporter(Reporter):
    """The :class:`~tlcore.reporting.Reporter` a job's method talks to; writes into the job."""

    def __init__(self, runner: JobRunner, job: Job) -> None:
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


class JobRunner:
    """One per server process: FIFO queues keyed by device, one daemon worker thread for each.

    Example:
        >>> runner = JobRunner(Tracker("results"))
        >>> runner.recover()                     # once, at start-up
        >>> job = runner.submit(spec, token="click-1").job
        >>> runner.wait(job.id, timeout=60).state
        <JobState.FINISHED: 'finished'>
    """

    def __init__(self, tracker: Tracker | str | None = None, journal_path: str | os.PathLike | None = None) -> None:
        self.tracker = tracker if isinstance(tracker, Tracker) else Tracker(tracker)
        self.journal = JobJournal(journal_path or journal_path_for(self.tracker.uri))
        self.owner = _this_server()
        _LIVE_RUNNERS.add(self.owner["runner"])
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._queues: dict[str, deque[str]] = {}
        self._workers: dict[str, threading.Thread] = {}
        self._reporters: dict[str, JobReporter] = {}
        self._tokens: dict[str, str] = {}
        self._numbers = itertools.count(1)
        self._closed = False
        self._results_version = 0
        self.orphaned_run_ids: list[str] = []

    # -- start-up ------------------------------------------------------------------------------
    def recover(self) -> list[Job]:
        """Mark runs of dead servers FAILED and turn their unfinished jobs into INTERRUPTED records.

        Returns the interrupted jobs (also kept, with earlier ended jobs, as this runner's history).
        """
        try:
            self.orphaned_run_ids = self.tracker.fail_orphaned_runs()
        except Exception as exc:  # a broken store must not keep the app from starting
            log.warning("Could not check for runs left RUNNING in %s: %s", self.tracker.uri, exc)
            self.orphaned_run_ids = []
        failed = set(self.orphaned_run_ids)
        interrupted: list[Job] = []
        highest = 0
        with self._lock:
            for entry in self.journal.load():
                highest = max(highest, int(entry.get("number") or 0))
                owner = entry.get("owner") or {}
                if owner == self.owner or _owner_alive(owner):
                    continue  # ours already, or another server that is alive
                job = Job.from_journal(entry)
                if job.state in ACTIVE_STATES:
                    job.note = self._interruption_note(job, failed)
                    job.state = JobState.INTERRUPTED
                    job.ended_at = job.ended_at or time.time()
                    interrupted.append(job)
                job.owner = dict(self.owner)  # adopted: this server now keeps the record
                self._jobs[job.id] = job
            self._numbers = itertools.count(highest + 1)
        if self._jobs:
            self._save_journal()
        return interrupted

    @staticmethod
    def _interruption_note(job: Job, failed_now: set[str]) -> str:
        if job.state is JobState.QUEUED:
            return "It was waiting in the queue when the server stopped, so it never started; run it again."
        ids = job.run_ids
        if not ids:
            return ("It was interrupted by a server restart before it opened an MLflow run; nothing was recorded. "
                    "Run it again.")
        marked = [r for r in ids if r in failed_now]
        which = ", ".join(r[:8] for r in (marked or ids)[-3:]) + (" ..." if len(marked or ids) > 3 else "")
        stage = f" during '{job.stage}'" if job.stage else ""
        if marked:
            return (f"It was interrupted by a server restart{stage}; its MLflow run{'s' if len(marked) > 1 else ''} "
                    f"({which}) {'were' if len(marked) > 1 else 'was'} marked FAILED, with the metrics logged "
                    "before kept. Run it again to finish it.")
        return (f"It was interrupted by a server restart{stage}; its MLflow runs ({which}) were already ended. "
                "Run it again to finish it.")

    # -- submitting and cancelling -------------------------------------------------------------
    def submit(self, spec: ExperimentSpec, token: str | None = None, label: str | None = None) -> Submitted:
        """Validate ``spec`` and queue it; the same ``token`` again returns the job it made.

        A token stands for one click: while its job is queued or running (or ended less than
        ``DEDUP_WINDOW_S`` ago), submitting it again from a double click or another tab returns
        that job instead of starting a second one.
        """
        spec.validate()
        device = self.device_key(spec)  # may import torch: outside the lock
        with self._lock:
            if self._closed:
                raise TLError("The job runner is shutting down; start the app again to run experiments.")
            if token and token in self._tokens:
                existing = self._jobs.get(self._tokens[token])
                if existing is not None and (existing.active or time.time() - existing.submitted_at < DEDUP_WINDOW_S):
                    return Submitted(self._snapshot(existing), False)
            job_id = uuid.uuid4().hex[:12]
            run_spec = copy.deepcopy(spec)
            run_spec.mlflow_path = self.tracker.uri  # the runner's store, whatever the form said
            run_spec.job = run_spec.job or job_id
            job = Job(id=job_id, number=next(self._numbers), spec=run_spec, label=label or describe_spec(run_spec),
                      device=device, token=token, owner=dict(self.owner))
            self._jobs[job_id] = job
            if token:
                self._tokens[token] = job_id
            self._queues.setdefault(device, deque()).append(job_id)
            self._ensure_worker(device)
            self._changed.notify_all()
            snapshot = self._snapshot(job)
        self._save_journal()
        return Submitted(snapshot, True)

    def resubmit(self, job_id: str) -> Submitted:
        """Queue a copy of an earlier job (an interrupted one, typically): a fresh start."""
        with self._lock:
            old = self._require(job_id)
            spec = copy.deepcopy(old.spec)
        spec.job = None
        return self.submit(spec, token=f"resubmit-{job_id}", label=old.label)

    @staticmethod
    def resume_point(job: Job) -> str | None:
        """The run a job that stopped early can be continued from, as ``--resume`` would: the sweep's
        parent (its unfinished points continue, the missing ones start) or its single run. Fine-tuning
        only: its runs keep a checkpoint every epoch."""
        if job.spec.method != "ft" or job.active or job.state is JobState.FINISHED or not job.runs:
            return None
        parents = [r.run_id for r in job.runs if r.name == "sweep parent"]
        return parents[0] if parents else job.runs[0].run_id

    def resume(self, job_id: str) -> Submitted:
        """Continue a fine-tuning job that was cancelled, failed or interrupted, in the same MLflow runs."""
        from tlcore.errors import TLError

        with self._lock:
            old = self._require(job_id)
            point = self.resume_point(self._snapshot(old))
            spec = copy.deepcopy(old.spec)
        if point is None:
            raise TLError(f"Job #{old.number} cannot be continued: only fine-tuning jobs that stopped early keep "
                          "checkpoints. Run it again instead.")
        spec.job = None
        spec.params = dataclasses.replace(spec.params, resume=point)
        return self.submit(spec, token=f"resume-{job_id}", label=f"{old.label} (continued)")

    def cancel(self, job_id: str) -> bool:
        """Queued: removed from the queue. Running: asked to stop at its next checkpoint (runs end KILLED).

        Returns False when the job had already ended.
        """
        with self._lock:
            job = self._require(job_id)
            if job.state is JobState.QUEUED:
                queue = self._queues.get(job.device)
                if queue is not None and job_id in queue:
                    queue.remove(job_id)
                job.state = JobState.CANCELLED
                job.ended_at = time.time()
                job.stage = "Cancelled before it started"
                self._changed.notify_all()
            elif job.state is JobState.RUNNING:
                job.cancel_requested = True
                job.stage = f"Cancelling: {job.stage}" if not job.stage.startswith("Cancelling") else job.stage
                reporter = self._reporters.get(job_id)
                if reporter is not None:
                    reporter.request_cancel()
            else:
                return False
        self._save_journal()
        return True

    def acknowledge(self, job_id: str) -> None:
        """The user has read what happened to an interrupted job: stop showing it on the home page."""
        with self._lock:
            self._require(job_id).acknowledged = True
        self._save_journal()

    # -- reading -------------------------------------------------------------------------------
    @property
    def results_version(self) -> int:
        """Bumped whenever a job ends; pages pass it to cached result loaders."""
        return self._results_version

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return self._snapshot(job) if job else None

    def jobs(self) -> list[Job]:
        """Running jobs, then the queue in order, then ended jobs, newest first."""
        with self._lock:
            running = [j for j in self._jobs.values() if j.state is JobState.RUNNING]
            queued = [self._jobs[i] for q in self._queues.values() for i in q]
            queued.sort(key=lambda j: j.number)
            ended = sorted((j for j in self._jobs.values() if not j.active), key=lambda j: -(j.ended_at or 0))
            return [self._snapshot(j) for j in running + queued + ended]

    def active_jobs(self) -> list[Job]:
        return [j for j in self.jobs() if j.active]

    def has_active(self) -> bool:
        with self._lock:
            return any(j.active for j in self._jobs.values())

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to start on its device; None when not queued."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state is not JobState.QUEUED:
                return None
            return list(self._queues.get(job.device, ())).index(job_id) + 1

    def interrupted(self) -> list[Job]:
        """Jobs of an earlier server that did not finish, not yet acknowledged by the user."""
        with self._lock:
            return [self._snapshot(j) for j in self._jobs.values()
                    if j.state is JobState.INTERRUPTED and not j.acknowledged]

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job has ended (tests, scripts); returns its final state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._require(job_id).active:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"Job {job_id} still {self._jobs[job_id].state} after {timeout} s.")
                self._changed.wait(left)
            return self._snapshot(self._jobs[job_id])

    def wait_until(self, predicate, timeout: float = 60.0) -> Job | None:
        """Block until ``predicate(jobs)`` is true for this runner's jobs (tests)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                jobs = [self._snapshot(j) for j in self._jobs.values()]
                if predicate(jobs):
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("Condition not reached before the timeout.")
                self._changed.wait(min(left, 0.1))

    # -- shutting down -------------------------------------------------------------------------
    def close(self, timeout: float = 5.0) -> None:
        """Stop taking jobs, cancel what runs, and leave no run RUNNING (called at interpreter exit).

        A job that does not reach a checkpoint within ``timeout`` seconds has its runs marked
        KILLED from here and is recorded as interrupted by the shutdown.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            _LIVE_RUNNERS.discard(self.owner["runner"])
            for job in self._jobs.values():
                if job.state is JobState.QUEUED:
                    job.state, job.ended_at = JobState.INTERRUPTED, time.time()
                    job.note = "It was waiting in the queue when the server was stopped; it never started."
                elif job.state is JobState.RUNNING:
                    reporter = self._reporters.get(job.id)
                    if reporter is not None:
                        reporter.request_cancel(SHUTDOWN_REASON)
            for q in self._queues.values():
                q.clear()
            self._changed.notify_all()
        for t in list(self._workers.values()):
            t.join(timeout)
        with self._lock:
            stuck = [j for j in self._jobs.values() if j.state is JobState.RUNNING]
        for job in stuck:
            self._end_open_runs(job, "KILLED", SHUTDOWN_REASON)
            with self._lock:
                job.state, job.ended_at = JobState.INTERRUPTED, time.time()
                job.note = "The server was stopped while it ran; its MLflow runs were marked KILLED. Run it again."
        self._save_journal()

    # -- internals -----------------------------------------------------------------------------
    def device_key(self, spec: ExperimentSpec) -> str:
        """The queue a spec waits in: one worker per physical device (``auto`` resolved)."""
        name = (spec.device or "auto").strip().lower()
        if name == "auto" or name == "cuda":
            from tlcore.devices import resolve_device

            try:
                dev = resolve_device(name)
            except TLError:
                return name  # the method will say why; the job still gets a queue
            return f"{dev.type}:{dev.index or 0}" if dev.type == "cuda" else dev.type
        return name

    def _require(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise TLError(f"No job {job_id!r} in this server; it may belong to a server that was restarted.")
        return job

    def _snapshot(self, job: Job) -> Job:
        return replace(job, metrics=list(job.metrics), messages=list(job.messages), runs=list(job.runs),
                       result_metrics=dict(job.result_metrics))

    def _forget_old_jobs(self) -> None:
        ended = sorted((j for j in self._jobs.values() if not j.active), key=lambda j: j.ended_at or 0)
        for job in ended[:max(0, len(ended) - MEMORY_KEEP)]:
            del self._jobs[job.id]
            if job.token and self._tokens.get(job.token) == job.id:
                del self._tokens[job.token]

    def _ensure_worker(self, device: str) -> None:
        t = self._workers.get(device)
        if t is None or not t.is_alive():
            t = threading.Thread(target=self._work, args=(device,), name=f"tlcore-jobs-{device}", daemon=True)
            self._workers[device] = t
            t.start()

    def _work(self, device: str) -> None:
        while True:
            with self._lock:
                queue = self._queues.setdefault(device, deque())
                while not queue and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                job = self._jobs[queue.popleft()]
                job.state = JobState.RUNNING
                job.started_at = time.time()
                job.stage = "Starting"
                reporter = JobReporter(self, job)
                self._reporters[job.id] = reporter
                self._changed.notify_all()
            self._save_journal()
            self._execute(job, reporter)

    def _execute(self, job: Job, reporter: JobReporter) -> None:
        from tlcore import experiments

        state, error, error_type, tb, result = JobState.FINISHED, None, None, None, None
        try:
            result = experiments.run(job.spec, reporter, self.tracker)
        except Cancelled:
            state = JobState.INTERRUPTED if self._closed and not job.cancel_requested else JobState.CANCELLED
        except TLError as exc:
            state, error, error_type = JobState.FAILED, str(exc), type(exc).__name__
        except Exception as exc:  # a bug: keep the traceback for the expander
            state, error_type = JobState.FAILED, type(exc).__name__
            first = str(exc).splitlines()[0] if str(exc) else ""
            error = f"Unexpected {type(exc).__name__}: {first} (a bug; the traceback is below)."
            tb = traceback.format_exc()
        if state is JobState.CANCELLED:
            self._end_open_runs(job, "KILLED", USER_CANCEL_REASON)
        elif state is JobState.INTERRUPTED:
            self._end_open_runs(job, "KILLED", SHUTDOWN_REASON)
        elif state is JobState.FAILED:
            self._end_open_runs(job, "FAILED", error or "The job failed.")
        else:
            self._end_open_runs(job, "FAILED", "The method returned without ending this run (a bug in the method).")
        with self._lock:
            job.state, job.ended_at = state, time.time()
            job.error, job.error_type, job.traceback = error, error_type, tb
            if state is JobState.FINISHED:
                job.fraction, job.stage = 1.0, "Finished"
                if result is not None:
                    job.summary = result.summary
                    job.result_metrics = dict(result.metrics)
            elif state is JobState.CANCELLED:
                job.stage = "Cancelled"
            elif state is JobState.INTERRUPTED:
                job.stage = "Stopped with the server"
                job.note = "The server was stopped while it ran; its MLflow runs were marked KILLED. Run it again."
            else:
                job.stage = "Failed"
            self._reporters.pop(job.id, None)
            self._forget_old_jobs()
            self._results_version += 1
            self._changed.notify_all()
        self._save_journal()

    def _end_open_runs(self, job: Job, status: str, reason: str) -> None:
        """Safety net: no run of the job stays RUNNING, whatever the method did."""
        with self._lock:
            ids = job.run_ids
        for run_id in ids:
            try:
                run = self.tracker.get_run(run_id)
                if run.info.status != "RUNNING":
                    continue
                handle = RunHandle(self.tracker, run_id, run.info.experiment_id)
                if status == "KILLED":
                    handle.kill(reason)
                else:
                    handle.set_tags({"error": reason, "error_type": job.error_type or "unfinished"})
                    self.tracker.client.set_terminated(run_id, "FAILED")
            except Exception as exc:  # the store may be gone at shutdown; nothing more to do
                log.warning("Could not end run %s of job %s: %s", run_id, job.id, exc)

    def _save_journal(self) -> None:
        with self._lock:
            ours = [j.to_journal() for j in self._jobs.values()]
        try:
            self.journal.save(ours, self.owner)
        except Exception as exc:  # a full disk must not fail the job
            log.warning("Could not write the job journal %s: %s", self.journal.path, exc)
