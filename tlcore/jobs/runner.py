"""The job runner of the app: a FIFO queue per device, cancel, recovery, state the UI polls.

The Streamlit server holds one :class:`JobRunner` (``st.cache_resource``). A job is one
:class:`~tlcore.specs.ExperimentSpec`; the runner queues it, hands its work to an executor
(:mod:`tlcore.executors`; by default a daemon thread of this process running
:func:`tlcore.experiments.run`) and keeps everything the UI shows about it (stage, fraction, ETA,
the metric history for live charts, messages, MLflow run ids, the error), never in a browser
session, so a job survives reruns, page switches, closed tabs and reloads.

The journal (:mod:`tlcore.jobs.journal`) records each job's state and run ids. When the server is
killed mid-job, the next start marks the runs it left RUNNING as FAILED
(:meth:`Tracker.fail_orphaned_runs`) and the journal says which job was interrupted, so the home
page can tell the user what happened and offer to run it again.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import os
import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import replace

from tlcore.errors import Cancelled, TLError
from tlcore.executors import Executor, LocalExecutor, Outcome, Work
from tlcore.jobs.journal import _LIVE_RUNNERS, JobJournal, _owner_alive, _this_server, journal_path_for
from tlcore.jobs.reporter import USER_CANCEL_REASON, JobReporter
from tlcore.jobs.state import (
    ACTIVE_STATES,
    Job,
    JobState,
    Submitted,
    describe_spec,
)
from tlcore.specs import ExperimentSpec
from tlcore.tracking import RunHandle, Tracker

log = logging.getLogger(__name__)

MEMORY_KEEP = 50  # ended jobs kept in memory (with their metric history) by a long-lived server
DEDUP_WINDOW_S = 3.0  # a token seen this recently returns its job even when that job has ended (a double click)
SHUTDOWN_REASON = "The server was stopped while this run was running; metrics logged before that are kept."


class JobRunner:
    """One per server process: FIFO queues keyed by device, one job at a time on each, run by ``executor``
    (default: :class:`~tlcore.executors.LocalExecutor`, a daemon thread per job).

    Example:
        >>> runner = JobRunner(Tracker("results"))
        >>> runner.recover()                     # once, at start-up
        >>> job = runner.submit(spec, token="click-1").job
        >>> runner.wait(job.id, timeout=60).state
        <JobState.FINISHED: 'finished'>
    """

    def __init__(self, tracker: Tracker | str | None = None, journal_path: str | os.PathLike | None = None,
                 executor: Executor | None = None) -> None:
        self.tracker = tracker if isinstance(tracker, Tracker) else Tracker(tracker)
        self.executor: Executor = executor if executor is not None else LocalExecutor()
        self.journal = JobJournal(journal_path or journal_path_for(self.tracker.uri))
        self.owner = _this_server()
        _LIVE_RUNNERS.add(self.owner["runner"])
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._queues: dict[str, deque[str]] = {}
        self._running: dict[str, Work] = {}  # device -> the work its executor runs now
        self._reporters: dict[str, JobReporter] = {}
        self._tokens: dict[str, str] = {}
        self._numbers = itertools.count(1)
        self._closed = False
        self._results_version = 0
        self.orphaned_run_ids: list[str] = []
        self.executor_error: str | None = None  # why the configured executor could not be used (the home page says)

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
            self._changed.notify_all()
            snapshot = self._snapshot(job)
        self._save_journal()
        self._start_next(device)
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
        work = None
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
                work = self._running.get(job.device)
            else:
                return False
        if work is not None and work.job_id == job_id:
            self.executor.cancel(work, USER_CANCEL_REASON)
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
            running = list(self._running.values())
            self._changed.notify_all()
        for work in running:
            self.executor.cancel(work, SHUTDOWN_REASON)
        self.executor.shutdown(timeout)
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

    def _start_next(self, device: str) -> None:
        """Hand the next job queued for ``device`` to the executor, unless one runs there already."""
        with self._lock:
            queue = self._queues.get(device)
            if self._closed or device in self._running or not queue:
                return
            job = self._jobs[queue.popleft()]
            job.state = JobState.RUNNING
            job.started_at = time.time()
            job.stage = "Starting"
            reporter = JobReporter(self, job)
            self._reporters[job.id] = reporter
            work = Work(job.id, job.spec, reporter, self.tracker, device)
            self._running[device] = work
            self._changed.notify_all()
        self._save_journal()
        try:
            self.executor.start(work, self._finished)
        except Exception as exc:  # an executor that cannot start fails the job, not the runner
            self._finished(work, Outcome(error=exc, traceback=traceback.format_exc()))

    def _finished(self, work: Work, outcome: Outcome) -> None:
        """The executor's ``done``: what the outcome means for the job, its runs and the journal; then the next job."""
        with self._lock:
            job = self._jobs[work.job_id]
        state, error, error_type, tb, result = JobState.FINISHED, None, None, None, outcome.result
        exc = outcome.error
        if isinstance(exc, Cancelled):
            state = JobState.INTERRUPTED if self._closed and not job.cancel_requested else JobState.CANCELLED
        elif isinstance(exc, TLError):
            state, error, error_type = JobState.FAILED, str(exc), type(exc).__name__
        elif exc is not None:  # a bug: keep the traceback for the expander
            state, error_type = JobState.FAILED, type(exc).__name__
            first = str(exc).splitlines()[0] if str(exc) else ""
            error = f"Unexpected {type(exc).__name__}: {first} (a bug; the traceback is below)."
            tb = outcome.traceback
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
            if self._running.get(work.device) is work:
                del self._running[work.device]
            self._forget_old_jobs()
            self._results_version += 1
            self._changed.notify_all()
        self._save_journal()
        self._start_next(work.device)

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
